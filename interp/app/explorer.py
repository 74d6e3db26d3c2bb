"""interp Circuit Explorer: explore heads, intervene, and see the effect.

Start it with ``make app`` or ``interp app --model NAME`` (env ``INTERP_MODEL`` picks the model
it opens with; default: the zoo's ``ioi`` model with a ready IOI prompt set).
"""

from __future__ import annotations

import streamlit as st

from interp.app._common import init_state

st.set_page_config(page_title="interp Circuit Explorer", page_icon=":material/hub:", layout="wide")
init_state()

PAGES = [
    st.Page("pages/model.py", title="Model & prompts", icon=":material/tune:", default=True),
    st.Page("pages/attention.py", title="Attention", icon=":material/grid_on:"),
    st.Page("pages/patching.py", title="Patching", icon=":material/swap_horiz:"),
    st.Page("pages/ablation.py", title="Ablation", icon=":material/content_cut:"),
    st.Page("pages/lens.py", title="Logit lens", icon=":material/layers:"),
    st.Page("pages/dla.py", title="Direct logit attribution", icon=":material/bar_chart:"),
    st.Page("pages/retrieval.py", title="Retrieval heads", icon=":material/search:"),
    st.Page("pages/circuit.py", title="Circuit", icon=":material/hub:"),
    st.Page("pages/training.py", title="Training", icon=":material/timeline:"),
    st.Page("pages/export.py", title="Export report", icon=":material/download:"),
]
page = st.navigation(PAGES)
with st.sidebar:
    st.caption(f"model **{st.session_state.model_spec}** · change it on *Model & prompts*")
    from interp.app._common import device_choices

    st.selectbox("device", device_choices(), key="device", on_change=st.cache_data.clear,
                 help="where the model runs; auto: CUDA if present, else Apple MPS, else the "
                      "CPU. Changing it reloads the model and recomputes the pages.")
    picked = st.session_state.get("selected_component")
    if picked:
        st.markdown(f"selected: **{picked}**")
        if st.button("clear selection", key="sb_clear"):
            st.session_state.pop("selected_component", None)
            st.rerun()
page.run()

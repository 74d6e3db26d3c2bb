"""Patching: activation-patching sweeps and path patching, heatmaps, details of one cell."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from interp import components as C_
from interp.app import _compute as C
from interp.app._common import clicked, guard, header, remember, select_component
from interp.app._figures import clickable
from interp.models import describe

spec, model, key, prompts = header(
    "Patching", "Insert activations from one run into the other and watch the metric "
    "(logit difference answer - wrong) move. Scores are normalised: denoising 0 = corrupted, "
    "1 = clean; noising 0 = clean, -1 = corrupted.")
info = describe(model)

modes = ["activation patching"] + (["path patching"] if C.has_path_patching() else [])
mode = st.radio("sweep", modes, horizontal=True, key="pt_mode")
if not C.has_path_patching():
    st.caption("Path patching is not in this installation of interp yet; activation patching is.")

if mode == "activation patching":
    c1, c2, c3 = st.columns(3)
    targets = ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v",
               "pattern"]
    target = c1.selectbox("activation", targets, key="pt_target",
                          help="resid/attn_out/mlp_out: layer x position; z/q/k/v/pattern: per head")
    per_position = c2.checkbox("per position", True, key="pt_perpos")
    direction = c3.radio("direction", ["denoising", "noising"], horizontal=True, key="pt_dir")
    settings = {"mode": mode, "target": target, "per_position": per_position, "direction": direction}
    cells = info.n_layers * (prompts.n_pos if per_position else 1) * (
        info.n_heads if target in ("z", "q", "k", "v", "pattern") else 1)
    with st.spinner(f"Patching {target}: {cells} patches over {len(prompts)} prompt pairs…"):
        res = guard("Activation patching", C.act_patching, spec, key, target, per_position, direction,
                    hint="activation patching needs corrupted prompts of the same token length; "
                         "choose IOI / induction / needle or type corrupted prompts.")
else:
    c1, c2 = st.columns([3, 1])
    st.session_state.pt_recv = [h for h in st.session_state.get("pt_recv", []) if h in info.head_labels()]
    recv = c1.multiselect("receiver heads (empty = the logits)", info.head_labels(), key="pt_recv")
    rin = c2.radio("receiver input", ["q", "k", "v"], horizontal=True, key="pt_rin")
    settings = {"mode": mode, "receivers": recv or "logits", "receiver_input": rin}
    with st.spinner("Path patching every sender head…"):
        res = guard("Path patching", C.path_patching, spec, key, tuple(recv) if recv else "logits",
                    rin, hint="path patching needs corrupted prompts of the same token length.")
remember("patching", settings)

m = res.meta
c1, c2, c3 = st.columns(3)
c1.metric(f"clean {m.get('metric', 'metric')}", f"{m['clean']:.3f}")
c2.metric(f"corrupted {m.get('metric', 'metric')}", f"{m['corrupted']:.3f}")
c3.metric("largest |score|", f"{float(res.values.abs().max()):.3f}")
fig = res.plot()
if len(res.dims) == 2:
    fig = clickable(fig)
event = st.plotly_chart(fig, key="pt_heat", on_select="rerun", selection_mode="points")
cells = clicked(event)
if cells and len(res.dims) == 2:  # a clicked cell ("y|x") becomes the cell shown below
    y, x = cells[0].split("|", 1)
    names = [[str(c) for c in res.coords[d]] for d in res.dims]
    if y in names[0] and x in names[1]:
        cell = (names[0].index(y), names[1].index(x))
        if cell != st.session_state.get("pt_clicked"):
            st.session_state.pt_clicked = cell
            for d, j in zip(res.dims, cell):
                st.session_state[f"pt_cell_{d}"] = j
            if "head" in res.dims and "layer" in res.dims:
                hd = C_.Head(int(cell[res.dims.index("layer")]), int(cell[res.dims.index("head")]))
                select_component(C_.label(hd))
            st.rerun()
st.caption("Click a cell to inspect it below (a head cell also selects the head for the other "
           "pages).")

st.subheader("One cell")
cols = st.columns(len(res.dims))
for d in res.dims:  # a selection from an earlier sweep may not exist in this one
    if st.session_state.get(f"pt_cell_{d}", 0) >= len(res.coords[d]):
        del st.session_state[f"pt_cell_{d}"]
idx = tuple(cols[i].selectbox(d, list(range(len(res.coords[d]))), key=f"pt_cell_{d}",
                              format_func=lambda j, d=d: str(res.coords[d][j]))
            for i, d in enumerate(res.dims))
label = " ".join(str(res.coords[d][j]) for d, j in zip(res.dims, idx))
c1, c2, c3 = st.columns(3)
c1.metric(f"score at {label}", f"{float(res.values[idx]):.3f}")
if res.raw is not None:
    c2.metric("mean metric when patched", f"{float(res.raw[idx]):.3f}")
if res.ci is not None:
    lo, hi = res.ci[idx].tolist()
    c3.metric("95% bootstrap CI", f"[{lo:.3f}, {hi:.3f}]")
if res.per_example is not None:
    pe = res.per_example[idx].tolist()
    fig = go.Figure(go.Bar(x=[f"ex {i}" for i in range(len(pe))], y=pe))
    fig.update_layout(title=f"Per-example score at {label}", height=280, yaxis_title="score")
    st.plotly_chart(fig, key="pt_cell_fig")
st.caption("Top cells by |score|")
st.dataframe(res.top(10), hide_index=True)

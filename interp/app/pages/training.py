"""Training: a measurement over a run's checkpoints (the zoo's modadd model, or any directory of
step_<N> checkpoints); for modadd the grokking progress measures and the Fourier view."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from interp.app._common import guard, remember

st.title("Training")
st.caption("How a model changes over its checkpoints: one checkpoint is loaded at a time "
           "(interp.dynamics.track), and results are cached per run.")


@st.cache_data(show_spinner="measuring the checkpoints ...")
def _modadd_measures(every: bool):
    """The progress measures and embedding norms per frequency, one pass over the checkpoints
    (12 of them, log-spread, unless ``every``)."""
    from interp.dynamics import Checkpoints
    from interp.dynamics import grokking as G
    from interp.models import zoo_path

    cps = Checkpoints.zoo("modadd")
    if not every:
        cps = cps.subset(12)
    res = G.progress_over_training(cps, G.load_split(zoo_path("modadd")), progress=False)
    return res, res.meta["frequency_norms"], G.turning_points(res)


@st.cache_data(show_spinner="measuring every checkpoint ...")
def _dir_measure(path: str, measure: str):
    from interp.dynamics import Checkpoints, track
    from interp.heads import induction_scores

    cps = Checkpoints.from_dir(path)
    if measure == "best induction score":
        return track(cps, lambda m: float(induction_scores(m, seq_len=20, batch=8).values.max()),
                     name=measure, progress=False)
    return track(cps, lambda m: float(m.W_E.detach().norm()), name=measure, progress=False)


source = st.radio("checkpoints", ["zoo: modadd (grokking)", "a directory"], horizontal=True,
                  key="tr_source")
if source.startswith("zoo"):
    every = st.toggle("every checkpoint (slower; default: 12 spread over the run)", key="tr_all")
    res, norms, tp = guard("Grokking progress measures", _modadd_measures, every)
    remember("training", {"checkpoints": "zoo modadd", "measures": list(res.coords["measure"]),
                          "every checkpoint": every})
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("memorised at step", str(tp["memorised"]))
    c2.metric("restricted loss < 0.5 at step", str(tp["restricted"]))
    c3.metric("grokked at step", str(tp["grokked"]))
    c4.metric("key frequencies", ", ".join(str(k) for k in tp["key_frequencies"]))
    picked = st.multiselect("measures", list(res.coords["measure"]),
                            default=["train_loss", "test_loss", "restricted_loss",
                                     "excluded_loss"], key="tr_measures")
    steps = [int(s) for s in res.coords["step"]]
    fig = go.Figure()
    for name in picked:
        j = res.coords["measure"].index(name)
        fig.add_trace(go.Scatter(x=steps, y=res.values[:, j].tolist(), mode="lines+markers",
                                 name=name))
    fig.update_layout(title="Progress measures over training", xaxis_title="step",
                      template="plotly_white", height=380)
    fig.update_xaxes(type="log" if st.toggle("log step axis", value=True, key="tr_log") else "linear")
    st.plotly_chart(fig, key="tr_curves")
    heat = go.Figure(go.Heatmap(z=[list(r) for r in zip(*norms)], x=[str(s) for s in steps],
                                y=[str(k + 1) for k in range(len(norms[0]))], colorscale="Viridis",
                                colorbar=dict(title="norm")))
    heat.update_layout(title="Embedding norm per Fourier frequency over training",
                       xaxis_title="step", yaxis_title="frequency k (w_k = 2 pi k / p)",
                       height=460)
    st.plotly_chart(heat, key="tr_fourier")
else:
    path = st.text_input("directory with step_<N> (or checkpoint-<N>) subfolders in Hugging "
                         "Face format", key="tr_dir")
    measure = st.selectbox("measure", ["best induction score", "embedding norm"], key="tr_metric")
    if not path:
        st.info("Enter a directory of checkpoints to measure.")
        st.stop()
    res = guard("Measure over checkpoints", _dir_measure, path, measure,
                hint="The directory needs step_<N> subfolders, each with config.json and weights.")
    remember("training", {"checkpoints": path, "measure": measure})
    st.plotly_chart(res.plot(), key="tr_dir_plot")

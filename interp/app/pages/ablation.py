"""Ablation: knock out chosen heads / MLPs (zero, mean, resample) and see the metric and the top
predictions before and after; every head alone as a heatmap; a greedy pruning curve."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from interp import components as C_
from interp.app import _compute as C
from interp.app._common import (
    clicked,
    guard,
    header,
    remember,
    select_component,
    selected_component,
)
from interp.app._figures import clickable, metric_bars
from interp.models import describe

spec, model, key, prompts = header(
    "Ablation", "Remove components and measure the logit difference (answer - wrong) at the "
    "answer position; the change has a 95% bootstrap CI over the prompts.")
info = describe(model)
method = st.radio("ablation", ["zero", "mean", "resample"], horizontal=True, key="ab_method",
                  help="mean: the mean activation over the prompts (per position when aligned); "
                       "resample: the activation from the corrupted prompts")

with st.spinner(f"Knocking out each of {info.n_layers * info.n_heads} heads and {info.n_layers} MLPs…"):
    ko = guard("The knockout sweep", C.knockout, spec, key, method,
               hint="try 'zero' ablation, or fewer / shorter prompts.")

# default selection: the head whose knockout moves the metric most
layer, head = divmod(int(ko.values.abs().argmax()), info.n_heads)
options = info.head_labels() + C_.mlp_labels(info.n_layers) + C_.attn_labels(info.n_layers)
picked = selected_component()
if picked in options and picked != st.session_state.get("ab_synced"):
    st.session_state.ab_components = [picked]  # the component selected on another page
    st.session_state.ab_synced = picked
elif "ab_components" not in st.session_state:
    st.session_state.ab_components = [C_.label(C_.Head(layer, head))]
else:  # keep only components this model has (the model may have changed)
    st.session_state.ab_components = [c for c in st.session_state.ab_components if c in options]
comps = st.multiselect("components to ablate together", options, key="ab_components")
remember("ablation", {"method": method, "components": list(comps)})

left, right = st.columns([3, 2])
with left:
    fig = ko.plot(title=f"Knockout of each head alone ({method}): change in {ko.meta['metric']}")
    event = st.plotly_chart(clickable(fig), key="ab_ko", on_select="rerun",
                            selection_mode="points")
    cells = clicked(event)
    if cells:  # "L1|H2": select that head
        ly, hx = cells[0].split("|")
        if select_component(f"{ly}{hx}"):
            st.rerun()
    st.caption("Click a cell to select that head (it is then ablated here and shown on the "
               "other pages).")
    if ko.mlp_values is not None:
        mf = ko.mlps
        bars = go.Figure(go.Bar(x=mf.labels("component"), y=mf.values.tolist()))
        st.plotly_chart(bars.update_layout(
            title="Knockout of each MLP alone", yaxis_title="change", height=280), key="ab_ko_mlp")
with right:
    if not comps:
        st.info("Pick one or more components above to ablate them together.")
    else:
        res = guard("Ablation", C.ablate, spec, key, tuple(comps), method)
        lo, hi = res.ci[0].tolist()
        c1, c2 = st.columns(2)
        c1.metric("logit diff before", f"{res.baseline:.3f}")
        c2.metric("logit diff after", f"{res.ablated:.3f}", delta=f"{res.ablated - res.baseline:+.3f}")
        st.caption(f"change {float(res.values[0]):+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}] over "
                   f"{len(prompts)} prompts")
        pe_b = res.baseline_per_example
        pe_a = res.ablated_per_example
        st.plotly_chart(metric_bars(["before", "after"], [res.baseline, res.ablated],
                                    [(res.baseline, res.baseline), (res.baseline + lo, res.baseline + hi)],
                                    title=f"Ablating {' + '.join(comps)}", yaxis="logit diff"),
                        key="ab_bars")
        ex = st.number_input("example", 0, len(prompts) - 1, 0, key="ab_example")
        before = pd.DataFrame(res.top_before[ex], columns=["token", "prob"])
        after = pd.DataFrame(res.top_after[ex], columns=["token", "prob"])
        st.markdown(f"**Top predictions, example {ex}** (logit diff {float(pe_b[ex]):.3f} → "
                    f"{float(pe_a[ex]):.3f})")
        a, b = st.columns(2)
        a.caption("before")
        a.dataframe(before, hide_index=True)
        b.caption("after")
        b.dataframe(after, hide_index=True)

with st.expander("Greedy head pruning (Michel et al. 2019)"):
    st.caption("Masks the least important heads step by step while the metric stays above a "
               "fraction of the original. Uses gradients, so it takes longer than the rest.")
    c1, c2, c3 = st.columns(3)
    step = c1.slider("fraction pruned per step", 0.05, 0.5, 0.1, 0.05, key="ab_step")
    stop_at = c2.slider("keep metric >= this fraction", 0.5, 1.0, 0.9, 0.05, key="ab_stop")
    pmetric = c3.selectbox("metric", ["logit_diff", "prob"], key="ab_pmetric")
    if st.toggle("compute the pruning curve", key="ab_prune"):
        with st.spinner("Pruning heads…"):
            pr = guard("Pruning", C.prune, spec, key, float(step), float(stop_at), pmetric,
                       hint="pruning needs prompts the model gets right (positive metric); "
                            "try metric 'prob'.")
        st.plotly_chart(pr.plot(), key="ab_prune_fig")
        n_used = pr.meta.get("n_examples")
        st.write(f"{len(pr.kept)} heads kept: {', '.join(pr.kept)}"
                 + (f" (importance from {n_used} prompts of this kind)" if n_used else ""))
        st.dataframe(pr.to_frame(), hide_index=True)

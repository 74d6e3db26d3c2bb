"""Circuit: every edge of the model's graph scored (EAP, EAP-IG, clean-corrupted or exact edge
patching), the strongest kept (top-n on a log scale, or a score threshold), drawn in layers with
q/k/v inputs told apart, its faithfulness and the faithfulness curve (CPR / CMD); clicking a
node shows that head's attention and what knocking it out does."""

from __future__ import annotations

import json

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
from interp.app._figures import metric_bars
from interp.models import describe
from interp.viz import attention_figure, label_node

spec, model, key, prompts = header(
    "Circuit", "Every edge of the model's graph scored, the strongest kept and drawn; check how "
    "much of the behaviour the kept edges carry (faithfulness; everything else is corrupted).")
info = describe(model)
if not prompts.has_corrupted:
    st.info("Circuit discovery compares clean and corrupted prompts; this prompt set has no "
            "corrupted prompts. Pick a set with corrupted prompts on **Model & prompts**.")
    st.stop()

METHODS = {"EAP-IG (inputs)": "eap-ig-inputs", "EAP": "eap", "clean-corrupted": "clean-corrupted",
           "EAP-IG (activations)": "eap-ig-activations", "exact edge patching": "exact"}
c1, c2, c3 = st.columns([3, 2, 3])
method_name = c1.radio("scoring method", list(METHODS), horizontal=True, key="ci_method",
                       help="EAP-IG (inputs), 5 steps, is the default of the MIB benchmark; exact "
                            "patching scores each edge by patching it alone (slowest).")
method = METHODS[method_name]
mode = c2.radio("keep", ["top edges", "score threshold"], horizontal=True, key="ci_mode")
with st.spinner(f"Scoring every edge with {method_name}…"):
    graph = guard(f"Scoring edges with {method_name}", C.discover, spec, key, method,
                  hint="clean and corrupted prompts need the same token length; on a model "
                       "family this method cannot handle, pick another method.")
E = graph.n_edges
if mode == "top edges":
    steps = [n for n in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000,
                         50000, 100000) if n < E] + [E]
    value = c3.select_slider("circuit size in edges (log scale)", steps,
                             value=min(20 if 20 in steps else steps[-1], E), key="ci_n")
    sel_text = f"top {value} of {E} edges, dangling ones pruned"
else:
    value = c3.slider("keep |score| >= this fraction of the largest", 0.0, 1.0, 0.2, 0.01,
                      key="ci_thr")
    sel_text = f"|score| >= {value:.2f} x the largest"
g = C.select(graph, mode, value)
remember("circuit", {"method": method, "mode": mode, "value": value})

ev = guard("Evaluating the circuit", C.circuit_faithfulness, spec, key, method, mode, value)
left, right = st.columns([3, 2])
with left:
    picked = selected_component()
    event = st.plotly_chart(
        g.plot(title=f"{method_name}: {g.n_in_graph} edges",
               selected=label_node(picked) if picked else None),
        key="ci_graph", on_select="rerun", selection_mode="points")
    nodes = clicked(event)
    if nodes and select_component(nodes[0]):  # a new selection: redraw with it
        st.rerun()
    st.caption(f"Kept: {sel_text}. Click a head or MLP to select it (shared with the other "
               "pages). Arrow colour: the input it feeds; width: |score|; faded: negative score.")
with right:
    m1, m2, m3 = st.columns(3)
    m1.metric("edges kept", f"{g.n_in_graph}", help=f"of {E} edges in the model's graph")
    m2.metric("nodes", int(g.nodes_in_graph.sum()))
    m3.metric("faithfulness", f"{ev['faithfulness']:.3f}")
    st.caption(f"logit difference: full model {ev['full']:.3f}, circuit {ev['circuit']:.3f}, "
               f"empty circuit (all corrupted) {ev['empty']:.3f}")
    if st.toggle("faithfulness curve (CPR / CMD)", key="ci_curve",
                 help="faithfulness of the top 0.1% ... 100% of edges; CPR: area under the curve "
                      "ranked by signed score (higher is better), CMD: area under |1 - f| ranked "
                      "by |score| (lower is better), as in the MIB benchmark."):
        with st.spinner("Evaluating circuits of 10 sizes…"):
            curve = guard("Faithfulness curve", C.faithfulness_curve, spec, key, method)
        k1, k2 = st.columns(2)
        k1.metric("CPR", f"{curve.cpr:.3f}")
        k2.metric("CMD", f"{curve.cmd:.3f}")
        st.plotly_chart(curve.plot(), key="ci_curve_fig")
    top = sorted(g.in_graph.nonzero()[:, 0].tolist(), key=lambda i: -abs(float(g.scores[i])))
    st.dataframe([{"edge": g.edge_names()[i], "score": round(float(g.scores[i]), 4)}
                  for i in top[:30]], hide_index=True, height=240)
    st.download_button("Export graph JSON (EAP-IG format)", json.dumps(g.to_eap_json()),
                       file_name="circuit.json", mime="application/json", key="ci_json")
    st.download_button("Export Graphviz DOT", g.to_dot(), file_name="circuit.dot",
                       mime="text/vnd.graphviz", key="ci_dot")

# --- the selected component ---------------------------------------------------------------------
picked = selected_component()
if picked:
    st.subheader(f"Selected: {picked}")
    d1, d2 = st.columns([3, 2])
    comp = C_.parse(picked)
    if isinstance(comp, C_.Head):
        layer, head = comp.layer, comp.head
        if layer < info.n_layers and head < info.n_heads:
            pats = guard("Attention patterns", C.patterns, spec, key, 0)
            toks = C.str_tokens(spec, key, 0)
            d1.plotly_chart(attention_figure(pats[layer, head], toks,
                                             title=f"{picked} attention on example 0"),
                            key="ci_attn")
    res = guard(f"Knocking out {picked}", C.ablate, spec, key, (picked,), "mean")
    lo, hi = res.ci[0].tolist()
    with d2:
        st.metric("logit diff, with it mean-ablated", f"{res.ablated:.3f}",
                  delta=f"{res.ablated - res.baseline:+.3f}")
        st.caption(f"before {res.baseline:.3f}; change 95% CI [{lo:+.3f}, {hi:+.3f}] over "
                   f"{len(res.baseline_per_example)} prompts (paired)")
        st.plotly_chart(metric_bars(["before", "after"], [res.baseline, res.ablated],
                                    title=f"knocking out {picked}", yaxis="logit difference"),
                        key="ci_knock")

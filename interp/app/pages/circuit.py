"""Circuit: heads and MLPs as nodes, edges scored by path patching or edge attribution, a
threshold, faithfulness of the kept heads, and export (JSON / Graphviz DOT)."""

from __future__ import annotations

import json

import streamlit as st

from interp import components as C_
from interp.app import _compute as C
from interp.app._common import guard, header, remember
from interp.models import describe

spec, model, key, prompts = header(
    "Circuit", "Components as nodes, scored edges between them; keep the strongest with a "
    "threshold and check how much of the behaviour the kept heads carry (faithfulness).")
info = describe(model)
sources = ["edge attribution", "path patching (senders -> logits)",
           "activation patching of heads (nodes only)"]
source = st.radio("edges from", sources, horizontal=True, key="ci_source")

thr = st.slider("keep |score| >= threshold (fraction of the largest)", 0.0, 1.0, 0.3, 0.01,
                key="ci_thr")
with st.spinner(f"Scoring with {source}…"):
    circuit, edges, cut = guard(source, C.circuit, spec, key, source, float(thr),
                                hint="these methods need corrupted prompts of the same token length.")
remember("circuit", {"source": source, "threshold": thr})

heads = tuple(C_.label(C_.Head(a, b)) for a, b in circuit.heads())
left, right = st.columns([3, 2])
left.plotly_chart(circuit.plot(title=f"Circuit: {len(circuit.nodes)} nodes, {len(circuit.edges)} "
                               f"edges ({source})"), key="ci_graph")
with right:
    c1, c2 = st.columns(2)
    c1.metric("nodes", len(circuit.nodes))
    c2.metric("heads", len(heads))
    if prompts.has_corrupted and heads:
        f = guard("Faithfulness", C.faithfulness, spec, key, heads)
        st.metric("faithfulness (heads outside mean-ablated)", f"{f.faithfulness:.3f}")
        st.caption(f"metric: model {f.model:.3f}, circuit {f.circuit:.3f}, corrupted "
                   f"{f.corrupted:.3f}")
    st.dataframe(
        [{"src": s, "dst": d or "-", "score": round(w, 4)} for s, d, w in
         sorted(edges, key=lambda e: -abs(e[2])) if abs(w) >= cut][:30], hide_index=True)
    doc = json.dumps(circuit.to_json(), indent=1)
    st.download_button("Export circuit JSON", doc, file_name="circuit.json",
                       mime="application/json", key="ci_json")
    st.download_button("Export Graphviz DOT", circuit.to_dot(), file_name="circuit.dot",
                       mime="text/vnd.graphviz", key="ci_dot")

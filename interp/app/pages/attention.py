"""Attention: every head's pattern as a grid, one head large with token labels, head scores."""

from __future__ import annotations

import streamlit as st

from interp import components as C_
from interp.app import _compute as C
from interp.app._common import guard, header, remember
from interp.app._figures import attention_grid
from interp.models import describe
from interp.viz import attention_figure

spec, model, key, prompts = header(
    "Attention", "Attention patterns of every head on one prompt; pick a head to see it large.")
info = describe(model)

c1, c2, c3, c4 = st.columns(4)
ex = c1.number_input("example", 0, len(prompts) - 1, 0, key="a_example")
layer = c2.selectbox("layer", list(range(info.n_layers)), key="a_layer")
head = c3.selectbox("head", list(range(info.n_heads)), key="a_head")
overlay = c4.selectbox("head-score overlay", ["none", "induction", "previous token", "duplicate token"],
                       key="a_overlay")
name = C_.label(C_.Head(layer, head))
remember("attention", {"example": int(ex), "head": name, "overlay": overlay})

pats = guard("Computing attention patterns", C.patterns, spec, key, int(ex))
toks = C.str_tokens(spec, key, int(ex))
scores = None
if overlay != "none":
    scores = guard(f"Computing {overlay} scores", C.head_scores, spec, overlay,
                   hint="the scores use repeated random tokens; the model needs a context of >= 9 tokens.")

left, right = st.columns([3, 2])
with left:
    st.plotly_chart(attention_grid(pats, toks, scores=None if scores is None else scores.values,
                                   score_name=overlay, selected=(layer, head)),
                    key="a_grid")
with right:
    st.plotly_chart(attention_figure(pats[layer, head], toks, title=f"{name} on example {ex}")
                    .update_layout(height=520), key="a_head_fig")
    if scores is not None:
        st.plotly_chart(scores.plot(title=f"{overlay} score per head"), key="a_scores")
        top = scores.top(5)[["component_label", "value"]]
        st.caption(f"Top {overlay} heads")
        st.dataframe(top, hide_index=True)
        st.metric(f"{name} {overlay} score", f"{float(scores.values[layer, head]):.3f}")

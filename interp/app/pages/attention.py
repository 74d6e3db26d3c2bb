"""Attention: every head's pattern as a grid, one head large with token labels, head scores."""

from __future__ import annotations

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
from interp.app._figures import attention_grid
from interp.models import describe
from interp.viz import attention_figure

spec, model, key, prompts = header(
    "Attention", "Attention patterns of every head on one prompt; pick a head to see it large.")
info = describe(model)

ss = st.session_state
picked = selected_component()  # a head selected on any page opens here
if picked and picked != ss.get("a_synced"):
    try:
        h0 = C_.parse(picked)
    except ValueError:
        h0 = None
    if isinstance(h0, C_.Head) and h0.layer < info.n_layers and h0.head < info.n_heads:
        ss.a_layer, ss.a_head = h0.layer, h0.head
    ss.a_synced = picked


def _dropdown_changed() -> None:  # a head picked by hand becomes the shared selection
    name = C_.label(C_.Head(ss.a_layer, ss.a_head))
    select_component(name)
    ss.a_synced = name


c1, c2, c3, c4 = st.columns(4)
ex = c1.number_input("example", 0, len(prompts) - 1, 0, key="a_example")
layer = c2.selectbox("layer", list(range(info.n_layers)), key="a_layer", on_change=_dropdown_changed)
head = c3.selectbox("head", list(range(info.n_heads)), key="a_head", on_change=_dropdown_changed)
overlay = c4.selectbox("head-score overlay", ["none", "induction", "previous token", "duplicate token"],
                       key="a_overlay")
name = C_.label(C_.Head(layer, head))
remember("attention", {"example": int(ex), "head": name, "overlay": overlay,
                       "overlay_on": ss.get("a_overlay_on", "this prompt")})

pats = guard("Computing attention patterns", C.patterns, spec, key, int(ex))
toks = C.str_tokens(spec, key, int(ex))
scores = None
if overlay != "none":
    on = st.radio("scores computed on", ["this prompt", "repeated random tokens"],
                  horizontal=True, key="a_overlay_on",
                  help="this prompt: transformer-lens's detection score of each head on the "
                       "example shown (attention where a head of that kind would attend); "
                       "repeated random tokens: the prefix-matching score on [BOS] r r.")
    if on == "this prompt":
        scores = guard(f"Computing {overlay} scores", C.prompt_head_scores, spec, key, overlay,
                       int(ex), hint="the prompt may not contain what this score looks for "
                                     "(e.g. a repeated token for induction).")
    else:
        scores = guard(f"Computing {overlay} scores", C.head_scores, spec, overlay,
                       hint="the scores use repeated random tokens; the model needs a context "
                            "of >= 9 tokens.")

left, right = st.columns([3, 2])
with left:
    event = st.plotly_chart(
        attention_grid(pats, toks, scores=None if scores is None else scores.values,
                       score_name=overlay, selected=(layer, head)),
        key="a_grid", on_select="rerun", selection_mode="points")
    picked_now = clicked(event)
    if picked_now and select_component(picked_now[0]):  # a click on a panel's centre
        st.rerun()
    st.caption("Click the centre of a panel to select its head (shared with the other pages).")
with right:
    st.plotly_chart(attention_figure(pats[layer, head], toks, title=f"{name} on example {ex}")
                    .update_layout(height=520), key="a_head_fig")
    if scores is not None:
        st.plotly_chart(scores.plot(title=f"{overlay} score per head"), key="a_scores")
        top = scores.top(5)[["component_label", "value"]]
        st.caption(f"Top {overlay} heads")
        st.dataframe(top, hide_index=True)
        st.metric(f"{name} {overlay} score", f"{float(scores.values[layer, head]):.3f}")

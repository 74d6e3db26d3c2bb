"""Retrieval heads (Wu et al. 2024): copy-paste scores on needle trials, a threshold, and the
masking check (top-K heads masked against K random heads)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from interp import components as C_
from interp.app import _compute as C
from interp.app._common import guard, header, remember
from interp.app._figures import metric_bars
from interp.models import describe
from interp.prompts import PromptSpec

spec, model, key, prompts = header(
    "Retrieval heads", "Needle-in-a-haystack trials are decoded greedily; a head scores when its "
    "strongest attention lands on the needle token being copied. Independent of the prompt set.")
info = describe(model)
if spec != "needle":
    c1, c2 = st.columns([4, 1])
    c1.info("The zoo's **needle** model is trained for this; other models may never retrieve the "
            "needle (then no trial counts and all scores are 0).")
    if c2.button("Use the needle model", key="rt_switch"):
        from interp.app._common import default_prompt_key

        st.session_state.model_spec = "needle"
        st.session_state.prompt_key = default_prompt_key("needle")
        st.rerun()

n_ctx = int(info.n_ctx)
c1, c2, c3 = st.columns(3)
len_opts = [x for x in (48, 64, 96, 128, 192, 256, 384, 512) if x <= n_ctx - 16] or [n_ctx // 2]
lengths = c1.multiselect("context lengths (tokens)", len_opts, default=len_opts[:1], key="rt_lengths")
depths = c2.multiselect("needle depths (% of the context)", [0, 25, 50, 75, 100],
                        default=list(PromptSpec.default("needle").options["depths"]), key="rt_depths")
max_new = c3.slider("max new tokens", 4, 50, 8, key="rt_maxnew")
if not lengths or not depths:
    st.warning("Pick at least one context length and one depth.")
    st.stop()
grid = (tuple(sorted(lengths)), tuple(sorted(depths)), int(max_new))
COUNTING = {"fraction of the needle copied (0-1)": "fraction",
            "copy events per needle token (the paper's code; repeats count again)": "events"}
counting = COUNTING[st.radio("score", list(COUNTING), horizontal=True, key="rt_counting",
                             help="Wu et al. define the score as the fraction of the needle's "
                                  "tokens a head copies; their code counts every copy event, so "
                                  "a head that copies a repeated answer scores above 1.")]
with st.spinner(f"Decoding {3 * len(lengths) * len(depths)} needle trials…"):
    scores = guard("Retrieval scores", C.retrieval, spec, *grid, counting,
                   hint="use shorter context lengths (they must fit the model's context with the "
                        "generated tokens).")
m = scores.meta
c1, c2, c3 = st.columns(3)
c1.metric("trials counted (recall > 50%)", f"{m['n_accepted']} / {m['n_trials']}")
best, val = scores.best()
c2.metric("best head (score)", f"{C_.label(C_.Head(*best))} ({val:.2f})")
# copy events per needle token can exceed 1 (a token copied twice); fractions cannot
thr_max = 1.0 if counting == "fraction" else max(1.0, round(float(scores.values.max()) + 0.01, 2))
thr = c3.slider("threshold", 0.0, thr_max, float(m.get("threshold", 0.1)), 0.01, key="rt_thr")
above = scores.above(thr)
remember("retrieval", {"lengths": list(grid[0]), "depths": list(grid[1]), "max_new_tokens": grid[2],
                       "threshold": thr, "counting": counting})

left, right = st.columns([3, 2])
left.plotly_chart(scores.plot(title=scores.meta["title"]), key="rt_heat")
with right:
    st.markdown(f"**{len(above)} head(s) above {thr:.2f}**")
    st.dataframe(scores.top(max(len(above), 5))[["component_label", "value"]], hide_index=True)
with st.expander("trials"):
    st.dataframe(pd.DataFrame(m["trials"]), hide_index=True)

st.subheader("Masking: top-K against random K")
c1, c2, c3, c4 = st.columns(4)
k = c1.slider("K", 1, min(20, info.n_layers * info.n_heads - 1), min(max(len(above), 1), 10),
              key="rt_k")
n_random = c2.slider("random draws", 1, 5, 1, key="rt_draws")
mode = c3.radio("mask", ["query", "output"], horizontal=True, key="rt_mode",
                help="query: uniform attention on decode steps; output: the head's output zeroed")
run = c4.toggle("run the masking experiment", key="rt_mask")
if run:
    with st.spinner(f"Decoding with heads masked ({1 + 1 + n_random} conditions)…"):
        mres = guard("The masking experiment", C.masking, spec, *grid, int(k), int(n_random), mode,
                     hint="lower K (random heads are drawn from outside the top heads).")
    a, b, c = mres.values.tolist()
    c1, c2, c3 = st.columns(3)
    c1.metric("accuracy, no mask", f"{a:.1f}")
    c2.metric(f"top-{k} masked", f"{b:.1f}", f"{b - a:+.1f}")
    c3.metric(f"random {k} masked (mean)", f"{c:.1f}", f"{c - a:+.1f}")
    st.plotly_chart(metric_bars(["no mask", f"top-{k}", f"random {k}"], [a, b, c],
                                title="Needle accuracy (100 x ROUGE-1 recall)", yaxis="accuracy"),
                    key="rt_bars")
    st.caption(f"top heads: {', '.join(mres.meta['top_heads'])}")

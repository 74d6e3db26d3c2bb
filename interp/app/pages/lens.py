"""Logit lens: layer x position grid of top tokens coloured by probability; the target's rank."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from interp.app import _compute as C
from interp.app._common import guard, header, remember

spec, model, key, prompts = header(
    "Logit lens", "The residual stream before each layer (and after the last) read with the "
    "model's own final norm and unembedding.")
c1, c2 = st.columns(2)
ex = c1.number_input("example", 0, len(prompts) - 1, 0, key="l_example")
k = c2.slider("top-k kept per cell", 1, 10, 5, key="l_k")
remember("lens", {"example": int(ex), "k": int(k)})

res = guard("Running the logit lens", C.lens, spec, key, int(k))
ap = int(prompts.answer_pos[ex])
target = model.tokenizer.decode([int(prompts.answer_ids[ex])])
st.plotly_chart(res.plot(example=int(ex)), key="l_grid")

ranks = res.target_rank[:, ex, ap].tolist()
probs = res.values[:, ex, ap].tolist()
first = res.first_top1_layer(example=int(ex))
c1, c2, c3 = st.columns(3)
c1.metric("target token", repr(target))
c2.metric("rank at the final layer", ranks[-1])
c3.metric("first layer where it is top-1", "never" if first is None else res.coords["layer"][first])
fig = go.Figure(go.Scatter(x=res.coords["layer"], y=ranks, mode="lines+markers", name="rank"))
fig.update_layout(title=f"Rank of {target!r} at the answer position (1 = top)",
                  yaxis=dict(type="log", dtick=1, autorange="reversed", title="rank"),
                  xaxis_title="layer", height=320)
fig2 = go.Figure(go.Scatter(x=res.coords["layer"], y=probs, mode="lines+markers"))
fig2.update_layout(title=f"Probability of {target!r}", yaxis_range=[0, 1], height=320,
                   xaxis_title="layer")
a, b = st.columns(2)
a.plotly_chart(fig, key="l_rank")
b.plotly_chart(fig2, key="l_prob")

st.subheader(f"Top {k} tokens at the answer position, by layer")
st.dataframe(C.lens_topk_table(spec, key, int(k), int(ex)), hide_index=True)

"""Direct logit attribution: which heads and MLPs write the answer directly, and how the
logit difference builds up layer by layer."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from interp import components as C_
from interp.app import _compute as C
from interp.app._common import guard, header, remember, selected_component
from interp.models import describe

spec, model, key, prompts = header(
    "Direct logit attribution",
    "Each head's and MLP's direct contribution to the logit difference (answer - wrong) at the "
    "answer position, through the final norm with its scale frozen from the clean run.")
if prompts.wrong_ids is None:
    st.info("These prompts have no wrong answer, so there is no logit difference to attribute. "
            "Pick a prompt set with a wrong answer (e.g. IOI) on *Model & prompts*.")
    st.stop()
info = describe(model)
remember("dla", {})
res = guard("Direct logit attribution", C.dla, spec, key)

labels, acc = res.accumulated()
mean = acc.mean(-1)
c1, c2, c3 = st.columns(3)
c1.metric("model logit difference", f"{res.meta['model_logit_diff']:.3f}")
c2.metric("sum of components", f"{res.total():.3f}")
top = res.top(1).iloc[0]
c3.metric("largest head", top["component_label"], f"{float(top['value']):+.3f}")
st.plotly_chart(res.plot(title="Direct logit attribution per head (mean over prompts)"),
                key="dla_heads")
fig = go.Figure()
for e in range(min(acc.shape[1], 16)):
    fig.add_trace(go.Scatter(x=labels, y=acc[:, e].tolist(), mode="lines",
                             line=dict(width=1, color="rgba(120,120,120,0.35)"),
                             name=f"example {e}", showlegend=False))
fig.add_trace(go.Scatter(x=labels, y=mean.tolist(), mode="lines+markers", name="mean",
                         line=dict(width=3)))
fig.update_layout(title="Logit difference carried by the residual stream, by layer",
                  yaxis_title="logit difference", height=360)
a, b = st.columns(2)
a.plotly_chart(fig, key="dla_by_layer")
b.plotly_chart(res.plot_bars(), key="dla_others")

st.subheader("Where a head reads from: its contribution by source position")
picked = selected_component()
try:
    sel = C_.parse(picked) if picked else None
except ValueError:
    sel = None
if not isinstance(sel, C_.Head) or sel.layer >= info.n_layers or sel.head >= info.n_heads:
    sel = C_.parse(top["component_label"])
d1, d2 = st.columns([1, 3])
ex = d1.number_input("example", 0, len(prompts) - 1, 0, key="dla_example")
d1.caption(f"head **{C_.label(sel)}** (the selected head, else the largest; select one by "
           "clicking it on another page)")
src = guard("Source positions", C.dla_sources, spec, key)
n = int(prompts.answer_pos[ex]) + 1
vals = src.per_source[sel.layer, sel.head, int(ex), :n].tolist()
toks = C.str_tokens(spec, key, int(ex))
bars = go.Figure(go.Bar(x=[f"{i}:{t}" for i, t in enumerate(toks)], y=vals,
                        marker_color=["#2b6cb0" if v >= 0 else "#c53030" for v in vals]))
bars.update_layout(title=f"{C_.label(sel)} on example {ex}: contribution through each source "
                         f"position (sum {sum(vals):+.3f} = its direct effect)",
                   yaxis_title="logit difference", height=340)
d2.plotly_chart(bars, key="dla_sources")

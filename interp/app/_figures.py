"""Presentation-only figure helpers of the explorer (layouts of library outputs; no method logic)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp import components as C


def attention_grid(pats, tokens: Sequence[str], *, scores=None, score_name: str = "",
                   selected: tuple[int, int] | None = None, max_side: int = 48) -> go.Figure:
    """All heads' patterns [layer, head, query, key] as a layer x head grid of small heatmaps.

    ``scores`` [layer, head] (optional) are written in each panel's title; the selected head's
    panel title is bold. Long prompts show their last ``max_side`` positions.
    """
    n_layers, n_heads, n, _ = pats.shape
    start = max(0, n - max_side)
    pats = pats[:, :, start:, start:]
    labels = [f"{start + i}:{t}" for i, t in enumerate(tokens[start:])]
    titles = []
    for layer in range(n_layers):
        for h in range(n_heads):
            t = C.label(C.Head(layer, h))
            if scores is not None:
                t += f" {float(scores[layer][h]):.2f}"
            if selected == (layer, h):
                t = f"<b>[{t}]</b>"
            titles.append(t)
    fig = make_subplots(rows=n_layers, cols=n_heads, subplot_titles=titles,
                        horizontal_spacing=0.01, vertical_spacing=0.04)
    for layer in range(n_layers):
        for h in range(n_heads):
            fig.add_trace(go.Heatmap(
                z=pats[layer, h].tolist(), x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1,
                showscale=False,
                hovertemplate=f"{C.label(C.Head(layer, h))}<br>query %{{y}}<br>key %{{x}}"
                                               "<br>attn %{z:.3f}<extra></extra>"),
                row=layer + 1, col=h + 1)
            mid = labels[len(labels) // 2]  # a click anywhere near the centre selects the head
            clickable(fig, row=layer + 1, col=h + 1, x=[mid], y=[mid],
                      customdata=[C.label(C.Head(layer, h))], size=40)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_annotations(font_size=10)
    fig.update_layout(height=max(260, 110 * n_layers), margin=dict(l=10, r=10, t=40, b=10),
                      title=f"All heads ({n_layers} layers x {n_heads} heads)"
                            + (f"; titles show {score_name}" if scores is not None else ""))
    return fig


def top_table(ids, probs, tokenizer) -> pd.DataFrame:
    return pd.DataFrame({"token": [repr(tokenizer.decode([int(i)])) for i in ids],
                         "prob": [round(float(p), 4) for p in probs]})


def metric_bars(names: Sequence[str], values: Sequence[float], cis=None, *, title: str,
                yaxis: str) -> go.Figure:
    err = None
    if cis is not None:
        err = dict(type="data", symmetric=False,
                   array=[hi - v for v, (lo, hi) in zip(values, cis)],
                   arrayminus=[v - lo for v, (lo, hi) in zip(values, cis)])
    fig = go.Figure(go.Bar(x=list(names), y=list(values), error_y=err,
                           marker_color=["#4a5568", "#c53030", "#2b6cb0", "#718096"][: len(values)]))
    fig.update_layout(title=title, yaxis_title=yaxis, height=360)
    return fig


def clickable(fig: go.Figure, *, row: int | None = None, col: int | None = None,
              x: Sequence | None = None, y: Sequence | None = None,
              customdata: Sequence[str] | None = None, size: int = 16) -> go.Figure:
    """Plotly heatmaps cannot be point-selected, so a click on one reports nothing: add an
    invisible marker at each cell centre (``x`` x ``y``, default the first heatmap's axes),
    carrying ``customdata`` (default ``"y|x"``), for Streamlit's ``on_select``."""
    if x is None or y is None:
        hm = next(t for t in fig.data if t.type == "heatmap")
        x, y = list(hm.x), list(hm.y)
    xs = [xv for _ in y for xv in x]
    ys = [yv for yv in y for _ in x]
    data = list(customdata) if customdata is not None else [f"{b}|{a}" for a, b in zip(xs, ys)]
    trace = go.Scatter(x=xs, y=ys, mode="markers", customdata=data, hoverinfo="none",
                       marker=dict(size=size, symbol="square", color="rgba(0,0,0,0.003)"),
                       showlegend=False)
    if row is not None:
        fig.add_trace(trace, row=row, col=col)
    else:
        fig.add_trace(trace)
    return fig

"""Figure builders shared by result types and the app."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

DIVERGING = "RdBu"


def _axis_labels(result, dim: str) -> list[str]:
    """Tick labels: the result's own string labels ("L3", "H2", "KV0", "3:Mary", ...)."""
    return [str(x) for x in result.coords[dim]]


def heatmap(
    z: Tensor | Sequence[Sequence[float]],
    *,
    x: Sequence[str] | None = None,
    y: Sequence[str] | None = None,
    title: str | None = None,
    colorscale: str = DIVERGING,
    zmid: float | None = 0.0,
    text: Sequence[Sequence[str]] | None = None,
    hover: str = "%{y} %{x}: %{z:.3f}",
    xlabel: str = "",
    ylabel: str = "",
    zrange: tuple[float, float] | None = None,
) -> go.Figure:
    """A labelled heatmap; ``zrange`` fixes the colour scale (else plotly auto-ranges it)."""
    zz = z.float().tolist() if isinstance(z, Tensor) else z
    lo, hi = zrange if zrange is not None else (None, None)
    fig = go.Figure(
        go.Heatmap(
            z=zz, x=list(x) if x is not None else None, y=list(y) if y is not None else None,
            colorscale=colorscale, zmid=zmid, zmin=lo, zmax=hi, text=text,
            texttemplate="%{text}" if text is not None else None,
            hovertemplate=hover + "<extra></extra>",
        )
    )
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel,
                      yaxis_autorange="reversed", margin=dict(l=60, r=20, t=50, b=60))
    return fig


def result_figure(result, *, title: str | None = None, zmid: float | None = 0.0) -> go.Figure:
    """Bars (1-D), a heatmap (2-D) or heatmaps faceted by the last axis (3-D) of a result."""
    v = result.values.float()
    name = title or result.meta.get("title") or type(result).__name__
    dims = result.dims
    if v.ndim == 1:
        fig = go.Figure(go.Bar(x=_axis_labels(result, dims[0]), y=v.tolist()))
        fig.update_layout(title=name, xaxis_title=dims[0], yaxis_title=result.value_name)
        return fig
    if v.ndim == 2:
        return heatmap(v, x=_axis_labels(result, dims[1]), y=_axis_labels(result, dims[0]),
                       title=name, zmid=zmid, xlabel=dims[1], ylabel=dims[0])
    if v.ndim == 3:
        facets = _axis_labels(result, dims[2])
        n = len(facets)
        cols = min(n, 4)
        rows = (n + cols - 1) // cols
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=facets, shared_yaxes=True)
        lim = float(v.abs().max()) or 1.0
        for i in range(n):
            fig.add_trace(
                go.Heatmap(z=v[:, :, i].tolist(), x=_axis_labels(result, dims[1]),
                           y=_axis_labels(result, dims[0]), colorscale=DIVERGING, zmin=-lim,
                           zmax=lim, showscale=i == 0),
                row=i // cols + 1, col=i % cols + 1,
            )
        fig.update_yaxes(autorange="reversed")
        fig.update_layout(title=name, height=300 * rows)
        return fig
    raise ValueError(f"cannot plot a {v.ndim}-D result; select a slice first")


def attention_figure(
    pattern: Tensor, tokens: Sequence[str], *, title: str | None = None
) -> go.Figure:
    """One head's attention pattern [query_pos, key_pos] with token labels."""
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    return heatmap(pattern, x=labels, y=labels, title=title, colorscale="Blues", zmid=None,
                   hover="query %{y}<br>key %{x}<br>attn %{z:.3f}", xlabel="key", ylabel="query")

"""Plotly figure builders (no streamlit here)."""

from interp.viz._figures import attention_figure, heatmap, result_figure
from interp.viz._graph import graph_figure

__all__ = ["attention_figure", "graph_figure", "heatmap", "result_figure"]

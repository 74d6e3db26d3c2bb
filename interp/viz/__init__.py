"""Plotly figure builders (no streamlit here)."""

from interp.viz._figures import attention_figure, heatmap, result_figure

__all__ = ["attention_figure", "heatmap", "result_figure"]

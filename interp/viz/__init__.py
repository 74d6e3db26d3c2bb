"""Plotly figure builders (no streamlit here)."""

from interp.viz._figures import attention_figure, heatmap, result_figure
from interp.viz._graph import graph_figure, label_node, node_label

__all__ = ["attention_figure", "graph_figure", "heatmap", "label_node", "node_label",
           "result_figure"]

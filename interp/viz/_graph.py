"""A layered drawing of an edge-level circuit (``interp.circuits.Graph``).

Columns by depth: the input, then per layer the attention heads (one row per head) and the MLP,
then the logits. Every circuit edge is an arrow from its sender to the receiving node; the colour
says which input it feeds (query, key, value, MLP or logits: one legend entry each), the width
its |score|, a dashed line a negative score. Key and value arrows end slightly above and below
the query arrow's end, so the three inputs of one head stay apart. Hovering a node or the middle
of an edge shows its name and score; nodes carry their name in ``customdata`` so a click
(Streamlit's ``on_select``) can select them.
"""

from __future__ import annotations

import plotly.graph_objects as go

#: Colour per receiving input; colour-blind-safe (Okabe-Ito).
KIND_COLOURS = {"q": "#0072B2", "k": "#E69F00", "v": "#009E73", "mlp": "#CC79A7",
                "logits": "#555555"}
KIND_NAMES = {"q": "query input", "k": "key input", "v": "value input", "mlp": "MLP input",
              "logits": "logits"}
_PORT_DY = {"q": 0.0, "k": 0.22, "v": -0.22, "mlp": 0.0, "logits": 0.0}


def _node_xy(name: str, n_heads: int, n_layers: int) -> tuple[float, float]:
    mid = (n_heads - 1) / 2
    if name == "input":
        return 0.0, mid
    if name == "logits":
        return 2.0 * n_layers + 1, mid
    if name.startswith("m"):
        return 2.0 * int(name[1:]) + 2, mid
    layer, head = name[1:].split(".h")
    return 2.0 * int(layer) + 1, float(n_heads - 1 - int(head))


def node_label(name: str) -> str:
    """A graph node name as a component label: ``a3.h1`` -> ``L3H1``, ``m2`` -> ``MLP2``;
    anything else (``input``, ``logits``, a label already) unchanged."""
    if name.startswith("a") and ".h" in name:
        layer, head = name[1:].split(".h")
        return f"L{int(layer)}H{int(head)}"
    if name.startswith("m") and name[1:].isdigit():
        return f"MLP{int(name[1:])}"
    return name


def label_node(label: str) -> str | None:
    """The inverse of :func:`node_label` for heads and MLPs (``L3H1`` -> ``a3.h1``, ``MLP2`` ->
    ``m2``); None for anything else."""
    from interp import components as C

    try:
        comp = C.parse(label)
    except ValueError:
        return None
    if isinstance(comp, C.Head):
        return f"a{comp.layer}.h{comp.head}"
    if isinstance(comp, C.MLP):
        return f"m{comp.layer}"
    return None


def graph_figure(graph, *, title: str | None = None, selected: str | None = None,
                 max_edges: int = 400, show_all_nodes: bool = True) -> go.Figure:
    """The circuit of ``graph`` (its ``in_graph`` edges; all edges with a score if nothing is
    selected yet, strongest ``max_edges`` first). ``selected``: a node name (``a1.h2``, ``m0``)
    to highlight."""
    import torch

    if graph.scores is None:
        raise ValueError("the graph has no scores yet: run interp.circuits.discover first.")
    L, H = graph.n_layers, graph.n_heads
    mask = graph.in_graph if graph.in_graph is not None else torch.ones_like(graph.scores,
                                                                             dtype=torch.bool)
    idx = mask.nonzero()[:, 0]
    idx = idx[graph.scores[idx].abs().argsort(descending=True)][:max_edges]
    top = float(graph.scores[idx].abs().max()) if len(idx) else 1.0
    fig = go.Figure()
    used: set[str] = set()
    mids_x, mids_y, mids_text = [], [], []
    degree: dict[str, int] = {}
    for i in idx.tolist():
        src = graph.senders[int(graph.edge_src[i])]
        port = graph.ports[int(graph.edge_dst[i])]
        node, _, kind = port.partition("<")
        kind = kind[:-1] if kind else ("logits" if port == "logits" else "mlp")
        x0, y0 = _node_xy(src, H, L)
        x1, y1 = _node_xy(node, H, L)
        y1 += _PORT_DY[kind]
        w = float(graph.scores[i])
        width = 0.8 + 4.2 * abs(w) / top
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=2, standoff=9, arrowwidth=width,
                           arrowsize=max(0.5, 1.4 / width),  # heads ~ the same size at any width
                           arrowcolor=KIND_COLOURS[kind], opacity=0.85 if w >= 0 else 0.55)
        used.add(kind)
        degree[src] = degree.get(src, 0) + 1
        degree[node] = degree.get(node, 0) + 1
        mids_x.append(0.5 * (x0 + x1))
        mids_y.append(0.5 * (y0 + y1))
        mids_text.append(f"{node_label(src)} → {node_label(node)} ({KIND_NAMES[kind]})<br>score {w:+.4g}")
    for kind in KIND_COLOURS:  # legend entries for the arrow colours
        if kind in used:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=KIND_NAMES[kind],
                                     line=dict(color=KIND_COLOURS[kind], width=3)))
    fig.add_trace(go.Scatter(x=mids_x, y=mids_y, mode="markers", name="edge (hover)",
                             marker=dict(size=7, color="rgba(0,0,0,0.01)"),
                             hovertext=mids_text, hoverinfo="text", showlegend=False))
    names = graph.nodes if show_all_nodes else [n for n in graph.nodes if n in degree]
    xs, ys, labels, colours, sizes, hover = [], [], [], [], [], []
    for n in names:
        x, y = _node_xy(n, H, L)
        xs.append(x)
        ys.append(y)
        on = n in degree
        labels.append(node_label(n))
        colours.append("#D55E00" if n == selected else ("#333333" if on else "#D9D9D9"))
        sizes.append(18 if n == selected else (13 if on else 8))
        hover.append(f"{node_label(n)}: {degree.get(n, 0)} circuit edges" + (
            "<br>click to select" if n.startswith(("a", "m")) else ""))
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers+text", name="nodes", text=labels, textposition="top center",
        textfont=dict(size=10), customdata=names, hovertext=hover, hoverinfo="text",
        marker=dict(size=sizes, color=colours, line=dict(color="white", width=1)),
        showlegend=False))
    ticks = [0.0] + [v for layer in range(L) for v in (2.0 * layer + 1, 2.0 * layer + 2)]
    ticks.append(2.0 * L + 1)
    text = ["input"] + [t for layer in range(L) for t in (f"attn {layer}", f"MLP {layer}")]
    fig.update_layout(
        title=dict(text=title or f"Circuit: {int(mask.sum())} edges", font=dict(size=14)),
        height=max(400, 60 * H + 200),
        xaxis=dict(tickvals=ticks, ticktext=text + ["logits"], showgrid=False, zeroline=False,
                   range=[-0.6, 2 * L + 1.6]),
        yaxis=dict(tickvals=list(range(H)), ticktext=[f"H{H - 1 - h}" for h in range(H)],
                   showgrid=False, zeroline=False, range=[-0.8, H - 0.2]),
        legend=dict(orientation="h", yanchor="top", y=-0.06, xanchor="center", x=0.5,
                    title_text="arrow into:"),
        margin=dict(l=40, r=20, t=50, b=70), plot_bgcolor="white", clickmode="event+select",
        dragmode=False)
    return fig

"""Circuit graphs (nodes = embeddings, heads, MLPs, logits; weighted edges) and faithfulness.

A ``Circuit`` is built from scored edges (edge attribution, path patching) or from a set of
components, drawn as a layered plotly network, exported as JSON or Graphviz DOT, and checked for
faithfulness: ``(M(circuit) - M(corrupted)) / (M(model) - M(corrupted))`` with every head outside
the circuit mean-ablated over the corrupted prompts (Wang et al. 2022 use the p_ABC mean;
Hanna et al. 2024 the same normalisation for EAP-IG circuits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import plotly.graph_objects as go
import torch

from interp import hooks as H
from interp.metrics import MetricSpec, resolve_metric
from interp.models import describe
from interp.prompts import PromptSet

_HEAD = re.compile(r"^L(\d+)H(\d+)$")
_MLP = re.compile(r"^(?:MLP|mlp)(\d+)$")


def node_layer(node: str, n_layers: int) -> float:
    """Drawing depth of a node name: input -1, L3H2 / MLP3 -> 3 (MLP a half step later), logits L."""
    if node in ("input", "embed"):
        return -1
    if node == "logits":
        return n_layers
    if m := _HEAD.match(node):
        return int(m.group(1))
    if m := _MLP.match(node):
        return int(m.group(1)) + 0.5
    raise ValueError(f"unknown node name {node!r}: use 'input', 'L<l>H<h>', 'MLP<l>' or 'logits'")


@dataclass
class Circuit:
    """Nodes and weighted directed edges ``(src, dst, score)``."""

    nodes: list[str]
    edges: list[tuple[str, str, float]] = field(default_factory=list)
    n_layers: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for n in self.nodes:
            node_layer(n, self.n_layers)
        known = set(self.nodes)
        for s, d, _ in self.edges:
            if s not in known or d not in known:
                raise ValueError(f"edge {s}->{d} names a node that is not in the circuit")

    @classmethod
    def from_edges(
        cls,
        edges: Iterable[tuple[str, str, float]],
        *,
        n_layers: int,
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> Circuit:
        """Keep the ``top_n`` edges by |score| and/or those with |score| >= ``threshold``."""
        ranked = sorted(((s, d, float(w)) for s, d, w in edges), key=lambda e: -abs(e[2]))
        if threshold is not None:
            ranked = [e for e in ranked if abs(e[2]) >= threshold]
        if top_n is not None:
            ranked = ranked[:top_n]
        nodes = list(dict.fromkeys([n for s, d, _ in ranked for n in (s, d)]))
        return cls(nodes=nodes, edges=ranked, n_layers=n_layers,
                   meta={"top_n": top_n, "threshold": threshold})

    @classmethod
    def from_components(cls, components: Sequence[str], *, n_layers: int) -> Circuit:
        return cls(nodes=list(dict.fromkeys(components)), n_layers=n_layers)

    def heads(self) -> list[tuple[int, int]]:
        return [(int(m.group(1)), int(m.group(2))) for n in self.nodes if (m := _HEAD.match(n))]

    def to_json(self) -> dict:
        return {"nodes": self.nodes, "edges": [list(e) for e in self.edges],
                "n_layers": self.n_layers, "meta": self.meta}

    def to_dot(self) -> str:
        lines = ["digraph circuit {", "  rankdir=BT;"]
        lines += [f'  "{n}";' for n in self.nodes]
        lines += [f'  "{s}" -> "{d}" [label="{w:.3g}"];' for s, d, w in self.edges]
        return "\n".join(lines + ["}"])

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)

    def plot(self, *, title: str = "Circuit") -> go.Figure:
        """Layered drawing: depth on the y axis (input at the bottom), nodes spread on x."""
        by_depth: dict[float, list[str]] = {}
        for n in self.nodes:
            by_depth.setdefault(node_layer(n, self.n_layers), []).append(n)
        pos = {}
        widest = max((len(ns) for d, ns in by_depth.items() if d != int(d)), default=0)
        heads_width = max((len(ns) for d, ns in by_depth.items() if d == int(d)), default=1)
        for depth, ns in by_depth.items():
            # MLP rows (half-step depths) sit to the right of the head rows, so a layer's MLP
            # label never lands on the next layer's head labels
            shift = (heads_width + widest) / 2 + 0.5 if depth != int(depth) else 0.0
            for i, n in enumerate(sorted(ns)):
                pos[n] = (i - (len(ns) - 1) / 2 + shift, depth)
        fig = go.Figure()
        wmax = max([abs(w) for _, _, w in self.edges] or [1.0]) or 1.0
        for s, d, w in self.edges:
            (x0, y0), (x1, y1) = pos[s], pos[d]
            fig.add_trace(go.Scatter(
                x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="text",
                text=f"{s} → {d}: {w:.3g}", showlegend=False,
                line=dict(width=1 + 5 * abs(w) / wmax, color="#2b6cb0" if w >= 0 else "#c53030"),
            ))
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in self.nodes], y=[pos[n][1] for n in self.nodes],
            mode="markers+text", text=self.nodes, textposition="top center", showlegend=False,
            marker=dict(size=18, color=["#805ad5" if _HEAD.match(n) else "#dd6b20" if _MLP.match(n)
                                        else "#718096" for n in self.nodes]),
        ))
        fig.update_layout(title=title, xaxis=dict(visible=False),
                          yaxis=dict(title="layer", dtick=1), height=480)
        return fig


def _mean_z(model, tokens: torch.Tensor, n_layers: int) -> dict[int, torch.Tensor]:
    names = [H.z(layer) for layer in range(n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {layer: cache[H.z(layer)].mean(0) for layer in range(n_layers)}  # [pos, head, d_head]


def faithfulness(
    model,
    prompts: PromptSet,
    circuit: Circuit | Iterable[tuple[int, int]],
    *,
    metric: MetricSpec = "logit_diff",
    ablation: Literal["mean", "zero"] = "mean",
) -> dict[str, float]:
    """Faithfulness of a set of heads: heads outside it are ablated (mean over the corrupted
    prompts, per position, or zero) and the metric is normalised between the corrupted run (0)
    and the full model (1). Returns model, circuit, corrupted metrics and the ratio."""
    info = describe(model)
    keep = set(circuit.heads() if isinstance(circuit, Circuit) else [tuple(h) for h in circuit])
    for layer, head in keep:
        info.check_head(layer, head)
    corrupted = prompts.require_corrupted()
    m = resolve_metric(metric)
    means = _mean_z(model, corrupted, info.n_layers) if ablation == "mean" else None

    def hook_for(layer: int):
        drop = [h for h in range(info.n_heads) if (layer, h) not in keep]
        idx = torch.tensor(drop, dtype=torch.long)

        def fn(z, hook):
            z = z.clone()
            if ablation == "mean":
                z[:, :, idx] = means[layer][None, : z.shape[1], idx].to(z.dtype)
            else:
                z[:, :, idx] = 0.0
            return z

        return fn

    fwd = [(H.z(layer), hook_for(layer)) for layer in range(info.n_layers)
           if any((layer, h) not in keep for h in range(info.n_heads))]
    with torch.no_grad():
        full = m.from_full(model(prompts.clean_tokens), prompts).mean().item()
        corr = m.from_full(model(corrupted), prompts).mean().item()
        circ = m.from_full(model.run_with_hooks(prompts.clean_tokens, fwd_hooks=fwd), prompts).mean().item()
    denom = full - corr
    return {"model": full, "circuit": circ, "corrupted": corr,
            "faithfulness": (circ - corr) / denom if abs(denom) > 1e-8 else float("nan"),
            "n_heads": len(keep), "n_heads_total": info.n_layers * info.n_heads}

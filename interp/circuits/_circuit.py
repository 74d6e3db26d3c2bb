"""Circuit graphs (nodes = embeddings, heads, MLPs, logits; weighted edges) and faithfulness.

A ``Circuit`` is built from scored edges (edge attribution, path patching) or from a set of
components, drawn as a layered plotly network, exported as JSON or Graphviz DOT, and checked for
faithfulness: ``(M(circuit) - M(corrupted)) / (M(model) - M(corrupted))`` with every head outside
the circuit mean-ablated over the corrupted prompts (Wang et al. 2022 use the p_ABC mean;
Hanna et al. 2024 the same normalisation for EAP-IG circuits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal

import plotly.graph_objects as go
import torch
from torch import Tensor

from interp import components as C
from interp import hooks as H
from interp.ablation._components import mean_activation
from interp.metrics import MetricSpec, bootstrap_ci, resolve_metric
from interp.models import as_model, describe
from interp.prompts import PromptSet
from interp.results import Result


def node_layer(node: str, n_layers: int) -> float:
    """Drawing depth of a node name: embed -1, L3H2 / ATTN3 -> 3, MLP3 -> 3.5, logits L."""
    return C.depth(_node(node, n_layers), n_layers)


def _node(node, n_layers: int) -> C.Component:
    try:
        return C.parse(node, n_layers=n_layers or None)
    except ValueError as e:
        raise ValueError(f"unknown node name {node!r} ({e})") from None


@dataclass(kw_only=True)
class Circuit(Result):
    """Nodes (component labels, see :mod:`interp.components`) and weighted directed edges
    ``(src, dst, score)``. As a result: ``values[edge]`` holds the edge scores, labelled
    ``"src->dst"``; ``to_frame()`` adds ``src`` and ``dst`` columns. Node names are stored in
    their one printed form (``"l3h2"`` -> ``"L3H2"``, ``"input"`` -> ``"embed"``).
    ``to_json()`` / ``from_json()`` give the plain JSON graph; ``save``/``load`` the shared
    result directory."""

    nodes: list[str] = field(default_factory=list)
    edges: list[tuple[str, str, float]] = field(default_factory=list)
    n_layers: int = 0
    values: Tensor | None = None  # type: ignore[assignment]
    dims: tuple[str, ...] = ("edge",)
    value_name = "score"

    def __post_init__(self) -> None:
        self.n_layers = int(self.n_layers)
        self.nodes = list(dict.fromkeys(C.label(_node(n, self.n_layers)) for n in self.nodes))
        known = set(self.nodes)
        edges = []
        for s, d, w in self.edges:
            s, d = C.label(_node(s, self.n_layers)), C.label(_node(d, self.n_layers))
            if s not in known or d not in known:
                raise ValueError(f"edge {s}->{d} names a node that is not in the circuit")
            edges.append((s, d, float(w)))
        self.edges = edges
        self.values = torch.tensor([w for *_, w in edges], dtype=torch.float64, device="cpu")
        self.dims = ("edge",)
        self.coords = {"edge": [f"{s}->{d}" for s, d, _ in edges]}
        super().__post_init__()

    def _cell_columns(self) -> dict:
        return {"src": [s for s, _, _ in self.edges], "dst": [d for _, d, _ in self.edges]}

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
    def from_components(cls, components, *, n_layers: int) -> Circuit:
        """A node-only circuit from components in any form :func:`interp.components.parse_many`
        reads (``["L3H2", "MLP1"]``, ``"L3H2,MLP1"``, ``[(3, 2)]``)."""
        return cls(nodes=[C.label(c) for c in C.parse_many(components, n_layers=n_layers or None)],
                   n_layers=n_layers)

    def heads(self) -> list[tuple[int, int]]:
        return [(c.layer, c.head) for n in self.nodes if isinstance(c := C.parse(n), C.Head)]

    def to_json(self) -> dict:
        """The graph as plain JSON: ``{"nodes", "edges": [[src, dst, score]], "n_layers", "meta"}``."""
        return {"nodes": self.nodes, "edges": [list(e) for e in self.edges],
                "n_layers": self.n_layers, "meta": self.meta}

    @classmethod
    def from_json(cls, doc: dict) -> Circuit:
        """The inverse of :meth:`to_json`."""
        return cls(nodes=doc["nodes"], edges=[tuple(e) for e in doc.get("edges", [])],
                   n_layers=int(doc.get("n_layers", 0)), meta=dict(doc.get("meta", {})))

    def to_dot(self) -> str:
        lines = ["digraph circuit {", "  rankdir=BT;"]
        lines += [f'  "{n}";' for n in self.nodes]
        lines += [f'  "{s}" -> "{d}" [label="{w:.3g}"];' for s, d, w in self.edges]
        return "\n".join(lines + ["}"])

    def plot(self, *, title: str = "Circuit") -> go.Figure:
        """Layered drawing: depth on the y axis (embed at the bottom), nodes spread on x."""
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
        colour = {C.Head: "#805ad5", C.KVHead: "#805ad5", C.MLP: "#dd6b20"}
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in self.nodes], y=[pos[n][1] for n in self.nodes],
            mode="markers+text", text=self.nodes, textposition="top center", showlegend=False,
            marker=dict(size=18, color=[colour.get(type(C.parse(n)), "#718096") for n in self.nodes]),
        ))
        fig.update_layout(title=title, xaxis=dict(visible=False),
                          yaxis=dict(title="layer", dtick=1), height=480)
        return fig


@dataclass(kw_only=True)
class FaithfulnessResult(Result):
    """``values[run]``: the mean metric of the full model, the circuit (every head outside it
    ablated) and the corrupted run, with ``per_example`` and a bootstrap ``ci``.
    ``faithfulness = (circuit - corrupted) / (model - corrupted)`` (NaN when model and corrupted
    agree). ``heads``: the kept heads' labels."""

    heads: list[str] = field(default_factory=list)
    value_name = "metric"

    def _run(self, name: str) -> float:
        return float(self.values[self.coords["run"].index(name)])

    @property
    def model(self) -> float:
        return self._run("model")

    @property
    def circuit(self) -> float:
        return self._run("circuit")

    @property
    def corrupted(self) -> float:
        return self._run("corrupted")

    @property
    def faithfulness(self) -> float:
        denom = self.model - self.corrupted
        return (self.circuit - self.corrupted) / denom if abs(denom) > 1e-8 else float("nan")

    @property
    def n_heads(self) -> int:
        return len(self.heads)

    @property
    def n_heads_total(self) -> int:
        return int(self.meta["n_heads_total"])

    def plot(self, *, title: str | None = None) -> go.Figure:
        """Bars of the three runs' metric, with the faithfulness in the title."""
        err = None
        if self.ci is not None:
            err = dict(type="data", symmetric=False, array=(self.ci[:, 1] - self.values).tolist(),
                       arrayminus=(self.values - self.ci[:, 0]).tolist())
        fig = go.Figure(go.Bar(x=self.labels("run"), y=self.values.tolist(), error_y=err))
        fig.update_layout(title=title or f"Faithfulness {self.faithfulness:.3f} "
                                         f"({self.n_heads}/{self.n_heads_total} heads kept)",
                          yaxis_title=self.meta.get("metric", "metric"))
        return fig


def _mean_z(model, tokens: torch.Tensor, answer_pos: torch.Tensor,
            n_layers: int) -> dict[int, torch.Tensor]:
    """Per-position mean of every layer's z over the prompts, padding excluded: [pos, head, d]."""
    names = [H.z(layer) for layer in range(n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {layer: mean_activation(cache[H.z(layer)], answer_pos, per_position=True)[0]
            for layer in range(n_layers)}


def faithfulness(
    model,
    prompts: PromptSet,
    circuit,
    *,
    metric: MetricSpec = "logit_diff",
    ablation: Literal["mean", "zero"] = "mean",
    n_boot: int = 1000,
    seed: int = 0,
) -> FaithfulnessResult:
    """Faithfulness of a set of heads: heads outside it are ablated (mean over the corrupted
    prompts, per position, or zero) and the metric is normalised between the corrupted run (0)
    and the full model (1).

    ``circuit``: a :class:`Circuit` (its head nodes) or query heads in any form
    :func:`interp.components.parse_many` reads: ``["L3H2", "L1H0"]``, ``"L3H2,L1H0"``,
    ``[(3, 2)]``, ``[Head(3, 2)]``."""
    model = as_model(model)
    info = describe(model)
    if isinstance(circuit, Circuit):
        keep_heads = [C.Head(a, b) for a, b in circuit.heads()]
        for h in keep_heads:
            C.check(h, **C.sizes(info))
    else:
        keep_heads = C.heads_only(C.parse_many(circuit, **C.sizes(info)), "faithfulness")
    keep = {(h.layer, h.head) for h in keep_heads}
    prompts.check(model)
    corrupted = prompts.require_corrupted()
    m = resolve_metric(metric)
    if ablation not in ("mean", "zero"):
        raise ValueError(f"ablation must be 'mean' or 'zero', not {ablation!r}.")
    means = _mean_z(model, corrupted, prompts.answer_pos, info.n_layers) if ablation == "mean" else None

    def hook_for(layer: int):
        drop = [h for h in range(info.n_heads) if (layer, h) not in keep]
        idx = torch.tensor(drop, dtype=torch.long, device="cpu")

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
        full = m.from_full(model(prompts.clean_tokens), prompts).float().cpu()
        corr = m.from_full(model(corrupted), prompts).float().cpu()
        circ = m.from_full(model.run_with_hooks(prompts.clean_tokens, fwd_hooks=fwd),
                           prompts).float().cpu()
    per = torch.stack([full, circ, corr])  # [run, example]
    res = FaithfulnessResult(
        values=per.mean(-1), dims=("run",), coords={"run": ["model", "circuit", "corrupted"]},
        per_example=per, ci=bootstrap_ci(per, n_boot=n_boot, seed=seed),
        heads=[C.label(h) for h in sorted(keep_heads)],
        meta={"method": "faithfulness", "metric": m.name, "ablation": ablation,
              "n_heads_total": info.n_layers * info.n_heads},
    )
    res.meta["faithfulness"] = res.faithfulness
    return res

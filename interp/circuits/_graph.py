"""The edge-level computational graph of a transformer (EAP-IG / MIB convention).

Nodes that write into the residual stream (*senders*): ``input`` (the embeddings, positional
embeddings included), every attention head ``a{l}.h{h}``, every MLP ``m{l}``. Nodes that read from
it (*receiver ports*): each head's query, key and value inputs ``a{l}.h{h}<q|k|v>`` (per *query*
head, also in grouped-query models), each MLP's input ``m{l}``, and ``logits`` (the final
residual stream, before the final norm). An edge ``u -> p`` exists when ``u`` writes before ``p``
reads: heads of layer ``l`` read from ``input`` and every head and MLP of layers ``< l``; the MLP
of layer ``l`` also reads from the heads of layer ``l``, except in parallel attention+MLP blocks.

With ``L`` layers and ``H`` heads, sequential blocks:
``|E| = 3H·Σ_{l<L}(1 + l(H+1)) + Σ_{l<L}(1 + H + l(H+1)) + 1 + L(H+1)`` (32,491 for GPT-2 small).

A :class:`Graph` holds the edges as index arrays (``edge_src`` into :attr:`Graph.senders`,
``edge_dst`` into :attr:`Graph.ports`), one score per edge, and in-circuit masks for edges and
nodes. Score sign: positive = the edge helps the task (see ``interp.circuits.discover``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

KINDS = ("q", "k", "v")


def n_edges(n_layers: int, n_heads: int, *, parallel_attn_mlp: bool = False) -> int:
    """Closed-form edge count (query heads counted ungrouped)."""
    L, H = n_layers, n_heads
    heads = 3 * H * sum(1 + layer * (H + 1) for layer in range(L))
    own = 0 if parallel_attn_mlp else H
    mlps = sum(1 + own + layer * (H + 1) for layer in range(L))
    return heads + mlps + 1 + L * (H + 1)


@dataclass
class Graph:
    """Senders, receiver ports, edges ``edge_src -> edge_dst`` with ``scores`` and masks.

    ``in_graph[e]`` marks circuit edges; ``nodes_in_graph[n]`` marks circuit nodes over
    :attr:`nodes` (the senders, then ``logits``)."""

    n_layers: int
    n_heads: int
    parallel_attn_mlp: bool = False
    scores: Float[Tensor, " edge"] | None = None
    in_graph: Bool[Tensor, " edge"] | None = None
    nodes_in_graph: Bool[Tensor, " node"] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        L, H = self.n_layers, self.n_heads
        self.senders: list[str] = ["input"]
        self.sender_depth: list[float] = [-1.0]
        mlp_depth = 0.0 if self.parallel_attn_mlp else 0.5
        for layer in range(L):
            self.senders += [f"a{layer}.h{h}" for h in range(H)] + [f"m{layer}"]
            self.sender_depth += [float(layer)] * H + [layer + mlp_depth]
        self.nodes: list[str] = self.senders + ["logits"]
        # ports: per layer q of every head, k of every head, v of every head, then the MLP
        self.ports: list[str] = []
        port_node, port_depth = [], []
        for layer in range(L):
            for kind in KINDS:
                for h in range(H):
                    self.ports.append(f"a{layer}.h{h}<{kind}>")
                    port_node.append(self.sender_index(layer, h))
                    port_depth.append(float(layer))
            self.ports.append(f"m{layer}")
            port_node.append(self.sender_index(layer, None))
            port_depth.append(layer + mlp_depth)
        self.ports.append("logits")
        port_node.append(len(self.senders))
        port_depth.append(float(L + 1))
        self.port_node: Int[Tensor, " port"] = torch.tensor(port_node, device="cpu")
        sd = torch.tensor(self.sender_depth, device="cpu")
        pd = torch.tensor(port_depth, device="cpu")
        valid = sd[None, :] < pd[:, None]  # [port, sender]
        dst, src = valid.nonzero(as_tuple=True)
        self.edge_src: Int[Tensor, " edge"] = src
        self.edge_dst: Int[Tensor, " edge"] = dst
        E = len(src)
        if self.scores is None:
            self.scores = torch.zeros(E, device="cpu")
        if self.in_graph is None:
            self.in_graph = torch.zeros(E, dtype=torch.bool, device="cpu")
        if self.nodes_in_graph is None:
            self.nodes_in_graph = torch.zeros(len(self.nodes), dtype=torch.bool, device="cpu")
        self.scores = (self.scores.detach().float().cpu() if isinstance(self.scores, Tensor)
                       else torch.tensor(self.scores, dtype=torch.float32, device="cpu"))
        if self.scores.shape != (E,) or self.in_graph.shape != (E,):
            raise ValueError(f"scores and in_graph must have one entry per edge ({E}).")

    # --- indexing ---------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model) -> Graph:
        from interp.models import describe

        info = describe(model)
        return cls(info.n_layers, info.n_heads, info.parallel_attn_mlp,
                   meta={"architecture": info.architecture, "n_kv_heads": info.n_kv_heads})

    def sender_index(self, layer: int, head: int | None) -> int:
        """Index of head ``head`` (or the MLP when None) of ``layer`` in :attr:`senders`."""
        base = 1 + layer * (self.n_heads + 1)
        return base + (self.n_heads if head is None else head)

    def port_index(self, layer: int, kind: Literal["q", "k", "v", "mlp", "logits"],
                   head: int = 0) -> int:
        if kind == "logits":
            return len(self.ports) - 1
        base = layer * (3 * self.n_heads + 1)
        return base + (3 * self.n_heads if kind == "mlp" else KINDS.index(kind) * self.n_heads + head)

    @property
    def n_edges(self) -> int:
        return int(self.edge_src.numel())

    def edge_names(self) -> list[str]:
        return [f"{self.senders[s]}->{self.ports[d]}"
                for s, d in zip(self.edge_src.tolist(), self.edge_dst.tolist())]

    def edge_index(self, name: str) -> int:
        src, dst = name.split("->")
        s, d = self.senders.index(src), self.ports.index(dst)
        hit = ((self.edge_src == s) & (self.edge_dst == d)).nonzero()
        if hit.numel() == 0:
            raise KeyError(f"no edge {name!r} in this graph (sender must come before receiver).")
        return int(hit[0, 0])

    def ablation_matrix(self, keep: Bool[Tensor, " edge"] | None = None) -> Float[Tensor, "port sender"]:
        """``W[p, u] = 1`` where edge ``u -> p`` exists and is *not* kept (it carries the ablated
        sender output), else 0."""
        keep = self.in_graph if keep is None else keep
        W = torch.zeros(len(self.ports), len(self.senders), device="cpu")
        W[self.edge_dst, self.edge_src] = (~keep.bool()).float()
        return W

    # --- selection ----------------------------------------------------------------------------
    def _key(self, absolute: bool) -> Tensor:
        return self.scores.abs() if absolute else self.scores

    def reset(self) -> Graph:
        self.in_graph = torch.zeros(self.n_edges, dtype=torch.bool, device="cpu")
        self.nodes_in_graph = torch.zeros(len(self.nodes), dtype=torch.bool, device="cpu")
        return self

    def top_n(self, n: int, *, absolute: bool = True, prune: bool = True) -> Graph:
        """Keep the ``n`` edges with the largest score (``|score|`` when ``absolute``); edges
        with score exactly 0 are never selected."""
        key = self._key(absolute)
        order = torch.argsort(key, descending=True, stable=True)[: max(0, int(n))]
        order = order[self.scores[order] != 0]
        if not absolute:
            order = order[self.scores[order] > 0]
        self.reset()
        self.in_graph[order] = True
        return self._finish(prune)

    def threshold(self, tau: float, *, absolute: bool = True, prune: bool = True) -> Graph:
        """Keep edges with score (``|score|``) >= ``tau`` and score != 0."""
        self.reset()
        self.in_graph = (self._key(absolute) >= tau) & (self.scores != 0)
        return self._finish(prune)

    def greedy(self, n: int, *, absolute: bool = True, prune: bool = True) -> Graph:
        """Grow back from ``logits``: repeatedly add the best-scoring edge whose receiver node is
        already in the circuit, until ``n`` edges (or no candidate with nonzero score)."""
        key = self._key(absolute).clone()
        key[self.scores == 0] = -float("inf")
        if not absolute:
            key[self.scores <= 0] = -float("inf")
        self.reset()
        active = torch.zeros(len(self.nodes), dtype=torch.bool, device="cpu")
        active[-1] = True
        recv_node = self.port_node[self.edge_dst]
        for _ in range(int(n)):
            cand = active[recv_node] & ~self.in_graph
            masked = torch.where(cand, key, torch.full_like(key, -float("inf")))
            best = int(masked.argmax())
            if masked[best] == -float("inf"):
                break
            self.in_graph[best] = True
            active[self.edge_src[best]] = True
        return self._finish(prune)

    def _finish(self, prune: bool) -> Graph:
        if prune:
            return self.prune()
        self._set_nodes()
        return self

    def _set_nodes(self) -> None:
        nodes = torch.zeros(len(self.nodes), dtype=torch.bool, device="cpu")
        nodes[self.edge_src[self.in_graph]] = True
        nodes[self.port_node[self.edge_dst[self.in_graph]]] = True
        self.nodes_in_graph = nodes

    def prune(self) -> Graph:
        """Drop edges not on an ``input -> ... -> logits`` path of circuit edges, to a fixed
        point; nodes in the circuit are the endpoints of what is left."""
        recv_node = self.port_node[self.edge_dst]
        while True:
            e = self.in_graph
            fwd = torch.zeros(len(self.nodes), dtype=torch.bool, device="cpu")
            fwd[0] = True  # input
            bwd = torch.zeros(len(self.nodes), dtype=torch.bool, device="cpu")
            bwd[-1] = True  # logits
            # edges run from lower to higher depth: one sweep in depth order reaches everything
            order = sorted(range(len(self.nodes) - 1), key=lambda i: self.sender_depth[i])
            for i in order:
                if not fwd[i]:
                    fwd[i] = bool((e & (recv_node == i) & fwd[self.edge_src]).any())
            for i in reversed(order):
                if not bwd[i]:
                    bwd[i] = bool((e & (self.edge_src == i) & bwd[recv_node]).any())
            keep = e & fwd[self.edge_src] & bwd[recv_node]
            if torch.equal(keep, e):
                break
            self.in_graph = keep
        self._set_nodes()
        return self

    @property
    def n_in_graph(self) -> int:
        return int(self.in_graph.sum())

    # --- export -------------------------------------------------------------------------------
    def to_eap_json(self) -> dict[str, Any]:
        """EAP-IG ``Graph.to_json``-style dict: ``cfg``, ``nodes`` {name: in_graph},
        ``edges`` {"u->p": {"score", "in_graph"}}."""
        return {
            "cfg": {"n_layers": self.n_layers, "n_heads": self.n_heads,
                    "parallel_attn_mlp": self.parallel_attn_mlp},
            "nodes": {n: bool(b) for n, b in zip(self.nodes, self.nodes_in_graph.tolist())},
            "edges": {name: {"score": float(s), "in_graph": bool(g)} for name, s, g in
                      zip(self.edge_names(), self.scores.tolist(), self.in_graph.tolist())},
        }

    def to_dot(self) -> str:
        """Graphviz DOT of the circuit edges (blue = positive score, red = negative)."""
        lines = ["digraph circuit {", "  rankdir=BT;"]
        lines += [f'  "{n}";' for n, b in zip(self.nodes, self.nodes_in_graph.tolist()) if b]
        for i in self.in_graph.nonzero()[:, 0].tolist():
            s, p = self.senders[int(self.edge_src[i])], self.ports[int(self.edge_dst[i])]
            node, _, kind = p.partition("<")
            w = float(self.scores[i])
            lab = f"{kind[:-1]} " if kind else ""
            lines.append(f'  "{s}" -> "{node}" [label="{lab}{w:.3g}", '
                         f'color="{"blue" if w >= 0 else "red"}"];')
        return "\n".join(lines + ["}"])

    def plot(self, *, title: str | None = None, selected: str | None = None,
             max_edges: int = 400):
        """A layered plotly drawing of the circuit edges (see :func:`interp.viz.graph_figure`):
        arrows coloured by the input they feed (q/k/v/MLP/logits), width by |score|."""
        from interp.viz import graph_figure

        return graph_figure(self, title=title, selected=selected, max_edges=max_edges)

    def to_circuit(self):
        """The circuit as an ``interp.circuits.Circuit`` (q/k/v edges between the same two
        nodes summed), for drawing."""
        from interp.circuits._circuit import Circuit

        def label(n: str) -> str:
            if n.startswith("a"):
                layer, h = n[1:].split(".h")
                return f"L{layer}H{h}"
            return f"MLP{n[1:]}" if n.startswith("m") else n

        agg: dict[tuple[str, str], float] = {}
        for i in self.in_graph.nonzero()[:, 0].tolist():
            s = label(self.senders[int(self.edge_src[i])])
            d = label(self.nodes[int(self.port_node[self.edge_dst[i]])])
            agg[(s, d)] = agg.get((s, d), 0.0) + float(self.scores[i])
        nodes = [label(n) for n, b in zip(self.nodes, self.nodes_in_graph.tolist()) if b]
        return Circuit(nodes=nodes, edges=[(s, d, w) for (s, d), w in agg.items()],
                       n_layers=self.n_layers, meta=dict(self.meta))

    def save(self, path: str | Path) -> Path:
        """Write ``path/result.json`` (shape, meta) and ``path/tensors.safetensors``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"scores": self.scores.contiguous(), "in_graph": self.in_graph.contiguous(),
                   "nodes_in_graph": self.nodes_in_graph.contiguous()},
                  str(path / "tensors.safetensors"))
        doc = {"type": "Graph", "n_layers": self.n_layers, "n_heads": self.n_heads,
               "parallel_attn_mlp": self.parallel_attn_mlp, "n_edges": self.n_edges,
               "meta": self.meta}
        (path / "result.json").write_text(json.dumps(doc, indent=1, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        from safetensors.torch import load_file

        path = Path(path)
        doc = json.loads((path / "result.json").read_text())
        if doc.get("type") != "Graph":
            raise ValueError(f"{path} holds a {doc.get('type')!r}, not a saved Graph.")
        t = load_file(str(path / "tensors.safetensors"))
        return cls(doc["n_layers"], doc["n_heads"], doc["parallel_attn_mlp"], scores=t["scores"],
                   in_graph=t["in_graph"], nodes_in_graph=t["nodes_in_graph"], meta=doc["meta"])

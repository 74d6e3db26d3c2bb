"""ACDC (Conmy et al. 2023): automatic circuit discovery by pruning edges one at a time.

Start from the full graph. Visit the receivers from the logits back (reverse topological
order: the logits, then each layer's MLP and its heads' q/k/v ports, last layer first); for
each edge into the receiver, latest sender first, remove it tentatively (it then carries the
corrupted run's sender output, or the mean) and evaluate the circuit. With the default metric
``"kl"`` (KL divergence of the circuit's next-token distribution at the answer position from
the clean model's), the edge stays removed when the KL grows by less than ``threshold``; with a
task metric (e.g. ``"logit_diff"``) when the metric moves by less than ``threshold`` in absolute
value. Removed edges stay removed for the rest of the run. A receiver none of whose outgoing
edges is still in the circuit cannot affect the output: its incoming edges are removed without
an evaluation (score 0).

One evaluation is one forward of every prompt (``CircuitRunner.metric``); the decisions are
sequential (each depends on every earlier one), so they are not batched. ``scores`` holds, for
each evaluated edge, the change its removal caused (KL increase, or absolute metric change);
``in_graph`` the edges kept.
"""

from __future__ import annotations

from typing import Literal

import torch
from tqdm.auto import tqdm

from interp.circuits._evaluate import CircuitRunner
from interp.circuits._graph import Graph
from interp.metrics import MetricSpec
from interp.prompts import PromptSet


def acdc(model, prompts: PromptSet, *, threshold: float = 0.01, metric: MetricSpec = "kl",
         ablation: Literal["corrupted", "mean"] = "corrupted", progress: bool = True) -> Graph:
    """Run ACDC (see the module docstring) and return the graph with the kept edges in the
    circuit (``in_graph``), pruned of dangling edges."""
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}.")
    g = Graph.from_model(model)
    run = CircuitRunner(model, prompts, g, metric=metric, ablation=ablation)
    is_kl = metric == "kl"
    E = g.n_edges
    keep = torch.ones(E, dtype=torch.bool, device="cpu")
    scores = torch.zeros(E, device="cpu")
    current = run.metric(keep)
    port_order = sorted(range(len(g.ports)), key=lambda p: (-_port_depth(g, p), p))
    n_eval = 0
    bar = tqdm(total=E, desc="ACDC", disable=not progress, leave=False)
    for port in port_order:
        incoming = (g.edge_dst == port).nonzero()[:, 0].tolist()
        incoming.sort(key=lambda e: -int(g.edge_src[e]))  # latest sender first
        node = int(g.port_node[port])
        alive = node == len(g.nodes) - 1 or bool(keep[g.edge_src == node].any())
        for e in incoming:
            bar.update(1)
            if not alive:
                keep[e] = False
                continue
            keep[e] = False
            new = run.metric(keep)
            n_eval += 1
            change = (new - current) if is_kl else abs(new - current)
            scores[e] = change
            if change < threshold:
                current = new
            else:
                keep[e] = True
    bar.close()
    g.scores = scores
    g.in_graph = keep
    g.prune()
    g.meta.update({"method": "acdc", "threshold": float(threshold), "metric": run.m.name,
                   "ablation": ablation, "evaluations": n_eval, "final_metric": current,
                   "sign_convention": "score = KL increase (or |metric change|) when the edge "
                                      "was removed; kept edges have score >= threshold"})
    return g


def _port_depth(g: Graph, port: int) -> float:
    """Forward order of a receiving port (the logits last)."""
    name = g.ports[port]
    if name == "logits":
        return float(g.n_layers + 1)
    if name.startswith("m"):
        return int(name[1:]) + (0.0 if g.parallel_attn_mlp else 0.5)
    return float(int(name[1:].split(".")[0]))

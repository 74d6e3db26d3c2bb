"""Running a circuit at edge level, faithfulness, and MIB's CPR / CMD curves.

A circuit is a set of kept edges. Running it: the clean input goes through the model, and every
receiver port ``p`` reads ``resid - Σ_{u -> p not kept} (out_u(run) - out_u(ref))``: a kept edge
carries the sender's output in this run, any other edge the sender's output on the reference
(the corrupted prompts; with ``ablation="mean"`` their mean over examples, per position). With no
edge kept this is the corrupted model; with every edge kept, the clean model.

Faithfulness ``f = (m(C) - m(∅)) / (m(full) - m(∅))`` on the batch-mean metric. The curve keeps
the top ``s%`` of edges for ``s`` in ``SIZES``; CPR is the trapezoid area under ``f`` with edges
ranked by signed score (higher is better), CMD the area under ``|1 - f|`` with edges ranked by
``|score|`` (lower is better), both over the edge fraction on a linear axis (Mueller et al.
2025, MIB). Edges are ranked as scored: no pruning (a dangling edge changes nothing when run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool
from torch import Tensor

from interp.circuits._discover import PortForward, check_inputs
from interp.circuits._graph import Graph
from interp.metrics import MetricSpec, logits_at, resolve_metric
from interp.prompts import PromptSet
from interp.results import Result

SIZES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)  # percent of edges


class CircuitRunner:
    """Clean/reference sender outputs cached once; :meth:`metric` runs any set of kept edges."""

    def __init__(self, model, prompts: PromptSet, graph: Graph, *,
                 metric: MetricSpec = "logit_diff",
                 ablation: Literal["corrupted", "mean"] = "corrupted") -> None:
        if ablation not in ("corrupted", "mean"):
            raise ValueError(f"ablation must be 'corrupted' or 'mean', got {ablation!r}.")
        ref = Graph.from_model(model)
        if (ref.n_layers, ref.n_heads, ref.parallel_attn_mlp) != (
                graph.n_layers, graph.n_heads, graph.parallel_attn_mlp):
            raise ValueError("the graph was built for another model shape "
                             f"({graph.n_layers} layers x {graph.n_heads} heads).")
        self.model, self.prompts, self.graph, self.ablation = model, prompts, graph, ablation
        self.clean, corr = check_inputs(model, prompts)
        if ablation == "mean" and not prompts.aligned:
            raise ValueError("mean ablation averages per position, so every prompt must end at "
                             "the same position; use ablation='corrupted' for ragged prompts.")
        self.fw = PortForward(model, graph)
        with torch.no_grad():
            self.logits_clean = self.fw.run(self.clean)
            self.fw.run(corr)
            z = self.fw.sent()
        self.ref = z.mean(0, keepdim=True).expand_as(z) if ablation == "mean" else z
        self.m = resolve_metric(
            metric, clean_answer_logits=logits_at(self.logits_clean, prompts.answer_pos))
        self.n_src = torch.bincount(graph.edge_dst, minlength=len(graph.ports))

    def per_example(self, keep: Bool[Tensor, " edge"]) -> Tensor:
        """Metric per example with only the ``keep`` edges carrying this run's sender outputs."""
        W = self.graph.ablation_matrix(keep.bool()).to(self.ref.device, self.ref.dtype)
        fw, L = self.fw, self.graph.n_layers

        def patch(p0: int, layer: int, x: Tensor) -> Tensor:
            n_u = int(self.n_src[p0])
            w = W[p0:p0 + x.shape[2], :n_u]
            if not bool(w.any()):
                return x
            parts = [fw.out[(-1, "i")]] + [fw.out[(j, k)] for j in range(min(layer + 1, L))
                                           for k in ("a", "m") if (j, k) in fw.out]
            cur = torch.cat(parts, dim=2)[:, :, :n_u]
            return x - torch.einsum("bsud,nu->bsnd", cur - self.ref[:, :, :n_u], w)

        with torch.no_grad():
            logits = fw.run(self.clean, patch)
        return self.m.from_full(logits, self.prompts)

    def metric(self, keep: Bool[Tensor, " edge"]) -> float:
        return float(self.per_example(keep).mean())


def evaluate(model, prompts: PromptSet, graph: Graph, *, metric: MetricSpec = "logit_diff",
             ablation: Literal["corrupted", "mean"] = "corrupted") -> dict[str, float]:
    """Faithfulness of ``graph``'s circuit (its ``in_graph`` edges): metric of the circuit, of
    the full model and of the empty circuit, and ``f``."""
    run = CircuitRunner(model, prompts, graph, metric=metric, ablation=ablation)
    E = graph.n_edges
    full = run.metric(torch.ones(E, dtype=torch.bool, device="cpu"))
    empty = run.metric(torch.zeros(E, dtype=torch.bool, device="cpu"))
    circ = run.metric(graph.in_graph)
    return {"circuit": circ, "full": full, "empty": empty, "n_edges": graph.n_in_graph,
            "faithfulness": _faith(circ, full, empty)}


def _faith(m: float, full: float, empty: float) -> float:
    d = full - empty
    return (m - empty) / d if abs(d) > 1e-8 else float("nan")


def _area(x: list[float], y: list[float]) -> float:
    return float(sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1)))


@dataclass(kw_only=True)
class FaithfulnessCurve(Result):
    """``values[ranking, size]``: faithfulness of the top ``size``% edges, ranked by signed
    score (row 0, for CPR) or by ``|score|`` (row 1, for CMD). ``meta``: ``cpr``, ``cmd``,
    ``full``, ``empty``, ``n_edges`` per size, ``method``."""

    value_name = "faithfulness"

    @property
    def sizes(self) -> list[float]:
        """The circuit sizes, in percent of edges (the ``size`` axis labels as numbers)."""
        return [float(x) for x in self.coords["size"]]

    @property
    def cpr(self) -> float:
        return float(self.meta["cpr"])

    @property
    def cmd(self) -> float:
        return float(self.meta["cmd"])

    def table(self):
        """One row per size: percent, edges, f (signed ranking), f (|score| ranking)."""
        import pandas as pd

        return pd.DataFrame({"percent": self.sizes, "edges": self.meta["n_edges"],
                             "f_signed": self.values[0].tolist(),
                             "f_abs": self.values[1].tolist()})

    def plot(self, *, title: str | None = None):
        import plotly.graph_objects as go

        fig = go.Figure()
        x = self.sizes
        fig.add_trace(go.Scatter(x=x, y=self.values[0].tolist(), mode="lines+markers",
                                 name=f"signed ranking (CPR {self.cpr:.3g})"))
        fig.add_trace(go.Scatter(x=x, y=self.values[1].tolist(), mode="lines+markers",
                                 name=f"|score| ranking (CMD {self.cmd:.3g})"))
        fig.add_hline(y=1.0, line_dash="dot", line_color="gray")
        fig.update_layout(title=title or f"Faithfulness ({self.meta.get('method', 'scores')})",
                          xaxis={"title": "% of edges kept", "type": "log"},
                          yaxis={"title": "faithfulness f"}, height=420)
        return fig


def faithfulness_curve(model, prompts: PromptSet, graph: Graph, *,
                       sizes: tuple[float, ...] = SIZES, metric: MetricSpec = "logit_diff",
                       ablation: Literal["corrupted", "mean"] = "corrupted") -> FaithfulnessCurve:
    """Faithfulness of the top-``s``% edges of ``graph.scores`` for each ``s`` in ``sizes``,
    with CPR and CMD (see the module docstring)."""
    if not sizes or any(not 0 < s <= 100 for s in sizes) or list(sizes) != sorted(sizes):
        raise ValueError("sizes must be increasing percentages in (0, 100].")
    run = CircuitRunner(model, prompts, graph, metric=metric, ablation=ablation)
    E = graph.n_edges
    full = run.metric(torch.ones(E, dtype=torch.bool, device="cpu"))
    empty = run.metric(torch.zeros(E, dtype=torch.bool, device="cpu"))
    counts = [max(0, min(E, round(s / 100 * E))) for s in sizes]
    rows = []
    for key in (graph.scores, graph.scores.abs()):
        order = torch.argsort(key, descending=True, stable=True)
        f = []
        for k in counts:
            keep = torch.zeros(E, dtype=torch.bool, device="cpu")
            keep[order[:k]] = True
            f.append(_faith(run.metric(keep), full, empty))
        rows.append(f)
    x = [s / 100 for s in sizes]
    cpr = _area(x, rows[0])
    cmd = _area(x, [abs(1 - v) for v in rows[1]])
    meta = {"cpr": cpr, "cmd": cmd, "full": full, "empty": empty, "n_edges": counts,
            "n_edges_total": E, "ablation": ablation, "method": graph.meta.get("method"),
            "metric": run.m.name, "axis": "edge fraction (0-1), trapezoid rule, linear"}
    return FaithfulnessCurve(values=torch.tensor(rows, device="cpu"), dims=("ranking", "size"),
                             coords={"ranking": ["signed", "abs"], "size": list(sizes)},
                             meta=meta)

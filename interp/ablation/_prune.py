"""Head importance and greedy pruning (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really
Better than One?"), following the normalisation of the HF ``bertology`` port.

A gate ``xi[layer, head]`` (1 by default, 0 for a pruned head) multiplies each query head's
``hook_z`` slice. Importance ``I_h`` is ``|d loss / d xi_h|`` accumulated per batch, divided by
the number of loss tokens, then l2-normalised within each layer and min-max normalised over all
heads. The loss is the cross-entropy of each prompt's answer at its answer position
(``loss="answer"``), or the next-token loss over every real token (``loss="sequence"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from interp import components as C
from interp import hooks as H
from interp._bridge import check_finite_grads, drop_graph_state
from interp.ablation._components import scoped_hooks
from interp.heads import HeadScores
from interp.metrics import MetricSpec, logits_at, resolve_metric
from interp.models import as_model, describe
from interp.prompts import PromptSet
from interp.results import Result

LossKind = Literal["answer", "sequence"]


def gate_hooks(gates: Float[Tensor, "layer head"]) -> list:
    """Hooks multiplying each query head's z by its gate (gradients flow to ``gates``)."""

    def make(layer: int):
        def hook(z: Tensor, hook) -> Tensor:
            return z * gates[layer].to(device=z.device, dtype=z.dtype)[None, None, :, None]

        return hook

    return [(H.z(layer), make(layer)) for layer in range(gates.shape[0])]


def _task_loss(logits: Tensor, prompts: PromptSet, loss: LossKind) -> tuple[Tensor, int]:
    """(summed negative log-likelihood, number of tokens it covers)."""
    if loss == "answer":
        logp = logits_at(logits, prompts.answer_pos).float().log_softmax(-1)
        nll = -logp.gather(-1, prompts.answer_ids.to(logp.device)[:, None])[:, 0]
        return nll.sum(), len(prompts)
    toks = prompts.clean_tokens.to(logits.device)
    logp = logits[:, :-1].float().log_softmax(-1)
    nll = -logp.gather(-1, toks[:, 1:, None])[..., 0]
    mask = torch.arange(toks.shape[1] - 1, device=logits.device)[None] < prompts.answer_pos.to(logits.device)[:, None]
    return (nll * mask).sum(), int(mask.sum())


def _rows(prompts: PromptSet, start: int, stop: int) -> PromptSet:
    """Prompts ``start:stop`` (only the fields the loss reads)."""
    return PromptSet(clean_tokens=prompts.clean_tokens[start:stop], answer_ids=prompts.answer_ids[start:stop],
                     answer_pos=prompts.answer_pos[start:stop], pad_id=prompts.pad_id)


def raw_importance(
    model, prompts: PromptSet, *, mask: Tensor | None = None, loss: LossKind = "answer",
    batch_size: int | None = None,
) -> Float[Tensor, "layer head"]:
    """sum over batches of |d(mean batch loss)/d gate|, divided by the total token count."""
    if loss not in ("answer", "sequence"):
        raise ValueError(f"loss must be 'answer' or 'sequence', not {loss!r}.")
    info = describe(model)
    base = torch.ones(info.n_layers, info.n_heads, device="cpu") if mask is None else mask.detach().float().cpu()
    bs = batch_size or len(prompts)
    acc = torch.zeros(info.n_layers, info.n_heads, device="cpu")
    total = 0
    device = next(model.parameters()).device
    for start in range(0, len(prompts), bs):
        batch = _rows(prompts, start, start + bs)
        gates = base.clone().to(device).requires_grad_(True)
        with scoped_hooks(model, gate_hooks(gates)), torch.enable_grad():
            logits = model(batch.clean_tokens)
            drop_graph_state(model)
            nll, count = _task_loss(logits, batch, loss)
            (grad,) = torch.autograd.grad(nll / max(count, 1), gates)
            check_finite_grads([grad], "head_importance")
        acc += grad.detach().abs().cpu()
        total += count
    return acc / max(total, 1)


def normalise_importance(raw: Float[Tensor, "layer head"], *, exponent: float = 2.0) -> Float[Tensor, "layer head"]:
    """l_p-normalise within each layer, then min-max over all heads (bertology)."""
    norm = raw.pow(exponent).sum(-1, keepdim=True).pow(1.0 / exponent)
    x = raw / (norm + 1e-20)
    return (x - x.min()) / (x.max() - x.min() + 1e-20)


def head_importance(
    model,
    prompts: PromptSet,
    *,
    loss: LossKind = "answer",
    normalize: bool = True,
    batch_size: int | None = None,
    mask: Tensor | None = None,
) -> HeadScores:
    """Michel et al. head importance ``[layer, head]``; raw values in ``meta["raw"]``."""
    model = as_model(model)
    prompts.check(model)
    raw = raw_importance(model, prompts, mask=mask, loss=loss, batch_size=batch_size)
    vals = normalise_importance(raw) if normalize else raw
    return HeadScores.from_tensor(
        model, vals, title="Head importance (Michel et al. 2019)", raw=raw.tolist(), loss=loss,
        normalized=normalize, batch_size=batch_size or len(prompts),
    )


@dataclass(kw_only=True)
class PruningResult(Result):
    """``values[step]``: the metric after each pruning step (step 0 = no head pruned).

    ``heads_kept[step]``, ``accepted[step]`` (score >= stop_at x original), ``kept``: the heads
    of the last accepted mask, ``mask [layer, head]`` that mask (1 = kept). ``to_frame()`` has
    one row per step with ``heads_kept``, ``fraction`` and ``accepted`` columns."""

    heads_kept: Tensor
    accepted: Tensor
    mask: Tensor
    kept: list
    value_name = "score"

    def _cell_columns(self) -> dict:
        """``heads_kept``, ``fraction`` (of the original score) and ``accepted`` per step."""
        return {"heads_kept": self.heads_kept.numpy(),
                "fraction": (self.values.double() / self.meta["original"]).numpy(),
                "accepted": self.accepted.numpy().astype(bool)}

    def plot(self, *, title: str | None = None) -> go.Figure:
        """The score against the number of heads kept, with the stopping line."""
        fig = go.Figure(go.Scatter(x=self.heads_kept.tolist(), y=self.values.tolist(),
                                   mode="lines+markers", name=self.meta["metric"]))
        fig.add_hline(y=self.meta["original"] * self.meta["stop_at"], line_dash="dash",
                      annotation_text=f"{self.meta['stop_at']:.0%} of original")
        fig.update_layout(title=title or "Greedy head pruning", xaxis_title="heads kept",
                          yaxis_title=self.meta["metric"], xaxis_autorange="reversed")
        return fig


def masked_score(model, prompts: PromptSet, mask: Tensor, metric) -> float:
    with torch.no_grad(), scoped_hooks(model, gate_hooks(mask.float())):
        logits = model(prompts.clean_tokens)
        return float(metric.from_full(logits, prompts).float().mean())


def prune_heads(
    model,
    prompts: PromptSet,
    *,
    step: float = 0.1,
    stop_at: float = 0.9,
    metric: MetricSpec = "logit_diff",
    loss: LossKind = "answer",
    batch_size: int | None = None,
) -> PruningResult:
    """Greedy pruning: mask the ``step`` fraction of all heads with the lowest importance
    (recomputed under the current mask), repeat while the score stays >= ``stop_at`` x the
    original. The score is ``metric`` (higher is better) averaged over the prompts."""
    model = as_model(model)
    if not 0 < step < 1 or not 0 < stop_at <= 1:
        raise ValueError("step must be in (0, 1) and stop_at in (0, 1].")
    prompts.check(model)
    info = describe(model)
    with torch.no_grad():
        clean = model(prompts.clean_tokens)
    m = resolve_metric(metric, clean_answer_logits=logits_at(clean, prompts.answer_pos))
    if not m.higher_is_better:
        raise ValueError(f"pruning keeps a score above {stop_at:.0%} of the original, so the metric "
                         f"must be higher-is-better; {m.name!r} is not. Use 'logit_diff' or 'prob'.")
    n_total = info.n_layers * info.n_heads
    mask = torch.ones(info.n_layers, info.n_heads, device="cpu")
    original = masked_score(model, prompts, mask, m)
    if original <= 0:
        raise ValueError(f"the unpruned score is {original:.4g} <= 0, so a fraction of it is "
                         "meaningless; use prompts the model gets right or metric='prob'.")
    per_step = max(1, int(n_total * step))
    kept_n, scores, accepted = [n_total], [original], [True]
    while True:
        remaining = int(mask.sum())
        n_drop = min(per_step, remaining - 1)
        if n_drop <= 0:
            break
        imp = normalise_importance(raw_importance(model, prompts, mask=mask, loss=loss, batch_size=batch_size))
        imp = imp.masked_fill(mask == 0, float("inf"))
        drop = imp.view(-1).argsort()[:n_drop]
        new = mask.clone()
        new.view(-1)[drop] = 0
        score = masked_score(model, prompts, new, m)
        kept_n.append(int(new.sum()))
        scores.append(score)
        ok = score >= stop_at * original
        accepted.append(ok)
        if not ok:
            break
        mask = new
    kept = [C.label(C.Head(layer, h)) for layer, h in (mask == 1).nonzero().tolist()]
    return PruningResult(
        values=torch.tensor(scores, device="cpu"), dims=("step",),
        heads_kept=torch.tensor(kept_n, device="cpu"), accepted=torch.tensor(accepted, device="cpu"), mask=mask, kept=kept,
        meta={"method": "prune_heads", "metric": m.name, "original": original, "stop_at": stop_at,
              "step": step, "per_step": per_step, "loss": loss},
    )

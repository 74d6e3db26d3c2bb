"""Metrics read from logits, normalisation, and bootstrap confidence intervals.

A metric maps logits to one number per example. Most read only the logits at each example's
answer position (``Metric.all_positions = False``): methods then compute just those rows of the
unembedding, which is most of the saving in fast patching. ``loss`` needs every position.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Literal, Union

import torch
from jaxtyping import Float
from torch import Tensor

from interp.prompts import PromptSet

MetricName = Literal["logit_diff", "prob", "logprob", "kl", "loss"]


def logits_at(logits: Float[Tensor, "batch pos d_vocab"], pos: Tensor) -> Float[Tensor, "batch d_vocab"]:
    """Each example's logits at its own position ``pos[i]``."""
    return logits[torch.arange(logits.shape[0], device=logits.device), pos.to(logits.device)]


@dataclass
class Metric:
    """``fn(logits, prompts) -> [batch]``; ``logits`` is ``[batch, d_vocab]`` at the answer
    positions, or ``[batch, pos, d_vocab]`` when ``all_positions``."""

    name: str
    fn: Callable[[Tensor, PromptSet], Tensor]
    all_positions: bool = False
    higher_is_better: bool = True
    # Optional shortcut for metrics that read a few logits only: ``columns(prompts)`` gives the
    # token ids per example ``[batch, c]`` and ``from_columns(logits [batch, c])`` the metric, so
    # methods can unembed just those columns. ``fn`` stays the definition.
    columns: Callable[[PromptSet], Tensor] | None = None
    from_columns: Callable[[Tensor], Tensor] | None = None

    def __call__(self, logits: Tensor, prompts: PromptSet) -> Tensor:
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # metrics in float32 whatever the model's precision
        return self.check(self.fn(logits, prompts), int(logits.shape[0]))

    def from_full(self, logits: Float[Tensor, "batch pos d_vocab"], prompts: PromptSet) -> Tensor:
        """Apply to full-sequence logits (selects the answer rows when needed)."""
        if self.all_positions:
            return self(logits, prompts)
        return self(logits_at(logits, prompts.answer_pos), prompts)

    def check(self, values, n: int, *, batch: int | None = None) -> Tensor:
        """``values`` as a ``[n]`` tensor: a clear error for any other shape, a warning naming
        the examples where it is NaN (``batch``: rows are stacked copies of a batch of that
        size, so row ``r`` is example ``r % batch``)."""
        out = values if isinstance(values, Tensor) else torch.as_tensor(values)
        if out.ndim == 0 and n == 1:
            out = out.reshape(1)
        if tuple(out.shape) != (n,):
            raise ValueError(
                f"metric {self.name!r} returned shape {list(out.shape)}; expected shape [batch] "
                f"= [{n}], one number per example. Reduce every other axis inside the metric, "
                "but not the batch (interp averages over examples itself)."
            )
        nan = torch.isnan(out.detach()) if out.is_floating_point() else None
        if nan is not None and bool(nan.any()):
            rows = torch.nonzero(nan)[:, 0].tolist()
            examples = sorted({r % batch for r in rows}) if batch else rows
            warnings.warn(
                f"metric {self.name!r} returned NaN for examples {examples}; their scores are "
                "NaN (check the metric for log(0), 0/0 or an empty selection).",
                RuntimeWarning, stacklevel=3,
            )
        return out

    def columns_values(self, cols: Tensor, batch: int) -> Tensor:
        """``from_columns`` on logits of the metric's columns ``[n, c]``, checked."""
        assert self.from_columns is not None
        if cols.dtype in (torch.float16, torch.bfloat16):
            cols = cols.float()
        return self.check(self.from_columns(cols), int(cols.shape[0]), batch=batch)


def _idx(prompts: PromptSet, ids: Tensor, like: Tensor) -> Tensor:
    return ids.to(like.device)


def logit_diff_fn(logits: Float[Tensor, "batch d_vocab"], prompts: PromptSet) -> Tensor:
    b = torch.arange(logits.shape[0], device=logits.device)
    right = logits[b, _idx(prompts, prompts.answer_ids, logits)]
    wrong = logits[b, _idx(prompts, prompts.require_wrong(), logits)]
    return right - wrong


def prob_fn(logits: Float[Tensor, "batch d_vocab"], prompts: PromptSet) -> Tensor:
    b = torch.arange(logits.shape[0], device=logits.device)
    return logits.float().softmax(-1)[b, _idx(prompts, prompts.answer_ids, logits)]


def logprob_fn(logits: Float[Tensor, "batch d_vocab"], prompts: PromptSet) -> Tensor:
    b = torch.arange(logits.shape[0], device=logits.device)
    return logits.float().log_softmax(-1)[b, _idx(prompts, prompts.answer_ids, logits)]


def loss_fn(logits: Float[Tensor, "batch pos d_vocab"], prompts: PromptSet) -> Tensor:
    """Mean next-token cross-entropy over each example's real tokens (up to answer_pos)."""
    toks = prompts.clean_tokens.to(logits.device)
    logp = logits[:, :-1].float().log_softmax(-1)
    nll = -logp.gather(-1, toks[:, 1:, None])[..., 0]
    mask = torch.arange(toks.shape[1] - 1, device=logits.device)[None] < prompts.answer_pos.to(logits.device)[:, None]
    return (nll * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def kl_metric(reference: Float[Tensor, "batch d_vocab"]) -> Metric:
    """KL(reference || patched) at the answer position, in nats (reference: clean logits)."""
    ref_logp = reference.float().log_softmax(-1)

    def fn(logits: Tensor, prompts: PromptSet) -> Tensor:
        logp = logits.float().log_softmax(-1)
        r = ref_logp.to(logits.device)
        return (r.exp() * (r - logp)).sum(-1)

    return Metric("kl", fn, higher_is_better=False)


LOGIT_DIFF = Metric(
    "logit_diff", logit_diff_fn,
    columns=lambda ps: torch.stack([ps.answer_ids, ps.require_wrong()], dim=1),
    from_columns=lambda cols: cols[:, 0] - cols[:, 1],
)
PROB = Metric("prob", prob_fn)
LOGPROB = Metric("logprob", logprob_fn)
LOSS = Metric("loss", loss_fn, all_positions=True, higher_is_better=False)

MetricSpec = Union[MetricName, Metric, Callable[[Tensor, PromptSet], Tensor]]


def resolve_metric(spec: MetricSpec, *, clean_answer_logits: Tensor | None = None) -> Metric:
    """A Metric from a name, a Metric, or a callable ``(answer_logits [b, v], prompts) -> [b]``."""
    if isinstance(spec, Metric):
        return spec
    if callable(spec):
        return Metric(getattr(spec, "__name__", "custom"), spec)
    table = {"logit_diff": LOGIT_DIFF, "prob": PROB, "logprob": LOGPROB, "loss": LOSS}
    if spec in table:
        return table[spec]
    if spec == "kl":
        if clean_answer_logits is None:
            raise ValueError("metric 'kl' needs the clean logits at the answer positions.")
        return kl_metric(clean_answer_logits)
    raise ValueError(
        f"unknown metric {spec!r}; use one of logit_diff, prob, logprob, kl, loss, or a callable "
        "(answer_logits [batch, d_vocab], prompts) -> [batch]."
    )


def warn_identical_pairs(clean: Tensor, corrupted: Tensor) -> list[int]:
    """Warn when some corrupted prompts tokenise exactly like their clean prompts (patching
    cannot change those examples); returns their indices."""
    same = torch.nonzero((clean.cpu() == corrupted.cpu()).all(-1))[:, 0].tolist()
    if same:
        everything = len(same) == clean.shape[0]
        warnings.warn(
            f"clean and corrupted prompts are identical for examples {same}"
            + (" (all of them)" if everything else "")
            + ": no patch can change them. Use a corruption that changes the tokens (e.g. swap "
            "a name for another single-token name).", UserWarning, stacklevel=3,
        )
    return same


def normalise(
    patched: Tensor, clean: Tensor | float, corrupted: Tensor | float,
    direction: Literal["denoising", "noising"] = "denoising",
) -> Tensor:
    """Denoising: (patched - corrupted) / (clean - corrupted), 0 = no effect, 1 = fully restored.
    Noising: (patched - clean) / (clean - corrupted), 0 = no effect, -1 = fully broken.
    (Heimersheim & Nanda 2024; transformer-lens demos.)"""
    denom = clean - corrupted
    if isinstance(denom, Tensor):
        if bool((denom.abs() < 1e-8).any()):
            raise ValueError(
                "clean and corrupted metrics are equal, so the normalised score is undefined; "
                "use a corruption that changes the answer."
            )
    elif abs(denom) < 1e-8:
        raise ValueError(
            "clean and corrupted metrics are equal, so the normalised score is undefined; use a "
            "corruption that changes the answer."
        )
    base = corrupted if direction == "denoising" else clean
    return (patched - base) / denom


def normalise_paired(
    patched: Float[Tensor, "... batch"], clean: Float[Tensor, "batch"],
    corrupted: Float[Tensor, "batch"], direction: Literal["denoising", "noising"] = "denoising",
) -> Float[Tensor, "... batch"]:
    """Per-example normalised scores, paired: each example's patched metric minus *its own* base
    metric (its corrupted value when denoising, its clean value when noising), divided by the
    batch-mean gap ``mean(clean) - mean(corrupted)``. Their mean over examples equals
    :func:`normalise` of the means, and a patch that leaves an example unchanged scores exactly 0
    for it. (Dividing each example by its own gap instead would blow up examples whose gap is
    near zero.)"""
    base = corrupted if direction == "denoising" else clean
    denom = float(clean.float().mean() - corrupted.float().mean())
    if abs(denom) < 1e-8:
        raise ValueError(
            "clean and corrupted metrics are equal, so the normalised score is undefined; use a "
            "corruption that changes the answer."
        )
    return (patched - base.to(patched)) / denom


def bootstrap_ci(
    per_example: Float[Tensor, "... batch"], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
    stat: Callable[[Tensor], Tensor] | None = None,
) -> Float[Tensor, "... 2"]:
    """Percentile bootstrap CI of the mean over the last (batch) axis, for every leading cell."""
    x = per_example.detach().float().cpu()
    b = x.shape[-1]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(b, (n_boot, b), generator=g, device="cpu")
    samples = x[..., idx]  # [..., n_boot, b]
    stats = samples.mean(-1) if stat is None else stat(samples)
    alpha = (1 - level) / 2
    lo = torch.quantile(stats, alpha, dim=-1)
    hi = torch.quantile(stats, 1 - alpha, dim=-1)
    return torch.stack([lo, hi], dim=-1)

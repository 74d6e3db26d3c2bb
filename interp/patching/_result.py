"""The result of activation patching, path patching and attribution patching, and the checks and
normalisation they share.

Normalisation (Heimersheim & Nanda 2024): denoising scores ``(m - m_corr) / (m_clean - m_corr)``
(0 = no effect, 1 = fully restored); noising scores ``(m - m_clean) / (m_clean - m_corr)``
(0 = no effect, -1 = fully broken). Per-example scores are paired: each example's metric minus
*its own* base-run metric, over the batch-mean gap, so their mean is the cell's score and a patch
that changes nothing scores exactly 0 on every example.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.metrics import MetricSpec, bootstrap_ci, normalise_paired, warn_identical_pairs
from interp.prompts import PromptSet
from interp.results import Result, _cpu


@dataclass(kw_only=True)
class PatchingResult(Result):
    """``values``: normalised score per cell; ``raw``: mean metric per cell; ``per_example``:
    normalised per-example scores (their mean is ``values``); ``ci``: bootstrap CI of the mean.
    ``meta`` holds ``clean``/``corrupted`` baselines (batch means and per example), ``direction``,
    ``target``, ``metric``."""

    raw: Tensor | None = None
    raw_per_example: Tensor | None = None
    value_name = "score"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.raw is not None:
            self.raw = _cpu(self.raw)
            if tuple(self.raw.shape) != tuple(self.values.shape):
                raise ValueError("raw must have the same shape as values")

    def by_role(self, prompts: PromptSet) -> PatchingResult:
        """The per-position result re-indexed by the prompts' named positions: the ``pos`` axis
        becomes ``role`` (``IO``, ``S1``, ``S2``, ``END``, ...), and example ``b``'s value for
        role ``r`` is its value at its own position ``prompts.positions[r][b]``. Nothing is
        recomputed: each position was patched in every example, so this only gathers."""
        if "pos" not in self.dims or self.raw_per_example is None:
            raise ValueError("by_role needs a per-position result with per-example values.")
        if not prompts.positions:
            raise ValueError("these prompts have no named positions; build them from a "
                             "template (interp.prompts.ioi, induction, needle) or pass positions.")
        ax = self.dims.index("pos")
        roles = list(prompts.positions)
        idx = torch.stack([prompts.positions[r].cpu().long() for r in roles])  # [role, batch]
        raw = self.raw_per_example.movedim(ax, -2)  # [..., pos, batch]
        got = raw.gather(-2, idx.expand(*raw.shape[:-2], *idx.shape)).movedim(-2, ax)
        meta = dict(self.meta)
        clean_pe = torch.tensor(meta.pop("clean_per_example"), device="cpu")
        corr_pe = torch.tensor(meta.pop("corrupted_per_example"), device="cpu")
        meta["positions"] = ("by role: the examples differ in layout, so each example is read at "
                             "its own position of each named role")
        dims = tuple("role" if d == "pos" else d for d in self.dims)
        coords = {("role" if d == "pos" else d): (roles if d == "pos" else self.coords[d])
                  for d in self.dims}
        return finish(got, dims, coords, meta, clean_pe, corr_pe, meta["direction"])

    def _cell_columns(self) -> dict:
        """``raw``: the mean metric with the cell patched."""
        return {} if self.raw is None else {"raw": self.raw.reshape(-1).double().numpy()}


def prepare_pairs(model, prompts: PromptSet, metric: MetricSpec, direction: str):
    if not isinstance(prompts, PromptSet):
        raise TypeError("prompts must be a PromptSet (e.g. interp.prompts.ioi(model, 8) or "
                        "PromptSet.from_pairs(...)).")
    if direction not in ("denoising", "noising"):
        raise ValueError(f"direction must be 'denoising' or 'noising', got {direction!r}.")
    corrupted = prompts.require_corrupted()
    if corrupted.shape != prompts.clean_tokens.shape:
        raise ValueError(
            f"clean tokens {tuple(prompts.clean_tokens.shape)} and corrupted tokens "
            f"{tuple(corrupted.shape)} differ in shape; patching needs position-aligned pairs. "
            "Use a corruption of the same token length (e.g. swap names of one token each)."
        )
    warn_identical_pairs(prompts.clean_tokens, corrupted)
    prompts.check(model)
    device = model.cfg.device
    return prompts.clean_tokens.to(device), corrupted.to(device)


def pos_labels(model, prompts: PromptSet) -> list[str]:
    """Per-position labels: the token when every example agrees, else the shared named role or
    ``<mixed>``, with ``[END k/n]`` / ``[pad k/n]`` where examples end at different positions
    (see ``PromptSet.position_labels``)."""
    return prompts.position_labels(getattr(model, "tokenizer", None))


def finish(values_pe: Tensor, dims, coords, meta, clean_pe, corr_pe, direction) -> PatchingResult:
    """values_pe: raw metric [*cells, batch]."""
    clean_m, corr_m = clean_pe.mean(), corr_pe.mean()
    meta = dict(meta)
    if abs(float(clean_m - corr_m)) < 1e-8:
        warnings.warn("clean and corrupted metrics are equal, so the normalised score is "
                      "undefined (values are NaN; raw metric values are in .raw). Use a "
                      "corruption that changes the answer.", stacklevel=3)
        norm_pe = torch.full_like(values_pe, float("nan"))
        meta["normalised"] = False
    else:
        norm_pe = normalise_paired(values_pe.float(), clean_pe.float(), corr_pe.float(), direction)
        meta["normalised"] = True
    meta.update({
        "clean": float(clean_m), "corrupted": float(corr_m),
        "clean_per_example": clean_pe.tolist(), "corrupted_per_example": corr_pe.tolist(),
        "direction": direction,
        "normalisation": ("per example: (m_i - corrupted_i) / (mean clean - mean corrupted)"
                          if direction == "denoising"
                          else "per example: (m_i - clean_i) / (mean clean - mean corrupted)"),
    })
    return PatchingResult(values=norm_pe.mean(-1), dims=dims, coords=coords, meta=meta,
                          per_example=norm_pe, ci=bootstrap_ci(norm_pe), raw=values_pe.mean(-1),
                          raw_per_example=values_pe)



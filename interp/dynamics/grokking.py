"""Progress measures for grokking modular addition (Nanda et al. 2023).

The model reads ``BOS a b =`` and predicts ``c = (a + b) mod p`` at ``=`` (the zoo's ``modadd``).
With ``w_k = 2 pi k / p``:

* **Fourier basis** of functions on ``Z_p``: the constant, then ``cos(w_k x)`` and
  ``sin(w_k x)`` for ``k = 1 .. (p-1)/2``, each of unit norm.
* **Embedding norm per frequency**: the norm of the number embeddings ``W_E[0:p]`` along
  ``cos(w_k x)`` and ``sin(w_k x)`` together. A trained model concentrates it on a few *key
  frequencies*.
* **Logits on every pair**: ``[p, p, p]`` (``a``, ``b``, ``c``), centred over ``c``.
* **Restricted logits**: the part of the logits spanned, as functions of ``(a, b)``, by
  ``cos(w_k (a + b))`` and ``sin(w_k (a + b))`` for the key frequencies (plus the part
  constant in ``a, b``); **restricted loss**: cross-entropy of those, on all pairs.
  **Excluded logits**: the logits minus those key-frequency components; **excluded loss**:
  their cross-entropy on the training pairs.
* **Cosine fit**: ``logits[a, b, c] ~ sum_k alpha_k cos(w_k (a + b - c))`` over the key
  frequencies, fitted by least squares; reported as the fraction of the (centred) logits'
  variance it explains.
* **Weight norm**: the L2 norm of all trained parameters, normalisation layers left out
  (weight decay drives it down in cleanup).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def fourier_basis(p: int) -> tuple[Tensor, list[str]]:
    """``[p, p]`` orthonormal rows (constant, then cos/sin pairs by frequency) and names."""
    x = torch.arange(p, dtype=torch.float64, device="cpu")
    rows, names = [torch.ones(p, dtype=torch.float64, device="cpu")], ["const"]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True), names


def modulus(model) -> int:
    """``p``: the number tokens are ids ``0 .. p-1``, then ``=`` and BOS."""
    return int(model.cfg.d_vocab) - 2


def pair_tokens(p: int, device=None) -> Tensor:
    a = torch.arange(p, device=device).repeat_interleave(p)
    b = torch.arange(p, device=device).repeat(p)
    return torch.stack([torch.full_like(a, p + 1), a, b, torch.full_like(a, p)], dim=1)


def pair_logits(model, p: int | None = None) -> Tensor:
    """``[p, p, p]`` float64 logits over the number tokens at ``=`` for every pair, on CPU."""
    p = p or modulus(model)
    toks = pair_tokens(p, device=model.cfg.device)
    with torch.no_grad():
        out = model(toks)[:, -1, :p]
    return out.detach().double().cpu().reshape(p, p, p)


def embedding_frequency_norms(model, p: int | None = None) -> Tensor:
    """``[(p-1)/2]``: norm of the number embeddings along each frequency (cos and sin)."""
    p = p or modulus(model)
    basis, _ = fourier_basis(p)
    W = model.W_E.detach().double().cpu()[:p]  # [p, d_model]
    coef = basis @ W  # [p basis rows, d_model]
    per = coef[1:].reshape(-1, 2, W.shape[1]).pow(2).sum((1, 2)).sqrt()
    return per


def key_frequencies(norms: Tensor, *, max_keys: int = 8, ratio: float = 0.25) -> list[int]:
    """Frequencies (1-based) whose embedding norm is at least ``ratio`` of the largest, at most
    ``max_keys`` of them, largest first."""
    order = torch.argsort(norms, descending=True).tolist()
    top = float(norms[order[0]])
    return [i + 1 for i in order[:max_keys] if float(norms[i]) >= ratio * top]


def _sum_directions(p: int, keys: list[int]) -> Tensor:
    """``[2 * len(keys) + 1, p * p]`` orthonormal functions of ``(a, b)``: the constant and
    ``cos/sin(w_k (a + b))`` for the key frequencies."""
    a = torch.arange(p, dtype=torch.float64, device="cpu").repeat_interleave(p)
    b = torch.arange(p, dtype=torch.float64, device="cpu").repeat(p)
    rows = [torch.ones(p * p, dtype=torch.float64, device="cpu")]
    for k in keys:
        w = 2 * math.pi * k / p
        rows += [torch.cos(w * (a + b)), torch.sin(w * (a + b))]
    d = torch.stack(rows)
    return d / d.norm(dim=1, keepdim=True)


def restricted_logits(logits: Tensor, keys: list[int]) -> Tensor:
    """The logits' projection onto the key-frequency functions of ``a + b`` (per output ``c``)."""
    p = logits.shape[0]
    d = _sum_directions(p, keys)
    flat = logits.reshape(p * p, p)
    return (d.T @ (d @ flat)).reshape(p, p, p)


def _ce(logits: Tensor, mask: Tensor | None = None) -> float:
    p = logits.shape[0]
    flat = logits.reshape(p * p, p)
    target = (torch.arange(p, device="cpu").repeat_interleave(p)
              + torch.arange(p, device="cpu").repeat(p)) % p
    loss = torch.nn.functional.cross_entropy(flat, target, reduction="none")
    return float(loss.mean() if mask is None else loss[mask].mean())


def cos_fit_fraction(logits: Tensor, keys: list[int]) -> float:
    """Fraction of the variance of the logits (centred per pair) explained by
    ``sum_k alpha_k cos(w_k (a + b - c))`` over the key frequencies."""
    p = logits.shape[0]
    y = logits - logits.mean(-1, keepdim=True)
    a = torch.arange(p, dtype=torch.float64, device="cpu")[:, None, None]
    b = torch.arange(p, dtype=torch.float64, device="cpu")[None, :, None]
    c = torch.arange(p, dtype=torch.float64, device="cpu")[None, None, :]
    X = torch.stack([torch.cos(2 * math.pi * k / p * (a + b - c)).expand(p, p, p).reshape(-1)
                     for k in keys], dim=1)
    coef = torch.linalg.lstsq(X, y.reshape(-1, 1)).solution
    resid = y.reshape(-1, 1) - X @ coef
    return float(1 - resid.pow(2).sum() / y.pow(2).sum())


@dataclass(frozen=True)
class ProgressMeasures:
    """The progress measures of one set of weights."""

    train_loss: float
    test_loss: float
    restricted_loss: float
    excluded_loss: float
    weight_norm: float
    cos_fit: float
    key_frequencies: tuple[int, ...]
    frequency_norms: tuple[float, ...]

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def progress_measures(model, train_mask: Tensor, keys: list[int] | None = None
                      ) -> ProgressMeasures:
    """All measures for ``model``; ``train_mask``: ``[p * p]`` bool over pairs (row ``a*p+b``).
    ``keys``: the key frequencies to restrict to (default: this model's own, from its
    embedding; pass the final model's to follow one set over training, as the paper does)."""
    p = modulus(model)
    train_mask = train_mask.bool().cpu()
    if train_mask.shape != (p * p,):
        raise ValueError(f"train_mask must have p*p = {p * p} entries, got {tuple(train_mask.shape)}")
    logits = pair_logits(model, p)
    norms = embedding_frequency_norms(model, p)
    keys = list(keys) if keys is not None else key_frequencies(norms)
    restricted = restricted_logits(logits, keys)
    weight_norm = _weight_norm(model)
    return ProgressMeasures(
        train_loss=_ce(logits, train_mask), test_loss=_ce(logits, ~train_mask),
        restricted_loss=_ce(restricted), excluded_loss=_ce(logits - restricted, train_mask),
        weight_norm=weight_norm, cos_fit=cos_fit_fraction(logits, keys),
        key_frequencies=tuple(keys), frequency_norms=tuple(float(x) for x in norms))


def _weight_norm(model) -> float:
    """L2 norm of the parameters that training moves: normalisation layers' gains and biases are
    left out (the zoo ``modadd`` freezes its LayerNorms into mean subtractions with gain 1e4)."""
    skip = {id(q) for mod in model.modules() if "norm" in type(mod).__name__.lower()
            for q in mod.parameters()}
    return math.sqrt(sum(float(t.detach().double().pow(2).sum())
                         for t in model.parameters() if id(t) not in skip))


def load_split(path) -> Tensor:
    """The training-pair mask saved next to a zoo ``modadd`` model (``split.safetensors``)."""
    from pathlib import Path

    from safetensors.torch import load_file

    f = Path(path) / "split.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: the modadd recipe writes it next to the model")
    return load_file(str(f))["train"].bool()


MEASURES = ("train_loss", "test_loss", "restricted_loss", "excluded_loss", "weight_norm",
            "cos_fit")


def progress_over_training(checkpoints, train_mask: Tensor, keys: list[int] | None = None, *,
                           progress: bool = True):
    """:func:`progress_measures` at every checkpoint as a ``TrackResult`` ``[step, measure]``,
    all with one set of key frequencies (default: the last checkpoint's, as in the paper)."""
    from interp.dynamics._track import track
    from interp.results import Result

    cps = list(checkpoints)
    if keys is None:
        last = cps[-1].load()
        keys = key_frequencies(embedding_frequency_norms(last))
        del last

    norms: list[list[float]] = []

    def measure(model):
        m = progress_measures(model, train_mask, keys)
        norms.append(list(m.frequency_norms))
        return Result(values=torch.tensor([getattr(m, k) for k in MEASURES], device="cpu"),
                      dims=("measure",), coords={"measure": list(MEASURES)})
    res = track(cps, measure, name="grokking progress measures", progress=progress)
    res.meta["key_frequencies"] = list(keys)
    res.meta["frequency_norms"] = norms  # [step][frequency]: the embedding's, same pass
    return res


def frequency_norms_over_training(checkpoints, *, progress: bool = True):
    """Embedding norm per frequency at every checkpoint: ``TrackResult`` ``[step, frequency]``."""
    from interp.dynamics._track import track
    from interp.results import Result

    def measure(model):
        n = embedding_frequency_norms(model).float()
        return Result(values=n, dims=("frequency",),
                      coords={"frequency": [str(k + 1) for k in range(len(n))]})
    return track(list(checkpoints), measure, name="embedding norm per frequency",
                 progress=progress)


def turning_points(res) -> dict:
    """The phases in a :func:`progress_over_training` result: the first step with train loss
    < 0.05 (``memorised``), test loss < 0.1 (``grokked``), restricted loss < 0.5
    (``restricted``); the step of the largest excluded loss after memorising
    (``excluded_peak``) and its value; final values of every measure."""
    steps = [int(s) for s in res.coords["step"]]
    col = {m: res.values[:, i].tolist() for i, m in enumerate(MEASURES)}

    def first(name, cond):
        return next((s for s, v in zip(steps, col[name]) if cond(v)), None)
    mem = first("train_loss", lambda v: v < 0.05)
    i_mem = steps.index(mem) if mem is not None else 0
    tail = col["excluded_loss"][i_mem:]
    j = max(range(len(tail)), key=tail.__getitem__)
    return {"memorised": mem, "grokked": first("test_loss", lambda v: v < 0.1),
            "restricted": first("restricted_loss", lambda v: v < 0.5),
            "excluded_peak": steps[i_mem + j], "excluded_peak_value": tail[j],
            "excluded_at_memorised": col["excluded_loss"][i_mem],
            "weight_norm_at_memorised": col["weight_norm"][i_mem],
            "final": {m: col[m][-1] for m in MEASURES},
            "key_frequencies": list(res.meta.get("key_frequencies", []))}

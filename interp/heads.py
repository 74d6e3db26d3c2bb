"""Head scores: previous-token, duplicate-token and induction heads, in two named conventions.

* ``detect_heads`` follows transformer-lens ``head_detector.detect_head``: a 0/1 detection
  pattern D over (query, key) built from the tokens, scored per head as ``mul``:
  ``sum(A*D)/sum(A)`` or ``abs``: ``1 - round(sum|A-D|/n, 3)``, averaged over prompts. Batched:
  one forward for all prompts, caching only the attention patterns.
* ``induction_scores`` / ``previous_token_scores`` / ``duplicate_token_scores`` are the
  prefix-matching diagonal scores on ``[BOS] + r + r`` (Olsson et al. 2022; the TransformerLens
  Main_Demo and ARENA construction): the mean over batch and diagonal of
  ``pattern.diagonal(offset=1-seq_len)`` (induction), ``diagonal(-1)`` (previous token) and
  ``diagonal(-seq_len)`` (duplicate token). A perfect induction head scores seq_len/(seq_len+2)
  with BOS.

Scores are per query head; ``HeadScores.meta["kv_group"]`` names each head's key/value head.
Retrieval scores (Wu et al. 2024) live in ``interp.retrieval``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks as H
from interp.distributed import dispatch
from interp.models import as_model, describe
from interp.prompts import _repeated
from interp.results import Result

PatternName = Literal["previous_token", "duplicate_token", "induction"]


@dataclass(kw_only=True)
class HeadScores(Result):
    """Scores [layer, head] with a threshold-friendly API. ``top(k)`` ranks by value (largest
    first); ``to_frame()`` adds ``kv_head`` (each query head's key/value head) when known."""

    value_name = "score"
    rank_by = "value"

    @classmethod
    def from_tensor(cls, model, scores: Tensor, *, per_example: Tensor | None = None,
                    **meta) -> HeadScores:
        info = describe(model)
        meta.setdefault("kv_group", [[info.kv_head(h) for h in range(info.n_heads)]] * info.n_layers)
        return cls(values=scores.float(), dims=("layer", "head"), meta=meta,
                   per_example=None if per_example is None else per_example.float())

    def _cell_columns(self) -> dict:
        groups = self.meta.get("kv_group")
        if not groups:
            return {}
        return {"kv_head": torch.tensor(groups, dtype=torch.long).reshape(-1).numpy()}

    def above(self, threshold: float) -> list[tuple[int, int]]:
        idx = (self.values > threshold).nonzero().tolist()
        return sorted(((int(a), int(b)) for a, b in idx), key=lambda lh: -float(self.values[lh]))

    def best(self) -> tuple[tuple[int, int], float]:
        flat = int(self.values.argmax())
        layer, head = divmod(flat, self.values.shape[1])
        return (layer, head), float(self.values[layer, head])

    def plot(self, *, title: str | None = None):
        """A [layer, head] heatmap of the scores on a fixed scale from 0 to 1 (or to the largest
        score when one exceeds 1, as retrieval scores can), so a noise-level head never glows
        like a strong one."""
        from interp.viz import heatmap

        top = max(1.0, float(self.values.max())) if self.values.numel() else 1.0
        return heatmap(self.values, x=self.labels("head"), y=self.labels("layer"),
                       title=title or self.meta.get("title", "Head scores"), colorscale="Viridis",
                       zmid=None, xlabel="head", ylabel="layer", zrange=(0.0, top))


def patterns(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer batch head q k"]:
    """All heads' attention patterns in one forward, caching nothing else."""
    info = describe(model)
    names = {H.pattern(layer) for layer in range(info.n_layers)}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return torch.stack([cache[H.pattern(layer)] for layer in range(info.n_layers)]).float()


def detection_pattern(tokens: Int[Tensor, "pos"], kind: PatternName) -> Float[Tensor, "pos pos"]:
    """The transformer-lens detection patterns (lower-triangular 0/1 matrices)."""
    n = tokens.shape[-1]
    if kind == "previous_token":
        return torch.diag(torch.ones(n - 1, device=tokens.device), -1)
    dup = (tokens[:, None] == tokens[None, :]).float()
    dup.fill_diagonal_(0)
    dup = torch.tril(dup)
    if kind == "duplicate_token":
        return dup
    if kind == "induction":
        shifted = torch.zeros_like(dup)
        shifted[:, 1:] = dup[:, :-1]
        return torch.tril(shifted)
    raise ValueError(f"unknown pattern {kind!r}; use previous_token, duplicate_token or induction")


def _to_tokens(model, seqs: str | Sequence[str] | Tensor) -> Tensor:
    if isinstance(seqs, Tensor):
        return seqs if seqs.ndim == 2 else seqs[None]
    seqs = [seqs] if isinstance(seqs, str) else list(seqs)
    toks = [model.to_tokens(s)[0] for s in seqs]
    if len({len(t) for t in toks}) != 1:
        # different lengths: score each prompt alone (detection patterns differ per prompt)
        return toks  # type: ignore[return-value]
    return torch.stack(toks)


def detect_heads(
    model,
    seqs: str | Sequence[str] | Int[Tensor, "batch pos"],
    pattern: PatternName,
    *,
    method: Literal["mul", "abs"] = "mul",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> HeadScores:
    """transformer-lens ``detect_head`` convention, batched: [layer, head] averaged over prompts."""
    model = as_model(model)
    if method not in ("mul", "abs"):
        raise ValueError(f"method must be 'mul' or 'abs', not {method!r}")
    info = describe(model)
    toks = _to_tokens(model, seqs)
    groups = [toks] if isinstance(toks, Tensor) else [t[None] for t in toks]
    per_prompt = []
    for batch in groups:
        if not 1 < batch.shape[1] < info.n_ctx:
            raise ValueError(f"prompts must have 2..{info.n_ctx - 1} tokens, got {batch.shape[1]}")
        pats = patterns(model, batch)  # [L, b, H, q, k]
        for i in range(batch.shape[0]):
            det = detection_pattern(batch[i], pattern).to(pats)
            a = pats[:, i].clone()  # [L, H, q, k]
            n = a.shape[-1]
            if method == "mul":
                if exclude_bos:
                    a[..., 0] = 0
                if exclude_current_token:
                    a = a * (1 - torch.eye(n, device=a.device))
                score = (a * det).sum((-1, -2)) / a.sum((-1, -2))
            else:
                diff = (a - det).abs()
                if exclude_bos:
                    diff[..., 0] = 0
                if exclude_current_token:
                    diff = diff * (1 - torch.eye(n, device=a.device))
                score = 1 - torch.round(diff.sum((-1, -2)) / n, decimals=3)
            per_prompt.append(score)
    scores = torch.stack(per_prompt).mean(0)
    return HeadScores.from_tensor(model, scores, title=f"{pattern} ({method})", method=method,
                                  pattern=pattern, convention="transformer_lens.detect_head")


def repeated_tokens(model, *, seq_len: int = 50, batch: int = 10, seed: int = 0,
                    bos: bool = True) -> Int[Tensor, "batch pos"]:
    """``[BOS] + r + r`` with r uniform over the tokenizer's ordinary tokens (fixed seed); the
    generator the ``induction`` prompt sets use too (``interp.prompts._repeated``)."""
    model = as_model(model)
    return _repeated.repeated_tokens(model, seq_len=seq_len, batch=batch, seed=seed, bos=bos)


def _diagonal_score(model, offset_fn, *, seq_len: int, batch: int, seed: int, bos: bool,
                    title: str) -> HeadScores:
    model = as_model(model)
    toks = repeated_tokens(model, seq_len=seq_len, batch=batch, seed=seed, bos=bos)
    pats = patterns(model, toks)  # [L, b, H, q, k]
    diag = pats.diagonal(offset=offset_fn(seq_len), dim1=-2, dim2=-1)  # [L, b, H, n]
    scores = diag.mean((1, 3))
    return HeadScores.from_tensor(model, scores, title=title, seq_len=seq_len, batch=batch,
                                  seed=seed, bos=bos, convention="prefix-matching diagonal")


def induction_scores(model, *, seq_len: int = 50, batch: int = 10, seed: int = 0,
                     bos: bool = True, executor=None) -> HeadScores:
    """Mean of ``pattern.diagonal(1 - seq_len)`` on ``[BOS] + r + r`` (max seq_len/(seq_len+2))."""
    if executor is not None:  # the same shards in-process or on Ray workers
        return dispatch("induction_scores", locals())
    return _diagonal_score(model, lambda n: 1 - n, seq_len=seq_len, batch=batch, seed=seed,
                           bos=bos, title="Induction score (prefix matching)")


def previous_token_scores(model, *, seq_len: int = 50, batch: int = 10, seed: int = 0,
                          bos: bool = True, executor=None) -> HeadScores:
    """Mean of ``pattern.diagonal(-1)`` on the same repeated sequences."""
    if executor is not None:  # the same shards in-process or on Ray workers
        return dispatch("previous_token_scores", locals())
    return _diagonal_score(model, lambda n: -1, seq_len=seq_len, batch=batch, seed=seed, bos=bos,
                           title="Previous-token score")


def duplicate_token_scores(model, *, seq_len: int = 50, batch: int = 10, seed: int = 0,
                           bos: bool = True, executor=None) -> HeadScores:
    """Mean of ``pattern.diagonal(-seq_len)``: attention from the second copy to the first."""
    if executor is not None:  # the same shards in-process or on Ray workers
        return dispatch("duplicate_token_scores", locals())
    return _diagonal_score(model, lambda n: -n, seq_len=seq_len, batch=batch, seed=seed, bos=bos,
                           title="Duplicate-token score")

"""The one repeated-random-token generator: layout ``[BOS] + r + r``.

``r`` is ``seq_len`` token ids drawn uniformly (with replacement) from the ordinary tokens of the
model: ids in ``[low, high)`` (default ``[0, min(d_vocab, len(tokenizer)))``, so padded
embedding rows that no tokenizer emits are never drawn) minus the tokenizer's special ids, with a
``torch.Generator`` seeded by ``seed``. The head scores (``interp.heads``) read the full
sequence; the ``induction`` prompt set is the same sequence with its last token held out as the
answer (``[BOS] + r + r[:-1]`` -> ``r[-1]``), so for one seed both see the same tokens.
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

from interp.models import describe
from interp.prompts._promptset import PromptError


def _allowed_ids(model, low: int | None, high: int | None) -> Tensor:
    info = describe(model)
    tok = getattr(model, "tokenizer", None)
    special = set(getattr(tok, "all_special_ids", []) or []) if tok is not None else set()
    top = info.d_vocab if tok is None else min(info.d_vocab, len(tok))
    lo = 0 if low is None else int(low)
    hi = top if high is None else int(high)
    if not 0 <= lo < hi <= info.d_vocab:
        raise PromptError(f"token range [{lo}, {hi}) must lie inside the vocabulary [0, {info.d_vocab}).")
    return torch.tensor([t for t in range(lo, hi) if t not in special], dtype=torch.long)


def random_blocks(model, n: int, seq_len: int, *, seed: int = 0, count: int = 1,
                  low: int | None = None, high: int | None = None) -> list[Int[Tensor, "batch pos"]]:
    """``count`` blocks of ``[n, seq_len]`` random ordinary token ids, drawn in order from one
    generator seeded by ``seed`` (the first block is the ``r`` of :func:`repeated_tokens`)."""
    if n < 1 or seq_len < 2:
        raise PromptError(f"need n >= 1 and seq_len >= 2, got n={n}, seq_len={seq_len}.")
    allowed = _allowed_ids(model, low, high)
    if len(allowed) < 2:
        raise PromptError("the token range has fewer than 2 ordinary tokens; widen low/high.")
    g = torch.Generator().manual_seed(int(seed))
    return [allowed[torch.randint(len(allowed), (n, seq_len), generator=g)] for _ in range(count)]


def bos_prefix(model, bos: bool) -> list[int]:
    if not bos:
        return []
    info = describe(model)
    return [info.bos_token_id if info.bos_token_id is not None else 0]


def check_length(model, seq_len: int, bos: bool) -> None:
    n_ctx = describe(model).n_ctx
    if 2 * seq_len + int(bos) > n_ctx:
        raise PromptError(f"2*seq_len{'+1' if bos else ''} = {2 * seq_len + int(bos)} tokens exceed "
                          f"the context of the model ({n_ctx} tokens); use a shorter seq_len.")


def repeated_tokens(model, *, seq_len: int = 50, batch: int = 10, seed: int = 0, bos: bool = True,
                    low: int | None = None, high: int | None = None) -> Int[Tensor, "batch pos"]:
    """``[BOS] + r + r`` (``batch`` rows of ``bos + 2 * seq_len`` tokens; see the module doc)."""
    check_length(model, seq_len, bos)
    (r,) = random_blocks(model, batch, seq_len, seed=seed, low=low, high=high)
    prefix = torch.tensor(bos_prefix(model, bos), dtype=torch.long).expand(batch, -1)
    return torch.cat([prefix, r, r], dim=1)

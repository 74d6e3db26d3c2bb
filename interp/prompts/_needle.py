"""The needle-in-a-haystack builder (Wu et al. 2024, Retrieval_Head repo), used by both the
``needle`` prompt sets and the retrieval-head trials.

Depth unit: **percent, 0..100, integers**. Percent is the unit of Wu et al.'s paper and released
code (the grid 0, 11, ..., 100) and its insertion rule ``int(n_context * depth / 100)``;
integer percents keep that arithmetic exact (a fraction like 0.3 is not exactly representable,
so ``int(n * 0.3)`` can differ from ``int(n * 30 / 100)``), and they make exact, hashable grid
labels ("depth 25%"). Fractions are refused with a message saying to multiply by 100.

A trial = (needle, context length, depth). The haystack is repeated until it is long enough,
token-truncated so that BOS + context + needle + question has exactly ``ctx_len`` tokens, the
needle is inserted at ``int(n_context * depth / 100)`` stepped back to just after the previous
period token (depth 100 appends it), and the needle span is the first window of
``len(answer tokens)`` prompt tokens whose unique-token overlap with the answer tokens is > 0.9.
Prompts are assembled from token ids (needle and question are encoded on their own, the needle
with a leading space), so every trial of one (needle, ctx_len) has the same length.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from interp.models import describe
from interp.prompts import _language as L

#: the paper's 10 depths, percent: round(linspace(0, 100, 10))
DEFAULT_DEPTHS: tuple[int, ...] = tuple(round(100 * i / 9) for i in range(10))


@dataclass(frozen=True)
class Needle:
    """``needle``: the sentence inserted into the haystack; ``question``: text appended after the
    context (include any instruction, e.g. Wu et al.'s "Based on the content of the book,
    Question: ...\\nAnswer:"); ``answer``: the part of the needle a correct answer copies (their
    ``real_needle``), used for the needle span and the ROUGE-1 acceptance test."""

    needle: str
    question: str
    answer: str

    @classmethod
    def coerce(cls, x) -> Needle:
        if isinstance(x, Needle):
            return x
        if isinstance(x, dict):
            missing = {"needle", "question", "answer"} - set(x)
            if missing:
                raise ValueError(f"a needle dict needs keys needle, question, answer; missing {sorted(missing)}")
            return cls(str(x["needle"]), str(x["question"]), str(x["answer"]))
        if isinstance(x, (tuple, list)) and len(x) == 3:
            return cls(*map(str, x))
        raise TypeError("needles must be Needle objects, dicts {needle, question, answer} or "
                        f"(needle, question, answer) tuples, not {type(x).__name__}")


@dataclass
class Trial:
    """One prompt: token ids, the needle's answer span [start, end), its grid cell (depth in %)."""

    ids: list[int]
    span: tuple[int, int]
    needle_index: int
    ctx_len: int
    depth: int
    answer: str


def check_depths(depths: Sequence[float]) -> list[int]:
    """Depths as integer percents; a clear error for fractions or values outside 0..100."""
    out = []
    for d in depths:
        if isinstance(d, bool) or not isinstance(d, (int, float)) or float(d) != int(d):
            raise ValueError(
                f"needle depths are integer percents in 0..100, got {list(depths)}; "
                "if these are fractions of the context, multiply them by 100 (0.5 -> 50)."
            )
        if not 0 <= d <= 100:
            raise ValueError(f"needle depths are percents in 0..100, got {list(depths)}")
        out.append(int(d))
    return out


def default_needles(n: int = 3, seed: int = 0) -> list[Needle]:
    """"The secret code is X Y Z." needles of the zoo's synthetic language (offline)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        values = rng.sample(L.NEEDLE_VALUES, 3)
        out.append(Needle(L.needle_sentence(values), " " + L.NEEDLE_QUESTION, " ".join(values)))
    return out


def default_haystack(n_sentences: int = 400, seed: int = 0) -> str:
    """Filler text of the zoo's grammar (never contains a needle word)."""
    rng = random.Random(seed)
    return " ".join(L.filler_sentence(rng) for _ in range(n_sentences))


def _encode(tok, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=False))


def find_span(prompt_ids: list[int], answer_ids: list[int]) -> tuple[int, int] | None:
    """First window of len(answer_ids) tokens sharing > 90% of the answer's unique tokens."""
    want = set(answer_ids)
    n = len(answer_ids)
    for i in range(len(prompt_ids) - n + 1):
        if len(set(prompt_ids[i:i + n]) & want) / len(want) > 0.9:
            return i, i + n
    return None


def build_trials(model, needles: list[Needle], haystacks: list[str], lengths: list[int],
                 depths: list[int]) -> list[Trial]:
    """Every (needle, ctx_len, depth) trial, in that nesting order (depths in percent)."""
    depths = check_depths(depths)
    info = describe(model)
    tok = model.tokenizer
    if tok is None:
        raise ValueError("the model has no tokenizer; needle prompts need one")
    bos = [info.bos_token_id] if info.prepends_bos and info.bos_token_id is not None else []
    trials = []
    for i, nd in enumerate(needles):
        hay = _encode(tok, haystacks[i % len(haystacks)])
        if not hay:
            raise ValueError("the haystack text is empty")
        needle_ids = _encode(tok, " " + nd.needle.strip())
        q_ids = _encode(tok, nd.question)
        candidates = [_encode(tok, " " + nd.answer.strip()), _encode(tok, nd.answer)]
        periods = {t for t in set(hay) if tok.decode([t]).strip().endswith(".")}
        for ctx_len in lengths:
            budget = int(ctx_len) - len(bos) - len(needle_ids) - len(q_ids)
            if budget < 1:
                raise ValueError(f"context length {ctx_len} leaves no room for the haystack: the "
                                 f"needle and question take {len(needle_ids) + len(q_ids)} tokens")
            context = (hay * (budget // len(hay) + 1))[:budget]
            for depth in depths:
                ins = budget if depth >= 100 else int(budget * depth / 100)
                while 0 < ins < budget and context[ins - 1] not in periods:
                    ins -= 1
                ids = bos + context[:ins] + needle_ids + context[ins:] + q_ids
                span = None
                for ans in candidates:
                    if ans and (span := find_span(ids, ans)) is not None:
                        break
                if span is None:
                    raise ValueError(f"the answer {nd.answer!r} was not found in the prompt built "
                                     f"with needle {nd.needle!r}: the answer must be a part of the "
                                     "needle (Wu et al.'s real_needle)")
                trials.append(Trial(ids, span, i, int(ctx_len), int(depth), nd.answer))
    return trials


def needle_grid(model, needles=None, haystack=None, lengths=None, depths=None, *,
                max_new_tokens: int = 0, seed: int = 0) -> tuple[list[Needle], list[str], list[int], list[int]]:
    """The trial grid with its defaults: (needles, haystacks, lengths, depths in percent).

    Defaults: three "The secret code is X Y Z." needles (seeded), one filler haystack per needle
    (seed + i), five lengths up to min(512, n_ctx - max_new_tokens), the paper's 10 depths.
    """
    import torch

    info = describe(model)
    if needles is None:
        needles = default_needles(3, seed)
    needles = [Needle.coerce(x) for x in ([needles] if isinstance(needles, (Needle, dict)) else needles)]
    if not needles:
        raise ValueError("needles is empty; pass at least one (needle, question, answer)")
    if haystack is None:
        haystacks = [default_haystack(seed=seed + i) for i in range(len(needles))]
    else:
        haystacks = [haystack] if isinstance(haystack, str) else list(haystack)
    room = info.n_ctx - max_new_tokens
    if lengths is None:
        hi = min(512, room)
        lengths = sorted({round(x) for x in torch.linspace(max(hi // 4, 16), hi, 5).tolist()})
    lengths = [int(x) for x in lengths]
    if not lengths:
        raise ValueError("lengths is empty; pass at least one context length in tokens")
    if max(lengths) > room:
        extra = f" + max_new_tokens {max_new_tokens}" if max_new_tokens else ""
        raise ValueError(f"context length {max(lengths)}{extra} exceeds the model's context "
                         f"({info.n_ctx}); use shorter lengths")
    depths = check_depths(DEFAULT_DEPTHS if depths is None else depths)
    if not depths:
        raise ValueError("depths is empty; pass at least one depth in percent (0..100)")
    return needles, haystacks, lengths, depths


def needle_trials(model, needles=None, haystack=None, lengths=None, depths=None, *,
                  max_new_tokens: int = 0, seed: int = 0) -> list[Trial]:
    """The trials of :func:`needle_grid`'s grid (what the retrieval scores decode)."""
    grid = needle_grid(model, needles, haystack, lengths, depths, max_new_tokens=max_new_tokens,
                       seed=seed)
    return build_trials(model, *grid)

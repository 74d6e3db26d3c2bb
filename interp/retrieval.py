"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
Factuality"): the copy-paste score, the masking experiment and DeCoRe decoding.

Retrieval score (``nightdessert/Retrieval_Head``, ``retrieval_head_detection.py``): on a grid of
needle-in-a-haystack trials (context lengths x depths), decode greedily; at each step t every head
whose argmax attention (last query row, over all keys including generated ones) lands inside the
needle span on the very token being emitted makes one copy-paste event. Per-trial score = events /
span length. A trial counts if ROUGE-1 recall of the answer in the response is > 50%; the head's
score is the mean over counted trials; retrieval head = score > 0.1.

Two implementations, identical results (tested):

* ``"reference"``: per trial, one full forward per decode step, reading the last query row of
  every ``hook_pattern``.
* ``"fast"``: greedy decoding with a KV cache, batched over the trials of one prompt length; then
  ONE teacher-forced forward over prompt + generated tokens (batched over trials, right-padded,
  which a causal model never sees), keeping only the argmax of the rows of the decode steps.
  It checks that the teacher-forced argmax of the logits reproduces every generated token; a trial
  where it does not (a float near-tie between cached and uncached arithmetic) is redone with the
  reference (counted in ``meta["fast_fallbacks"]``).

Masking (``masking_experiment``) and DeCoRe (``decore_generate``, Gema et al., aryopg/DeCoRe) use
the decode-step head masks of ``interp._decode``.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import hooks as H
from interp._decode import MaskMode, greedy_decode, kv_cache, mask_hooks, new_cache, stop_ids
from interp._needle_trials import Needle, Trial, build_trials, default_haystack, default_needles
from interp._rouge import rouge1_recall
from interp.heads import HeadScores
from interp.models import describe
from interp.results import Result

__all__ = ["Needle", "retrieval_scores", "masking_experiment", "MaskingResult", "decore_generate",
           "DecodeOutput", "rouge1_recall", "RETRIEVAL_THRESHOLD"]

RETRIEVAL_THRESHOLD = 0.1
DEFAULT_DEPTHS = tuple(round(x) for x in torch.linspace(0, 100, 10).tolist())


# ----------------------------------------------------------------------------------------------
# trials and scoring
# ----------------------------------------------------------------------------------------------

def _trials(model, needles, haystack, lengths, depths, max_new_tokens, seed) -> list[Trial]:
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
        lengths = sorted({int(round(x)) for x in torch.linspace(max(hi // 4, 16), hi, 5).tolist()})
    lengths = [int(x) for x in lengths]
    if max(lengths) > room:
        raise ValueError(f"context length {max(lengths)} + max_new_tokens {max_new_tokens} exceeds "
                         f"the model's context ({info.n_ctx}); use shorter lengths")
    depths = [int(d) for d in (DEFAULT_DEPTHS if depths is None else depths)]
    if any(not 0 <= d <= 100 for d in depths):
        raise ValueError(f"depths are percentages in 0..100, got {depths}")
    return build_trials(model, needles, haystacks, lengths, depths)


def trial_scores(jstar: Int[Tensor, "layer head step"], generated: Sequence[int],
                 prompt_ids: Sequence[int], span: tuple[int, int]) -> Float[Tensor, "layer head"]:
    """Copy-paste events / span length: head attends (argmax) inside the span to the token emitted."""
    a, b = span
    ids = torch.tensor(list(prompt_ids))
    gen = torch.tensor(list(generated))
    inside = (jstar >= a) & (jstar < b)
    copied = ids[jstar.clamp(0, len(ids) - 1)] == gen
    return (inside & copied).sum(-1).double() / (b - a)


def _pattern_names(model) -> list[str]:
    return [H.pattern(layer) for layer in range(describe(model).n_layers)]


@torch.no_grad()
def _reference_trial(model, trial: Trial, max_new_tokens: int, is_stop) -> tuple[list[int], Tensor]:
    names = _pattern_names(model)
    device = next(model.parameters()).device
    seq = list(trial.ids)
    gen, rows = [], []
    for _ in range(max_new_tokens):
        logits, cache = model.run_with_cache(torch.tensor([seq], device=device),
                                             names_filter=lambda n: n in names)
        y = int(logits[0, -1].argmax())
        rows.append(torch.stack([cache[n][0, :, -1, :].argmax(-1).cpu() for n in names]))
        gen.append(y)
        seq.append(y)
        if is_stop(y):
            break
    return gen, torch.stack(rows, dim=-1)


@torch.no_grad()
def _teacher_forced(model, trials: list[Trial], gens: list[list[int]]):
    """Argmax key of the decode-step rows of every head, and the logits' argmax on those rows."""
    names = _pattern_names(model)
    device = next(model.parameters()).device
    seqs = [t.ids + g[:-1] for t, g in zip(trials, gens)]
    n = max(len(s) for s in seqs)
    pad = seqs[0][0]
    ids = torch.tensor([s + [pad] * (n - len(s)) for s in seqs], device=device)
    bounds = [(len(t.ids) - 1, len(t.ids) - 1 + len(g)) for t, g in zip(trials, gens)]
    found: dict[str, list[Tensor]] = {}

    def keep(pattern: Tensor, hook) -> None:  # [batch, head, query_pos, key_pos]
        found[hook.name] = [pattern[i, :, lo:hi].argmax(-1).cpu() for i, (lo, hi) in enumerate(bounds)]

    with model.hooks(fwd_hooks=[(nm, keep) for nm in names]):
        logits = model(ids)
    jstar = [torch.stack([found[nm][i] for nm in names]) for i in range(len(trials))]
    preds = [logits[i, lo:hi].argmax(-1).tolist() for i, (lo, hi) in enumerate(bounds)]
    return jstar, preds


def _fast_trials(model, trials, max_new_tokens, is_stop, batch_size, progress):
    out: list[Any] = [None] * len(trials)
    by_len: dict[int, list[int]] = {}
    for i, t in enumerate(trials):
        by_len.setdefault(len(t.ids), []).append(i)
    vocab = describe(model).d_vocab
    fallbacks = 0
    groups = list(by_len.values())
    for g in _progress(groups, progress, "retrieval (fast)"):
        for c in range(0, len(g), batch_size):
            idx = g[c:c + batch_size]
            gens = greedy_decode(model, [trials[i].ids for i in idx],
                                 max_new_tokens=max_new_tokens, is_stop=is_stop)
            # one teacher-forced forward; chunk so the logits stay under ~256 MB
            per = max(1, int(256e6 // (4 * vocab * (len(trials[idx[0]].ids) + max_new_tokens))))
            for s in range(0, len(idx), per):
                sub = idx[s:s + per]
                jstar, preds = _teacher_forced(model, [trials[i] for i in sub], gens[s:s + per])
                for k, i in enumerate(sub):
                    if preds[k] == gens[s + k]:
                        out[i] = (gens[s + k], jstar[k])
                    else:
                        fallbacks += 1
                        out[i] = _reference_trial(model, trials[i], max_new_tokens, is_stop)
    return out, fallbacks


def _progress(it, on: bool, desc: str):
    if not on:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc)


def retrieval_scores(
    model,
    *,
    needles: Sequence[Needle | dict | tuple] | Needle | None = None,
    haystack: str | Sequence[str] | None = None,
    lengths: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    implementation: Literal["fast", "reference"] = "fast",
    max_new_tokens: int = 50,
    stop: Sequence[str] = ("\n",),
    min_recall: float = 0.5,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> HeadScores:
    """Retrieval score [layer, head] of Wu et al. 2024 (see the module docstring).

    ``needles``: (needle, question, answer) triples (default: three "The secret code is X Y Z."
    needles of the zoo language); ``haystack``: text, or one text per needle (default: filler of
    the zoo grammar); ``lengths``: prompt lengths in tokens (default: 5 lengths up to
    min(512, n_ctx - max_new_tokens)); ``depths``: needle depths in percent (default the paper's 10).
    Decoding stops at EOS, at a token whose text contains one of ``stop``, or after
    ``max_new_tokens`` (50, as the paper). ``per_example`` holds every trial's score;
    ``meta["trials"]`` each trial's grid cell, response, recall and acceptance.
    """
    if implementation not in ("fast", "reference"):
        raise ValueError(f"implementation must be 'fast' or 'reference', not {implementation!r}")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    info = describe(model)
    trials = _trials(model, needles, haystack, lengths, depths, max_new_tokens, seed)
    is_stop = stop_ids(model, stop)
    fallbacks = 0
    if implementation == "reference":
        runs = [_reference_trial(model, t, max_new_tokens, is_stop)
                for t in _progress(trials, progress, "retrieval (reference)")]
    else:
        runs, fallbacks = _fast_trials(model, trials, max_new_tokens, is_stop, batch_size, progress)
    per_trial, rows, accepted = [], [], []
    tok = model.tokenizer
    for t, (gen, jstar) in zip(trials, runs):
        per_trial.append(trial_scores(jstar, gen, t.ids, t.span))
        text_ids = gen[:-1] if gen and gen[-1] == getattr(tok, "eos_token_id", None) else gen
        response = tok.decode(text_ids)
        recall = rouge1_recall(t.answer, response)
        accepted.append(recall > min_recall)
        rows.append(dict(needle=t.needle_index, ctx_len=t.ctx_len, depth=t.depth,
                         span=list(t.span), n_steps=len(gen), response=response,
                         recall=recall, accepted=recall > min_recall))
    scores = torch.stack(per_trial, dim=-1)  # [L, H, trial]
    acc = torch.tensor(accepted)
    mean = scores[..., acc].mean(-1) if acc.any() else torch.zeros(scores.shape[:2], dtype=scores.dtype)
    res = HeadScores.from_tensor(
        model, mean, per_example=scores,
        title="Retrieval score (Wu et al. 2024)", method="retrieval", implementation=implementation,
        threshold=RETRIEVAL_THRESHOLD, n_trials=len(trials), n_accepted=int(acc.sum()),
        min_recall=min_recall, max_new_tokens=max_new_tokens, fast_fallbacks=fallbacks,
        trials=rows, positional=info.positional,
    )
    res.meta["retrieval_heads"] = [f"L{lh[0]}H{lh[1]}" for lh in res.above(RETRIEVAL_THRESHOLD)]
    return res

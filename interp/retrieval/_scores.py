"""Retrieval scores, the masking experiment and DeCoRe decoding (see ``interp.retrieval``)."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import _bridge as B
from interp import components as C
from interp import hooks as H
from interp.distributed import dispatch
from interp.heads import HeadScores
from interp.models import as_model, describe
from interp.results import Result
from interp.retrieval._decode import (
    MaskMode,
    greedy_decode,
    kv_cache,
    mask_hooks,
    new_cache,
    stop_ids,
)
from interp.retrieval._rouge import rouge1_recall
from interp.retrieval._trials import DEFAULT_DEPTHS, Needle, Trial, needle_trials  # noqa: F401

RETRIEVAL_THRESHOLD = 0.1


# ----------------------------------------------------------------------------------------------
# trials and scoring
# ----------------------------------------------------------------------------------------------

def _trials(model, needles, haystack, lengths, depths, max_new_tokens, seed) -> list[Trial]:
    return needle_trials(model, needles, haystack, lengths, depths,
                         max_new_tokens=max_new_tokens, seed=seed)


def _copy_events(jstar: Int[Tensor, "layer head step"], generated: Sequence[int],
                 prompt_ids: Sequence[int], span: tuple[int, int]) -> Tensor:
    """``[layer, head, step]`` bool: the head's argmax key lies in the needle span and holds the
    token emitted at that step."""
    a, b = span
    ids = torch.tensor(list(prompt_ids), device=jstar.device)
    gen = torch.tensor(list(generated), device=jstar.device)
    inside = (jstar >= a) & (jstar < b)
    return inside & (ids[jstar.clamp(0, len(ids) - 1)] == gen)


def trial_scores(jstar: Int[Tensor, "layer head step"], generated: Sequence[int],
                 prompt_ids: Sequence[int], span: tuple[int, int]) -> Float[Tensor, "layer head"]:
    """Copy-paste events / span length: head attends (argmax) inside the span to the token emitted."""
    a, b = span
    return _copy_events(jstar, generated, prompt_ids, span).sum(-1).double() / (b - a)


def trial_fractions(jstar: Int[Tensor, "layer head step"], generated: Sequence[int],
                    prompt_ids: Sequence[int], span: tuple[int, int]) -> Float[Tensor, "layer head"]:
    """The fraction of the needle's tokens a head copied at least once, in [0, 1]: the copy
    events of :func:`trial_scores`, each needle position counted once."""
    a, b = span
    event = _copy_events(jstar, generated, prompt_ids, span)
    hit = torch.zeros(*jstar.shape[:2], b - a, dtype=torch.long, device=jstar.device)
    hit.scatter_reduce_(-1, (jstar - a).clamp(0, b - a - 1), event.long(), reduce="amax")
    return hit.sum(-1).double() / (b - a)


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

    # only the decode-step rows' logits are read: unembed from the first of them on
    off = min(lo for lo, _ in bounds)
    with model.hooks(fwd_hooks=[(nm, keep) for nm in names]), B.tail_logits(model, n - off):
        logits = model(ids)
    jstar = [torch.stack([found[nm][i] for nm in names]) for i in range(len(trials))]
    preds = [logits[i, lo - off:hi - off].argmax(-1).tolist() for i, (lo, hi) in enumerate(bounds)]
    return jstar, preds


def _fast_trials(model, trials, max_new_tokens, is_stop, batch_size, progress):
    out: list[Any] = [None] * len(trials)
    by_len: dict[int, list[int]] = {}
    for i, t in enumerate(trials):
        by_len.setdefault(len(t.ids), []).append(i)
    vocab, n_heads = describe(model).d_vocab, describe(model).n_heads
    fallbacks = 0
    groups = list(by_len.values())
    for g in _progress(groups, progress, "retrieval (fast)"):
        for c in range(0, len(g), batch_size):
            idx = g[c:c + batch_size]
            gens = greedy_decode(model, [trials[i].ids for i in idx],
                                 max_new_tokens=max_new_tokens, is_stop=is_stop)
            # one teacher-forced forward per chunk: the decode rows' logits under ~256 MB and
            # one layer's attention pattern (heads x n^2 per example) under ~1 GB
            n_tok = len(trials[idx[0]].ids) + max_new_tokens
            per = max(1, min(int(256e6 // (4 * vocab * (max_new_tokens + 1))),
                             int(1e9 // (4 * n_heads * n_tok * n_tok))))
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
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
    trial_indices: Sequence[int] | None = None,
    counting: Literal["events", "fraction"] = "events",
    executor=None,
) -> HeadScores:
    """Retrieval score [layer, head] of Wu et al. 2024 (see the module docstring).

    ``needles``: (needle, question, answer) triples (default: three "The secret code is X Y Z."
    needles of the zoo language); ``haystack``: text, or one text per needle (default: filler of
    the zoo grammar); ``lengths``: prompt lengths in tokens (default: 5 lengths up to
    min(512, n_ctx - max_new_tokens)); ``depths``: needle depths in percent (default the paper's 10).
    Decoding stops at EOS, at a token whose text contains one of ``stop``, or after
    ``max_new_tokens`` (50), as the paper's code does; a model that repeats the answer copies
    again and those events count too (as in that code), so a score can exceed 1. Pass
    ``stop=("\\n", ".")`` to end at the needle's period instead. ``per_example`` holds every trial's score;
    ``meta["trials"]`` each trial's grid cell, response, recall and acceptance.
    ``trial_indices``: score only these trials of the grid. ``executor``: "local", "ray" or an
    ``interp.distributed`` executor: shards over trials.
    ``counting``: ``"events"`` (default) counts copy events over the needle's length, as the
    paper's code does (a repeated answer counts again, so a score can exceed 1);
    ``"fraction"`` counts each needle token once: the fraction of the needle the head copied,
    in [0, 1], the quantity the paper's definition |g_h ∩ k| / |k| describes.
    """
    if executor is not None:  # the same shards in-process or on Ray workers
        return dispatch("retrieval_scores", locals())
    model = as_model(model)
    if implementation not in ("fast", "reference"):
        raise ValueError(f"implementation must be 'fast' or 'reference', not {implementation!r}")
    if counting not in ("events", "fraction"):
        raise ValueError(f"counting must be 'events' or 'fraction', not {counting!r}")
    score_fn = trial_scores if counting == "events" else trial_fractions
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    info = describe(model)
    trials = _trials(model, needles, haystack, lengths, depths, max_new_tokens, seed)
    trials = trials if trial_indices is None else [trials[int(i)] for i in trial_indices]
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
        per_trial.append(score_fn(jstar, gen, t.ids, t.span))
        text_ids = gen[:-1] if gen and gen[-1] == getattr(tok, "eos_token_id", None) else gen
        response = tok.decode(text_ids)
        recall = rouge1_recall(t.answer, response)
        accepted.append(recall > min_recall)
        rows.append({"needle": t.needle_index, "ctx_len": t.ctx_len, "depth": t.depth,
                     "span": list(t.span), "n_steps": len(gen), "response": response,
                     "recall": recall, "accepted": recall > min_recall})
    scores = torch.stack(per_trial, dim=-1)  # [L, H, trial]
    acc = torch.tensor(accepted, device=scores.device)
    mean = (scores[..., acc].mean(-1) if acc.any()
            else torch.zeros(scores.shape[:2], dtype=scores.dtype, device=scores.device))
    res = HeadScores.from_tensor(
        model, mean, per_example=scores,
        title=("Retrieval score (Wu et al. 2024): copy events per needle token" if counting == "events"
               else "Retrieval score (Wu et al. 2024): fraction of the needle copied"),
        method="retrieval", implementation=implementation, counting=counting,
        threshold=RETRIEVAL_THRESHOLD, n_trials=len(trials), n_accepted=int(acc.sum()),
        min_recall=min_recall, max_new_tokens=max_new_tokens, fast_fallbacks=fallbacks,
        trials=rows, positional=info.positional,
    )
    res.meta["retrieval_heads"] = [C.label(C.Head(*lh)) for lh in res.above(RETRIEVAL_THRESHOLD)]
    return res


# ----------------------------------------------------------------------------------------------
# masking experiment
# ----------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class MaskingResult(Result):
    """Needle accuracy (100 x mean ROUGE-1 recall of the answer) per condition:
    ``baseline``, ``top_k`` (the top-K retrieval heads masked), ``random_k`` (mean over draws of
    K random heads outside the top heads). ``meta`` names the heads, the per-draw accuracies and
    the exact-match rates (every answer word recalled)."""

    value_name = "accuracy"

    @property
    def drop_top(self) -> float:
        return float(self.values[0] - self.values[1])

    @property
    def drop_random(self) -> float:
        return float(self.values[0] - self.values[2])


def _parse_heads(heads, info) -> list[tuple[int, int]]:
    """Query heads in any form :func:`interp.components.parse_many` reads, range-checked."""
    hs = C.heads_only(C.parse_many(heads, **C.sizes(info)), "head masking")
    return [(h.layer, h.head) for h in hs]


def _accuracy(model, trials: list[Trial], heads, mode, max_new_tokens, is_stop, batch_size):
    by_len: dict[int, list[int]] = {}
    for i, t in enumerate(trials):
        by_len.setdefault(len(t.ids), []).append(i)
    recalls = [0.0] * len(trials)
    tok = model.tokenizer
    for g in by_len.values():
        for c in range(0, len(g), batch_size):
            idx = g[c:c + batch_size]
            gens = greedy_decode(model, [trials[i].ids for i in idx], max_new_tokens=max_new_tokens,
                                 is_stop=is_stop, heads=heads, mode=mode)
            for i, gen in zip(idx, gens):
                recalls[i] = rouge1_recall(trials[i].answer, tok.decode(gen))
    r = torch.tensor(recalls, device="cpu")
    return 100 * float(r.mean()), 100 * float((r >= 1).float().mean())


def masking_experiment(
    model,
    *,
    heads: Sequence[tuple[int, int] | str] | None = None,
    k: int = 10,
    n_random: int = 3,
    scores: HeadScores | None = None,
    mode: MaskMode = "query",
    exclude_top: int | None = None,
    needles: Sequence[Needle | dict | tuple] | Needle | None = None,
    haystack: str | Sequence[str] | None = None,
    lengths: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    max_new_tokens: int = 50,
    stop: Sequence[str] = ("\n",),
    batch_size: int = 32,
    seed: int = 0,
) -> MaskingResult:
    """Wu et al.'s causal check: needle accuracy with the top-K retrieval heads masked against K
    random heads drawn from outside the top ``exclude_top`` heads (default: max(K, number of heads
    scoring > 0.1)); ``n_random`` draws. Masks apply to decode steps only (the prefill runs
    unmasked); ``mode="query"`` zeroes the query after rotary (uniform attention),
    ``"output"`` the head's output. Without ``heads`` the top K are taken from ``scores``
    (computed with :func:`retrieval_scores` on the same trials when not given)."""
    model = as_model(model)
    info = describe(model)
    if not 1 <= k <= info.n_layers * info.n_heads:
        raise ValueError(f"k must be in 1..{info.n_layers * info.n_heads}, got {k}")
    grid = {"needles": needles, "haystack": haystack, "lengths": lengths, "depths": depths}
    if heads is None and scores is None:
        scores = retrieval_scores(model, **grid, max_new_tokens=max_new_tokens, stop=stop,
                                  batch_size=batch_size, seed=seed)
    ranked = None
    if scores is not None:
        if tuple(scores.values.shape) != (info.n_layers, info.n_heads):
            raise ValueError("scores do not match this model's [layer, head] shape")
        flat = scores.values.flatten().argsort(descending=True, stable=True).tolist()
        ranked = [divmod(i, info.n_heads) for i in flat]
    if heads is None:
        top = ranked[:k]
    else:
        top = _parse_heads(heads, info)
        k = len(top)
    if ranked is None:
        pool = [(a, b) for a in range(info.n_layers) for b in range(info.n_heads) if (a, b) not in top]
    else:
        n_ret = int((scores.values > RETRIEVAL_THRESHOLD).sum())
        skip = exclude_top if exclude_top is not None else max(k, n_ret)
        pool = [h for h in ranked[skip:] if h not in top]
    if len(pool) < k:
        raise ValueError(f"only {len(pool)} heads lie outside the top heads; lower k or exclude_top")
    trials = _trials(model, needles, haystack, lengths, depths, max_new_tokens, seed)
    is_stop = stop_ids(model, stop)
    def run(hs):
        return _accuracy(model, trials, hs, mode, max_new_tokens, is_stop, batch_size)
    base, base_em = run([])
    top_acc, top_em = run(top)
    rng = random.Random(seed)
    draws = [sorted(rng.sample(pool, k)) for _ in range(n_random)]
    rand = [run(d) for d in draws]
    rand_acc = sum(a for a, _ in rand) / len(rand)
    def label(hs):
        return [C.label(C.Head(a, b)) for a, b in hs]
    return MaskingResult(
        values=torch.tensor([base, top_acc, rand_acc], device="cpu"), dims=("condition",),
        coords={"condition": ["baseline", "top_k", "random_k"]},
        meta={"top_heads": label(top), "random_heads": [label(d) for d in draws],
                  "random_accuracy": [a for a, _ in rand], "exact_match": {
                      "baseline": base_em, "top_k": top_em, "random_k": [e for _, e in rand]},
                  "k": k, "mode": mode, "n_trials": len(trials), "title": "Needle accuracy under head masking"},
    )


# ----------------------------------------------------------------------------------------------
# DeCoRe
# ----------------------------------------------------------------------------------------------

@dataclass
class DecodeOutput:
    tokens: list[int]
    text: str
    alphas: list[float]


@torch.no_grad()
def decore_generate(
    model,
    prompt: str | Sequence[int] | Tensor,
    *,
    heads: Sequence[tuple[int, int] | str],
    alpha: float | None = None,
    max_new_tokens: int = 50,
    mode: MaskMode = "query",
) -> DecodeOutput:
    """DeCoRe greedy decoding: ``argmax (1+a) log p_base - a log p_masked`` where ``masked`` has
    ``heads`` masked on decode steps; ``a`` = entropy of p_base in nats (``alpha=None``, the
    paper's DeCoRe-entropy) or a fixed value (DeCoRe-vanilla uses 0.5). Both runs share the
    unmasked prefill cache; stops at EOS."""
    model = as_model(model)
    info = describe(model)
    hs = _parse_heads(heads, info)
    if isinstance(prompt, str):
        ids = model.to_tokens(prompt)[0].tolist()
    else:
        ids = torch.as_tensor(prompt, device="cpu").reshape(-1).tolist()
    if len(ids) < 2:
        raise ValueError("the prompt needs at least 2 tokens (BOS + one)")
    if len(ids) + max_new_tokens > info.n_ctx:
        raise ValueError(f"prompt ({len(ids)}) + max_new_tokens exceeds the context ({info.n_ctx})")
    device = next(model.parameters()).device
    eos = getattr(model.tokenizer, "eos_token_id", None)
    with kv_cache(model):
        _, base_cache = model(torch.tensor([ids[:-1]], device=device),
                              return_type="logits_and_cache", past_key_values=new_cache(model))
    if base_cache is None or base_cache.get_seq_length() != len(ids) - 1:
        raise RuntimeError("this model's bridge keeps no KV cache; decore_generate needs one")
    masked_cache = copy.deepcopy(base_cache)
    tokens, alphas = [], []
    last = ids[-1]
    for step in range(max_new_tokens):
        total = len(ids) + step
        kw = {"attention_mask": torch.ones(1, total, dtype=torch.long, device=device),
                  "position_ids": torch.full((1, 1), total - 1, device=device),
                  "return_type": "logits_and_cache"}
        x = torch.tensor([[last]], device=device)
        with kv_cache(model):
            lb, base_cache = model(x, past_key_values=base_cache, **kw)
            with model.hooks(fwd_hooks=mask_hooks(model, hs, mode=mode)):
                lm, masked_cache = model(x, past_key_values=masked_cache, **kw)
        lp_b = torch.log_softmax(lb[0, -1].double(), -1)
        lp_m = torch.log_softmax(lm[0, -1].double(), -1)
        if alpha is None:
            a = float(-(lp_b.exp() * torch.log(lp_b.exp() + 1e-12)).sum())
        else:
            a = float(alpha)
        y = int(((1 + a) * lp_b - a * lp_m).argmax())
        tokens.append(y)
        alphas.append(a)
        last = y
        if y == eos:
            break
    text = model.tokenizer.decode(tokens[:-1] if tokens and tokens[-1] == eos else tokens)
    return DecodeOutput(tokens, text, alphas)

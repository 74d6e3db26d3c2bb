"""Greedy decoding on a TransformerBridge with a KV cache, and head masks for decode steps.

* ``kv_cache(model)``: transformers >= 5 passes the layer cache to attention as ``cache=``, but the
  bridge's attention components read ``past_key_values=`` (or ``layer_past=``); without help every
  cached decode step attends only to itself. This context manager maps one name to the other on
  each attention component for its duration (and removes the mapping on exit).
* ``greedy_decode``: batched greedy decoding of equal-length prompts. The prefill (all prompt
  tokens but the last) runs unmasked; the last prompt token and every generated token run as
  decode steps, with the optional head mask. With ``use_cache=False`` every step recomputes the
  whole sequence and the mask is applied to decode positions only, which is the same computation.
* Head masks (Wu et al. 2024, ``needle_in_haystack_with_mask.py``): ``mode="query"`` zeroes the
  head's query after rotary (``hook_rot_q`` on rotary models, ``hook_q`` otherwise), so all its
  scores are 0 and it attends uniformly over the visible keys (on ALiBi models the bias remains);
  ``mode="output"`` zeroes the head's output ``hook_z``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

from interp import _bridge as B
from interp import hooks as H
from interp.models import describe

MaskMode = Literal["query", "output"]


def kv_cache(model) -> contextlib.AbstractContextManager:
    """Map ``cache=`` to ``past_key_values=`` in every attention component's key/value step for
    the duration (stack-safe: nested inside or around the patching engine's overrides)."""

    def make(_layer: int, current):
        def update(k, v, **kw):
            if kw.get("past_key_values") is None and kw.get("layer_past") is None \
                    and kw.get("cache") is not None:
                kw["past_key_values"] = kw["cache"]
            return current(k, v, **kw)
        return update

    return B.kv_updates(model, make)


def new_cache(model):
    return B.new_dynamic_cache(model)


def mask_hooks(model, heads: Iterable[tuple[int, int]], *, mode: MaskMode = "query",
               from_pos: int = 0) -> list[tuple[str, Callable]]:
    """Forward hooks that mask ``heads`` at input positions ``>= from_pos``."""
    if mode not in ("query", "output"):
        raise ValueError(f"mode must be 'query' or 'output', not {mode!r}")
    info = describe(model)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        info.check_head(layer, head)
        by_layer.setdefault(layer, []).append(head)
    rotary = info.positional == "rotary" and H.rot_q(0) in info.hooks
    out = []
    for layer, hs in sorted(by_layer.items()):
        if mode == "output":
            name = H.z(layer)
        else:
            name = H.rot_q(layer) if rotary else H.q(layer)
        idx = torch.tensor(sorted(set(hs)), device="cpu")

        def hook(x: Tensor, hook, _idx=idx) -> Tensor:  # x: [batch, pos, head, d_head]
            x = x.clone()
            x[:, from_pos:, _idx.to(x.device), :] = 0
            return x

        out.append((name, hook))
    return out


def stop_ids(model, stop: Sequence[str]) -> Callable[[int], bool]:
    """A predicate: does this token end generation (EOS, or its text contains a stop string)?"""
    tok = model.tokenizer
    eos = getattr(tok, "eos_token_id", None)
    memo: dict[int, bool] = {}

    def is_stop(t: int) -> bool:
        if t not in memo:
            memo[t] = t == eos or any(s in tok.decode([t]) for s in stop)
        return memo[t]

    return is_stop


@torch.no_grad()
def greedy_decode(model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                  is_stop: Callable[[int], bool], heads: Sequence[tuple[int, int]] = (),
                  mode: MaskMode = "query", use_cache: bool = True) -> list[list[int]]:
    """Greedy continuations of equal-length prompts (each stops at its first stop token)."""
    lens = {len(p) for p in prompts}
    if len(lens) != 1 or min(lens) < 2:
        raise ValueError("greedy_decode needs prompts of one common length >= 2")
    device = next(model.parameters()).device
    ids = torch.tensor([list(p) for p in prompts], device=device)
    n, P = ids.shape
    gen = [[] for _ in range(n)]
    done = [False] * n
    cache = None
    if use_cache:
        with kv_cache(model), B.tail_logits(model, 1):  # the prefill's logits are not read
            _, cache = model(ids[:, :-1], return_type="logits_and_cache",
                             past_key_values=new_cache(model))
        if cache is None or cache.get_seq_length() != P - 1:
            use_cache = False  # this bridge does not keep a cache: recompute every step
    seq = ids
    for step in range(max_new_tokens):
        if use_cache:
            total = P + step
            hooks = mask_hooks(model, heads, mode=mode) if heads else []
            with kv_cache(model), model.hooks(fwd_hooks=hooks):
                logits, cache = model(
                    seq[:, -1:], return_type="logits_and_cache", past_key_values=cache,
                    attention_mask=torch.ones(n, total, dtype=torch.long, device=device),
                    position_ids=torch.full((n, 1), total - 1, device=device))
        else:
            hooks = mask_hooks(model, heads, mode=mode, from_pos=P - 1) if heads else []
            with model.hooks(fwd_hooks=hooks):
                logits = model(seq)
        y = logits[:, -1].argmax(-1)
        for i in range(n):
            if not done[i]:
                t = int(y[i])
                gen[i].append(t)
                done[i] = is_stop(t)
        if all(done):
            break
        seq = torch.cat([seq, y[:, None]], dim=1)
    return gen

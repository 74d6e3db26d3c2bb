"""Machinery behind ``interp.ablation``: component names, replacement values, scoped hooks, and
the batched replay used by direct-vs-total effects.

Knockout sweeps run each ablation as an activation patch whose source is the replacement value,
through the patching engine (:mod:`interp._engine`).

Replay (``Replayer``): one clean forward records, for every block, the arguments the model
passes to it (attention mask, rotary position embeddings, position ids, ...); a replay from layer
``l`` starts from the clean ``resid_pre[l]``, repeated once per copy along the batch axis, and
calls blocks ``l..L-1`` directly. Both are compared against a plain loop of ``run_with_hooks`` on
every test family (the ablation tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import components as C
from interp import hooks as H
from interp._engine.restart import Restarter
from interp.models import describe
from interp.prompts import PromptSet

Method = Literal["zero", "mean", "resample"]


@dataclass(frozen=True)
class Component:
    """One ablatable unit: a query head's ``z`` slice, a whole attention layer, or an MLP."""

    kind: Literal["head", "attn", "mlp"]
    layer: int
    head: int | None = None

    @property
    def hook(self) -> str:
        if self.kind == "head":
            return H.z(self.layer)
        return H.attn_out(self.layer) if self.kind == "attn" else H.mlp_out(self.layer)

    @property
    def name(self) -> C.Component:
        """The same unit in the shared vocabulary (:mod:`interp.components`)."""
        if self.kind == "head":
            return C.Head(self.layer, self.head)  # type: ignore[arg-type]
        return C.Attn(self.layer) if self.kind == "attn" else C.MLP(self.layer)

    @property
    def label(self) -> str:
        return C.label(self.name)


def parse_components(model, components) -> list[Component]:
    """``["L3H2", "ATTN1", "MLP0", (2, 1)]`` (or ``"L3H2,MLP0"``; any form
    :func:`interp.components.parse` reads) -> ablatable components, checked against the model."""
    parsed = C.parse_many(components, **C.sizes(describe(model)))
    out: list[Component] = []
    for c in parsed:
        if isinstance(c, C.Head):
            out.append(Component("head", c.layer, c.head))
        elif isinstance(c, C.Attn):
            out.append(Component("attn", c.layer))
        elif isinstance(c, C.MLP):
            out.append(Component("mlp", c.layer))
        else:
            raise ValueError(
                f"cannot ablate {C.label(c)}: ablation takes query heads ('L3H2'), whole "
                "attention layers ('ATTN3') and MLPs ('MLP3').")
    if not out:
        raise ValueError("no components given: pass e.g. ['L0H1', 'MLP2'].")
    return out


# --------------------------------------------------------------------------------------------
# replacement values
# --------------------------------------------------------------------------------------------


def source_values(
    model,
    hooks: set[str],
    method: Method,
    tokens: Int[Tensor, "batch pos"] | None,
    answer_pos: Int[Tensor, " batch"] | None,
    *,
    per_position: bool,
) -> dict[str, Tensor]:
    """Replacement activations per hook name, leading axes ``[batch or 1, pos or 1, ...]``.

    zero: empty dict (zeros are made on the fly). mean: the mean over the reference prompts,
    per position (``[1, pos, ...]``) or over every real token (``[1, 1, ...]``). resample: the
    reference prompts' own activations ``[n_ref, pos, ...]``.
    """
    if method == "zero":
        return {}
    if tokens is None:
        raise ValueError(f"{method} ablation needs reference prompts; pass reference=PromptSet.")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks)
    out: dict[str, Tensor] = {}
    for name in hooks:
        act = cache[name].detach()
        if method == "resample":
            out[name] = act
        else:
            out[name] = mean_activation(act, answer_pos, per_position=per_position)
    return out


def mean_activation(
    act: Float[Tensor, "batch pos *rest"], answer_pos: Int[Tensor, " batch"] | None, *,
    per_position: bool,
) -> Float[Tensor, "1 pos_or_1 *rest"]:
    """The mean activation of a batch, never counting padding: a position is real for an
    example up to its answer position (prompts are padded at the end). ``per_position``: the
    mean over the examples for which the position is real, ``[1, pos, ...]`` (a position no
    example reaches gets the mean over every real token); else the mean over every real token,
    ``[1, 1, ...]``. Without ``answer_pos`` every position counts. The one mean-ablation
    statistic of the library (ablation, knockout sweeps, circuit faithfulness)."""
    b, n_pos = act.shape[:2]
    if answer_pos is None:
        real = torch.ones(b, n_pos, dtype=torch.bool, device=act.device)
    else:
        ap = answer_pos.to(act.device)
        real = torch.arange(n_pos, device=act.device)[None] <= ap[:, None]
    w = real.to(act.dtype).view(b, n_pos, *([1] * (act.ndim - 2)))
    overall = (act * w).sum((0, 1)) / w.sum((0, 1)).clamp_min(1)
    if not per_position:
        return overall.reshape(1, 1, *act.shape[2:])
    count = w.sum(0)  # [pos, 1, ...]
    per_pos = (act * w).sum(0) / count.clamp_min(1)
    per_pos = torch.where(count > 0, per_pos, overall.expand_as(per_pos))
    return per_pos.unsqueeze(0)


def _fit_positions(src: Tensor, n_pos: int, name: str) -> Tensor:
    if src.shape[1] in (1, n_pos):
        return src
    raise ValueError(
        f"the replacement for {name} covers {src.shape[1]} positions but the prompts have "
        f"{n_pos}: per-position means and resampling need reference prompts of the same token "
        "length; use per_position=False (mean over all positions) or a matching reference."
    )


def make_hook(comps: list[Component], src: Tensor | None, rows: Tensor | None) -> Callable:
    """A forward hook replacing the given components at one hook point.

    ``src``: replacement ``[n or 1, pos or 1, ...]`` (None = zeros); ``rows``: for resampling,
    which source row feeds each batch row (cycled when the batch is longer).
    """
    heads = [c.head for c in comps if c.kind == "head"]
    whole = any(c.kind != "head" for c in comps)

    def hook(act: Tensor, hook) -> Tensor:
        b, p = act.shape[0], act.shape[1]
        if src is None:
            rep = torch.zeros((), dtype=act.dtype, device=act.device)
        else:
            rep = _fit_positions(src, p, hook.name).to(act.device, act.dtype)
            if rows is not None:
                rep = rep[rows.to(act.device)[torch.arange(b, device=act.device) % len(rows)]]
        out = act.clone()
        if whole:
            out[:] = rep
        else:
            out[:, :, heads] = rep if rep.ndim == 0 else rep[:, :, heads]
        return out

    return hook


# --------------------------------------------------------------------------------------------
# replacement sources
# --------------------------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in ("zero", "mean", "resample"):
        raise ValueError(f"unknown ablation method {method!r}; use 'zero', 'mean' or 'resample'.")


def sources(model, comps: list[Component], method: Method, prompts: PromptSet | None,
             reference: PromptSet | None, per_position: bool | None, seed: int):
    """(replacement values per hook, resample row map or None, per_position used)."""
    _check_method(method)
    hooks = {c.hook for c in comps}
    if method == "zero":
        return {}, None, False
    if method == "mean":
        ref = reference if reference is not None else prompts
        if ref is None:
            raise ValueError("mean ablation needs reference prompts: pass reference=PromptSet.")
        ref.check(model)
        same_len = prompts is None or ref.n_pos == prompts.n_pos
        can = bool(ref.aligned and same_len and int(ref.answer_pos[0]) == ref.n_pos - 1)
        if per_position is None:
            per_position = can
        elif per_position and not can:
            raise ValueError(
                "per-position means need reference prompts that all have the same length as the "
                "prompts (no padding); pass per_position=False to average over all positions."
            )
        src = source_values(model, hooks, "mean", ref.clean_tokens, ref.answer_pos, per_position=per_position)
        return src, None, per_position
    g = torch.Generator().manual_seed(seed)
    if reference is not None:
        reference.check(model)
        if prompts is not None and reference.n_pos != prompts.n_pos:
            raise ValueError(
                f"resample ablation needs reference prompts of the same token length as the "
                f"prompts ({reference.n_pos} vs {prompts.n_pos}), so positions line up."
            )
        tokens, rows = reference.clean_tokens, torch.randperm(len(reference), generator=g, device="cpu")
    elif prompts is not None and prompts.has_corrupted:
        tokens, rows = prompts.require_corrupted(), torch.arange(len(prompts), device="cpu")
    elif prompts is not None:
        if len(prompts) < 2:
            raise ValueError("resampling within the prompts needs at least 2 prompts, or pass reference=.")
        shift = int(torch.randint(1, len(prompts), (1,), generator=g, device="cpu"))
        tokens, rows = prompts.clean_tokens, torch.roll(torch.arange(len(prompts), device="cpu"), shift)
    else:
        raise ValueError("resample ablation needs reference prompts: pass reference=PromptSet.")
    return source_values(model, hooks, "resample", tokens, None, per_position=True), rows, True


def hooks_for(comps: list[Component], src: dict[str, Tensor], rows: Tensor | None):
    by_hook: dict[str, list[Component]] = {}
    for c in comps:
        by_hook.setdefault(c.hook, []).append(c)
    return [(name, make_hook(cs, src.get(name), rows)) for name, cs in by_hook.items()]



@contextmanager
def scoped_hooks(model, fwd_hooks: list[tuple[str, Callable]]) -> Iterator[None]:
    """Hooks added for the body only; removed on exit, also when the body raises."""
    with model.hooks(fwd_hooks=fwd_hooks):
        yield


# --------------------------------------------------------------------------------------------
# batched replay from a cached residual stream
# --------------------------------------------------------------------------------------------


class Replayer:
    """One clean forward recorded for replays (every ``resid_pre`` plus ``extra`` hooks); the
    block restart itself is :class:`interp._engine.restart.Restarter`, shared with patching."""

    def __init__(self, model, tokens: Int[Tensor, "batch pos"], extra: set[str] | None = None):
        self.model = model
        self.tokens = tokens
        self.b = int(tokens.shape[0])
        self.n_layers = describe(model).n_layers
        names = {H.resid_pre(layer) for layer in range(self.n_layers)} | set(extra or ())
        self._restart = Restarter(model, tokens, names=sorted(names))
        self.logits = self._restart.logits
        cache = self._restart.cache
        self.resid = {layer: cache[H.resid_pre(layer)] for layer in range(self.n_layers)}
        self.cache = {name: cache[name] for name in (extra or ())}

    def run(self, start: int, n: int) -> Float[Tensor, "batch pos d_model"]:
        """Blocks ``start..L-1`` on ``n`` stacked copies of the clean ``resid_pre[start]``
        (copy-major: row ``j*b + i`` is copy j of example i); returns the final residual."""
        with torch.no_grad():
            return self._restart.run_blocks(start, self.resid[start].repeat(n, 1, 1))


def sweep_layer_hooks(
    comps: list[Component], b: int, src: dict[str, Tensor], rows: Tensor | None,
) -> list[tuple[str, Callable]]:
    """Hooks for a stack of copies where copy j ablates ``comps[j]`` alone (rows j*b..j*b+b-1)."""
    by_hook: dict[str, list[tuple[int, Component]]] = {}
    for j, c in enumerate(comps):
        by_hook.setdefault(c.hook, []).append((j, c))
    hooks = []
    for name, items in by_hook.items():
        s = src.get(name)

        def hook(act: Tensor, hook, items=items, s=s, name=name) -> Tensor:
            out = act.clone()
            p = act.shape[1]
            for j, c in items:
                sl = slice(j * b, (j + 1) * b)
                if s is None:
                    rep = torch.zeros((), dtype=act.dtype, device=act.device)
                else:
                    rep = _fit_positions(s, p, name).to(act.device, act.dtype)
                    if rows is not None:
                        rep = rep[rows.to(act.device)[torch.arange(b, device=act.device) % len(rows)]]
                if c.kind == "head":
                    out[sl, :, c.head] = rep if rep.ndim == 0 else rep[:, :, c.head]
                else:
                    out[sl] = rep
            return out

        hooks.append((name, hook))
    return hooks

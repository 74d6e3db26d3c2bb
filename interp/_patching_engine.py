"""Restartable forward passes for fast patching (private).

``Restarter`` runs the model once on a batch of base tokens and records, for every block, the
extra arguments the HuggingFace decoder loop hands it (attention mask, rotary cos/sin, position
ids; per-layer masks such as Gemma 2's sliding window included). It can then resume the forward
at any block ``l`` from a residual-stream tensor by calling ``model.blocks[l:]`` directly, on a
batch that stacks many patched copies of the base batch (``k * batch`` rows), and reads the
logits only at the rows the metric needs. Blocks before ``l`` are not run at all (unlike the
bridge's ``start_at_layer``, which still executes them). Hook points inside the blocks fire as
usual, so patches are ordinary forward hooks.

Exactness: tests compare ``resume(0, resid_pre[0])`` with the model's own logits and every
patching sweep with transformer-lens's one-forward-per-patch functions on five families.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks as H
from interp.models import describe


def _is_cache(x: Any) -> bool:
    return type(x).__name__.endswith("Cache") and not isinstance(x, Tensor)


def _clean_arg(x: Any) -> Any:
    if _is_cache(x):
        return None
    return x


class Restarter:
    """Resume ``model`` at any block from a residual; see the module docstring."""

    def __init__(self, model, tokens: Tensor, *, names: Sequence[str] = ()) -> None:
        self.model = model
        self.info = describe(model)
        self.batch = int(tokens.shape[0])
        self.n_pos = int(tokens.shape[1])
        self._block_args: dict[int, tuple[tuple, dict]] = {}
        want = set(names) | {H.resid_pre(0)}
        handles = []

        def record(layer: int):
            def pre(_mod, args, kwargs):
                rest = tuple(_clean_arg(a) for a in args[1:])
                kw = {k: _clean_arg(v) for k, v in kwargs.items()}
                if "use_cache" in kw:
                    kw["use_cache"] = False
                self._block_args[layer] = (rest, kw)
            return pre

        for layer, block in enumerate(model.blocks):
            handles.append(block.register_forward_pre_hook(record(layer), with_kwargs=True))
        try:
            with torch.no_grad():
                self.logits, self.cache = model.run_with_cache(tokens, names_filter=lambda n: n in want)
        finally:
            for h in handles:
                h.remove()
        if len(self._block_args) != self.info.n_layers:
            raise RuntimeError(
                "could not record the inputs of every block; this architecture's decoder loop "
                "does not call model.blocks[i] as modules. Use implementation='reference'."
            )

    # ------------------------------------------------------------------------------------------
    def _tile(self, x: Any, k: int) -> Any:
        if isinstance(x, Tensor):
            if k > 1 and x.ndim >= 2 and x.shape[0] == self.batch and self.batch > 1:
                return x.repeat(k, *([1] * (x.ndim - 1)))
            if k > 1 and x.ndim >= 2 and x.shape[0] == 1 and self.batch == 1:
                return x  # broadcasts
            return x
        if isinstance(x, tuple):
            return tuple(self._tile(y, k) for y in x)
        if isinstance(x, list):
            return [self._tile(y, k) for y in x]
        return x

    def block_args(self, layer: int, k: int) -> tuple[tuple, dict]:
        rest, kw = self._block_args[layer]
        return self._tile(rest, k), {n: self._tile(v, k) for n, v in kw.items()}

    def run_blocks(
        self, start: int, resid: Float[Tensor, "batch pos d_model"], *, stop: int | None = None,
        fwd_hooks: Sequence[tuple[str, Callable]] = (),
    ) -> Float[Tensor, "batch pos d_model"]:
        """Blocks ``start .. stop-1`` on ``resid`` (``k * batch`` rows); returns the residual after."""
        n = resid.shape[0]
        if n % self.batch:
            raise ValueError(f"rows {n} are not a multiple of the base batch {self.batch}")
        k = n // self.batch
        stop = self.info.n_layers if stop is None else stop
        h = resid
        with self.model.hooks(fwd_hooks=list(fwd_hooks)):
            for layer in range(start, stop):
                rest, kw = self.block_args(layer, k)
                out = self.model.blocks[layer](h, *rest, **kw)
                h = out[0] if isinstance(out, tuple) else out
        return h

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Final norm + unembedding + final softcap, as the model's own head."""
        squeeze = resid.ndim == 2
        x = resid[:, None] if squeeze else resid
        logits = self.model.unembed(self.model.ln_final(x))
        if self.info.final_softcap:
            logits = torch.tanh(logits / self.info.final_softcap) * self.info.final_softcap
        return logits[:, 0] if squeeze else logits

    def resume(
        self, start: int, resid: Float[Tensor, "batch pos d_model"], *, rows: Tensor | None,
        fwd_hooks: Sequence[tuple[str, Callable]] = (),
    ) -> Tensor:
        """Logits after resuming at block ``start``: ``[n, d_vocab]`` at ``rows`` (one position
        per row), or ``[n, pos, d_vocab]`` when ``rows`` is None."""
        h = self.run_blocks(start, resid, fwd_hooks=fwd_hooks)
        if rows is None:
            return self.unembed(h)
        return self.unembed(h[torch.arange(h.shape[0], device=h.device), rows.to(h.device)])


def chunk_size(info, n_rows_per_patch: int, n_pos: int, *, budget_tokens: int | None) -> int:
    """Patches per forward so that rows x positions stays within ``budget_tokens``.

    The default budget is the number of token-activations one ``run_with_cache`` of the base batch
    stores (about 12 d_model-sized vectors per token per layer), so the transient memory of a
    chunked forward stays about the size of one cached run."""
    if budget_tokens is None:
        budget_tokens = max(256, n_rows_per_patch * n_pos * max(info.n_layers, 1) * 2)
    return max(1, budget_tokens // max(1, n_rows_per_patch * n_pos))

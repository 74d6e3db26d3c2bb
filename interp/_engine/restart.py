"""Restartable forward passes for fast patching (private).

``Restarter`` runs the model once on a batch of base tokens and records, for every block, the
extra arguments the HuggingFace decoder loop hands it (attention mask, rotary cos/sin, position
ids; per-layer masks such as Gemma 2's sliding window included) and the keys and values each
attention layer computed. It can then resume the forward at any block ``l`` from a
residual-stream tensor by calling ``model.blocks[l:]`` directly, on a batch that stacks many
patched copies of the base batch (``k * batch`` rows). Blocks before ``l`` are not run at all
(unlike the bridge's ``start_at_layer``, which still executes them). Hook points inside the
blocks fire as usual, so patches are ordinary forward hooks (except inside an
``attention_output`` block, where the attention module is replaced by a given output).

Position windows. A patch that leaves positions ``< lo`` untouched cannot change them in any
later layer (attention is causal), and the metric reads nothing after the last answer position
``hi - 1``. ``run_blocks(..., lo=lo)`` therefore runs only the rows ``lo .. hi-1``; each attention
layer sees the base run's recorded keys and values of positions ``< lo`` in front of the ones it
computes (the attention component's ``_update_kv_cache`` step, overridden on the instance for
the call). At the last block, when the metric reads only rows ``>= q_lo``, the rows
``lo .. q_lo-1`` are run only up to their keys and values (the block is stopped right after the
attention layer's key/value step), and the full block runs on the query rows alone.
``window`` holds the absolute ``(lo, hi)`` of the rows a hook is currently seeing, so hooks can
address positions.

Windows need causal attention: on a model whose attention is not causal
(``describe(model).causal`` is False, e.g. BERT) ``can_window`` is False and every replay runs all
positions.

Per-example block arguments (attention masks, position ids, ALiBi biases laid out as
``[batch * heads, ...]``) are tiled example-major when ``k`` copies are stacked, so copy ``j`` of
example ``i`` (row ``j * batch + i``) gets example ``i``'s arguments.

Exactness: tests compare ``resume(0, resid_pre[0])`` with the model's own logits, every patching
sweep with transformer-lens's one-forward-per-patch functions on every test family, and windowed
runs with full runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from interp import _bridge as B
from interp import _unembed as U
from interp import hooks as H
from interp.models import describe


class _KVDone(Exception):
    """Raised inside a block once its keys and values are known (the rest is not needed)."""


def _clean_arg(x: Any) -> Any:
    if B.is_cache(x):
        return None
    return x


def _prepend(prefix: Tensor, x: Tensor) -> Tensor:
    """``prefix`` ([1 or k, batch, heads, lo, d], broadcast over copies) in front of ``x``
    ([k * batch, heads, w, d]) along positions."""
    b = prefix.shape[1]
    xs = x.reshape(-1, b, *x.shape[1:])
    pre = prefix.expand(xs.shape[0], *prefix.shape[1:])
    return torch.cat([pre, xs], dim=-2).reshape(x.shape[0], *x.shape[1:-2], -1, x.shape[-1])


class Restarter:
    """Resume ``model`` at any block from a residual; see the module docstring."""

    def __init__(self, model, tokens: Tensor, *, names: Sequence[str] = (),
                 attn_outputs: bool = False) -> None:
        self.model = model
        self.info = describe(model)
        self.batch = int(tokens.shape[0])
        self.n_pos = int(tokens.shape[1])
        self._block_args: dict[int, tuple[tuple, dict]] = {}
        self._kv: dict[int, tuple[Tensor, Tensor]] = {}
        self.window: tuple[int, int] = (0, self.n_pos)
        self.attn_out: dict[int, Tensor] = {}  # what each attention module returned (first item)
        self._w_o: dict[int, tuple[Tensor, Tensor | None] | None] = {}  # head_output_map, once
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

        def record_out(layer: int):
            def post(_mod, _args, out):
                first = out[0] if isinstance(out, tuple) else out
                if isinstance(first, Tensor):
                    self.attn_out[layer] = first.detach()
            return post

        def rec_kv(layer: int, current):
            def update(k, v, **kw):
                k, v = current(k, v, **kw)
                self._kv[layer] = (k.detach(), v.detach())
                return k, v
            return update

        for layer, block in enumerate(model.blocks):
            handles.append(block.register_forward_pre_hook(record(layer), with_kwargs=True))
            attn = getattr(block, "attn", None)
            if attn_outputs and attn is not None:
                handles.append(attn.register_forward_hook(record_out(layer)))
        try:
            with torch.no_grad(), B.kv_updates(model, rec_kv):
                self.logits, self.cache = model.run_with_cache(tokens, names_filter=lambda n: n in want)
        finally:
            for h in handles:
                h.remove()
        if len(self._block_args) != self.info.n_layers:
            raise RuntimeError(
                "could not record the inputs of every block; this architecture's decoder loop "
                "does not call model.blocks[i] as modules, so the fast engine cannot restart it."
            )
        U.check_head(model)
        self._group = self._per_example_groups()
        self.can_window = (self.info.causal and len(self._kv) == self.info.n_layers
                           and all(self._kv[i][0].shape[-2] == self.n_pos for i in self._kv)
                           and all(self._sliceable(a) for a in self._block_args.values()))

    def _per_example_groups(self) -> set[int]:
        """Leading-axis multiples ``m`` (rows ``batch * m``, example-major) that mark a block
        argument as per-example: 1 (``[batch, ...]``) and the head counts (``[batch * heads,
        ...]``, e.g. ALiBi biases). A leading axis of 1 broadcasts over the copies."""
        groups = {1, self.info.n_heads, self.info.n_kv_heads}
        return {m for m in groups if self.batch * m > 1}

    # ------------------------------------------------------------------------------------------
    def _sliceable(self, args: Any) -> bool:
        """True when every tensor argument with a position axis is one we know how to window."""
        if isinstance(args, (tuple, list)):
            return all(self._sliceable(a) for a in args)
        if isinstance(args, dict):
            return all(self._sliceable(a) for a in args.values())
        if not isinstance(args, Tensor) or self.n_pos not in args.shape:
            return True
        return self._slice(args, 0, self.n_pos) is not None

    def _slice(self, x: Any, lo: int, hi: int) -> Any:
        """Window ``x`` to query rows ``lo..hi-1`` (keys ``0..hi-1``); None if unknown."""
        n = self.n_pos
        if isinstance(x, tuple):
            return tuple(self._slice(y, lo, hi) for y in x)
        if isinstance(x, list):
            return [self._slice(y, lo, hi) for y in x]
        if not isinstance(x, Tensor) or n not in x.shape:
            return x
        if x.ndim == 4 and x.shape[-1] == n and x.shape[-2] == n:  # attention mask
            return x[..., lo:hi, :hi]
        if x.ndim == 3 and x.shape[1] == n and x.is_floating_point():  # rotary cos / sin
            return x[:, lo:hi]
        if x.ndim == 2 and x.shape[-1] == n and not x.is_floating_point():  # position ids
            return x[:, lo:hi]
        if x.ndim == 1 and x.shape[0] == n and not x.is_floating_point():  # cache position
            return x[lo:hi]
        if (x.ndim == 3 and x.shape[1] == 1 and x.shape[-1] == n and x.is_floating_point()
                and x.shape[0] == self.batch * self.info.n_heads):  # ALiBi bias, keys only
            return x[..., :hi]
        return None

    def _tile(self, x: Any, k: int) -> Any:
        """``k`` example-major copies of a per-example argument (see the module docstring)."""
        if isinstance(x, Tensor):
            if k > 1 and x.ndim >= 2 and x.shape[0] % self.batch == 0 \
                    and x.shape[0] // self.batch in self._group:
                return x.repeat(k, *([1] * (x.ndim - 1)))
            return x  # a batch axis of 1 broadcasts
        if isinstance(x, tuple):
            return tuple(self._tile(y, k) for y in x)
        if isinstance(x, list):
            return [self._tile(y, k) for y in x]
        return x

    def block_args(self, layer: int, k: int, lo: int = 0, hi: int | None = None
                   ) -> tuple[tuple, dict]:
        rest, kw = self._block_args[layer]
        hi = self.n_pos if hi is None else hi
        if (lo, hi) != (0, self.n_pos):
            rest = self._slice(rest, lo, hi)
            kw = {n: self._slice(v, lo, hi) for n, v in kw.items()}
        return self._tile(rest, k), {n: self._tile(v, k) for n, v in kw.items()}

    def _prefix(self, layer: int, k: int, lo: int) -> tuple[Tensor, Tensor]:
        """The base keys/values of positions ``< lo``, as ``[1, batch, ...]`` views that
        broadcast over the ``k`` copies (no tiled copy is kept)."""
        pk, pv = self._kv[layer]
        return pk[None, ..., :lo, :], pv[None, ..., :lo, :]

    @contextlib.contextmanager
    def _kv_step(self, layer: int, prefix: tuple[Tensor, Tensor] | None,
                 capture: list | None = None, stop: bool = False):
        """For one block call: put ``prefix`` keys/values in front of the computed ones; with
        ``capture``, keep the result; with ``stop``, end the block right there."""
        if prefix is None and capture is None:
            yield
            return
        attn = self.model.blocks[layer].attn

        def update(k, v, **_kw):
            if prefix is not None:
                k, v = _prepend(prefix[0], k), _prepend(prefix[1], v)
            if capture is not None:
                capture.append((k, v))
            if stop:
                raise _KVDone
            return k, v

        with B.kv_update(attn, lambda _current: update):
            yield

    def _call_block(self, layer: int, h: Tensor, k: int, lo: int,
                    prefix: tuple[Tensor, Tensor] | None, *, capture=None, stop=False) -> Any:
        hi = lo + h.shape[1]
        self.window = (lo, hi)
        rest, kw = self.block_args(layer, k, lo, hi)
        with self._kv_step(layer, prefix, capture, stop):
            try:
                out = self.model.blocks[layer](h, *rest, **kw)
            except _KVDone:
                return None
        return B.block_output(out)

    def attention_output(self, layer: int, out: Tensor):
        """Within the body, block ``layer``'s attention module does not run; it returns ``out``
        (with no pattern) to the block, which does the rest as usual."""
        return B.replace_forward(self.model.blocks[layer].attn, lambda *a, **kw: (out, None))

    def head_output_map(self, layer: int, z: Tensor) -> tuple[Tensor, Tensor | None] | None:
        """``(W_O [head, d_head, d_model], b_O)`` if the recorded attention output of ``layer``
        equals ``z @ W_O + b_O`` for the base run's ``z`` (so a change of one head's ``z`` moves
        the output by that head's share), else None. Checked once per layer."""
        if layer not in self._w_o:
            self._w_o[layer] = self._check_head_output_map(layer, z)
        return self._w_o[layer]

    def _check_head_output_map(self, layer: int, z: Tensor) -> tuple[Tensor, Tensor | None] | None:
        if layer not in self.attn_out:
            return None
        attn = self.model.blocks[layer].attn
        try:
            w_o = attn.W_O.detach()
            b_o = getattr(attn, "b_O", None)
            b_o = None if b_o is None else b_o.detach()
            rec = torch.einsum("bphd,hdm->bpm", z, w_o)
            if b_o is not None:
                rec = rec + b_o
        except Exception:  # noqa: BLE001 - any other layout: no shortcut
            return None
        want = self.attn_out[layer]
        if rec.shape != want.shape:
            return None
        scale = max(1.0, float(want.abs().max()))
        tol = B.tolerance(self.model, 1e-5)
        return (w_o, b_o) if float((rec - want).abs().max()) <= tol * scale else None

    def run_blocks(
        self, start: int, resid: Float[Tensor, "batch pos d_model"], *, stop: int | None = None,
        fwd_hooks: Sequence[tuple[str, Callable]] = (), lo: int = 0, q_lo: int | None = None,
        inserts: dict[int, Tensor] | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """Blocks ``start .. stop-1`` on ``resid`` (``k * batch`` rows, positions ``lo ..``);
        returns the residual after, for positions ``lo ..`` (or ``q_lo ..`` when ``q_lo`` is
        given and the last block of the model is run: only those rows are complete there).

        ``inserts[j]``: more rows (same positions) appended to the batch before block ``j``, so
        patches that start at different blocks share one forward from ``j`` on."""
        stop = self.info.n_layers if stop is None else stop
        if lo and not self.can_window:
            raise RuntimeError("this model's blocks take arguments interp cannot window; "
                               "run with lo=0")
        h = resid
        inserts = inserts or {}
        try:
            with self.model.hooks(fwd_hooks=list(fwd_hooks)):
                for layer in range(start, stop):
                    if layer in inserts and layer != start:
                        h = torch.cat([h, inserts[layer]], dim=0)
                    n = h.shape[0]
                    if n % self.batch:
                        raise ValueError(f"rows {n} are not a multiple of the base batch {self.batch}")
                    k = n // self.batch
                    prefix = self._prefix(layer, k, lo) if lo else None
                    last = layer == self.info.n_layers - 1
                    if last and self._query_start(lo, q_lo) > lo:
                        cap: list = []
                        self._call_block(layer, h[:, :q_lo - lo], k, lo, prefix, capture=cap, stop=True)
                        if not cap:
                            raise RuntimeError("the last block finished without a key/value step")
                        kv = tuple(t.reshape(k, self.batch, *t.shape[1:]) for t in cap[0])
                        h = self._call_block(layer, h[:, q_lo - lo:], k, q_lo, kv)
                        lo = q_lo
                    else:
                        h = self._call_block(layer, h, k, lo, prefix)
        finally:
            self.window = (0, self.n_pos)
        return h

    def _query_start(self, lo: int, q_lo: int | None) -> int:
        """First row the last block runs in full: ``q_lo`` when the metric reads only rows from
        there on (the rows before run up to their keys/values), else ``lo``."""
        return q_lo if (q_lo is not None and q_lo > lo and self.can_window) else lo

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Final norm + unembedding + final softcap, as the model's own head."""
        return U.decode(self.model, resid)

    @torch.no_grad()
    def columns_ok(self, rows: Tensor, columns: Tensor) -> bool:
        """Whether :meth:`unembed_columns` reproduces the model's own unembedding (checked once,
        on the cached ``resid_pre[0]``: the unembedding must be a plain linear map with optional
        bias)."""
        if not hasattr(self, "_columns_ok"):
            ok = False
            try:
                if U.columns_supported(self.model):
                    resid = self.cache[H.resid_pre(0)]
                    n = torch.arange(self.batch, device=resid.device)
                    x = resid[n, rows[:self.batch].to(resid.device)]
                    c = columns[:self.batch].to(resid.device)
                    got = self.unembed_columns(x, c)
                    want = self.unembed(x).gather(1, c)
                    tol = B.tolerance(self.model, 1e-4)
                    ok = bool((got - want).abs().max() <= tol * max(1.0, float(want.abs().max())))
            except Exception:  # noqa: BLE001 - an unembedding of another shape: use the full one
                ok = False
            self._columns_ok = ok
        return self._columns_ok

    def unembed_columns(self, resid: Float[Tensor, "n d_model"], columns: Tensor) -> Tensor:
        """Final norm, then only the logits of token ids ``columns [n, c]`` (softcap applied)."""
        return U.decode_columns(self.model, resid, columns)

    def resume(
        self, start: int, resid: Float[Tensor, "batch pos d_model"], *, rows: Tensor | None,
        fwd_hooks: Sequence[tuple[str, Callable]] = (), lo: int = 0,
        inserts: dict[int, Tensor] | None = None, columns: Tensor | None = None,
    ) -> Tensor:
        """Logits after resuming at block ``start``: ``[n, d_vocab]`` at ``rows`` (one absolute
        position per row), or ``[n, pos, d_vocab]`` when ``rows`` is None. ``resid`` holds the
        positions ``lo .. lo + resid.shape[1] - 1``. With ``columns [n, c]`` (and ``rows``),
        only those token ids' logits: ``[n, c]``."""
        q_lo = None if rows is None else max(lo, int(rows.min()))
        if start >= self.info.n_layers:
            h, first = resid, lo
        else:
            h = self.run_blocks(start, resid, fwd_hooks=fwd_hooks, lo=lo, q_lo=q_lo,
                                inserts=inserts)
            first = self._query_start(lo, q_lo)
        if rows is None:
            return self.unembed(h)
        rows = rows.to(h.device)
        n = h.shape[0]
        before = rows < first  # positions the window left out are the base run's, unchanged
        picked = h[torch.arange(n, device=h.device), (rows - first).clamp(min=0)]
        out = self.unembed(picked) if columns is None else self.unembed_columns(picked, columns)
        if bool(before.any()):
            ex = torch.arange(n, device=h.device) % self.batch
            base = self.logits[ex[before], rows[before]]
            if columns is not None:
                base = base.gather(1, columns.to(h.device)[before])
            out[before] = base.to(out.dtype)
        return out


def chunk_size(info, n_rows_per_patch: int, n_pos: int, *, budget_tokens: int | None) -> int:
    """Patches per forward so that rows x positions stays within ``budget_tokens``
    (default: :func:`default_budget`)."""
    if budget_tokens is None:
        budget_tokens = default_budget(info, n_rows_per_patch, n_pos)
    return max(1, budget_tokens // max(1, n_rows_per_patch * n_pos))


def cached_run_bytes(info, batch: int, n_pos: int, itemsize: int = 4) -> int:
    """Estimated size of one full ``run_with_cache`` of ``batch x n_pos`` tokens: per token and
    layer about 11 d_model-sized activations (residuals, norms, q/k/v/z, outputs), two of d_mlp,
    attention scores and pattern; plus the logits."""
    d, d_mlp = info.d_model, info.d_mlp or 4 * info.d_model
    per = 11 * d + 2 * d_mlp + 2 * info.n_heads * n_pos
    return itemsize * batch * n_pos * (info.n_layers * per + info.d_vocab)


def default_budget(info, batch: int, n_pos: int, itemsize: int = 4) -> int:
    """Rows x positions per forward whose transient activations (about 3 d_mlp + 8 d_model +
    3 heads x positions floats per row) fill ~60% of one full cached run, so a sweep's peak
    (this plus the two filtered caches it keeps) stays within about twice a cached run; but at
    least ``MIN_CHUNK_BYTES`` (12 MiB)."""
    d, d_mlp = info.d_model, info.d_mlp or 4 * info.d_model
    row = itemsize * (3 * d_mlp + 8 * d + 3 * info.n_heads * n_pos)
    target = max(0.6 * cached_run_bytes(info, batch, n_pos, itemsize), MIN_CHUNK_BYTES)
    return max(batch * n_pos, int(target / row))


MIN_CHUNK_BYTES = 12 * 2**20
"""Floor of the default chunk budget: on small models a cached run is a few MB, and chunks that
small would make a sweep pay the per-call overhead of the blocks many times over."""

"""The one private module that touches ``TransformerBridge`` and ``transformers`` internals.

Everything the engine, decoding and attribution code needs beyond the bridge's public API lives
here, so a change of transformer-lens or transformers is fixed in one place:

* instance overrides (``override``): replace a method on one module instance for the duration
  of a ``with`` block, saving whatever was there (a class method or an earlier override) and
  restoring it exactly on exit, also on error. Nested overrides of the same attribute stack:
  the inner one sees the outer one as the current method. Used for the attention components'
  key/value step (``kv_update``) and for replacing an attention module's output
  (``replace_forward``).
* block plumbing: what a block returns, what counts as a cache argument.
* the final norm and unembedding as modules and parameters (``final_norm``,
  ``final_norm_params``, ``unembed_params``), for :mod:`interp._unembed`.
* whether attention is causal (``attention_is_causal``).
* whether an edit at a hook point reaches the output (``hook_has_effect``): some families'
  attention ignores edits to some hooks (the hook fires, but its return value is dropped).

This module imports no other ``interp`` module except :mod:`interp.hooks`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from interp import hooks as H

_MISSING = object()
KV_UPDATE = "_update_kv_cache"


# --------------------------------------------------------------------------------------------
# instance overrides
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def override(obj: Any, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """Within the body, ``obj.<name>`` is ``make(current)`` where ``current`` is what
    ``obj.<name>`` was on entry (a bound class method, or an enclosing override). On exit the
    instance attribute is restored exactly: removed if there was none, else put back."""
    before = obj.__dict__.get(name, _MISSING)
    current = getattr(obj, name)
    obj.__dict__[name] = make(current)
    try:
        yield
    finally:
        if before is _MISSING:
            obj.__dict__.pop(name, None)
        else:
            obj.__dict__[name] = before


def has_kv_update(attn: Any) -> bool:
    """Whether this attention component has the bridge's key/value step (its cache update)."""
    return attn is not None and hasattr(attn, KV_UPDATE)


def kv_update(attn: Any, make: Callable[[Callable], Callable]) -> contextlib.AbstractContextManager:
    """Override the key/value step ``(k, v, **kw) -> (k, v)`` of one attention component;
    ``make(current)`` returns the replacement (it may call ``current``)."""
    return override(attn, KV_UPDATE, make)


@contextlib.contextmanager
def kv_updates(model, make: Callable[[int, Callable], Callable]) -> Iterator[list[int]]:
    """:func:`kv_update` on every block's attention that has the step; ``make(layer, current)``.
    Yields the layers overridden."""
    with contextlib.ExitStack() as stack:
        done = []
        for layer, block in enumerate(getattr(model, "blocks", [])):
            attn = getattr(block, "attn", None)
            if has_kv_update(attn):
                stack.enter_context(kv_update(attn, lambda cur, _l=layer: make(_l, cur)))
                done.append(layer)
        yield done


def replace_forward(module: Any, fn: Callable) -> contextlib.AbstractContextManager:
    """Within the body, ``module(...)`` runs ``fn`` instead of its forward (this instance
    only; hooks registered on the module still fire)."""
    return override(module, "forward", lambda _current: fn)


def tail_logits(model, keep: int) -> contextlib.AbstractContextManager:
    """Within the body the model unembeds only its last ``keep`` positions (its logits are
    ``[batch, keep, d_vocab]``): a long prompt whose other logits are never read costs neither
    their unembedding nor their memory (4096 x 151,936 floats = 2.5 GB on a Qwen vocabulary)."""
    current = model.unembed.forward
    k = max(1, int(keep))

    def forward(hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return current(hidden_states[:, -k:], *args, **kwargs)

    return replace_forward(model.unembed, forward)


def block_output(out: Any) -> Any:
    """The hidden state a block returns (blocks return a tensor, a tuple or a list)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def is_cache(x: Any) -> bool:
    """A transformers cache object passed to a block (``DynamicCache`` and friends)."""
    return type(x).__name__.endswith("Cache") and not isinstance(x, Tensor)


def new_dynamic_cache(model):
    """An empty transformers ``DynamicCache`` for ``model``."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.original_model.config)
    except (TypeError, ValueError, AttributeError):  # older transformers: no config argument
        return DynamicCache()


# --------------------------------------------------------------------------------------------
# final norm and unembedding
# --------------------------------------------------------------------------------------------


def _original(module: Any) -> Any:
    mod = getattr(module, "original_component", None)
    if mod is None:
        mod = getattr(module, "_original_component", None)
    return mod


def final_norm(model) -> Any | None:
    """The final norm module (called on ``[..., d_model]``), or None when the model has none
    (e.g. GPT-1: the last block's output goes straight into the unembedding)."""
    ln = getattr(model, "ln_final", None)
    if ln is None or isinstance(_original(ln), torch.nn.Identity):
        return None
    return ln


def final_norm_params(model) -> tuple[Tensor | None, Tensor | None]:
    """Effective ``(weight, bias)`` of the final norm, ``norm(x) = x_hat * weight + bias``
    (Gemma's RMSNorm multiplies by ``1 + weight``); ``(None, None)`` without a final norm."""
    ln = final_norm(model)
    if ln is None:
        return None, None
    params = dict(ln.named_parameters())
    w = next((v for k, v in params.items() if k.endswith("weight")), None)
    b = next((v for k, v in params.items() if k.endswith("bias")), None)
    offset = getattr(ln, "uses_weight_offset", None)
    if offset is None:
        offset = bool(getattr(model.cfg, "rmsnorm_uses_offset", False)) and final_norm_is_rms(model)
    if w is not None and offset:
        w = 1.0 + w
    return w, b


def final_norm_is_rms(model) -> bool:
    """Whether the final norm is an RMSNorm (no centring)."""
    ln = final_norm(model)
    if ln is None:
        return False
    rms = getattr(ln, "uses_rms_norm", None)
    if rms is not None:
        return bool(rms)
    return "RMS" in str(model.cfg.normalization_type or "")


def head_transform(model) -> Callable[[Tensor], Tensor] | None:
    """What the output head applies before its final norm, when it is more than the norm: BERT's
    masked-LM head runs a dense layer and an activation first (``mlm_head`` in the bridge).
    None for the usual head (final norm, unembedding)."""
    dense = getattr(model, "mlm_head", None)
    if dense is None:
        return None
    from transformers.activations import ACT2FN

    hf = getattr(getattr(model, "original_model", None), "config", None)
    act = ACT2FN[getattr(hf, "hidden_act", "gelu")]
    return lambda x: act(dense(x))


def unembed_params(model) -> tuple[Tensor | None, Tensor | None]:
    """``(weight [d_vocab, d_model], bias [d_vocab] or None)`` when the unembedding is one plain
    linear map, else ``(None, None)``."""
    mod = _original(getattr(model, "unembed", None))
    if not isinstance(mod, torch.nn.Linear):
        return None, None
    return mod.weight, mod.bias


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------


def attention_is_causal(model) -> bool:
    """Whether every position attends only to itself and earlier positions (decoder-only
    language models); False for bidirectional encoders such as BERT."""
    cfg = model.cfg
    if str(getattr(cfg, "attention_dir", "causal") or "causal") != "causal":
        return False
    hf = getattr(getattr(model, "original_model", None), "config", None)
    return not (hf is not None and getattr(hf, "is_encoder_decoder", False))


PROBE_KINDS = ("q", "k", "v", "z", "pattern", "attn_scores", "attn_out", "mlp_out",
               "resid_pre", "resid_mid", "resid_post")


def _probe_name(kind: str, layer: int) -> str:
    if kind in ("resid_pre", "resid_mid", "resid_post"):
        return H.resid(kind, layer)  # type: ignore[arg-type]
    if kind in ("attn_out", "mlp_out"):
        return H.component_out(kind, layer)  # type: ignore[arg-type]
    return H.head_act(kind, layer)  # type: ignore[arg-type]


def hook_has_effect(model, kind: str) -> bool:
    """Whether editing hook ``kind`` (``q``, ``k``, ``v``, ``z``, ``pattern``, ``attn_out``, ...)
    changes the model's output. Probed once per model and kind: every layer's activation is
    replaced (a pattern by attention to the first token only, anything else by itself plus
    noise) on a 3-token input and the logits are compared with an unedited run. A hook that
    does not exist on the model counts as effective (other checks report it)."""
    memo = model.__dict__.setdefault("_interp_hook_effect", {})
    if kind not in memo:
        memo[kind] = _probe(model, kind)
    return memo[kind]


def _probe(model, kind: str) -> bool:
    names = [_probe_name(kind, layer) for layer in range(int(model.cfg.n_layers))]
    if not all(n in model.hook_dict for n in names):
        return True
    device = next(model.parameters()).device
    toks = torch.tensor([[0, 1, 2]], device=device) % int(model.cfg.d_vocab)

    def edit(act: Tensor, hook) -> Tensor:
        if kind == "pattern":
            out = torch.zeros_like(act)
            out[..., 0] = 1.0
            return out
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(act.shape, generator=g, device="cpu").to(act)
        return act + noise * (act.abs().mean() + 1.0)

    with torch.no_grad():
        base = model(toks)
        with model.hooks(fwd_hooks=[(n, edit) for n in names]):
            moved = model(toks)
    scale = 1.0 + float(base.abs().max())
    return float((moved - base).abs().max()) > 1e-6 * scale


def require_hook_effect(model, kind: str, *, method: str = "activation patching") -> None:
    """Refuse (ValueError) to patch ``kind`` on a model whose attention ignores edits to it:
    every score would be exactly 0, meaning "not applied" rather than "no effect"."""
    if hook_has_effect(model, kind):
        return
    family = str(getattr(model.cfg, "architecture", None) or type(model).__name__)
    others = [k for k in ("z", "v", "q", "k", "attn_out") if k != kind and hook_has_effect(model, k)]
    hint = (f"patch {' or '.join(repr(k) for k in others[:2])} instead" if others
            else "patch resid_pre, attn_out or mlp_out instead")
    raise ValueError(
        f"{method} of {kind!r} is not supported on {family}: transformer-lens runs this "
        f"family's attention without reading back edits to the {kind!r} hook, so every patch "
        f"would score exactly 0 (not applied, not 'no effect'). {hint[0].upper() + hint[1:]}."
    )


def require_hooks_effect(model, kinds, *, method: str) -> None:
    """:func:`require_hook_effect` for each of ``kinds``."""
    for kind in kinds:
        require_hook_effect(model, kind, method=method)


# --------------------------------------------------------------------------------------------
# precision
# --------------------------------------------------------------------------------------------

# Relative tolerances of the structural checks ("does this identity hold on this model?") at the
# model's precision: half-precision arithmetic keeps 8 (bfloat16) or 11 (float16) significant
# bits, so identities that hold to 1e-6 in float32 hold only to ~1e-2 there, while a structural
# mismatch (a post-norm block, a norm after attention) is of order 1.
_HALF_TOL = {torch.bfloat16: 3e-2, torch.float16: 4e-3}


def model_dtype(model) -> torch.dtype:
    """The dtype of the model's floating-point weights."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def tolerance(model, fp32: float) -> float:
    """``fp32``, the relative tolerance of a structural check in float32, widened to what the
    model's dtype can resolve."""
    return max(fp32, _HALF_TOL.get(model_dtype(model), 0.0))


def drop_graph_state(model) -> None:
    """Detach tensors that submodules keep from their last forward (transformer-lens's
    attention keeps ``_pattern``): after a forward with gradients they would hold the autograd
    graph alive and make the model impossible to deep-copy."""
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                setattr(module, name, value.detach())


def check_finite_grads(grads, method: str) -> None:
    """Raise a clear error when a backward pass produced inf / NaN (instead of returning
    NaN scores). ``grads``: tensors (None entries are skipped)."""
    bad = [g for g in grads if g is not None and not bool(torch.isfinite(g).all())]
    if bad:
        raise FloatingPointError(
            f"{method}: the model's backward pass produced non-finite gradients (inf/NaN), so "
            "gradient-based scores would be meaningless. Common causes: a token whose embedding "
            "is all zeros (e.g. a randomly initialised model's padding row used as BOS) under "
            "RMSNorm, whose Jacobian then scales by 1/sqrt(eps) at every layer; or a float16 "
            "overflow. Check the prompts' tokens, load the model in float32, or use an exact "
            "method (activation patching, method='exact').")


@contextlib.contextmanager
def fused_activations(model):
    """Within the block, evaluate transformers' ``NewGELUActivation`` (GPT-2's ``gelu_new``,
    written as seven elementwise operations) with PyTorch's fused tanh-approximation GELU: the
    same function, about 4x faster on the CPU, equal to 2.4e-7 on unit-scale inputs (transformers
    offers it as ``gelu_pytorch_tanh``). Used by the patching sweeps around every forward they
    run, so their own numbers stay mutually consistent (a patch that changes nothing still
    reproduces the base run bit for bit)."""
    try:
        from transformers.activations import NewGELUActivation
    except ImportError:  # pragma: no cover
        yield
        return
    swapped = [m for m in model.modules() if type(m) is NewGELUActivation]
    for m in swapped:
        m.forward = _fused_gelu_tanh
    try:
        yield
    finally:
        for m in swapped:
            del m.forward


def _fused_gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh")

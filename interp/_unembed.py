"""Final norm + unembedding, implemented once (private).

* :func:`decode`: the model's own head on any residual ``[..., d_model]``: final norm with its
  statistics recomputed, unembedding, and the final logit softcap where the config has one
  (Gemma 2). On the last residual it equals the model's logits.
* :func:`decode_columns`: the same, but only the logits of given token ids per row (the
  unembedding as a plain linear map); :func:`columns_supported` says whether that applies.
* :func:`frozen_norm_linear`: the final norm's linear part with its scale frozen (LayerNorm's
  centring, ``1 / scale``, the weight; no bias), used by direct logit attribution and direct
  effects; :func:`final_scale` reads the frozen scale from a cache. Without a final norm this is
  the identity and the scale is 1, so attribution is exact.
* :func:`logit_bias` : what the frozen head adds that no component writes (norm bias through
  the unembedding, unembedding bias).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import _bridge as B
from interp import hooks as H


def softcap(model, logits: Tensor) -> Tensor:
    """The final logit softcap ``c * tanh(logits / c)`` where the config has one, else as is."""
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0)
    if cap > 0:
        return torch.tanh(logits / cap) * cap
    return logits


def final_norm(model, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """The final norm (statistics recomputed on ``resid``); the identity without one. A head
    with layers before its norm (BERT's masked-LM head) applies them first."""
    pre = B.head_transform(model)
    if pre is not None:
        resid = pre(resid)
    ln = B.final_norm(model)
    return resid if ln is None else ln(resid)


def linear_head(model) -> bool:
    """Whether the head is final norm + unembedding only, so that with the norm's scale frozen
    the logits are linear in the residual stream (direct logit attribution needs this)."""
    return B.head_transform(model) is None


def require_linear_head(model, method: str) -> None:
    """ValueError when :func:`linear_head` is False (names the method that needs it)."""
    if not linear_head(model):
        family = str(getattr(model.cfg, "architecture", None) or type(model).__name__)
        raise ValueError(
            f"{method} needs logits that are linear in the final residual stream once the final "
            f"norm's scale is frozen, but {family}'s head applies a dense layer and an activation "
            "before its norm. Use activation patching or ablation instead."
        )


def check_head(model) -> None:
    """Refuse (NotImplementedError) a model whose logits are not :func:`decode` of its final
    residual stream: nothing here could decode an intermediate residual correctly. Checked
    once per model on a 3-token input."""
    memo = model.__dict__.setdefault("_interp_head_ok", {})
    if "ok" not in memo:
        name = final_resid_hook(model)
        toks = torch.tensor([[0, 1, 2]], device=next(model.parameters()).device)
        toks = toks % int(model.cfg.d_vocab)
        with torch.no_grad():
            logits, cache = model.run_with_cache(toks, names_filter=lambda n: n == name)
            got = decode(model, cache[name])
        tol = B.tolerance(model, 1e-4)
        memo["ok"] = bool((got - logits).abs().max() <= tol * (1 + float(logits.abs().max())))
    if not memo["ok"]:
        family = str(getattr(model.cfg, "architecture", None) or type(model).__name__)
        raise NotImplementedError(
            f"{family}'s output head is not the final norm and unembedding interp knows how to "
            "apply, so it cannot decode a residual stream on this model (patching, logit lens "
            "and direct logit attribution all need that)."
        )


def decode(model, resid: Float[Tensor, "... d_model"], *, cap: bool = True
           ) -> Float[Tensor, "... d_vocab"]:
    """Final norm + unembedding (+ softcap unless ``cap=False``), as the model's own head."""
    squeeze = resid.ndim == 2  # the bridge's modules expect a position axis
    x = resid[:, None] if squeeze else resid
    logits = model.unembed(final_norm(model, x))
    logits = logits[:, 0] if squeeze else logits
    return softcap(model, logits) if cap else logits


def topk_rows(x: Float[Tensor, "n v"], k: int, *, block: int = 128):
    """``x.topk(k, dim=-1)`` (values, indices; largest first) over a wide last axis in about one
    read of ``x``: the row's top ``k`` values lie in the ``k`` blocks of ``block`` columns with
    the largest block maxima (any other block has ``k`` larger maxima above its own), so only
    those blocks and the ragged tail are searched (rows where a tie decides the blocks go to
    ``torch.topk``). Equal to ``torch.topk`` up to the order of exactly tied values."""
    n, v = x.shape
    nb = v // block
    if k < 1 or k > 64 or nb < 4 * k or x.stride(-1) != 1:
        return x.topk(min(k, v), dim=-1)
    head = x[:, :nb * block].view(n, nb, block)
    best = head.amax(-1).topk(k + 1, dim=-1)  # [n, k + 1]
    if bool((best.values[:, k - 1] == best.values[:, k]).any()):  # a tie decides which blocks:
        return x.topk(k, dim=-1)  # (e.g. a row of equal logits) leave it to torch.topk
    blocks = best.indices[:, :k]
    vals = head.gather(1, blocks[..., None].expand(-1, -1, block)).reshape(n, k * block)
    cols = (blocks[..., None] * block + torch.arange(block, device=x.device)).reshape(n, -1)
    if v > nb * block:
        vals = torch.cat([vals, x[:, nb * block:]], dim=1)
        tail = torch.arange(nb * block, v, device=x.device).expand(n, -1)
        cols = torch.cat([cols, tail], dim=1)
    top = vals.topk(k, dim=-1)
    return torch.return_types.topk((top.values, cols.gather(1, top.indices)))


def decode_into(model, resid: Float[Tensor, "n d_model"], out: Float[Tensor, "n d_vocab"]
                ) -> Float[Tensor, "n d_vocab"]:
    """:func:`decode` of ``resid`` [n, d_model] written into ``out`` (float32, reused across
    calls: a fresh full-vocabulary tensor per call costs the page faults of a new allocation).
    Where the unembedding is not a plain float32 linear map the result is computed, then copied."""
    weight, bias = B.unembed_params(model)
    if weight is None or weight.dtype != out.dtype or weight.shape[0] != out.shape[-1]:
        return out.copy_(decode(model, resid))
    x = final_norm(model, resid[:, None])[:, 0]
    torch.mm(x, weight.T, out=out)
    if bias is not None:
        out += bias
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0)
    if cap > 0:
        out.div_(cap).tanh_().mul_(cap)
    return out


def columns_supported(model) -> bool:
    """Whether the unembedding is one plain linear map, so columns can be computed alone."""
    return B.unembed_params(model)[0] is not None


def decode_columns(model, resid: Float[Tensor, "n d_model"], columns: Int[Tensor, "n c"], *,
                   cap: bool = True) -> Float[Tensor, "n c"]:
    """Final norm, then only the logits of token ids ``columns`` (softcap applied unless
    ``cap=False``). When the unembedding is not a plain linear map, the full logits are computed
    and the columns gathered."""
    weight, bias = B.unembed_params(model)
    if weight is None:
        full = decode(model, resid, cap=cap)
        return full.gather(-1, columns.to(full.device))
    x = final_norm(model, resid[:, None])[:, 0]
    cols = columns.to(x.device)
    logits = torch.einsum("nd,ncd->nc", x, weight[cols].to(x.dtype))
    if bias is not None:
        logits = logits + bias[cols].to(x.dtype)
    return softcap(model, logits) if cap else logits


def unembed_directions(model, ids: Int[Tensor, " n"]) -> Float[Tensor, "n d_model"]:
    """The unembedding vectors ``W_U[:, id]`` of ``ids`` (rows), on the model's device."""
    wu = model.W_U
    return wu[:, ids.to(wu.device)].T


def final_resid_hook(model) -> str:
    """The hook holding the residual stream that enters the final norm: the last block's
    ``hook_resid_post`` where it fires, else the input of the final norm (or of the
    unembedding, without a final norm)."""
    from interp.models import describe

    info = describe(model)
    name = H.resid_post(info.n_layers - 1)
    if name in info.hooks:
        return name
    return "unembed.hook_in" if B.final_norm(model) is None else "ln_final.hook_in"


def needs_scale(model) -> bool:
    """Whether the frozen head reads ``ln_final.hook_scale`` from a cache (a final norm)."""
    return B.final_norm(model) is not None


def scale_hooks(model) -> set[str]:
    """Hook names a cache must hold for :func:`final_scale`."""
    return {H.LN_FINAL_SCALE} if needs_scale(model) else set()


def final_scale(model, cache, batch_idx: Tensor, pos: Tensor) -> Float[Tensor, "n 1"]:
    """The final norm's scale at ``(batch_idx[i], pos[i])`` from a cache; ones without a final
    norm."""
    if not needs_scale(model):
        return torch.ones(len(batch_idx), 1, device=next(model.parameters()).device)
    s = cache[H.LN_FINAL_SCALE]
    return s[batch_idx.to(s.device), pos.to(s.device)].reshape(len(batch_idx), 1)


def frozen_norm_linear(model, x: Float[Tensor, "n ... d_model"], scale: Float[Tensor, "n 1"]
                       ) -> Float[Tensor, "n ... d_model"]:
    """The final norm's linear part with a frozen ``scale`` per row of the leading axis:
    centring (LayerNorm), ``/ scale``, ``* weight``; no bias. The identity without a norm."""
    if not needs_scale(model):
        return x
    w, _ = B.final_norm_params(model)
    if not B.final_norm_is_rms(model):
        x = x - x.mean(-1, keepdim=True)
    x = x / scale.reshape(x.shape[0], *([1] * (x.ndim - 1))).to(x)
    return x * w if w is not None else x


def logit_bias(model, directions: Float[Tensor, "n d_model"], ids_plus: Tensor,
               ids_minus: Tensor | None = None) -> Float[Tensor, " n"]:
    """What the frozen head adds to ``logit[ids_plus] - logit[ids_minus]`` that no residual
    component writes: the final norm's bias along ``directions`` plus the unembedding bias."""
    _, bias = B.final_norm_params(model)
    out = torch.zeros(directions.shape[0], device=directions.device, dtype=directions.dtype)
    if bias is not None:
        out = out + (bias.to(directions) * directions).sum(-1)
    b_u = B.unembed_params(model)[1]
    if b_u is None:
        b_u = getattr(model, "b_U", None)
    if b_u is not None:
        b_u = b_u.to(directions)
        out = out + b_u[ids_plus.to(b_u.device)]
        if ids_minus is not None:
            out = out - b_u[ids_minus.to(b_u.device)]
    return out

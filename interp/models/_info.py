"""One place that describes a loaded model for the methods (DESIGN rule 6).

Methods ask ``describe(model)`` for layers, heads, key/value groups, positional scheme, norm type,
final softcap and which hooks fire; they never branch on a model's name.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from interp import _bridge as B
from interp import components as C
from interp import hooks as H


@dataclass(frozen=True)
class ModelInfo:
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_vocab: int
    n_ctx: int
    positional: str  # "standard" (learned absolute), "rotary", "alibi", ...
    norm: str  # "LN", "RMS", or "none"
    final_softcap: float | None  # Gemma-2 style tanh softcap on the logits, or None
    attn_softcap: float | None
    parallel_attn_mlp: bool
    prepends_bos: bool
    bos_token_id: int | None
    hooks: frozenset[str] = field(repr=False, default_factory=frozenset)
    d_mlp: int = 0  # MLP hidden width (0: unknown)
    causal: bool = True  # each position attends only to itself and earlier ones (False: BERT)
    final_norm: bool = True  # False: the last residual goes straight into the unembedding

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without GQA)."""
        return self.n_heads // self.n_kv_heads

    @property
    def is_gqa(self) -> bool:
        return self.n_kv_heads != self.n_heads

    @property
    def has_resid_mid(self) -> bool:
        return H.resid_mid(0) in self.hooks

    def kv_head(self, head: int) -> int:
        """The key/value head that query head ``head`` reads (GQA groups are contiguous)."""
        self.check_head(0, head)
        return head // self.group_size

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise IndexError(
                f"layer {layer} is out of range: this model has {self.n_layers} layers "
                f"(0..{self.n_layers - 1})."
            )

    def check_head(self, layer: int, head: int) -> None:
        """``IndexError`` (``interp.components.ComponentRangeError``) naming the head, e.g.
        ``head L0H99 out of range: layer 0 has 4 heads (H0..H3).``"""
        self.check_layer(layer)
        C.check(C.Head(layer, head), n_layers=self.n_layers, n_heads=self.n_heads)

    def head_labels(self) -> list[str]:
        return C.head_labels(self.n_layers, self.n_heads)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hooks"] = sorted(self.hooks)
        d["group_size"] = self.group_size
        return d

    def summary(self) -> str:
        kv = f", {self.n_kv_heads} key/value heads (GQA)" if self.is_gqa else ""
        cap = f", final softcap {self.final_softcap}" if self.final_softcap else ""
        return (
            f"{self.architecture}: {self.n_layers} layers x {self.n_heads} heads{kv}, "
            f"d_model {self.d_model}, d_head {self.d_head}, vocab {self.d_vocab}, "
            f"context {self.n_ctx}, {self.positional} positions, {self.norm} norm{cap}"
            + ("" if self.causal else ", bidirectional attention")
        )


def _firing_hooks(model) -> frozenset[str]:
    """Every hook name (aliases included) whose hook point runs in a forward pass."""
    fired: set[int] = set()

    def record(_act, hook):
        fired.add(id(hook))

    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    toks = torch.tensor([[bos if bos is not None else 0, 1, 2]], device=model.cfg.device)
    points = model.hook_dict
    with torch.no_grad(), warnings.catch_warnings():
        # the bridge warns about gated-off hook names (split q/k/v inputs, hook_result) that a
        # catch-all filter includes; those are exactly the ones we report as not firing
        warnings.simplefilter("ignore", UserWarning)
        model.run_with_hooks(toks, fwd_hooks=[(lambda n: True, record)], return_type=None)
    return frozenset(name for name, point in points.items() if id(point) in fired)


def describe(model) -> ModelInfo:
    """Describe a ``TransformerBridge`` (cached on the model object)."""
    cached = getattr(model, "_interp_info", None)
    if cached is not None:
        return cached
    cfg = model.cfg
    n_heads = int(cfg.n_heads)
    n_kv = int(cfg.n_key_value_heads or n_heads)
    soft = float(getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0)
    attn_soft = float(getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0)
    norm = cfg.normalization_type or "none"
    norm = "RMS" if "RMS" in str(norm) else ("LN" if "LN" in str(norm) else str(norm))
    tok = model.tokenizer
    info = ModelInfo(
        architecture=str(cfg.architecture or type(model.original_model).__name__),
        n_layers=int(cfg.n_layers),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=int(cfg.d_head),
        d_model=int(cfg.d_model),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx),
        positional=str(cfg.positional_embedding_type),
        norm=norm,
        final_softcap=soft if soft > 0 else None,
        attn_softcap=attn_soft if attn_soft > 0 else None,
        parallel_attn_mlp=bool(getattr(cfg, "parallel_attn_mlp", False)),
        prepends_bos=bool(cfg.default_prepend_bos),
        bos_token_id=getattr(tok, "bos_token_id", None) if tok is not None else None,
        hooks=_firing_hooks(model),
        d_mlp=int(getattr(cfg, "d_mlp", 0) or 0),
        causal=B.attention_is_causal(model),
        final_norm=B.final_norm(model) is not None,
    )
    try:
        model._interp_info = info
    except Exception:  # pragma: no cover - a module that refuses attributes
        pass
    return info

"""Every hook name the toolkit uses, in one place.

transformer-lens 4.x (``TransformerBridge``) keeps the legacy HookedTransformer names as aliases,
so the same names work on every supported architecture. Methods build names only through these
functions; ``tests/integration/test_models.py`` checks that each one exists on every test family.
"""

from __future__ import annotations

from typing import Literal

ResidKind = Literal["resid_pre", "resid_mid", "resid_post"]
HeadAct = Literal["q", "k", "v", "z", "pattern", "attn_scores", "rot_q", "rot_k"]

HOOK_EMBED = "hook_embed"
HOOK_POS_EMBED = "hook_pos_embed"
LN_FINAL_SCALE = "ln_final.hook_scale"
LN_FINAL_NORMALIZED = "ln_final.hook_normalized"


def resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_mid"


def resid_post(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def attn_out(layer: int) -> str:
    return f"blocks.{layer}.hook_attn_out"


def mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def attn_in(layer: int) -> str:
    """Input of the attention block (after ln1)."""
    return f"blocks.{layer}.ln1.hook_normalized"


def ln1_scale(layer: int) -> str:
    return f"blocks.{layer}.ln1.hook_scale"


def ln2_scale(layer: int) -> str:
    return f"blocks.{layer}.ln2.hook_scale"


def q(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_q"


def k(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_k"


def v(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_v"


def z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def rot_q(layer: int) -> str:
    """Query after rotary embedding (rotary models only)."""
    return f"blocks.{layer}.attn.hook_rot_q"


def rot_k(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_rot_k"


def pattern(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def attn_scores(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_attn_scores"


# Split-input hook points: they exist only while transformer-lens's use_split_qkv_input /
# use_hook_mlp_in / use_attn_result flags are on (edge attribution and circuit discovery switch
# them on for one call).
def qkv_input(layer: int, kind: Literal["q", "k", "v"]) -> str:
    """One attention layer's per-head q, k or v input (a residual copy per head)."""
    return f"blocks.{layer}.hook_{kind}_input"


def mlp_in(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_in"


def head_result(layer: int) -> str:
    """Every head's own output (``z_h @ W_O[h]``), ``[batch, pos, head, d_model]``."""
    return f"blocks.{layer}.attn.hook_result"


def head_act(kind: HeadAct, layer: int) -> str:
    """Name of a per-head activation hook: ``head_act("z", 3)``."""
    return {
        "q": q,
        "k": k,
        "v": v,
        "z": z,
        "pattern": pattern,
        "attn_scores": attn_scores,
        "rot_q": rot_q,
        "rot_k": rot_k,
    }[kind](layer)


def resid(kind: ResidKind, layer: int) -> str:
    return {"resid_pre": resid_pre, "resid_mid": resid_mid, "resid_post": resid_post}[kind](layer)


def component_out(kind: Literal["attn_out", "mlp_out"], layer: int) -> str:
    return attn_out(layer) if kind == "attn_out" else mlp_out(layer)


def layer_of(name: str) -> int | None:
    """The block index in a hook name (``blocks.3.attn.hook_z`` -> 3), or None."""
    parts = name.split(".")
    if len(parts) > 1 and parts[0] == "blocks":
        return int(parts[1])
    return None


def required_hooks(n_layers: int) -> list[str]:
    """The hooks every method may rely on (resid_mid is optional: parallel-attention models lack it)."""
    names = [HOOK_EMBED, LN_FINAL_SCALE]
    for layer in range(n_layers):
        names += [
            resid_pre(layer),
            resid_post(layer),
            attn_out(layer),
            mlp_out(layer),
            q(layer),
            k(layer),
            v(layer),
            z(layer),
            pattern(layer),
            attn_scores(layer),
        ]
    return names

"""One vocabulary for model components: what a user may write, and the one way it is printed.

Kinds and their printed label (``label``):

==============  =============  ==========================================================
class           label          meaning
==============  =============  ==========================================================
``Head(3, 2)``  ``"L3H2"``     query head 2 of layer 3 (its ``hook_z`` slice)
``KVHead(3,1)`` ``"L3KV1"``    key/value head 1 of layer 3 (shared by a GQA group)
``Attn(3)``     ``"ATTN3"``    the whole attention output of layer 3
``MLP(3)``      ``"MLP3"``     the MLP output of layer 3
``Embed()``     ``"embed"``    the embeddings (the residual stream before layer 0)
``Logits()``    ``"logits"``   the model's output
==============  =============  ==========================================================

``parse`` accepts, case-insensitively and with surrounding spaces ignored: the labels above,
``"input"`` for the embeddings, a ``(layer, head)`` pair of integers for a query head, and any
component object. Separators inside a label (``"L3.H2"``, ``"L3_H2"``, ``"L3 H2"``) are refused
with a hint, so every name has one spelling. ``parse_many`` also splits comma-separated strings.
With model sizes given, layers and heads are range-checked (``ComponentRangeError``, both an
``IndexError`` and a ``ValueError``).

Axis labels of results use the same pieces: a layer axis reads ``"L0", "L1", ...``, a head axis
``"H0", ...`` (``"KV0", ...`` for key/value heads), a position axis ``"3:token"``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True, order=True)
class Head:
    """Query head ``head`` of layer ``layer``."""

    layer: int
    head: int


@dataclass(frozen=True, order=True)
class KVHead:
    """Key/value head ``head`` of layer ``layer`` (in GQA models shared by a query-head group)."""

    layer: int
    head: int


@dataclass(frozen=True, order=True)
class Attn:
    """The whole attention output of layer ``layer``."""

    layer: int


@dataclass(frozen=True, order=True)
class MLP:
    """The MLP output of layer ``layer``."""

    layer: int


@dataclass(frozen=True)
class Embed:
    """The embeddings: the residual stream entering layer 0."""


@dataclass(frozen=True)
class Logits:
    """The model's output logits."""


Component = Union[Head, KVHead, Attn, MLP, Embed, Logits]
KINDS: tuple[type, ...] = (Head, KVHead, Attn, MLP, Embed, Logits)

ACCEPTED = ("'L3H2' (query head 2 of layer 3), 'L3KV1' (key/value head 1 of layer 3), "
            "'ATTN3' (attention layer 3), 'MLP3', 'embed' (or 'input'), 'logits', "
            "or a (layer, head) tuple")

_FORMS = [
    (re.compile(r"l(\d+)h(\d+)"), lambda m: Head(int(m[1]), int(m[2]))),
    (re.compile(r"l(\d+)kv(\d+)"), lambda m: KVHead(int(m[1]), int(m[2]))),
    (re.compile(r"attn(\d+)"), lambda m: Attn(int(m[1]))),
    (re.compile(r"mlp(\d+)"), lambda m: MLP(int(m[1]))),
    (re.compile(r"embed|input"), lambda m: Embed()),
    (re.compile(r"logits"), lambda m: Logits()),
]
_SEPARATED = re.compile(r"l(\d+)\s*[._\-\s:/]\s*(h|kv)(\d+)")


class ComponentRangeError(IndexError, ValueError):
    """A well-formed component that the model does not have (layer or head out of range)."""


def label(c: Component) -> str:
    """The one printed form: ``L3H2``, ``L3KV1``, ``ATTN3``, ``MLP3``, ``embed``, ``logits``."""
    if isinstance(c, Head):
        return f"L{c.layer}H{c.head}"
    if isinstance(c, KVHead):
        return f"L{c.layer}KV{c.head}"
    if isinstance(c, Attn):
        return f"ATTN{c.layer}"
    if isinstance(c, MLP):
        return f"MLP{c.layer}"
    if isinstance(c, Embed):
        return "embed"
    if isinstance(c, Logits):
        return "logits"
    raise TypeError(f"not a component: {c!r} (use interp.components.parse first)")


def _int(x: Any) -> int | None:
    if isinstance(x, bool):
        return None
    try:
        return operator.index(x)
    except TypeError:
        return None


def _read(x: Any) -> Component:
    if isinstance(x, KINDS):
        return x
    if isinstance(x, (tuple, list)) and len(x) == 2:
        a, b = _int(x[0]), _int(x[1])
        if a is not None and b is not None:
            return Head(a, b)
    if isinstance(x, str):
        s = x.strip().lower()
        for pattern, build in _FORMS:
            if m := pattern.fullmatch(s):
                return build(m)
        if m := _SEPARATED.fullmatch(s):
            fix = f"L{m[1]}{m[2].upper()}{m[3]}"
            raise ValueError(f"cannot read component {x!r}: write it without a separator, "
                             f"{fix!r}. Accepted forms: {ACCEPTED}.")
        if m := re.fullmatch(r"(kv|h)(\d+)", s):
            raise ValueError(f"cannot read component {x!r}: a head needs its layer, e.g. "
                             f"'L0{m[1].upper()}{m[2]}'. Accepted forms: {ACCEPTED}.")
        if re.fullmatch(r"l(\d+)", s):
            raise ValueError(f"cannot read component {x!r}: that names a layer, not a component; "
                             f"use 'ATTN{s[1:]}', 'MLP{s[1:]}' or a head. Accepted forms: "
                             f"{ACCEPTED}.")
    raise ValueError(f"cannot read component {x!r}: accepted forms are {ACCEPTED}.")


def _range(n: int, prefix: str) -> str:
    return f"{prefix}0..{prefix}{n - 1}" if n > 0 else "none"


def check(c: Component, *, n_layers: int | None = None, n_heads: int | None = None,
          n_kv_heads: int | None = None) -> Component:
    """Raise ``ComponentRangeError`` when ``c`` lies outside the given model sizes."""
    layer = getattr(c, "layer", None)
    if layer is not None and n_layers is not None and not 0 <= layer < n_layers:
        raise ComponentRangeError(
            f"{label(c)} out of range: layer {layer} does not exist, the model has {n_layers} "
            f"layers ({_range(n_layers, 'L')}).")
    if isinstance(c, Head) and n_heads is not None and not 0 <= c.head < n_heads:
        raise ComponentRangeError(
            f"head {label(c)} out of range: layer {c.layer} has {n_heads} heads "
            f"({_range(n_heads, 'H')}).")
    if isinstance(c, KVHead):
        n_kv = n_kv_heads if n_kv_heads is not None else n_heads
        if n_kv is not None and not 0 <= c.head < n_kv:
            raise ComponentRangeError(
                f"key/value head {label(c)} out of range: layer {c.layer} has {n_kv} key/value "
                f"heads ({_range(n_kv, 'KV')}).")
    return c


def parse(x: Any, *, n_layers: int | None = None, n_heads: int | None = None,
          n_kv_heads: int | None = None) -> Component:
    """One component from any accepted form (see the module docstring), range-checked against
    the sizes that are given. Bad forms raise ``ValueError`` naming the accepted forms."""
    return check(_read(x), n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads)


def parse_many(xs: Any, *, n_layers: int | None = None, n_heads: int | None = None,
               n_kv_heads: int | None = None, unique: bool = True) -> list[Component]:
    """A list of components from a comma-separated string, one component (a ``(layer, head)``
    pair counts as one), or an iterable of accepted forms. Duplicates are dropped (first kept)
    unless ``unique=False``."""
    if isinstance(xs, str):
        items: Iterable[Any] = [p for p in xs.split(",") if p.strip()]
    elif isinstance(xs, KINDS):
        items = [xs]
    elif isinstance(xs, (tuple, list)) and len(xs) == 2 and all(_int(v) is not None for v in xs):
        items = [xs]
    else:
        try:
            items = list(xs)
        except TypeError:
            raise ValueError(f"cannot read components from {xs!r}: pass a list such as "
                             f"['L0H1', 'MLP2'] or a string 'L0H1,MLP2'. Accepted forms: "
                             f"{ACCEPTED}.") from None
    out = [parse(x, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads) for x in items]
    return list(dict.fromkeys(out)) if unique else out


def sizes(info: Any) -> dict[str, int]:
    """``n_layers``/``n_heads``/``n_kv_heads`` of a ``ModelInfo`` (``interp.models.describe``),
    to pass on as ``parse(x, **sizes(info))``."""
    return {"n_layers": int(info.n_layers), "n_heads": int(info.n_heads),
            "n_kv_heads": int(getattr(info, "n_kv_heads", info.n_heads))}


def heads_only(cs: Sequence[Component], what: str) -> list[Head]:
    """``cs`` if every entry is a query head, else a ``ValueError`` saying which is not."""
    bad = [label(c) for c in cs if not isinstance(c, Head)]
    if bad:
        raise ValueError(f"{what} takes query heads ('L3H2' or (3, 2)); {', '.join(bad)} "
                         "is not one.")
    return list(cs)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# axis labels
# --------------------------------------------------------------------------------------------


def layer_label(layer: int) -> str:
    return f"L{layer}"


def head_axis_label(head: int, *, kv: bool = False) -> str:
    return f"{'KV' if kv else 'H'}{head}"


def layer_labels(n_layers: int) -> list[str]:
    """``["L0", ..., "L{n-1}"]``: the labels of a layer axis."""
    return [layer_label(i) for i in range(n_layers)]


def head_axis_labels(n_heads: int, *, kv: bool = False) -> list[str]:
    """``["H0", ...]`` (or ``["KV0", ...]`` for key/value heads): the labels of a head axis."""
    return [head_axis_label(h, kv=kv) for h in range(n_heads)]


def head_labels(n_layers: int, n_heads: int, *, kv: bool = False) -> list[str]:
    """Every head's label, layer-major: ``["L0H0", "L0H1", ..., "L{L-1}H{H-1}"]``."""
    cls = KVHead if kv else Head
    return [label(cls(layer, h)) for layer in range(n_layers) for h in range(n_heads)]


def mlp_labels(n_layers: int) -> list[str]:
    return [label(MLP(layer)) for layer in range(n_layers)]


def attn_labels(n_layers: int) -> list[str]:
    return [label(Attn(layer)) for layer in range(n_layers)]


def pos_label(pos: int, token: str | None = None) -> str:
    """``"3:token"`` (or ``"3"`` when no token text is known)."""
    return str(pos) if token is None else f"{pos}:{token}"


def pos_labels(tokens: Sequence[str] | int) -> list[str]:
    """Position-axis labels from token strings (or a length when the text is unknown)."""
    if isinstance(tokens, int):
        return [pos_label(p) for p in range(tokens)]
    return [pos_label(p, t) for p, t in enumerate(tokens)]


def depth(c: Component, n_layers: int, *, parallel_attn_mlp: bool = False) -> float:
    """Position in the forward pass: embed -1, a layer's heads/attention at ``layer``, its MLP
    half a step later (at ``layer`` for parallel attention+MLP blocks), logits at ``n_layers``."""
    if isinstance(c, Embed):
        return -1.0
    if isinstance(c, Logits):
        return float(n_layers)
    if isinstance(c, MLP):
        return c.layer + (0.0 if parallel_attn_mlp else 0.5)
    return float(c.layer)  # type: ignore[union-attr]


__all__ = [
    "ACCEPTED", "Attn", "Component", "ComponentRangeError", "Embed", "Head", "KVHead", "Logits",
    "MLP", "attn_labels", "check", "depth", "head_axis_label", "head_axis_labels",
    "head_labels", "heads_only", "label", "layer_label", "layer_labels", "mlp_labels", "parse",
    "parse_many", "pos_label", "pos_labels", "sizes",
]

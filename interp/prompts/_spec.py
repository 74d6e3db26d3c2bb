"""PromptSpec: a frozen, hashable description of a prompt set, and the one place that turns a
prompt kind and its options into a :class:`PromptSet`.

Every front end (the ``interp`` command, the explorer app) builds its prompts through a
``PromptSpec``, so one kind has one set of defaults: the keyword defaults of its generator
(``interp.prompts.ioi``, ``induction``, ``needle``; ``PromptSet.from_pairs`` for ``custom``),
read from their signatures here and nowhere else. A spec is hashable (it is the app's cache key)
and round-trips through ``to_dict``/``from_dict`` (JSON).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from interp.prompts import _generators as G
from interp.prompts._needle import check_depths
from interp.prompts._promptset import PromptError, PromptSet


def _freeze(value: Any) -> Any:
    """Lists/tuples to tuples (recursively), so option values are hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (dict, set)):
        raise PromptError(f"option values must be numbers, strings or lists of them, not {value!r}.")
    return value


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


class Options(Mapping):
    """An immutable, hashable mapping of option name -> value (lists stored as tuples)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None, **kw: Any) -> None:
        merged = {**dict(items or {}), **kw}
        object.__setattr__(self, "_items", tuple(sorted((str(k), _freeze(v)) for k, v in merged.items())))

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other.items())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Options is immutable")

    def __reduce__(self):
        return (Options, (dict(self._items),))

    def __repr__(self) -> str:
        return "Options(" + ", ".join(f"{k}={v!r}" for k, v in self._items) + ")"


def _custom(model, n: int | None = None, seed: int = 0, *, clean, answers, corrupted=None,
            wrong=None, prepend_bos: bool = True) -> PromptSet:
    clean = [clean] if isinstance(clean, str) else list(clean)
    if n is not None and n != len(clean):
        raise PromptError(f"custom prompts: n={n} but {len(clean)} prompts were given; leave n out.")
    return PromptSet.from_pairs(model, clean, [answers] if isinstance(answers, str) else list(answers),
                                corrupted=None if corrupted is None else list(corrupted),
                                wrong=None if wrong is None else list(wrong),
                                prepend_bos=prepend_bos)


@dataclass(frozen=True)
class _Kind:
    builder: Callable[..., PromptSet]
    what: str

    def params(self) -> dict[str, inspect.Parameter]:
        ps = inspect.signature(self.builder).parameters
        return {k: p for k, p in ps.items() if k not in ("model", "n", "seed")}

    def defaults(self) -> dict[str, Any]:
        return {k: _freeze(p.default) for k, p in self.params().items()
                if p.default is not inspect.Parameter.empty}

    def required(self) -> list[str]:
        return [k for k, p in self.params().items() if p.default is inspect.Parameter.empty]

    def n_default(self) -> int | None:
        return inspect.signature(self.builder).parameters["n"].default


#: kind -> generator; the generator's keyword defaults are the kind's defaults
_KINDS: dict[str, _Kind] = {
    "ioi": _Kind(G.ioi, "indirect-object identification (Wang et al. 2022 templates)"),
    "induction": _Kind(G.induction, "repeated random tokens [BOS] + r + r (induction)"),
    "needle": _Kind(G.needle, "needle in a haystack (retrieval-head trials; depths in percent)"),
    "custom": _Kind(_custom, "prompts typed by the user: texts, answers, optional pairs"),
}
PROMPT_KINDS: tuple[str, ...] = tuple(_KINDS)


@dataclass(frozen=True)
class PromptSpec:
    """What prompt set to build: ``kind`` (one of :data:`PROMPT_KINDS`), ``n`` (prompts; for
    ``needle``: needles per (length, depth) cell; ``None`` = the kind's default), ``seed`` and
    ``options`` (the generator's keyword options). Missing options take the generator's
    defaults, so two specs that build the same prompts compare (and hash) equal.

    >>> PromptSpec("ioi", n=4, options={"corruption": "swap"}).build(model)  # doctest: +SKIP
    """

    kind: str
    n: int | None = None
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=Options)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise PromptError(f"unknown prompt kind {self.kind!r}; the kinds are "
                              f"{', '.join(PROMPT_KINDS)}.")
        info = _KINDS[self.kind]
        opts = dict(self.options or {})
        accepted = list(info.params())
        bad = sorted(set(opts) - set(accepted))
        if bad:
            raise PromptError(f"prompt kind {self.kind!r} has no option(s) {bad}; its options are "
                              f"{', '.join(accepted)}.")
        missing = [k for k in info.required() if opts.get(k) is None]
        if missing:
            raise PromptError(f"prompt kind {self.kind!r} needs the option(s) {missing}.")
        full = Options({**info.defaults(), **opts})
        n = info.n_default() if self.n is None else self.n
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise PromptError(f"n must be a positive integer, got {self.n!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise PromptError(f"seed must be an integer, got {self.seed!r}.")
        if self.kind == "needle":
            try:
                full = Options({**full, "depths": tuple(check_depths(full["depths"]))})
            except ValueError as e:
                raise PromptError(str(e)) from None
        if self.kind == "custom":
            n = None  # the number of texts
        object.__setattr__(self, "options", full)
        object.__setattr__(self, "n", n)

    # --- use --------------------------------------------------------------------------------
    def build(self, model) -> PromptSet:
        """The prompt set, checked against ``model``; ``meta["spec"]`` holds :meth:`to_dict`."""
        opts = {k: _thaw(v) if k not in ("lengths", "depths") else tuple(v)
                for k, v in self.options.items()}
        ps = _KINDS[self.kind].builder(model, self.n, seed=self.seed, **opts)
        ps.meta["spec"] = self.to_dict()
        return ps.check(model)

    def describe(self) -> str:
        """One human line, e.g. "IOI, 8 prompts, mixed templates, ABC corruption, seed 0"."""
        o, k = self.options, self.kind
        if k == "ioi":
            line = (f"IOI, {self.n} prompts, {o['templates']} templates, "
                    f"{str(o['corruption']).upper()} corruption, seed {self.seed}")
        elif k == "induction":
            line = (f"induction, {self.n} prompts of [BOS]+r+r, repeated span {o['seq_len']}, "
                    f"seed {self.seed}")
        elif k == "needle":
            line = (f"needle, {self.n} needle(s) x lengths {list(o['lengths'])} x depths "
                    f"{list(o['depths'])}%, seed {self.seed}")
        else:
            line = (f"custom, {len(o['clean'])} prompt(s)"
                    + (", with corrupted prompts" if o.get("corrupted") else ""))
        skip = {"ioi": ("templates", "corruption"), "induction": ("seq_len",),
                "needle": ("lengths", "depths"), "custom": ("clean", "answers", "corrupted", "wrong")}
        extra = [f"{name}={v!r}" for name, v in o.items() if name not in skip[k]
                 and v != _KINDS[k].defaults().get(name)]
        return line + (f" ({', '.join(extra)})" if extra else "")

    def replace(self, **changes: Any) -> PromptSpec:
        """A copy with ``kind``/``n``/``seed`` and/or option values changed."""
        top = {k: changes.pop(k) for k in ("kind", "n", "seed") if k in changes}
        opts = {} if top.get("kind", self.kind) != self.kind else dict(self.options)
        return PromptSpec(top.get("kind", self.kind), top.get("n", self.n), top.get("seed", self.seed),
                          {**opts, **changes})

    @classmethod
    def default(cls, kind: str) -> PromptSpec:
        """The kind's default spec (``custom`` has no default: it needs texts)."""
        return cls(kind)

    # --- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "seed": self.seed,
                "options": {k: _thaw(v) for k, v in self.options.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PromptSpec:
        if not isinstance(d, Mapping) or "kind" not in d:
            raise PromptError("a prompt spec dict needs at least 'kind' "
                              "(and optionally 'n', 'seed', 'options').")
        bad = sorted(set(d) - {"kind", "n", "seed", "options"})
        if bad:
            raise PromptError(f"unknown prompt spec key(s) {bad}; the keys are kind, n, seed, options.")
        return cls(d["kind"], d.get("n"), d.get("seed", 0), dict(d.get("options") or {}))

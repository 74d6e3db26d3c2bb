"""The one result contract: a tensor over named axes with string labels, to frames, plots and files.

Every method's result subclasses ``Result`` (``PatchingResult``, ``AblationResult``,
``HeadScores``, ``Circuit``, ...). A result can be built from plain arrays, so its frames, plots
and files are testable without a model.

* Labels: every axis carries strings. A layer axis reads ``"L0", "L1", ...``, a head axis
  ``"H0", ...`` (``"KV0", ...`` for key/value heads), component axes use component labels
  (``"L3H2"``, ``"MLP1"``, see :mod:`interp.components`), a position axis ``"3:token"``, any
  other axis (examples, steps) ``"0", "1", ...``. Integer labels given for a layer or head axis
  become ``"L<i>"``/``"H<i>"``.
* ``to_frame()``: long format, one row per cell. Columns, in order: for every axis ``<axis>``
  (integer index) and ``<axis>_label`` (string); then ``value``; then ``ci_low``, ``ci_high``
  when the result has a confidence interval; then per-type columns (for a grid with a layer and
  a head axis ``component_label``, e.g. ``"L3H2"``). ``top(k)`` is the same frame's k largest
  rows.
* ``plot(**options)``: a plotly figure; unknown options raise ``TypeError`` naming the accepted
  ones.
* ``save(dir)`` / ``load(dir)``: a directory with ``result.json`` (type, module, dims, coords,
  meta, fields) and ``tensors.safetensors``; :func:`load` reads any saved result back as its own
  type.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp.components import head_axis_label, layer_label

AXES = ("layer", "head", "pos", "query_pos", "key_pos", "component", "example", "token", "k")
FORMAT = "interp.result/1"
_CORE = ("values", "dims", "coords", "meta", "per_example", "ci")
_REGISTRY: dict[str, type] = {}


def _cpu(x: Any) -> Tensor:
    """``x`` as a detached CPU tensor: results live on the CPU whatever device computed them."""
    return x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(x, device="cpu")


def default_label(dim: str, i: int) -> str:
    """The label of index ``i`` on an axis named ``dim`` when none is given."""
    if dim == "layer":
        return layer_label(i)
    if dim == "head":
        return head_axis_label(i)
    return str(i)


def _as_label(dim: str, x: Any) -> str:
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return default_label(dim, int(x))
    return str(x)


def _check_plot(fn):
    """Wrap a ``plot`` method so unknown keyword arguments raise ``TypeError`` naming the
    accepted ones (a ``**kwargs`` catch-all is not allowed on ``plot``)."""
    if getattr(fn, "_checked", False):
        return fn
    params = list(inspect.signature(fn).parameters.values())[1:]
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
        raise TypeError(f"{fn.__qualname__} must list its options explicitly (no *args/**kwargs)")
    accepted = [p.name for p in params]

    @functools.wraps(fn)
    def plot(self, *args, **kwargs):
        bad = sorted(k for k in kwargs if k not in accepted)
        if bad or len(args) > 0:
            what = f"unknown option(s) {', '.join(bad)}" if bad else "positional arguments"
            raise TypeError(f"{type(self).__name__}.plot() got {what}; it accepts "
                            f"{', '.join(accepted) or 'no options'} (as keywords).")
        return fn(self, **kwargs)

    plot._checked = True  # type: ignore[attr-defined]
    plot.accepted = tuple(accepted)  # type: ignore[attr-defined]
    return plot


@dataclass(kw_only=True)
class Result:
    """``values[*dims]`` with ``coords[dim]`` string labels.

    Optional: ``per_example[*dims, example]`` and ``ci[*dims, 2]`` (bootstrap interval of the
    mean). ``meta`` holds settings and baselines (JSON-serialisable). ``value_name`` says what
    ``value`` measures (plot axis titles); the frame column is always ``value``.
    """

    values: Tensor
    dims: tuple[str, ...]
    coords: dict[str, list] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    per_example: Tensor | None = None
    ci: Tensor | None = None
    value_name: ClassVar[str] = "value"
    rank_by: ClassVar[str] = "abs"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "plot" in cls.__dict__:
            cls.plot = _check_plot(cls.__dict__["plot"])
        _REGISTRY[cls.__name__] = cls

    def __post_init__(self) -> None:
        self.values = _cpu(self.values)
        self.dims = tuple(self.dims)
        if self.values.ndim != len(self.dims):
            raise ValueError(f"values has {self.values.ndim} axes but dims names {len(self.dims)}: {self.dims}")
        if len(set(self.dims)) != len(self.dims):
            raise ValueError(f"dims must be distinct names, got {self.dims}")
        coords = {}
        for i, d in enumerate(self.dims):
            n = self.values.shape[i]
            labels = self.coords.get(d)
            if labels is None:
                coords[d] = [default_label(d, j) for j in range(n)]
            elif len(labels) != n:
                raise ValueError(f"coords[{d!r}] has {len(labels)} labels for an axis of size {n}")
            else:
                coords[d] = [_as_label(d, x) for x in labels]
        extra = set(self.coords) - set(self.dims)
        if extra:
            raise ValueError(f"coords name axes {sorted(extra)} that are not in dims {self.dims}")
        self.coords = coords
        if self.per_example is not None:
            self.per_example = _cpu(self.per_example)
            if tuple(self.per_example.shape[:-1]) != tuple(self.values.shape):
                raise ValueError("per_example must be [*values.shape, example]")
        if self.ci is not None:
            self.ci = _cpu(self.ci)
            if tuple(self.ci.shape) != tuple(self.values.shape) + (2,):
                raise ValueError("ci must be [*values.shape, 2]")

    # --- frames -------------------------------------------------------------------------------
    def _index_grid(self) -> list[np.ndarray]:
        shape = tuple(self.values.shape)
        if not shape:
            return []
        return [g.reshape(-1) for g in np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")]

    def _cell_columns(self) -> dict[str, Any]:
        """Per-type columns of ``to_frame`` (one entry per cell, C order); none by default."""
        return {}

    def to_frame(self) -> pd.DataFrame:
        """Long format, one row per cell: ``<axis>``, ``<axis>_label`` for every axis, ``value``,
        ``ci_low``/``ci_high`` (when present), then per-type columns."""
        data: dict[str, Any] = {}
        idx = self._index_grid()
        for d, ix in zip(self.dims, idx):
            data[d] = ix.astype(np.int64)
            labels = self.coords[d]
            data[f"{d}_label"] = [labels[int(i)] for i in ix]
        data["value"] = self.values.reshape(-1).double().numpy()
        if self.ci is not None:
            c = self.ci.reshape(-1, 2).double().numpy()
            data["ci_low"], data["ci_high"] = c[:, 0], c[:, 1]
        if "layer" in self.dims and "head" in self.dims:
            lay, hd = data["layer_label"], data["head_label"]
            data["component_label"] = [f"{a}{b}" for a, b in zip(lay, hd)]
        for name, col in self._cell_columns().items():
            data[name] = col
        return pd.DataFrame(data)

    def top(self, k: int = 10, *, by: str | None = None, largest: bool = True) -> pd.DataFrame:
        """The k rows of ``to_frame()`` with the largest |value| (``by="abs"``) or value
        (``by="value"``); the default is the type's ``rank_by``."""
        by = by or self.rank_by
        if by not in ("abs", "value"):
            raise ValueError(f"by must be 'abs' or 'value', not {by!r}")
        df = self.to_frame()
        key = df["value"].abs() if by == "abs" else df["value"]
        order = key.sort_values(ascending=not largest, kind="stable").index[:k]
        return df.loc[order].reset_index(drop=True)

    def labels(self, dim: str) -> list[str]:
        if dim not in self.coords:
            raise KeyError(f"no axis {dim!r}; this result's axes are {self.dims}")
        return list(self.coords[dim])

    # --- plots --------------------------------------------------------------------------------
    @_check_plot
    def plot(self, *, title: str | None = None, zmid: float | None = 0.0):
        """A plotly heatmap (2-D), faceted heatmaps (3-D, last axis as facets) or bars (1-D)."""
        from interp.viz import result_figure

        return result_figure(self, title=title, zmid=zmid)

    # --- persistence --------------------------------------------------------------------------
    def _field_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors: dict[str, Tensor] = {}
        extra: dict[str, Any] = {}
        for f in fields(self):
            if f.name in _CORE:
                continue
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                tensors[f"field.{f.name}"] = v.detach().cpu().contiguous()
            else:
                extra[f.name] = v
        return tensors, extra

    def save(self, path: str | Path) -> Path:
        """Write ``path/result.json`` (type, module, dims, coords, meta, fields) and
        ``path/tensors.safetensors`` (values, per_example, ci and tensor fields)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"values": self.values.contiguous()}
        if self.per_example is not None:
            tensors["per_example"] = self.per_example.contiguous()
        if self.ci is not None:
            tensors["ci"] = self.ci.contiguous()
        field_tensors, extra = self._field_state()
        tensors.update(field_tensors)
        save_file(tensors, str(path / "tensors.safetensors"))
        doc = {"format": FORMAT, "type": type(self).__name__, "module": type(self).__module__,
               "dims": list(self.dims), "coords": self.coords, "meta": self.meta, "fields": extra}
        (path / "result.json").write_text(json.dumps(doc, indent=1, default=_jsonable))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Result:
        """Read a directory written by :meth:`save` (as the stored type when it is ``cls`` or
        a subclass of it)."""
        from safetensors.torch import load_file

        path = Path(path)
        doc = _read_doc(path)
        stored = _resolve(doc)
        if not issubclass(stored, cls):
            raise TypeError(f"{path} holds a {stored.__name__}, not a {cls.__name__}; read it "
                            "with interp.results.load(path).")
        t = load_file(str(path / "tensors.safetensors"))
        kwargs = dict(doc.get("fields", {}))
        kwargs.update({k[6:]: v for k, v in t.items() if k.startswith("field.")})
        return stored(values=t["values"], dims=tuple(doc["dims"]), coords=doc["coords"],
                      meta=doc["meta"], per_example=t.get("per_example"), ci=t.get("ci"),
                      **kwargs)

    def to_json(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "dims": list(self.dims), "coords": self.coords,
                "meta": json.loads(json.dumps(self.meta, default=_jsonable)),
                "values": self.values.tolist()}

    def equals(self, other: Any) -> bool:
        """Same type, axes, labels, meta, tensors (NaN equal to NaN) and fields."""
        if type(other) is not type(self) or self.dims != other.dims or self.coords != other.coords:
            return False
        if _plain(self.meta) != _plain(other.meta):
            return False
        for name in _CORE[4:] + tuple(f.name for f in fields(self) if f.name not in _CORE):
            a, b = getattr(self, name), getattr(other, name)
            if isinstance(a, Tensor) or isinstance(b, Tensor):
                if not (isinstance(a, Tensor) and isinstance(b, Tensor) and _same(a, b)):
                    return False
            elif _plain(a) != _plain(b):
                return False
        return _same(self.values, other.values)


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                              and torch.equal(a.nan_to_num(), b.nan_to_num())))


def _plain(x: Any) -> Any:
    """A JSON round trip of ``x`` with NaN/inf read back as strings (so NaN equals NaN)."""
    return json.loads(json.dumps(x, default=_jsonable), parse_constant=str)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _read_doc(path: Path) -> dict[str, Any]:
    f = path / "result.json"
    if not f.exists():
        raise FileNotFoundError(f"{path} is not a saved result (no result.json); results are "
                                "saved with result.save(directory).")
    return json.loads(f.read_text())


def _resolve(doc: dict[str, Any]) -> type:
    name = doc.get("type", "Result")
    if name not in _REGISTRY and doc.get("module"):
        importlib.import_module(doc["module"])
    if name not in _REGISTRY:
        raise ValueError(f"unknown result type {name!r} (module {doc.get('module')!r}).")
    return _REGISTRY[name]


def load(path: str | Path) -> Result:
    """Read any saved result back as its own type (``PatchingResult``, ``Circuit``, ...)."""
    return Result.load(path)


_REGISTRY["Result"] = Result

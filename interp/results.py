"""Shared result base: a tensor over named axes with labels, to frames, plots and files.

Every method's result subclasses ``Result`` (``PatchingResult``, ``AblationResult``,
``HeadScores``, ...). A result can be built from plain arrays, so its plots are testable without
a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import Tensor

AXES = ("layer", "head", "pos", "query_pos", "key_pos", "component", "example", "token", "k")


@dataclass(kw_only=True)
class Result:
    """``values[*dims]`` with ``coords[dim]`` labels (layer ids, head ids, token strings, ...).

    Optional: ``per_example[*dims, example]`` and ``ci[*dims, 2]`` (bootstrap interval of the
    mean). ``meta`` holds settings and baselines (JSON-serialisable).
    """

    values: Tensor
    dims: tuple[str, ...]
    coords: dict[str, list] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    per_example: Tensor | None = None
    ci: Tensor | None = None
    value_name: ClassVar[str] = "value"

    def __post_init__(self) -> None:
        self.values = torch.as_tensor(self.values).detach().cpu()
        self.dims = tuple(self.dims)
        if self.values.ndim != len(self.dims):
            raise ValueError(f"values has {self.values.ndim} axes but dims names {len(self.dims)}: {self.dims}")
        for i, d in enumerate(self.dims):
            n = self.values.shape[i]
            labels = self.coords.get(d)
            if labels is None:
                self.coords[d] = list(range(n))
            elif len(labels) != n:
                raise ValueError(f"coords[{d!r}] has {len(labels)} labels for an axis of size {n}")
        if self.per_example is not None:
            self.per_example = torch.as_tensor(self.per_example).detach().cpu()
            if tuple(self.per_example.shape[:-1]) != tuple(self.values.shape):
                raise ValueError("per_example must be [*values.shape, example]")
        if self.ci is not None:
            self.ci = torch.as_tensor(self.ci).detach().cpu()
            if tuple(self.ci.shape) != tuple(self.values.shape) + (2,):
                raise ValueError("ci must be [*values.shape, 2]")

    # --- frames -------------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """Long format: one row per cell, a column per axis (index and label), then the value."""
        grids = torch.meshgrid(*[torch.arange(n) for n in self.values.shape], indexing="ij")
        flat = [g.reshape(-1) for g in grids]
        data: dict[str, Any] = {}
        for d, idx in zip(self.dims, flat):
            data[d] = idx.numpy()
            labels = self.coords[d]
            if any(not isinstance(x, int) for x in labels):
                data[f"{d}_label"] = [labels[int(i)] for i in idx]
        data[self.value_name] = self.values.reshape(-1).float().numpy()
        if self.ci is not None:
            c = self.ci.reshape(-1, 2).float().numpy()
            data["ci_low"], data["ci_high"] = c[:, 0], c[:, 1]
        return pd.DataFrame(data)

    def top(self, k: int = 10, *, by: str = "abs", largest: bool = True) -> pd.DataFrame:
        """The k cells with the largest |value| (``by="abs"``) or value (``by="value"``)."""
        df = self.to_frame()
        key = df[self.value_name].abs() if by == "abs" else df[self.value_name]
        order = key.sort_values(ascending=not largest).index[:k]
        return df.loc[order].reset_index(drop=True)

    def labels(self, dim: str) -> list[str]:
        return [str(x) for x in self.coords[dim]]

    # --- plots --------------------------------------------------------------------------------
    def plot(self, *, title: str | None = None, **kwargs: Any):
        """A plotly heatmap (2-D), faceted heatmaps (3-D, last axis as facets) or bars (1-D)."""
        from interp.viz import result_figure

        return result_figure(self, title=title, **kwargs)

    # --- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path/result.json`` (dims, coords, meta, type) and ``path/tensors.safetensors``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"values": self.values.contiguous()}
        if self.per_example is not None:
            tensors["per_example"] = self.per_example.contiguous()
        if self.ci is not None:
            tensors["ci"] = self.ci.contiguous()
        extra = {}
        for f in fields(self):
            if f.name in ("values", "dims", "coords", "meta", "per_example", "ci"):
                continue
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                tensors[f"field.{f.name}"] = v.detach().cpu().contiguous()
            else:
                extra[f.name] = v
        save_file(tensors, str(path / "tensors.safetensors"))
        doc = {"type": type(self).__name__, "dims": list(self.dims), "coords": self.coords,
               "meta": self.meta, "fields": extra}
        (path / "result.json").write_text(json.dumps(doc, indent=1, default=_jsonable))
        return path

    @classmethod
    def load(cls, path: str | Path):
        from safetensors.torch import load_file

        path = Path(path)
        doc = json.loads((path / "result.json").read_text())
        t = load_file(str(path / "tensors.safetensors"))
        kwargs = dict(doc.get("fields", {}))
        kwargs.update({k[6:]: v for k, v in t.items() if k.startswith("field.")})
        return cls(values=t["values"], dims=tuple(doc["dims"]), coords=doc["coords"],
                   meta=doc["meta"], per_example=t.get("per_example"), ci=t.get("ci"), **kwargs)

    def to_json(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "dims": list(self.dims), "coords": self.coords,
                "meta": json.loads(json.dumps(self.meta, default=_jsonable)),
                "values": self.values.tolist()}


def _jsonable(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return str(x)

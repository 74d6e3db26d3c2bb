"""Checkpoints of one training run, and any measurement mapped over them."""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.results import Result

_STEP_DIR = re.compile(r"^(?:step|checkpoint)[_-]?(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """One set of weights: ``spec`` (a directory, zoo name or Hub id), its training ``step``,
    and ``revision`` (a Hub branch such as Pythia's ``"step1000"``; None for a directory)."""

    step: int
    spec: str
    revision: str | None = None

    def load(self, **kwargs: Any):
        from interp.models import load_model

        if self.revision is not None:
            kwargs.setdefault("revision", self.revision)
        return load_model(self.spec, **kwargs)


@dataclass(frozen=True)
class Checkpoints(Sequence[Checkpoint]):
    """The checkpoints of one run, in increasing step order."""

    items: tuple[Checkpoint, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        steps = [c.step for c in self.items]
        if len(set(steps)) != len(steps):
            raise ValueError(f"two checkpoints share a step: {sorted(steps)}")
        object.__setattr__(self, "items", tuple(sorted(self.items, key=lambda c: c.step)))

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> Checkpoints:
        """Every ``step_<N>`` (or ``checkpoint-<N>``) subdirectory of ``path`` holding a
        ``config.json``."""
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"no checkpoint directory {root}")
        found = []
        for d in root.iterdir():
            m = _STEP_DIR.match(d.name)
            if m and (d / "config.json").is_file():
                found.append(Checkpoint(int(m.group(1)), str(d)))
        if not found:
            raise FileNotFoundError(
                f"{root} has no checkpoints: expected subdirectories named step_<N> (or "
                "checkpoint-<N>) in Hugging Face format (config.json + weights).")
        return cls(tuple(found))

    @classmethod
    def zoo(cls, name: str) -> Checkpoints:
        """The checkpoints shipped with a zoo model (e.g. ``"modadd"``)."""
        from interp.models import ZOO, zoo_path

        d = zoo_path(name) / "checkpoints"
        if name not in ZOO or not d.is_dir():
            have = [n for n in ZOO if (zoo_path(n) / "checkpoints").is_dir()]
            raise FileNotFoundError(
                f"zoo model {name!r} ships no checkpoints; these do: {', '.join(have) or 'none'}")
        return cls.from_dir(d)

    @classmethod
    def hub(cls, model_id: str, steps: Sequence[int], *, template: str = "step{step}"
            ) -> Checkpoints:
        """Hub revisions of one model, e.g. ``Checkpoints.hub("EleutherAI/pythia-70m",
        [0, 1000, 143000])`` (Pythia's branches are named ``step<N>``)."""
        return cls(tuple(Checkpoint(int(s), model_id, template.format(step=int(s)))
                         for s in steps))

    # --- sequence -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return Checkpoints(self.items[i])
        return self.items[i]

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.items)

    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.items]

    def subset(self, n: int) -> Checkpoints:
        """About ``n`` checkpoints spread over the run (always the first and the last)."""
        if n >= len(self) or n < 2:
            return self if n >= len(self) else Checkpoints(self.items[-1:])
        idx = sorted({round(i * (len(self) - 1) / (n - 1)) for i in range(n)})
        return Checkpoints(tuple(self.items[i] for i in idx))


@dataclass(kw_only=True)
class TrackResult(Result):
    """A measurement over training: the first axis is ``step`` (labels are the step numbers);
    further axes are those of the measurement (e.g. ``layer`` x ``head``)."""

    value_name = "value"

    def plot(self, *, title: str | None = None, zmid: float | None = None, log_x: bool = False):
        """One line per cell of the measurement over the steps (a scalar: one line)."""
        import plotly.graph_objects as go

        steps = [int(s) for s in self.coords["step"]]
        flat = self.values.reshape(len(steps), -1)
        names = (["value"] if self.values.ndim == 1 else
                 ["".join(parts) for parts in _cell_labels(self)])
        fig = go.Figure()
        for j in range(flat.shape[1]):
            fig.add_trace(go.Scatter(x=steps, y=flat[:, j].tolist(), mode="lines+markers",
                                     name=names[j]))
        fig.update_layout(title=title or self.meta.get("name", ""), xaxis_title="step",
                          yaxis_title=self.meta.get("name", "value"), template="plotly_white")
        if log_x:
            fig.update_xaxes(type="log")
        if zmid is not None:
            fig.add_hline(y=zmid, line_dash="dot", line_color="gray")
        return fig


def _cell_labels(res: Result) -> list[tuple[str, ...]]:
    import itertools

    return list(itertools.product(*[res.coords[d] for d in res.dims[1:]]))


def _as_tensor(out: Any) -> tuple[torch.Tensor, tuple[str, ...], dict[str, list]]:
    if isinstance(out, Result):
        return out.values.float(), out.dims, out.coords
    if isinstance(out, (int, float)):
        return torch.tensor(float(out), device="cpu"), (), {}
    if isinstance(out, torch.Tensor):
        t = out.detach().float().cpu()
        return t, tuple(f"dim{i}" for i in range(t.ndim)), {}
    raise TypeError(f"the tracked function must return a number, a tensor or a Result, got "
                    f"{type(out).__name__}")


def track(checkpoints: Checkpoints | Sequence[Checkpoint], fn: Callable[[Any], Any], *,
          name: str | None = None, cache_dir: str | os.PathLike | None = None,
          progress: bool = True, load_kwargs: dict[str, Any] | None = None,
          pass_step: bool = False) -> TrackResult:
    """``fn(model)`` (``fn(model, step)`` with ``pass_step``) at every checkpoint, stacked on a
    leading ``step`` axis.

    One checkpoint is loaded at a time and freed before the next, so memory stays that of one
    model. ``fn`` returns a number, a tensor or a ``Result`` of the same shape at every step.
    ``cache_dir``: each checkpoint's value is kept there (keyed by ``name`` and the step) and
    read back instead of recomputed on a later call; without it, nothing is cached."""
    cps = list(checkpoints)
    if not cps:
        raise ValueError("no checkpoints to track")
    label = name or getattr(fn, "__name__", "value")
    cache = Path(cache_dir) / _slug(label) if cache_dir is not None else None
    rows, dims, coords = [], None, None
    bar = tqdm(cps, desc=f"track {label}", disable=not progress, leave=False)
    for cp in bar:
        hit = cache / f"step_{cp.step}.pt" if cache is not None else None
        if hit is not None and hit.is_file():
            saved = torch.load(hit, weights_only=True)
            t, d, c = saved["values"], tuple(saved["dims"]), json.loads(saved["coords"])
        else:
            model = cp.load(**(load_kwargs or {}))
            try:
                with torch.no_grad():
                    out = fn(model, cp.step) if pass_step else fn(model)
                t, d, c = _as_tensor(out)
            finally:
                del model
                gc.collect()
            if hit is not None:
                hit.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"values": t, "dims": list(d), "coords": json.dumps(c)}, hit)
        if dims is None:
            dims, coords = d, c
        elif tuple(t.shape) != tuple(rows[0].shape) or d != dims:
            raise ValueError(f"step {cp.step}: {label} has shape {tuple(t.shape)} {d}, but "
                             f"{tuple(rows[0].shape)} {dims} at step {cps[0].step}")
        rows.append(t)
    values = torch.stack(rows)
    all_dims = ("step",) + tuple(dims or ())
    all_coords = {"step": [str(c.step) for c in cps], **(coords or {})}
    return TrackResult(values=values, dims=all_dims, coords=all_coords,
                       meta={"name": label, "steps": [c.step for c in cps],
                             "specs": [c.spec for c in cps]})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "value"

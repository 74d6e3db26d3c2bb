"""Scale-out of the embarrassingly parallel sweeps: the same shards, in-process or on Ray.

One mechanism for every shardable method. A sweep is cut into **shards** along an axis whose
cells are computed independently (layers for :func:`interp.patching.activation_patching` and
:func:`interp.ablation.knockout_sweep`, sender layers for :func:`interp.patching.path_patching`,
trials for :func:`interp.retrieval.retrieval_scores`, receiver layers for exact edge patching
(:func:`interp.circuits.discover` with ``method="exact"``), prompts for
:func:`interp.heads.induction_scores`, ``previous_token_scores`` and ``duplicate_token_scores``).
An executor computes the shards; the shard results are merged, in shard order, into the result
the function returns, with pooled quantities (normalisation, means, bootstrap intervals)
recomputed from the merged per-example values.

* :class:`LocalExecutor` (``"local"``): the shards one after another in this process, on the
  caller's model, with one progress bar.
* :class:`RayExecutor` (``"ray"``): one Ray actor per worker, each holding one model replica
  loaded once from the spec ``interp.load_model`` recorded on the model (never a pickled model);
  the shards are tasks handed to whichever worker is free. A shard lost with its worker (the
  process died) is given to another worker, up to ``max_retries`` times.

Shards depend only on the inputs and ``shard_size`` (default per method: one layer, 4 prompts,
``batch_size`` trials), never on the executor or the number of workers, so every executor
computes the same numbers, merged the same way: the results are bit-identical on the same
device, dtype and library versions. Every entry point takes ``executor=``; ``executor=None``
(the default) runs the function unsharded, as before. See docs/distributed.md.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from interp._distributed_ray import RayExecutor

SUPPORTED = ("activation_patching", "path_patching", "knockout_sweep", "retrieval_scores",
             "induction_scores", "previous_token_scores", "duplicate_token_scores", "discover")


@runtime_checkable
class Executor(Protocol):
    """Computes a list of shards of one method and returns their results in shard order."""

    shard_size: int | None

    def map(self, model, method: str, kwargs: dict[str, Any], shards: list[list[int]]) -> list:
        ...


class LocalExecutor:
    """The shards one after another, in this process, on the caller's model.

    ``shard_size``: items per shard (default: the method's own, see the module docstring);
    ``progress``: one tqdm bar advanced per finished shard."""

    def __init__(self, *, shard_size: int | None = None, progress: bool = True) -> None:
        self.shard_size = _check_size(shard_size)
        self.progress = progress

    def map(self, model, method: str, kwargs: dict[str, Any], shards: list[list[int]]) -> list:
        from tqdm.auto import tqdm

        from interp._distributed_plans import PLANS

        plan = PLANS[method]
        out = []
        for items in tqdm(shards, desc=f"{method} ({len(shards)} shards)", unit="shard",
                          disable=not self.progress):
            out.append(plan.compute(model, kwargs, items))
        return out

    def __repr__(self) -> str:
        return f"LocalExecutor(shard_size={self.shard_size})"


def _check_size(shard_size: int | None) -> int | None:
    if shard_size is not None and int(shard_size) < 1:
        raise ValueError(f"shard_size must be a positive number of items, got {shard_size}")
    return None if shard_size is None else int(shard_size)


def import_ray():
    """``ray``, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray executor needs Ray, which is not installed: "
                          "pip install 'interp[distributed]'") from None
    return ray


def __getattr__(name: str) -> Any:  # RayExecutor lives with the Ray code; ray itself stays lazy
    if name == "RayExecutor":
        from interp._distributed_ray import RayExecutor

        return RayExecutor
    raise AttributeError(f"module 'interp.distributed' has no attribute {name!r}")


_DEFAULT_RAY: Any = None


def get_executor(executor: str | Executor | None) -> Executor:
    """``None``/``"local"`` -> :class:`LocalExecutor`; ``"ray"`` -> one shared
    :class:`RayExecutor` with default settings (its workers stay up for later calls); an
    executor object is returned as is."""
    global _DEFAULT_RAY
    if executor is None or executor == "local":
        return LocalExecutor()
    if executor == "ray":
        if _DEFAULT_RAY is None:
            from interp._distributed_ray import RayExecutor

            _DEFAULT_RAY = RayExecutor()
        return _DEFAULT_RAY
    if isinstance(executor, Executor):
        return executor
    raise TypeError(f"executor must be 'local', 'ray' or an executor object "
                    f"(interp.distributed.LocalExecutor / RayExecutor), not {executor!r}")


def model_spec(model) -> dict[str, Any]:
    """The ``load_model`` arguments recorded on ``model``, for workers to load the same model."""
    spec = getattr(model, "_interp_spec", None)
    if not spec:
        raise ValueError(
            "this model has no load spec, so workers cannot load their own replica (models are "
            "never pickled). Load it with interp.load_model(name_or_directory) (for a model "
            "built by hand: save_pretrained(directory) and load that directory), or use "
            "executor='local'.")
    spec = dict(spec)
    path = Path(os.fspath(spec["spec"])).expanduser()
    if path.exists():  # a local directory: workers may start in another directory
        spec["spec"] = str(path.resolve())
    return spec


def run(method: str | Callable, model, /, *, executor: str | Executor | None = "local",
        **kwargs: Any) -> Any:
    """``method(model, **kwargs)`` computed in shards on ``executor`` and merged.

    ``method`` is one of :data:`SUPPORTED` (a name or the function). Returns what the function
    returns (e.g. a :class:`~interp.patching.PatchingResult`), with ``meta["shards"]`` (count)
    and ``meta["shard_axis"]`` added."""
    from interp._distributed_plans import PLANS

    name = method if isinstance(method, str) else getattr(method, "__name__", repr(method))
    if name not in PLANS:
        raise ValueError(f"{name!r} cannot be sharded; the methods that can: {', '.join(SUPPORTED)}")
    plan = PLANS[name]
    try:
        bound = inspect.signature(plan.entry_point()).bind(model, **kwargs)
    except TypeError as e:
        raise TypeError(f"{name}: {e}") from None
    bound.apply_defaults()
    kw = dict(bound.arguments)
    kw.pop("model", None)
    kw["executor"] = None
    ex = get_executor(executor)
    items = plan.items(model, kw)
    if not items:
        raise ValueError(f"{name}: nothing to compute (no {plan.axis})")
    size = ex.shard_size or plan.shard_size(kw)
    shards = [items[i:i + size] for i in range(0, len(items), size)]
    results = ex.map(model, name, kw, shards)
    out = plan.merge(model, kw, results)
    out.meta["shards"] = len(shards)
    out.meta["shard_axis"] = plan.axis
    return out


def dispatch(name: str, params: dict[str, Any]) -> Any:
    """The ``executor=`` branch of the entry points: ``params`` are the call's arguments."""
    params = dict(params)
    model, executor = params.pop("model"), params.pop("executor")
    return run(name, model, executor=executor, **params)


__all__ = ["SUPPORTED", "Executor", "LocalExecutor", "RayExecutor", "dispatch", "get_executor",
           "import_ray", "model_spec", "run"]

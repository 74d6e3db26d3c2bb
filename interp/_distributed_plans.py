"""How each shardable method is cut into shards and merged back (used by ``interp.distributed``).

A plan names, for one public function: the items it can be cut along (layers, sender layers,
trials, prompts), the default number of items per shard, how to compute one shard (on whatever
process holds a model: the caller's, or a Ray worker's) and how to merge the shard results, in
shard order, into the result the function returns. Merges recompute every pooled quantity
(normalised scores, means over examples, bootstrap intervals) from the merged per-example values
with the library's own functions, exactly as the function does on its full input.

Imports of the method families are local to each plan, so importing this module is cheap and
never imports a family facade.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interp import components as C

Kwargs = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    function: str  # "module:function" of the public entry point
    axis: str  # what one shard holds
    items: Callable[[Any, Kwargs], list[int]]
    shard_size: Callable[[Kwargs], int]
    merge: Callable[[Any, Kwargs, list[Any]], Any]
    keyword: str | None = None  # a shard = the entry point itself with this keyword = the items
    run: Callable[[Any, Kwargs, list[int]], Any] | None = None  # or this computation

    def entry_point(self) -> Callable:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)

    def compute(self, model, kw: Kwargs, items: list[int]) -> Any:
        """One shard, on the process that holds ``model``."""
        if self.run is not None:
            return self.run(model, kw, list(items))
        call = {**kw, self.keyword: list(items), "executor": None}
        if "progress" in call:
            call["progress"] = False
        return self.entry_point()(model, **call)


def _n_layers(model) -> int:
    from interp.models import describe

    return describe(model).n_layers


def _layer_items(key: str):
    def items(model, kw: Kwargs) -> list[int]:
        given = kw.get(key)
        return list(range(_n_layers(model))) if given is None else [int(x) for x in given]

    return items


def _same(values: list, what: str) -> Any:
    """Every shard computes the unsharded baselines itself: they must agree exactly."""
    first = values[0]
    for v in values[1:]:
        same = torch.equal(v, first) if isinstance(v, Tensor) else v == first
        if not same:
            raise RuntimeError(f"shards disagree on {what}: the model gives different numbers on "
                               "different workers (different devices, dtypes or library versions)")
    return first


def _layer_coords(results, coords: dict) -> dict:
    out = dict(coords)
    out["layer"] = [x for r in results for x in r.coords["layer"]]
    return out


# --- patching (activation and path): cat the raw per-example metric, normalise once --------

def _merge_patching(model, kw: Kwargs, results: list) -> Any:
    from interp.patching._result import finish

    r0 = results[0]
    clean = _same([r.meta["clean_per_example"] for r in results], "the clean baseline")
    corr = _same([r.meta["corrupted_per_example"] for r in results], "the corrupted baseline")
    raw = torch.cat([r.raw_per_example for r in results], dim=0)
    meta = dict(r0.meta)
    if "layers" in meta:
        meta["layers"] = [x for r in results for x in r.meta["layers"]]
    return finish(raw, r0.dims, _layer_coords(results, r0.coords), meta,
                  torch.tensor(clean, dtype=torch.float32), torch.tensor(corr, dtype=torch.float32),
                  meta["direction"])


# --- knockout sweep: cat per-example deltas per layer, recompute means and intervals --------

def _merge_knockout(model, kw: Kwargs, results: list) -> Any:
    from interp.metrics import bootstrap_ci

    r0 = results[0]
    base = _same([r.baseline_per_example for r in results], "the unablated baseline")
    head_pe = torch.cat([r.per_example for r in results], dim=0)
    meta = dict(r0.meta)
    meta["kv_group"] = [g for r in results for g in r.meta["kv_group"]]
    out = type(r0)(values=head_pe.mean(-1), dims=r0.dims, coords=_layer_coords(results, r0.coords),
                   per_example=head_pe, ci=bootstrap_ci(head_pe, n_boot=kw["n_boot"], seed=kw["seed"]),
                   baseline_per_example=base, meta=meta)
    if r0.mlp_per_example is not None:
        mlp_pe = torch.cat([r.mlp_per_example for r in results], dim=0)
        out.mlp_values, out.mlp_per_example = mlp_pe.mean(-1), mlp_pe
        out.mlp_ci = bootstrap_ci(mlp_pe, n_boot=kw["n_boot"], seed=kw["seed"])
    return out


# --- retrieval scores: cat per-trial scores, mean over the accepted trials ------------------

def _retrieval_items(model, kw: Kwargs) -> list[int]:
    from interp.retrieval._scores import _trials

    if kw.get("trial_indices") is not None:
        return [int(i) for i in kw["trial_indices"]]
    grid = [kw[k] for k in ("needles", "haystack", "lengths", "depths", "max_new_tokens", "seed")]
    return list(range(len(_trials(model, *grid))))


def _merge_retrieval(model, kw: Kwargs, results: list) -> Any:
    from interp.retrieval._scores import RETRIEVAL_THRESHOLD

    r0 = results[0]
    scores = torch.cat([r.per_example for r in results], dim=-1)  # [layer, head, trial]
    rows = [row for r in results for row in r.meta["trials"]]
    acc = torch.tensor([bool(row["accepted"]) for row in rows])
    mean = (scores[..., acc].mean(-1) if acc.any()
            else torch.zeros(scores.shape[:2], dtype=scores.dtype))
    meta = dict(r0.meta)
    meta.update(trials=rows, n_trials=len(rows), n_accepted=int(acc.sum()),
                fast_fallbacks=sum(int(r.meta["fast_fallbacks"]) for r in results))
    meta.pop("retrieval_heads", None)
    res = type(r0).from_tensor(model, mean, per_example=scores, **meta)
    res.meta["retrieval_heads"] = [C.label(C.Head(a, b)) for a, b in res.above(RETRIEVAL_THRESHOLD)]
    return res


# --- prefix-matching head scores: per-prompt diagonal means, then the mean over prompts -----

_DIAGONALS: dict[str, tuple[Callable[[int], int], str]] = {
    "induction_scores": (lambda n: 1 - n, "Induction score (prefix matching)"),
    "previous_token_scores": (lambda n: -1, "Previous-token score"),
    "duplicate_token_scores": (lambda n: -n, "Duplicate-token score"),
}


def _diagonal_run(name: str):
    def run(model, kw: Kwargs, items: list[int]) -> Tensor:
        from interp.heads import patterns, repeated_tokens

        toks = repeated_tokens(model, seq_len=kw["seq_len"], batch=kw["batch"], seed=kw["seed"],
                               bos=kw["bos"])[list(items)]
        pats = patterns(model, toks)  # [layer, batch, head, query_pos, key_pos]
        offset = _DIAGONALS[name][0](kw["seq_len"])
        return pats.diagonal(offset=offset, dim1=-2, dim2=-1).mean(-1).permute(0, 2, 1)

    return run


def _diagonal_merge(name: str):
    def merge(model, kw: Kwargs, results: list) -> Any:
        from interp.heads import HeadScores

        per_prompt = torch.cat(results, dim=-1)  # [layer, head, batch]
        return HeadScores.from_tensor(
            model, per_prompt.mean(-1), per_example=per_prompt, title=_DIAGONALS[name][1],
            seq_len=kw["seq_len"], batch=kw["batch"], seed=kw["seed"], bos=kw["bos"],
            convention="prefix-matching diagonal")

    return merge


# --- exact edge patching: each shard scores the edges into its receiver layers -------------

def _discover_items(model, kw: Kwargs) -> list[int]:
    if kw.get("method") != "exact":
        raise ValueError("only method='exact' of discover is sharded")
    given = kw.get("receiver_layers")
    return list(range(_n_layers(model) + 1)) if given is None else [int(x) for x in given]


def _merge_discover(model, kw: Kwargs, results: list) -> Any:
    """Shards score disjoint edge sets and leave the others at exactly 0: the sum is the
    union, bit for bit."""
    g = results[0]
    for key in ("clean", "corrupted"):
        _same([r.meta[key] for r in results], f"the {key} metric")
    g.scores = torch.stack([r.scores for r in results]).sum(0)
    if kw.get("receiver_layers") is None:
        g.meta.pop("receiver_layers", None)
    else:
        g.meta["receiver_layers"] = [x for r in results for x in r.meta["receiver_layers"]]
    return g


def _fixed(n: int):
    return lambda kw: n


PLANS: dict[str, Plan] = {
    "activation_patching": Plan("interp.patching._activation:activation_patching", "layers",
                                _layer_items("layers"), _fixed(1), _merge_patching, "layers"),
    "path_patching": Plan("interp.patching._path:path_patching", "sender layers",
                          _layer_items("sender_layers"), _fixed(1), _merge_patching,
                          "sender_layers"),
    "knockout_sweep": Plan("interp.ablation._ablate:knockout_sweep", "layers",
                           _layer_items("layers"), _fixed(1), _merge_knockout, "layers"),
    "retrieval_scores": Plan("interp.retrieval._scores:retrieval_scores", "trials",
                             _retrieval_items, lambda kw: max(1, int(kw["batch_size"])),
                             _merge_retrieval, "trial_indices"),
    "discover": Plan("interp.circuits._discover:discover", "receiver layers", _discover_items,
                     _fixed(1), _merge_discover, "receiver_layers"),
}
for _name in _DIAGONALS:
    PLANS[_name] = Plan(f"interp.heads:{_name}", "prompts",
                        lambda model, kw: list(range(int(kw["batch"]))), _fixed(4),
                        _diagonal_merge(_name), run=_diagonal_run(_name))

"""Ablating components together (``ablate``, ``ablated``) and one at a time (``knockout_sweep``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from interp import components as C
from interp import hooks as H
from interp._bridge import fused_activations
from interp._engine.restart import Restarter, default_budget
from interp._engine.schedule import group_plan, sweep
from interp.ablation._components import (
    Component,
    Method,
    _fit_positions,
    hooks_for,
    parse_components,
    scoped_hooks,
    sources,
    sweep_layer_hooks,
)
from interp.distributed import dispatch
from interp.metrics import MetricSpec, bootstrap_ci, logits_at, resolve_metric
from interp.models import as_model, describe
from interp.prompts import PromptSet
from interp.results import Result


@dataclass(kw_only=True)
class AblationResult(Result):
    """``values``: mean metric change (ablated - baseline) per ablation, with ``per_example`` and
    a bootstrap ``ci``. ``ablate`` gives one cell (dims ``("ablation",)``); ``knockout_sweep``
    gives ``[layer, head]`` and the MLPs in ``mlp_values [layer]`` (+ per-example and CI), also
    as a result of their own, ``.mlps``.

    ``meta`` holds ``baseline`` (mean metric without ablation), ``method``, ``metric`` and the
    components; ``top_before``/``top_after`` list each example's top-k (token, probability) at
    its answer position."""

    baseline_per_example: Tensor | None = None
    ablated_per_example: Tensor | None = None
    mlp_values: Tensor | None = None
    mlp_per_example: Tensor | None = None
    mlp_ci: Tensor | None = None
    top_before: list | None = None
    top_after: list | None = None
    value_name = "delta"

    @property
    def baseline(self) -> float:
        return float(self.meta["baseline"])

    @property
    def ablated(self) -> float:
        """Mean ablated metric (``ablate`` results)."""
        return float(self.meta["ablated"])

    @property
    def mlps(self) -> AblationResult:
        """The MLP knockouts as their own result: dims ``("component",)``, labels ``MLP0..``."""
        if self.mlp_values is None:
            raise ValueError("this result has no MLP knockouts (include_mlps=False).")
        n = len(self.mlp_values)
        return AblationResult(values=self.mlp_values, dims=("component",),
                              coords={"component": C.mlp_labels(n)}, meta=dict(self.meta),
                              per_example=self.mlp_per_example, ci=self.mlp_ci,
                              baseline_per_example=self.baseline_per_example)


@contextmanager
def ablated(
    model,
    components: Sequence[str] | str,
    *,
    method: Method = "zero",
    reference: PromptSet | None = None,
    per_position: bool | None = None,
    seed: int = 0,
) -> Iterator[None]:
    """Run the body with ``components`` ablated; the hooks are removed on exit (also on error).

    ``mean`` and ``resample`` need ``reference`` prompts here (there are no prompts to fall back
    on); resampled rows are paired to the batch by a seeded permutation, cycled if shorter."""
    model = as_model(model)
    comps = parse_components(model, components)
    src, rows, _ = sources(model, comps, method, None, reference, per_position, seed)
    with scoped_hooks(model, hooks_for(comps, src, rows)):
        yield


def _top_k(model, logits: Tensor, k: int) -> list:
    probs = logits.float().softmax(-1)
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)  # a vocabulary may have < k tokens
    tok = getattr(model, "tokenizer", None)

    def name(t: int) -> str:
        return tok.decode([t]) if tok is not None else str(t)

    return [[(name(int(i)), float(p)) for i, p in zip(ids, ps)]
            for ids, ps in zip(top.indices.tolist(), top.values.tolist())]


def ablate(
    model,
    prompts: PromptSet,
    components: Sequence[str] | str,
    *,
    method: Method = "zero",
    reference: PromptSet | None = None,
    metric: MetricSpec = "logit_diff",
    per_position: bool | None = None,
    k: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
) -> AblationResult:
    """Ablate ``components`` together on ``prompts``: baseline and ablated metric per example,
    the change with a bootstrap CI, and the top-k predictions before and after."""
    model = as_model(model)
    prompts.check(model)
    comps = parse_components(model, components)
    src, rows, pp = sources(model, comps, method, prompts, reference, per_position, seed)
    tokens = prompts.clean_tokens
    with torch.no_grad():
        clean = model(tokens)
        clean_ans = logits_at(clean, prompts.answer_pos)
        m = resolve_metric(metric, clean_answer_logits=clean_ans)
        base = m.from_full(clean, prompts).float()
        with scoped_hooks(model, hooks_for(comps, src, rows)):
            logits = model(tokens)
            abl = m.from_full(logits, prompts).float()
        abl_ans = logits_at(logits, prompts.answer_pos)
    delta = (abl - base)[None]
    label = "+".join(c.label for c in comps)
    return AblationResult(
        values=delta.mean(-1), dims=("ablation",), coords={"ablation": [label]},
        per_example=delta, ci=bootstrap_ci(delta, n_boot=n_boot, seed=seed),
        baseline_per_example=base, ablated_per_example=abl,
        top_before=_top_k(model, clean_ans, k), top_after=_top_k(model, abl_ans, k),
        meta={"method": method, "metric": m.name, "components": [c.label for c in comps],
              "baseline": float(base.mean()), "ablated": float(abl.mean()),
              "per_position": pp, "n_prompts": len(prompts)},
    )


# --------------------------------------------------------------------------------------------
# knockout sweep
# --------------------------------------------------------------------------------------------


def _forward_sweep(model, prompts, comps, src, rows, metric, *, per_call: int, progress: bool):
    """Full forwards with ``per_call`` ablations stacked on the batch axis (1: a plain loop)."""
    info = describe(model)
    b = len(prompts)
    tokens = prompts.clean_tokens
    results: dict[Component, Tensor] = {}
    with torch.no_grad():
        clean = model(tokens)
        m = resolve_metric(metric, clean_answer_logits=logits_at(clean, prompts.answer_pos))
        base = m.from_full(clean, prompts).float()
        for layer in range(info.n_layers):
            layer_comps = [c for c in comps if c.layer == layer]
            if progress:
                print(f"knockout_sweep: layer {layer + 1}/{info.n_layers}", flush=True)
            for start in range(0, len(layer_comps), per_call):
                chunk = layer_comps[start:start + per_call]
                n = len(chunk)
                with scoped_hooks(model, sweep_layer_hooks(chunk, b, src, rows)):
                    logits = model(tokens.repeat(n, 1))
                vals = torch.stack([m.from_full(logits[j * b:(j + 1) * b], prompts).float()
                                    for j in range(n)])
                for c, v in zip(chunk, vals):
                    results[c] = v.cpu()
    return m, base, results


def _replay_sweep(model, prompts, comps, src, rows, metric, *, budget_tokens: int,
                  progress: bool):
    """Each ablation as an activation patch whose source is the replacement value, through the
    patching engine (:func:`interp._engine.schedule.sweep`): replay from the ablated layer, only the
    rows that can change, answer rows at the last block, heads by their share of the attention
    output. Prompts of different lengths (right-padded, e.g. IOI of mixed templates) run in
    groups of similar length, each cut after its last answer
    (:func:`interp._engine.schedule.group_plan`)."""
    b, n_pos = prompts.clean_tokens.shape
    plan = group_plan(model, prompts, metric)  # an ablation changes every position: lo = 0
    if plan is None:
        return _replay_group(model, prompts, comps, src, rows, metric,
                             budget_tokens=budget_tokens, progress=progress)
    if rows is not None:  # the source row of each example, as one batch would cycle them
        rows = rows[torch.arange(b, device=rows.device) % len(rows)]
    base = torch.empty(b)
    results: dict[Component, Tensor] = {}
    for idx, sub in plan:
        n = sub.n_pos
        src_g = {name: (rep[:, :n] if rep.ndim > 1 and rep.shape[1] == n_pos else rep)
                 for name, rep in src.items()}
        m, base_g, res_g = _replay_group(model, sub, comps, src_g,
                                         None if rows is None else rows[idx.to(rows.device)],
                                         metric, budget_tokens=budget_tokens, progress=progress)
        base[idx] = base_g
        for c, v in res_g.items():
            results.setdefault(c, torch.empty(b))[idx] = v
    return m, base, results


def _replay_group(model, prompts, comps, src, rows, metric, *, budget_tokens: int,
                  progress: bool):
    """:func:`_replay_sweep` on one batch (one window)."""
    info = describe(model)
    n_layers = info.n_layers
    tokens = prompts.clean_tokens.to(model.cfg.device)
    b, n_pos = tokens.shape
    targets = {"head": "z", "mlp": "mlp_out"}
    used = {c.hook for c in comps}
    names = {H.resid_pre(x) for x in range(n_layers)}  # all-position sweeps start from these
    eng = Restarter(model, tokens, names=sorted(names | used), attn_outputs=True)
    m = resolve_metric(metric, clean_answer_logits=logits_at(eng.logits, prompts.answer_pos))
    base = m.from_full(eng.logits, prompts).float().cpu()

    def replacement(name: str) -> Tensor:
        act = eng.cache[name]
        rep = src.get(name)
        if rep is None:
            return torch.zeros_like(act)
        rep = _fit_positions(rep, n_pos, name).to(act.device, act.dtype)
        if rows is not None:
            rep = rep[rows.to(act.device)[torch.arange(b, device=act.device) % len(rows)]]
        return rep.expand_as(act)

    src_cache = {name: replacement(name) for name in used}
    results: dict[Component, Tensor] = {}
    for kind, target in targets.items():
        mine = [c for c in comps if c.kind == kind]
        if not mine:
            continue
        layers = sorted({c.layer for c in mine})
        cells = [(h,) for h in range(info.n_heads)] if kind == "head" else [()]
        vals = sweep(eng, src_cache, target=target, per_position=False, layers=layers,
                     cells=cells, metric=m, prompts=prompts, base_values=base,
                     budget_tokens=budget_tokens, progress=progress,
                     desc=f"knockout {'heads' if kind == 'head' else 'MLPs'}")
        for c in mine:
            results[c] = vals[layers.index(c.layer), c.head if kind == "head" else 0]
    return m, base, results


def knockout_sweep(
    model,
    prompts: PromptSet,
    *,
    method: Method = "zero",
    include_mlps: bool = True,
    metric: MetricSpec = "logit_diff",
    reference: PromptSet | None = None,
    per_position: bool | None = None,
    implementation: Literal["replay", "batched", "loop"] = "replay",
    max_batch: int = 512,
    seed: int = 0,
    n_boot: int = 1000,
    progress: bool = False,
    layers: Sequence[int] | None = None,
    executor=None,
) -> AblationResult:
    """Ablate each head (and each MLP) alone: ``values[layer, head]`` = mean metric change.

    ``replay`` (default) runs each ablation as an activation patch through the patching engine
    (replay from the ablated layer, many ablations along the batch axis, at most ``max_batch``
    rows per call and the memory budget of :func:`interp._engine.restart.default_budget`);
    ``batched`` runs full forwards with the ablations stacked on the batch axis; ``loop`` runs
    one forward per component (the plain reference). ``layers``: only these layers' heads and
    MLPs (default all). ``executor``: "local", "ray" or an ``interp.distributed`` executor:
    shards over layers."""
    if executor is not None:  # the same shards in-process or on Ray workers
        return dispatch("knockout_sweep", locals())
    model = as_model(model)
    prompts.check(model)
    info = describe(model)
    b = len(prompts)
    layers = list(range(info.n_layers)) if layers is None else [int(x) for x in layers]
    heads = [C.label(C.Head(layer, h)) for layer in layers for h in range(info.n_heads)]
    mlps = [C.label(C.MLP(layer)) for layer in layers] if include_mlps else []
    comps = parse_components(model, heads + mlps)
    src, rows, pp = sources(model, comps, method, prompts, reference, per_position, seed)
    if implementation == "replay":
        budget = min(max_batch * prompts.n_pos, default_budget(info, b, prompts.n_pos))
        with fused_activations(model):  # the same function, fused (see interp._bridge)
            m, base, results = _replay_sweep(model, prompts, comps, src, rows, metric,
                                             budget_tokens=budget, progress=progress)
    elif implementation in ("batched", "loop"):
        m, base, results = _forward_sweep(model, prompts, comps, src, rows, metric,
                                          per_call=1 if implementation == "loop"
                                          else max(1, max_batch // b), progress=progress)
    else:
        raise ValueError(f"unknown implementation {implementation!r}; use 'replay', 'batched' "
                         "or 'loop'.")
    base = base.cpu()
    head_pe = torch.stack([results[c] for c in comps if c.kind == "head"]).view(len(layers), info.n_heads, b) - base
    out = AblationResult(
        values=head_pe.mean(-1), dims=("layer", "head"), per_example=head_pe, coords={"layer": layers},
        ci=bootstrap_ci(head_pe, n_boot=n_boot, seed=seed), baseline_per_example=base,
        meta={"method": method, "metric": m.name, "baseline": float(base.mean()),
              "per_position": pp, "implementation": implementation, "n_prompts": b,
              "kv_group": [[info.kv_head(h) for h in range(info.n_heads)]] * len(layers)},
    )
    if include_mlps:
        mlp_pe = torch.stack([results[c] for c in comps if c.kind == "mlp"]) - base
        out.mlp_values, out.mlp_per_example = mlp_pe.mean(-1), mlp_pe
        out.mlp_ci = bootstrap_ci(mlp_pe, n_boot=n_boot, seed=seed)
    return out

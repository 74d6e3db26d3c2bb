"""Node attribution patching (AtP; Nanda 2023, transformer-lens's attribution-patching demo):
``AtP(a) = sum_{pos, d} (a_clean - a_corr) * dM/da |_{x_corr}`` -- one clean pass (cache), one
corrupted pass and one backward. It estimates *denoising*: ``raw = M(corr) + AtP`` estimates the
metric with ``a`` patched from clean into the corrupted run, so the result has the same axes,
baselines and normalisation as :func:`interp.patching.activation_patching` and can be compared
cell by cell.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp import _bridge as B
from interp import components as C
from interp import hooks as H
from interp._engine.schedule import HEAD_TARGETS, RESID_TARGETS, hook_name
from interp.metrics import MetricSpec, logits_at, resolve_metric
from interp.models import as_model, describe
from interp.patching._activation import Target
from interp.patching._result import PatchingResult, finish, pos_labels, prepare_pairs

ATP_CONVENTION = ("AtP: (a_clean - a_corrupted) . dM/da at the corrupted run; raw = M(corrupted) "
                  "+ AtP estimates denoising (clean activation patched into the corrupted run)")


def _reduce(target: str, prod: Tensor, per_position: bool) -> Tensor:
    """Elementwise product -> [batch, *cells] as activation_patching lays the cells out."""
    if target in RESID_TARGETS:
        x = prod.sum(-1)  # [b, pos]
        return x if per_position else x.sum(-1, keepdim=True)[:, 0]
    if target == "pattern":  # [b, head, q, k]
        x = prod.sum(-1)  # [b, head, q]
        return x.transpose(1, 2) if per_position else x.sum(-1)
    x = prod.sum(-1)  # [b, pos, head]
    return x if per_position else x.sum(1)


def attribution_patching(
    model,
    prompts,
    *,
    target: Target = "z",
    per_position: bool | None = None,
    metric: MetricSpec = "logit_diff",
    layers=None,
) -> PatchingResult:
    """Node attribution patching (AtP) for every layer x (position / head) of ``target``.

    ``per_position`` defaults to False for head targets ((layer, head)) and True for residual
    targets ((layer, pos)). The result is denoising-normalised like exact patching."""
    model = as_model(model)
    info = describe(model)
    if target not in RESID_TARGETS + HEAD_TARGETS:
        raise ValueError(f"unknown target {target!r}; use one of {RESID_TARGETS + HEAD_TARGETS}.")
    if target == "resid_mid" and not info.has_resid_mid:
        raise ValueError("this model has no resid_mid (parallel attention and MLP).")
    if per_position is None:
        per_position = target in RESID_TARGETS
    clean, corrupted = prepare_pairs(model, prompts, metric, "denoising")
    B.require_hook_effect(model, target, method="attribution patching")
    layers = list(range(info.n_layers)) if layers is None else [int(x) for x in layers]
    for layer in layers:
        info.check_layer(layer)
    names = [hook_name(target, layer) for layer in layers]
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n in names)
    ap = prompts.answer_pos.to(clean_logits.device)
    m = resolve_metric(metric, clean_answer_logits=logits_at(clean_logits, ap))
    acts: dict[str, Tensor] = {}

    def start(act, hook):  # make the graph start at the residual stream entering block 0
        return act.detach().requires_grad_(True)

    def keeper(name: str):
        def keep(act, hook):
            acts[name] = act
            return act
        return keep

    hooks = [(H.resid_pre(0), start)] + [(n, keeper(n)) for n in names]
    if target == "resid_pre" and 0 in layers:
        hooks = [(H.resid_pre(0), lambda a, hook: keeper(H.resid_pre(0))(start(a, hook), hook))] + [
            (n, keeper(n)) for n in names if n != H.resid_pre(0)]
    with torch.enable_grad():
        corr_logits = model.run_with_hooks(corrupted, fwd_hooks=hooks)
        B.drop_graph_state(model)
        corr_pe = m.from_full(corr_logits, prompts)
        grads = torch.autograd.grad(corr_pe.sum(), [acts[n] for n in names], allow_unused=True)
        B.check_finite_grads(grads, "attribution_patching")
    corr_pe = corr_pe.detach().float().cpu()
    clean_pe = m.from_full(clean_logits, prompts).float().cpu()
    rows = []
    for n, g in zip(names, grads):
        if g is None:
            g = torch.zeros_like(acts[n])
        diff = clean_cache[n] - acts[n].detach()
        rows.append(_reduce(target, diff * g, per_position).float().cpu())  # [b, *cells]
    est = torch.stack(rows)  # [layer, b, *cells]
    est = est.movedim(1, -1) + corr_pe  # raw estimate of the patched metric
    kv = target in ("k", "v")
    n_head = info.n_kv_heads if kv else info.n_heads
    if target in RESID_TARGETS:
        dims = ("layer", "pos") if per_position else ("layer",)
    else:
        dims = ("layer", "pos", "head") if per_position else ("layer", "head")
    coords = {"layer": [C.layer_label(x) for x in layers], "pos": pos_labels(model, prompts),
              "head": C.head_axis_labels(n_head, kv=kv and info.is_gqa)}
    meta = {"method": "attribution_patching", "target": target, "per_position": per_position,
            "metric": m.name, "layers": layers, "sign_convention": ATP_CONVENTION,
            "title": f"Attribution patching (AtP) of {target}"}
    return finish(est, dims, {d: coords[d] for d in dims}, meta, clean_pe, corr_pe, "denoising")

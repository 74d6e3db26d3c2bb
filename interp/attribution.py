"""Attribution patching: a first-order estimate of activation patching in about three passes.

**Node level** (AtP; Nanda 2023, transformer-lens's attribution-patching demo; METHODS.md §4):
``AtP(a) = sum_{pos, d} (a_clean - a_corr) * dM/da |_{x_corr}`` -- one clean pass (cache), one
corrupted pass and one backward. It estimates *denoising*: ``raw = M(corr) + AtP`` estimates the
metric with ``a`` patched from clean into the corrupted run, so the result has the same axes,
baselines and normalisation as :func:`interp.patching.activation_patching` and can be compared
cell by cell.

**Edge level** (EAP; Syed et al. 2023): ``s(u -> v) = sum_{pos, d} (out_u(corr) - out_u(clean)) .
dM/d in_v |_{x_clean}``, averaged over examples. Nodes: ``embed``, every head ``L{l}H{h}``
(output ``hook_result``), every ``MLP{l}``; receivers: each head's q/k/v input (separate
residual copies, transformer-lens's ``use_split_qkv_input``), each MLP's input
(``hook_mlp_in``) and ``logits`` (the final residual). Note the opposite sign convention to AtP
(corrupt - clean, gradients at the clean run): a positive score means the corruption of ``u``
*raises* the metric through ``v``; both conventions are stored in ``meta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from interp import hooks as H
from interp.metrics import MetricSpec, logits_at, resolve_metric
from interp.models import describe
from interp.patching import (
    HEAD_TARGETS,
    RESID_TARGETS,
    PatchingResult,
    Target,
    _finish,
    _hook_name,
    _pos_labels,
    _prepare,
)
from interp.results import Result

ATP_CONVENTION = ("AtP: (a_clean - a_corrupted) . dM/da at the corrupted run; raw = M(corrupted) "
                  "+ AtP estimates denoising (clean activation patched into the corrupted run)")
EAP_CONVENTION = ("EAP: (out_u(corrupted) - out_u(clean)) . dM/d in_v at the clean run, mean over "
                  "examples; estimates M(clean with edge u->v corrupted) - M(clean)")


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
    info = describe(model)
    if target not in RESID_TARGETS + HEAD_TARGETS:
        raise ValueError(f"unknown target {target!r}; use one of {RESID_TARGETS + HEAD_TARGETS}.")
    if target == "resid_mid" and not info.has_resid_mid:
        raise ValueError("this model has no resid_mid (parallel attention and MLP).")
    if per_position is None:
        per_position = target in RESID_TARGETS
    clean, corrupted = _prepare(model, prompts, metric, "denoising")
    layers = list(range(info.n_layers)) if layers is None else [int(x) for x in layers]
    for layer in layers:
        info.check_layer(layer)
    names = [_hook_name(target, layer) for layer in layers]
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
        corr_pe = m.from_full(corr_logits, prompts)
        grads = torch.autograd.grad(corr_pe.sum(), [acts[n] for n in names], allow_unused=True)
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
    prefix = "KV" if kv and info.is_gqa else "H"
    coords = {"layer": [f"L{x}" for x in layers], "pos": _pos_labels(model, prompts),
              "head": [f"{prefix}{h}" for h in range(n_head)]}
    meta = {"method": "attribution_patching", "target": target, "per_position": per_position,
            "metric": m.name, "layers": layers, "sign_convention": ATP_CONVENTION,
            "title": f"Attribution patching (AtP) of {target}"}
    return _finish(est, dims, {d: coords[d] for d in dims}, meta, clean_pe, corr_pe, "denoising")


# ----------------------------------------------------------------------------------------------
# edge attribution patching
# ----------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class EdgeAttributionResult(Result):
    """``values[src, dst]`` edge scores (0 where no edge exists); ``.edges`` lists them."""

    by_input: Tensor | None = None  # [src, layer, head, 3]: q / k / v input edges separately
    value_name = "score"

    @property
    def edges(self) -> list[tuple[str, str, float]]:
        src, dst = self.coords["src"], self.coords["dst"]
        valid = self.meta.get("valid")
        out = []
        for i, s in enumerate(src):
            for j, d in enumerate(dst):
                if valid is None or valid[i][j]:
                    out.append((s, d, float(self.values[i, j])))
        return out

    def to_circuit(self, threshold: float | None = None, *, top_n: int | None = None,
                   absolute: bool = True):
        """Edges with |score| >= threshold, or the top_n by |score|, as a Circuit."""
        from interp.circuits import Circuit

        if threshold is None and top_n is None:
            raise ValueError("give threshold=... and/or top_n=... to select edges.")
        edges = self.edges
        if not absolute:
            edges = [e for e in edges if e[2] >= (threshold or 0.0)]
        circuit = Circuit.from_edges(edges, n_layers=int(self.meta["n_layers"]), top_n=top_n,
                                     threshold=threshold)
        circuit.meta["sign_convention"] = self.meta.get("sign_convention")
        return circuit


def edge_attribution(model, prompts, *, metric: MetricSpec = "logit_diff") -> EdgeAttributionResult:
    """EAP scores for every edge embed/head/MLP -> head (q+k+v inputs)/MLP/logits.

    ``values`` is [src, dst] (``by_input`` splits head receivers into q, k, v); impossible
    edges (a receiver not downstream of its sender) are 0 and excluded from ``.edges``."""
    from interp._attribution_edges import edge_attribution as _impl

    return _impl(model, prompts, metric=metric)


__all__ = ["EdgeAttributionResult", "attribution_patching", "edge_attribution"]

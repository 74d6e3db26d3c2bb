"""Exact activation patching, many patches per forward.

Conventions (Heimersheim & Nanda 2024):

- **denoising**: run the corrupted prompt, insert one activation from the clean run
  (sufficiency); normalised score ``(m - m_corr) / (m_clean - m_corr)``, 0 = no effect, 1 = fully
  restored.
- **noising**: run the clean prompt, insert one corrupted activation (necessity); score
  ``(m - m_clean) / (m_clean - m_corr)``, 0 = no effect, -1 = fully broken.

Targets and result axes: ``resid_pre/resid_mid/resid_post/attn_out/mlp_out`` -> (layer, pos)
(or (layer,) with ``per_position=False``); head ``z/q/k/v/pattern`` -> (layer, head) over all
positions or (layer, pos, head) per position (for ``pattern`` the position is the query row).
``k``/``v`` address the *key/value* heads of GQA models (their head axis has ``n_kv_heads``
entries, labelled ``KV0..``), as transformer-lens does.

Speed: the numbers equal transformer-lens's one-forward-per-patch sweeps (parity-tested), but
each patch resumes at its own block from the cached residual (``interp._engine``),
many patches share one forward along the batch axis (chunked to a memory budget), and the
unembedding is applied only at the rows the metric reads. Whole-activation sweeps over examples
of different layouts (IOI of mixed templates) run in up to three groups of examples, each on its
own window of positions (see ``interp._engine.schedule.group_plan``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from interp import components as C
from interp import hooks as H
from interp._bridge import fused_activations
from interp._engine.restart import Restarter
from interp._engine.schedule import (
    HEAD_TARGETS,
    RESID_TARGETS,
    group_plan,
    hook_name,
    sweep,
)
from interp.distributed import dispatch
from interp.metrics import MetricSpec, logits_at, resolve_metric
from interp.models import as_model, describe
from interp.patching._result import PatchingResult, finish, pos_labels, prepare_pairs
from interp.prompts import PromptError, PromptSet

Target = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v",
                 "pattern"]
Direction = Literal["denoising", "noising"]


def activation_patching(
    model,
    prompts: PromptSet,
    *,
    target: Target = "resid_pre",
    per_position: bool = True,
    direction: Direction = "denoising",
    metric: MetricSpec = "logit_diff",
    layers: Sequence[int] | None = None,
    progress: bool = False,
    budget_tokens: int | None = None,
    executor=None,
) -> PatchingResult:
    """Patch one activation at a time (every layer, position and/or head) and read the metric.

    ``metric``: "logit_diff" (at each example's own answer position), "prob", "logprob", "loss",
    "kl" (KL from the clean answer distribution) or a callable ``(answer_logits [batch, d_vocab],
    prompts) -> [batch]``. ``budget_tokens`` caps rows x positions per forward (default: about
    the activations one cached run holds). Returns a :class:`PatchingResult` (see module doc).
    ``executor``: "local", "ray" or an ``interp.distributed`` executor: shards over layers.

    Per-position results are indexed by position when every example has the same layout
    (``prompts.same_layout``); otherwise (e.g. IOI prompts of mixed templates) by the prompts'
    named positions: the ``pos`` axis becomes ``role`` (see :meth:`PatchingResult.by_role`).
    Right-padded prompts of different lengths without named positions are refused (position
    ``p`` would mean different things in different examples).
    """
    if executor is not None:  # the same shards in-process or on Ray workers
        return dispatch("activation_patching", locals())
    model = as_model(model)
    info = describe(model)
    if target not in RESID_TARGETS + HEAD_TARGETS:
        raise ValueError(f"unknown target {target!r}; use one of {RESID_TARGETS + HEAD_TARGETS}.")
    if target == "resid_mid" and not info.has_resid_mid:
        raise ValueError("this model has no resid_mid (parallel attention and MLP); patch "
                         "resid_pre, attn_out or mlp_out instead.")
    clean, corrupted = prepare_pairs(model, prompts, metric, direction)
    by_role = per_position and not prompts.same_layout and bool(prompts.positions)
    if per_position and not by_role and not prompts.same_layout and prompts.padded:
        raise PromptError(
            "per-position patching needs prompts whose positions line up: these examples end at "
            "different positions (or their tokens play different roles at the same index), and "
            "they carry no named positions to align them by. Use prompts of one template (e.g. "
            "interp.prompts.ioi(model, n, templates='BABA')), prompts built from templates "
            "(which name their positions: IO, S1, S2, END, ...), or per_position=False.")
    layers = list(range(info.n_layers)) if layers is None else [int(x) for x in layers]
    for layer in layers:
        info.check_layer(layer)
    plan = None
    if not per_position:
        diff = (clean != corrupted).cpu()  # a patch changes nothing before the first differing token
        lo = torch.where(diff.any(1), diff.float().argmax(1), prompts.answer_pos.cpu())
        plan = group_plan(model, prompts, metric, lo)
    b, n_pos = clean.shape
    kv = target in ("k", "v")
    n_head = info.n_kv_heads if kv else info.n_heads
    if target in RESID_TARGETS:
        cells = [(p,) for p in range(n_pos)] if per_position else [()]
        dims = ("layer", "pos") if per_position else ("layer",)
    else:
        cells = ([(p, h) for p in range(n_pos) for h in range(n_head)] if per_position
                 else [(h,) for h in range(n_head)])
        dims = ("layer", "pos", "head") if per_position else ("layer", "head")
    args = dict(target=target, per_position=per_position, direction=direction, metric=metric,
                layers=layers, cells=cells, progress=progress, budget_tokens=budget_tokens)
    with fused_activations(model):  # the same function, fused (see interp._bridge)
        if plan is None:
            out, clean_pe, corr_pe, m_name = _sweep_values(model, prompts, **args)
        else:  # each group of examples on its own window (see group_plan)
            out = torch.empty(len(layers), len(cells), b)
            clean_pe, corr_pe = torch.empty(b), torch.empty(b)
            for idx, sub in plan:
                o, c, z, m_name = _sweep_values(model, sub, **args)
                out[..., idx], clean_pe[idx], corr_pe[idx] = o, c, z
    if per_position and target not in RESID_TARGETS:
        out = out.reshape(len(layers), n_pos, n_head, b)
    elif not per_position and target in RESID_TARGETS:
        out = out[:, 0]
    coords = {"layer": [C.layer_label(x) for x in layers], "pos": pos_labels(model, prompts),
              "head": C.head_axis_labels(n_head, kv=kv and info.is_gqa)}
    coords = {d: coords[d] for d in dims}
    meta = {"method": "activation_patching", "target": target, "per_position": per_position,
            "metric": m_name, "layers": layers, "n_examples": b,
            "heads": ("key/value heads (GQA: each is shared by "
                      f"{info.group_size} query heads)" if kv and info.is_gqa else "query heads"),
            "title": f"Activation patching ({direction}) of {target}"}
    res = finish(out, dims, coords, meta, clean_pe, corr_pe, direction)
    return res.by_role(prompts) if by_role else res


def _sweep_values(model, prompts: PromptSet, *, target, per_position, direction, metric, layers,
                  cells, progress, budget_tokens):
    """``(metric [layer, cell, batch], clean metric [batch], corrupted metric [batch], name)``."""
    clean = prompts.clean_tokens.to(model.cfg.device)
    corrupted = prompts.require_corrupted().to(model.cfg.device)
    names = {hook_name(target, layer) for layer in layers}
    pre_names = {H.resid_pre(layer) for layer in layers} | {H.resid_post(layer) for layer in layers}
    base_tokens, src_tokens = (corrupted, clean) if direction == "denoising" else (clean, corrupted)
    base = Restarter(model, base_tokens, names=sorted(pre_names | names),
                     attn_outputs=target == "z" and not per_position)
    with torch.no_grad():
        src_logits, src_cache = model.run_with_cache(src_tokens, names_filter=lambda n: n in names)
    clean_logits, corr_logits = ((src_logits, base.logits) if direction == "denoising"
                                 else (base.logits, src_logits))
    ap = prompts.answer_pos.to(clean_logits.device)
    m = resolve_metric(metric, clean_answer_logits=logits_at(clean_logits, ap))
    clean_pe = m.from_full(clean_logits, prompts).float().cpu()
    corr_pe = m.from_full(corr_logits, prompts).float().cpu()
    base_pe, src_pe = (corr_pe, clean_pe) if direction == "denoising" else (clean_pe, corr_pe)
    out = sweep(base, src_cache, target=target, per_position=per_position, layers=layers,
                cells=cells, metric=m, prompts=prompts, base_values=base_pe,
                budget_tokens=budget_tokens, progress=progress, source_values=src_pe)
    return out, clean_pe, corr_pe, m.name

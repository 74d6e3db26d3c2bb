"""Exact activation patching and path patching, many patches per forward.

Conventions (METHODS.md section 3; Heimersheim & Nanda 2024):

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
each patch resumes at its own block from the cached residual (``interp._patching_engine``),
many patches share one forward along the batch axis (chunked to a memory budget), and the
unembedding is applied only at the rows the metric reads.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from interp import hooks as H
from interp._patching_engine import Restarter, default_budget
from interp.metrics import Metric, MetricSpec, bootstrap_ci, logits_at, normalise, resolve_metric
from interp.models import describe
from interp.prompts import PromptSet
from interp.results import Result

Target = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v",
                 "pattern"]
Direction = Literal["denoising", "noising"]
RESID_TARGETS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
HEAD_TARGETS = ("z", "q", "k", "v", "pattern")


@dataclass(kw_only=True)
class PatchingResult(Result):
    """``values``: normalised score per cell; ``raw``: mean metric per cell; ``per_example``:
    normalised per-example scores (their mean is ``values``); ``ci``: bootstrap CI of the mean.
    ``meta`` holds ``clean``/``corrupted`` baselines (batch means and per example), ``direction``,
    ``target``, ``metric``."""

    raw: Tensor | None = None
    raw_per_example: Tensor | None = None
    value_name = "score"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.raw is not None:
            self.raw = torch.as_tensor(self.raw).detach().cpu()
            if tuple(self.raw.shape) != tuple(self.values.shape):
                raise ValueError("raw must have the same shape as values")

    def to_frame(self):
        df = super().to_frame()
        if self.raw is not None:
            df["raw"] = self.raw.reshape(-1).float().numpy()
        return df


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------


def _prepare(model, prompts: PromptSet, metric: MetricSpec, direction: str):
    if not isinstance(prompts, PromptSet):
        raise TypeError("prompts must be a PromptSet (e.g. interp.prompts.ioi(model, 8) or "
                        "PromptSet.from_pairs(...)).")
    if direction not in ("denoising", "noising"):
        raise ValueError(f"direction must be 'denoising' or 'noising', got {direction!r}.")
    corrupted = prompts.require_corrupted()
    if corrupted.shape != prompts.clean_tokens.shape:
        raise ValueError(
            f"clean tokens {tuple(prompts.clean_tokens.shape)} and corrupted tokens "
            f"{tuple(corrupted.shape)} differ in shape; patching needs position-aligned pairs. "
            "Use a corruption of the same token length (e.g. swap names of one token each)."
        )
    prompts.check(model)
    device = model.cfg.device
    return prompts.clean_tokens.to(device), corrupted.to(device)


def _answer_columns(base: Restarter, metric: Metric, prompts: PromptSet) -> Tensor | None:
    """Token ids ``[batch, c]`` whose logits are all ``metric`` reads, when the model's
    unembedding can be applied to just those columns (else None: use the full logits)."""
    if metric.columns is None or metric.all_positions:
        return None
    ap = prompts.answer_pos.to(base.logits.device)
    cols = metric.columns(prompts).to(ap.device)
    return cols if base.columns_ok(ap, cols) else None


def _metric_values(metric: Metric, logits: Tensor, prompts: PromptSet, k: int, *,
                   columns: bool = False) -> Tensor:
    """[k, batch] metric values from logits of ``k`` stacked copies of the batch (with
    ``columns``, logits of the metric's columns only, see :func:`_answer_columns`)."""
    b = len(prompts)
    if columns:
        return metric.from_columns(logits).float().cpu().reshape(k, b)
    out = []
    for i in range(k):
        part = logits[i * b:(i + 1) * b]
        out.append(torch.as_tensor(metric(part, prompts)).reshape(b).float().cpu())
    return torch.stack(out)


def _pos_labels(model, prompts: PromptSet) -> list[str]:
    tok = getattr(model, "tokenizer", None)
    toks = prompts.clean_tokens[0]
    if tok is None:
        return [str(p) for p in range(len(toks))]
    return [f"{p}:{tok.decode([int(t)])}" for p, t in enumerate(toks)]


def _finish(values_pe: Tensor, dims, coords, meta, clean_pe, corr_pe, direction) -> PatchingResult:
    """values_pe: raw metric [*cells, batch]."""
    clean_m, corr_m = clean_pe.mean(), corr_pe.mean()
    meta = dict(meta)
    if abs(float(clean_m - corr_m)) < 1e-8:
        warnings.warn("clean and corrupted metrics are equal, so the normalised score is "
                      "undefined (values are NaN; raw metric values are in .raw). Use a "
                      "corruption that changes the answer.", stacklevel=3)
        norm_pe = torch.full_like(values_pe, float("nan"))
        meta["normalised"] = False
    else:
        norm_pe = normalise(values_pe, clean_m, corr_m, direction)
        meta["normalised"] = True
    meta.update({
        "clean": float(clean_m), "corrupted": float(corr_m),
        "clean_per_example": clean_pe.tolist(), "corrupted_per_example": corr_pe.tolist(),
        "direction": direction,
        "normalisation": ("(m - corrupted) / (clean - corrupted)" if direction == "denoising"
                          else "(m - clean) / (clean - corrupted)"),
    })
    return PatchingResult(values=norm_pe.mean(-1), dims=dims, coords=coords, meta=meta,
                          per_example=norm_pe, ci=bootstrap_ci(norm_pe), raw=values_pe.mean(-1),
                          raw_per_example=values_pe)


# ----------------------------------------------------------------------------------------------
# activation patching
# ----------------------------------------------------------------------------------------------


ROW_LOCAL = ("z", "q", "pattern", "attn_out", "mlp_out", "resid_mid")
"""Targets whose per-position patch at (layer, pos) changes only that row of the block's output
(k and v change every later query; resid_pre/resid_post are patched directly)."""


def _setter(target: str, per_position: bool):
    """``set(act, rows_slice, src, cell, lo)`` writes the source activation of one cell into one
    patch's rows of ``act``, which holds the query positions ``lo ..`` (a window)."""
    if target in RESID_TARGETS:
        if per_position:
            def f(act, sl, src, idx, lo):
                act[sl, idx[0] - lo] = src[:, idx[0]]
        else:
            def f(act, sl, src, idx, lo):
                act[sl] = src[:, lo:lo + act.shape[1]]
    elif target == "pattern":  # [batch, head, query, key]; keys 0 .. act.shape[-1]-1
        if per_position:  # idx = (pos, head)
            def f(act, sl, src, idx, lo):
                act[sl, idx[1], idx[0] - lo] = src[:, idx[1], idx[0], :act.shape[-1]]
        else:
            def f(act, sl, src, idx, lo):
                act[sl, idx[0]] = src[:, idx[0], lo:lo + act.shape[2], :act.shape[-1]]
    else:  # [batch, pos, head, d_head]
        if per_position:
            def f(act, sl, src, idx, lo):
                act[sl, idx[0] - lo, idx[1]] = src[:, idx[0], idx[1]]
        else:
            def f(act, sl, src, idx, lo):
                act[sl, :, idx[0]] = src[:, lo:lo + act.shape[1], idx[0]]
    return f


def _first_change(target: str, per_position: bool, src: Tensor, ref: Tensor, cell: tuple,
                  hi: int) -> int | None:
    """First position (below ``hi``) where patching ``cell`` changes the activation in any
    example, or None when the patch is a no-op (bit-identical source and base activations, or
    only positions after every answer). Positions before it are never recomputed."""
    if target == "pattern":
        if per_position:
            p, h = cell
            return None if p >= hi or torch.equal(src[:, h, p], ref[:, h, p]) else p
        diff = (src[:, cell[0], :hi] != ref[:, cell[0], :hi]).any(-1).any(0)
    elif target in RESID_TARGETS:
        if per_position:
            p = cell[0]
            return None if p >= hi or torch.equal(src[:, p], ref[:, p]) else p
        diff = (src[:, :hi] != ref[:, :hi]).any(-1).any(0)
    else:
        if per_position:
            p, h = cell
            return None if p >= hi or torch.equal(src[:, p, h], ref[:, p, h]) else p
        diff = (src[:, :hi, cell[0]] != ref[:, :hi, cell[0]]).any(-1).any(0)
    nz = torch.nonzero(diff)
    return int(nz[0, 0]) if len(nz) else None


@dataclass
class _Job:
    """One patch: result slot, layer, cell, first changed position ``lo``."""

    slot: int
    layer: int
    cell: tuple
    lo: int
    start: int = 0  # block where the batched replay of this patch begins
    resid: Tensor | None = None  # its residual at ``start``, positions lo .. hi-1


def _hook_name(target: str, layer: int) -> str:
    if target in RESID_TARGETS:
        return H.resid(target, layer) if target.startswith("resid") else H.component_out(target, layer)
    return H.head_act(target, layer)


def _chunks(jobs: list[_Job], budget: int, b: int, hi: int, n_layers: int) -> list[list[_Job]]:
    """Jobs grouped by first changed position (one window per forward) and cut to the budget
    of rows x positions; within a chunk, patches that start at later blocks join the batch
    there."""
    groups: dict[tuple[int, bool], list[_Job]] = {}
    for job in jobs:
        groups.setdefault((job.lo, job.start >= n_layers), []).append(job)
    out = []
    for (lo, _), group in sorted(groups.items()):
        group.sort(key=lambda j: (j.start, j.slot))
        # rows of the window, plus the keys/values of all hi positions each attention layer
        # holds for them (about a tenth of a row's activations per key)
        cap = max(1, budget // max(1, b * (hi - lo + hi // 10)))
        out += [group[i:i + cap] for i in range(0, len(group), cap)]
    return out


def _prepare_chunk(base: Restarter, chunk: list[_Job], target: str, per_position: bool,
                   windowed: bool, hi: int, setter, src_cache) -> None:
    """Each job's residual (positions lo .. hi-1) at the block where its replay starts: written
    directly for resid_pre / resid_post, else by running the patched block with a hook (only
    the patched row when the target is row-local)."""
    b = base.batch
    lo = chunk[0].lo
    if target in ("resid_pre", "resid_post"):
        for job in chunk:
            r = base.cache[H.resid(target, job.layer)][:, lo:hi].clone()
            setter(r, slice(0, b), src_cache[_hook_name(target, job.layer)], job.cell, lo)
            job.resid = r
        return
    by_layer: dict[int, list[_Job]] = {}
    for job in chunk:
        by_layer.setdefault(job.layer, []).append(job)
    row_local = per_position and windowed and target in ROW_LOCAL
    for layer, group in by_layer.items():
        w_hi = lo + 1 if row_local else hi
        src = src_cache[_hook_name(target, layer)]
        if target == "z" and not per_position:
            w_o = base.head_output_map(layer, base.cache[H.z(layer)])
            if w_o is not None:
                # one head's z moves the attention output by its share z_h @ W_O[h]: add that to
                # the base output instead of recomputing the layer's attention
                heads = [job.cell[0] for job in group]
                dz = (src - base.cache[H.z(layer)])[:, lo:hi, heads]  # [b, w, k, d_head]
                delta = torch.einsum("bwkd,kdm->kbwm", dz, w_o[0][heads])
                out = (base.attn_out[layer][:, lo:hi][None] + delta).reshape(-1, hi - lo,
                                                                            delta.shape[-1])
                h0 = base.cache[H.resid_pre(layer)][:, lo:hi].repeat(len(group), 1, 1)
                with base.attention_output(layer, out):
                    h1 = base.run_blocks(layer, h0, stop=layer + 1, lo=lo)
                for i, job in enumerate(group):
                    job.resid = h1[i * b:(i + 1) * b]
                continue

        def hook(act, hook, group=group, src=src):
            act = act.clone()
            w_lo = base.window[0]
            for i, job in enumerate(group):
                setter(act, slice(i * b, (i + 1) * b), src, job.cell, w_lo)
            return act

        h0 = base.cache[H.resid_pre(layer)][:, lo:w_hi].repeat(len(group), 1, 1)
        h1 = base.run_blocks(layer, h0, stop=layer + 1, lo=lo,
                             fwd_hooks=[(_hook_name(target, layer), hook)])
        for i, job in enumerate(group):
            mine = h1[i * b:(i + 1) * b]
            if row_local:
                r = base.cache[H.resid_post(layer)][:, lo:hi].clone()
                r[:, :1] = mine
                job.resid = r
            else:
                job.resid = mine


def sweep(
    base: Restarter, src_cache, *, target: str, per_position: bool, layers: Sequence[int],
    cells: list[tuple], metric: Metric, prompts: PromptSet, base_values: Tensor,
    budget_tokens: int | None = None, progress: bool = False, desc: str | None = None,
) -> Tensor:
    """The metric ``[len(layers), len(cells), batch]`` when each cell of ``target`` at each layer
    is replaced, one at a time, by ``src_cache[hook name]`` (same shape as the base run's
    activation) in the base run of ``base``. Shared by activation patching and knockout sweeps;
    see the module docstring of :mod:`interp._patching_engine` and docs/patching.md."""
    info = base.info
    b, n_pos = base.batch, base.n_pos
    m = metric
    ap = prompts.answer_pos.to(base.logits.device)
    # a patch that changes nothing keeps the base metric (no forward needed)
    out = base_values.float().cpu()[None, None, :].repeat(len(layers), len(cells), 1)
    windowed = base.can_window and not m.all_positions
    hi = int(ap.max()) + 1 if windowed else n_pos
    jobs: list[_Job] = []
    for li, layer in enumerate(layers):
        name = _hook_name(target, layer)
        src, ref = src_cache[name], base.cache[name]
        for ci, cell in enumerate(cells):
            lo = _first_change(target, per_position, src, ref, cell, hi)
            if lo is not None:
                jobs.append(_Job(slot=li * len(cells) + ci, layer=layer, cell=cell,
                                 lo=lo if windowed else 0,
                                 start=layer if target == "resid_pre" else layer + 1))
    setter = _setter(target, per_position)
    budget = budget_tokens if budget_tokens is not None else default_budget(info, b, n_pos)
    chunks = _chunks(jobs, budget, b, hi, info.n_layers)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=desc or f"patching {target}", unit="chunk")
    flat = out.view(-1, b)
    cols = _answer_columns(base, m, prompts)
    with torch.no_grad():
        for chunk in chunks:
            _prepare_chunk(base, chunk, target, per_position, windowed, hi, setter, src_cache)
            # _chunks sorts by start block, so stacking by start keeps the chunk's order
            by_start: dict[int, list[Tensor]] = {}
            for job in chunk:
                by_start.setdefault(job.start, []).append(job.resid)
            first = chunk[0].start
            resid = torch.cat(by_start.pop(first), dim=0)
            ins = {s: torch.cat(v, dim=0) for s, v in by_start.items()}
            k = len(chunk)
            rows = None if m.all_positions else ap.repeat(k)
            logits = base.resume(first, resid, rows=rows, lo=chunk[0].lo, inserts=ins,
                                 columns=None if cols is None else cols.repeat(k, 1))
            vals = _metric_values(m, logits, prompts, k, columns=cols is not None)
            for i, job in enumerate(chunk):
                flat[job.slot] = vals[i]
                job.resid = None
    return out


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
) -> PatchingResult:
    """Patch one activation at a time (every layer, position and/or head) and read the metric.

    ``metric``: "logit_diff" (at each example's own answer position), "prob", "logprob", "loss",
    "kl" (KL from the clean answer distribution) or a callable ``(answer_logits [batch, d_vocab],
    prompts) -> [batch]``. ``budget_tokens`` caps rows x positions per forward (default: about
    the activations one cached run holds). Returns a :class:`PatchingResult` (see module doc).
    """
    info = describe(model)
    if target not in RESID_TARGETS + HEAD_TARGETS:
        raise ValueError(f"unknown target {target!r}; use one of {RESID_TARGETS + HEAD_TARGETS}.")
    if target == "resid_mid" and not info.has_resid_mid:
        raise ValueError("this model has no resid_mid (parallel attention and MLP); patch "
                         "resid_pre, attn_out or mlp_out instead.")
    clean, corrupted = _prepare(model, prompts, metric, direction)
    layers = list(range(info.n_layers)) if layers is None else [int(x) for x in layers]
    for layer in layers:
        info.check_layer(layer)
    names = {_hook_name(target, layer) for layer in layers}
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
    base_pe = corr_pe if direction == "denoising" else clean_pe
    out = sweep(base, src_cache, target=target, per_position=per_position, layers=layers,
                cells=cells, metric=m, prompts=prompts, base_values=base_pe,
                budget_tokens=budget_tokens, progress=progress)
    if per_position and target not in RESID_TARGETS:
        out = out.reshape(len(layers), n_pos, n_head, b)
    elif not per_position and target in RESID_TARGETS:
        out = out[:, 0]
    head_prefix = "KV" if kv and info.is_gqa else "H"
    coords = {"layer": [f"L{x}" for x in layers], "pos": _pos_labels(model, prompts),
              "head": [f"{head_prefix}{h}" for h in range(n_head)]}
    coords = {d: coords[d] for d in dims}
    meta = {"method": "activation_patching", "target": target, "per_position": per_position,
            "metric": m.name, "layers": layers, "n_examples": b,
            "heads": ("key/value heads (GQA: each is shared by "
                      f"{info.group_size} query heads)" if kv and info.is_gqa else "query heads"),
            "title": f"Activation patching ({direction}) of {target}"}
    return _finish(out, dims, coords, meta, clean_pe, corr_pe, direction)


# path patching lives in a private module (file size); it imports the helpers above
from interp._patching_path import path_patching

__all__ = ["PatchingResult", "activation_patching", "path_patching"]

"""The sweep scheduler: many single-cell patches, grouped into windows and chunks, replayed
through :class:`interp._engine.restart.Restarter`.

Shared by activation patching and knockout sweeps. A patch at (layer, cell) is replaced by the
source activation; positions before the first one it changes are never recomputed (when
attention is causal, ``Restarter.can_window``); patches that start at later blocks join the batch there; the chunk size follows the one
memory-budget policy of :func:`interp._engine.restart.default_budget`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from interp import _bridge as B
from interp import hooks as H
from interp._engine.restart import Restarter, default_budget
from interp.metrics import Metric
from interp.prompts import PromptSet

RESID_TARGETS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
HEAD_TARGETS = ("z", "q", "k", "v", "pattern")


def answer_columns(base: Restarter, metric: Metric, prompts: PromptSet) -> Tensor | None:
    """Token ids ``[batch, c]`` whose logits are all ``metric`` reads, when the model's
    unembedding can be applied to just those columns (else None: use the full logits)."""
    if metric.columns is None or metric.all_positions:
        return None
    ap = prompts.answer_pos.to(base.logits.device)
    cols = metric.columns(prompts).to(ap.device)
    return cols if base.columns_ok(ap, cols) else None


def metric_values(metric: Metric, logits: Tensor, prompts: PromptSet, k: int, *,
                   columns: bool = False) -> Tensor:
    """[k, batch] metric values from logits of ``k`` stacked copies of the batch (with
    ``columns``, logits of the metric's columns only, see :func:`answer_columns`)."""
    b = len(prompts)
    if columns:
        return metric.columns_values(logits, b).float().cpu().reshape(k, b)
    out = []
    for i in range(k):
        part = logits[i * b:(i + 1) * b]
        out.append(metric(part, prompts).reshape(b).float().cpu())
    return torch.stack(out)


ROW_LOCAL = ("z", "q", "pattern", "attn_out", "mlp_out", "resid_mid")
"""Targets whose per-position patch at (layer, pos) changes only that row of the block's output
(k and v change every later query; resid_pre/resid_post are patched directly)."""


def make_setter(target: str, per_position: bool):
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


def first_change(target: str, per_position: bool, src: Tensor, ref: Tensor, cell: tuple,
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
class Job:
    """One patch: result slot, layer, cell, first changed position ``lo``."""

    slot: int
    layer: int
    cell: tuple
    lo: int
    start: int = 0  # block where the batched replay of this patch begins
    resid: Tensor | None = None  # its residual at ``start``, positions lo .. hi-1
    noop: bool = False  # the patched block's output is bit-identical to the unpatched one


def hook_name(target: str, layer: int) -> str:
    if target in RESID_TARGETS:
        return H.resid(target, layer) if target.startswith("resid") else H.component_out(target, layer)
    return H.head_act(target, layer)


def make_chunks(jobs: list[Job], budget: int, b: int, hi: int, n_layers: int) -> list[list[Job]]:
    """Jobs grouped by first changed position (one window per forward) and cut to the budget
    of rows x positions; within a chunk, patches that start at later blocks join the batch
    there."""
    groups: dict[tuple[int, bool], list[Job]] = {}
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


def prepare_chunk(base: Restarter, chunk: list[Job], target: str, per_position: bool,
                   windowed: bool, hi: int, setter, src_cache) -> None:
    """Each job's residual (positions lo .. hi-1) at the block where its replay starts: written
    directly for resid_pre / resid_post, else by running the patched block with a hook (only
    the patched row when the target is row-local)."""
    b = base.batch
    lo = chunk[0].lo
    if target in ("resid_pre", "resid_post"):
        for job in chunk:
            r = base.cache[H.resid(target, job.layer)][:, lo:hi].clone()
            setter(r, slice(0, b), src_cache[hook_name(target, job.layer)], job.cell, lo)
            job.resid = r
        return
    by_layer: dict[int, list[Job]] = {}
    for job in chunk:
        by_layer.setdefault(job.layer, []).append(job)
    row_local = per_position and windowed and target in ROW_LOCAL
    for layer, group in by_layer.items():
        w_hi = lo + 1 if row_local else hi
        src = src_cache[hook_name(target, layer)]
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
                    job.noop = not bool(delta[i].any())  # a head with zero output weights
                continue

        def hook(act, hook, group=group, src=src):
            act = act.clone()
            w_lo = base.window[0]
            for i, job in enumerate(group):
                setter(act, slice(i * b, (i + 1) * b), src, job.cell, w_lo)
            return act

        # one more, unpatched copy: a patch whose block output is bit-identical to it changes
        # nothing downstream, so its metric is the base value exactly
        n = len(group)
        h0 = base.cache[H.resid_pre(layer)][:, lo:w_hi].repeat(n + 1, 1, 1)
        h1 = base.run_blocks(layer, h0, stop=layer + 1, lo=lo,
                             fwd_hooks=[(hook_name(target, layer), hook)])
        ref = h1[n * b:]
        for i, job in enumerate(group):
            mine = h1[i * b:(i + 1) * b]
            job.noop = torch.equal(mine, ref)
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
    source_values: Tensor | None = None,
) -> Tensor:
    """The metric ``[len(layers), len(cells), batch]`` when each cell of ``target`` at each layer
    is replaced, one at a time, by ``src_cache[hook name]`` (same shape as the base run's
    activation) in the base run of ``base``. Shared by activation patching and knockout sweeps;
    see the module docstring of :mod:`interp._engine.restart` and docs/patching.md.

    ``source_values`` (the metric of the source run, ``[batch]``): a ``resid_pre`` or
    ``resid_post`` patch of every position replaces the whole state, so its metric is the source
    run's, exactly; no forward is needed."""
    if target not in ("resid_pre", "resid_post"):  # those two are written directly, no hook
        B.require_hook_effect(base.model, target, method=desc or "activation patching")
    info = base.info
    b, n_pos = base.batch, base.n_pos
    m = metric
    ap = prompts.answer_pos.to(base.logits.device)
    # a patch that changes nothing keeps the base metric (no forward needed)
    out = base_values.float().cpu()[None, None, :].repeat(len(layers), len(cells), 1)
    windowed = base.can_window and not m.all_positions
    hi = int(ap.max()) + 1 if windowed else n_pos
    jobs: list[Job] = []
    whole = source_values is not None and target in ("resid_pre", "resid_post") \
        and not per_position
    for li, layer in enumerate(layers):
        name = hook_name(target, layer)
        src, ref = src_cache[name], base.cache[name]
        for ci, cell in enumerate(cells):
            lo = first_change(target, per_position, src, ref, cell, hi)
            if lo is not None and whole:
                out[li, ci] = source_values.float().cpu()
            elif lo is not None:
                jobs.append(Job(slot=li * len(cells) + ci, layer=layer, cell=cell,
                                 lo=lo if windowed else 0,
                                 start=layer if target == "resid_pre" else layer + 1))
    setter = make_setter(target, per_position)
    budget = budget_tokens if budget_tokens is not None else default_budget(info, b, n_pos)
    chunks = make_chunks(jobs, budget, b, hi, info.n_layers)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=desc or f"patching {target}", unit="chunk")
    flat = out.view(-1, b)
    cols = answer_columns(base, m, prompts)
    with torch.no_grad():
        for chunk in chunks:
            prepare_chunk(base, chunk, target, per_position, windowed, hi, setter, src_cache)
            chunk = [job for job in chunk if not job.noop]  # they keep the base value
            if not chunk:
                continue
            # chunks sorts by start block, so stacking by start keeps the chunk's order
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
            vals = metric_values(m, logits, prompts, k, columns=cols is not None)
            for i, job in enumerate(chunk):
                flat[job.slot] = vals[i]
                job.resid = None
    return out


def window_groups(lo: Tensor, hi: Tensor, *, max_groups: int = 3,
                  min_saving: float = 0.15) -> list[Tensor] | None:
    """Examples split into up to ``max_groups`` groups (contiguous in ``hi``) when their windows
    differ enough. A replay computes positions ``min(lo) .. max(hi)-1`` of every example (``lo``:
    the first position a patch can change, ``hi``: one past the last position the metric reads),
    so on prompts of mixed layouts (IOI of several templates) many rows are another example's
    padding or prefix. Each group is then replayed on its own window (and its tokens cut after
    its last answer, see :func:`trimmed`). The split minimises the rows, searched exhaustively
    (a batch is small); None when it saves less than ``min_saving`` of them, or a group would
    hold one example."""
    b = int(lo.shape[0])
    if b < 4:
        return None
    lo, hi = lo.cpu().long(), hi.cpu().long()
    order = torch.argsort(hi * (int(hi.max()) + 1) + lo, stable=True)
    hs, ls = hi[order].tolist(), lo[order].tolist()

    def cost(i: int, j: int) -> int:  # rows of examples order[i:j] on one window
        return (j - i) * (max(hs[i:j]) - min(ls[i:j]))

    best: dict[tuple[int, int], tuple[int, list]] = {(0, 0): (0, [])}
    for g in range(1, max_groups + 1):
        for j in range(2, b + 1):
            cands = [(best[(g - 1, i)][0] + cost(i, j), best[(g - 1, i)][1] + [(i, j)])
                     for i in range(0, j - 1) if (g - 1, i) in best and j - i >= 2]
            if cands:
                best[(g, j)] = min(cands, key=lambda c: c[0])
    c, cuts = min((best[(g, b)] for g in range(1, max_groups + 1) if (g, b) in best),
                  key=lambda c: c[0])
    if len(cuts) < 2 or c > (1.0 - min_saving) * cost(0, b):
        return None
    return [order[i:j].sort().values for i, j in cuts]


def group_plan(model, prompts: PromptSet, metric, lo: Tensor | None = None
               ) -> list[tuple[Tensor, PromptSet]] | None:
    """``[(example indices, their prompts cut after the group's last answer)]`` when a sweep over
    ``prompts`` should run in groups of examples, each on its own window (see
    :func:`window_groups`; ``lo``: each example's first position a patch can change, default 0);
    None when one window serves, or windows do not apply (bidirectional attention, a metric
    that reads every position or a callable metric)."""
    from interp.models import describe

    if not describe(model).causal or not isinstance(metric, str) or metric == "loss":
        return None
    hi = prompts.answer_pos.cpu() + 1
    groups = window_groups(torch.zeros_like(hi) if lo is None else lo, hi)
    if groups is None:
        return None
    return [(idx, trimmed(prompts.subset(idx), int(hi[idx].max()))) for idx in groups]


def trimmed(prompts: PromptSet, n: int) -> PromptSet:
    """``prompts`` cut to their first ``n`` positions (every answer position is below ``n``;
    with causal attention the later tokens cannot change anything the metric reads). Named
    positions are dropped."""
    from dataclasses import replace

    return replace(prompts, clean_tokens=prompts.clean_tokens[:, :n],
                   corrupted_tokens=None if prompts.corrupted_tokens is None
                   else prompts.corrupted_tokens[:, :n], positions={})

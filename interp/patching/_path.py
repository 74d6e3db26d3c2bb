"""Path patching (Wang et al. 2022), many senders per forward.

For every sender head s (orig = clean prompt, new = corrupted prompt):

1. Run orig with s's output (``hook_z``) taken from the new run and every other head's output
   frozen to its orig value; MLPs are recomputed. Record the receivers' inputs: the receiver
   heads' ``q``/``k``/``v`` (the key/value head for k/v in GQA models), or, for
   ``receivers="logits"``, the final residual stream at the answer rows.
2. Run orig with only those receiver inputs patched and read the metric (for logits the metric
   is read from step 1's final residual directly).

The score is noising-style: ``(m - m_clean) / (m_clean - m_corrupted)`` (0 = no effect, -1 = the
path carries the whole corruption). Senders at or after the last receiver layer cannot reach a
receiver, so their raw value is the clean metric exactly. Step 1 resumes at the sender's layer
from the cached clean residual and stops after the last receiver layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from interp import _bridge as B
from interp import components as C
from interp import hooks as H
from interp._engine.restart import Restarter, chunk_size
from interp._engine.schedule import answer_columns, first_change, metric_values
from interp.distributed import dispatch
from interp.metrics import MetricSpec, logits_at, resolve_metric
from interp.models import as_model, describe
from interp.patching._result import PatchingResult, finish, prepare_pairs


def parse_head(name, info) -> tuple[int, int]:
    """A receiver query head (``"L3H2"``, ``(3, 2)``, ``Head(3, 2)``), range-checked."""
    c = C.parse(name, **C.sizes(info))
    if not isinstance(c, C.Head):
        raise ValueError(f"receiver {C.label(c)} is not a query head name; write heads as "
                         "'L3H2' (layer 3, head 2), or pass receivers='logits'.")
    return c.layer, c.head


def path_patching(
    model,
    prompts,
    *,
    receivers: Sequence[str | tuple[int, int]] | str = "logits",
    receiver_input: Literal["q", "k", "v"] = "q",
    metric: MetricSpec = "logit_diff",
    progress: bool = False,
    budget_tokens: int | None = None,
    sender_layers: Sequence[int] | None = None,
    executor=None,
) -> PatchingResult:
    """Effect of each sender head's path into ``receivers`` (heads' q/k/v, or the logits).

    Returns a :class:`PatchingResult` with dims (layer, head) over sender heads (the layers in
    ``sender_layers``, default all). ``executor``: "local", "ray" or an ``interp.distributed``
    executor: shards over sender layers."""
    if executor is not None:  # the same shards in-process or on Ray workers
        return dispatch("path_patching", locals())
    model = as_model(model)
    info = describe(model)
    if receiver_input not in ("q", "k", "v"):
        raise ValueError(f"receiver_input must be 'q', 'k' or 'v', got {receiver_input!r}.")
    clean, corrupted = prepare_pairs(model, prompts, metric, "noising")
    B.require_hooks_effect(model, ("z", receiver_input), method="path patching")
    to_logits = isinstance(receivers, str) and receivers.strip().lower() == "logits"
    if not to_logits:  # "L3H2", "L3H2,L2H0", (3, 2), Head(3, 2) or a list of those
        receivers = C.parse_many(receivers)
    rec: dict[int, list[int]] = {}
    if not to_logits:
        if len(receivers) == 0:
            raise ValueError("no receivers given; pass head names like ['L3H2'] or 'logits'.")
        for name in receivers:
            layer, head = parse_head(name, info)
            if receiver_input in ("k", "v"):
                head = info.kv_head(head)
            rec.setdefault(layer, [])
            if head not in rec[layer]:
                rec[layer].append(head)
    last = info.n_layers - 1 if to_logits else max(rec)
    names = [H.resid_pre(layer) for layer in range(info.n_layers)]
    names += [H.z(layer) for layer in range(info.n_layers)]
    names += [H.head_act(receiver_input, layer) for layer in rec]
    orig = Restarter(model, clean, names=names)
    with torch.no_grad():
        new_logits, new_cache = model.run_with_cache(
            corrupted, names_filter=lambda n: n.endswith("attn.hook_z"))
    ap = prompts.answer_pos.to(orig.logits.device)
    m = resolve_metric(metric, clean_answer_logits=logits_at(orig.logits, ap))
    clean_pe = m.from_full(orig.logits, prompts).float().cpu()
    corr_pe = m.from_full(new_logits, prompts).float().cpu()
    if m.all_positions:
        raise ValueError("path patching reads the metric at the answer position; use "
                         "logit_diff, prob, logprob, kl or a callable on answer logits.")
    b, n_pos = clean.shape
    out = clean_pe[None, None, :].repeat(info.n_layers, info.n_heads, 1)
    chunk = chunk_size(info, b, n_pos, budget_tokens=budget_tokens)
    layers = list(range(info.n_layers)) if sender_layers is None else [int(x) for x in sender_layers]
    for layer in layers:
        info.check_layer(layer)
    sender_layers = [x for x in layers if to_logits or x < last]
    work = [(ls, list(range(i, min(i + chunk, info.n_heads))))
            for ls in sender_layers for i in range(0, info.n_heads, chunk)]
    if progress:
        from tqdm.auto import tqdm

        work = tqdm(work, desc="path patching")
    rec_name = {layer: H.head_act(receiver_input, layer) for layer in rec}
    windowed = orig.can_window
    hi = int(ap.max()) + 1 if windowed else n_pos
    cols = answer_columns(orig, m, prompts) if to_logits else None
    with torch.no_grad():
        for ls, heads in work:
            k = len(heads)
            src = new_cache[H.z(ls)]
            # positions before the first one where a sender's output differs are clean in every
            # run below (causal attention), so they reuse the clean run's keys and values
            lo = 0
            if windowed:
                firsts = [first_change("z", False, src, orig.cache[H.z(ls)], (h,), hi)
                          for h in heads]
                firsts = [x for x in firsts if x is not None]
                if not firsts:
                    continue  # the senders' outputs are identical: no path can change anything
                lo = min(firsts)
            recorded: dict[int, torch.Tensor] = {}

            def send(act, hook, heads=heads, src=src):
                act = act.clone()
                w_lo, w_hi = orig.window
                for i, h in enumerate(heads):
                    act[i * b:(i + 1) * b, :, h] = src[:, w_lo:w_hi, h]
                return act

            def freeze(act, hook, k=k):
                layer = H.layer_of(hook.name)
                w_lo, w_hi = orig.window
                return orig.cache[H.z(layer)][:, w_lo:w_hi].repeat(k, 1, 1, 1)

            def record(act, hook, recorded=recorded):
                recorded[H.layer_of(hook.name)] = act.clone()
                return act

            hooks = [(H.z(ls), send)] + [(H.z(layer), freeze) for layer in range(ls + 1, last + 1)]
            hooks += [(rec_name[layer], record) for layer in rec if layer > ls]
            resid = orig.cache[H.resid_pre(ls)][:, lo:hi].repeat(k, 1, 1)
            if to_logits:
                logits = orig.resume(ls, resid, rows=ap.repeat(k), fwd_hooks=hooks, lo=lo,
                                     columns=None if cols is None else cols.repeat(k, 1))
            else:
                orig.run_blocks(ls, resid, stop=last + 1, fwd_hooks=hooks, lo=lo)

                def patch(act, hook, recorded=recorded, lo=lo):
                    layer = H.layer_of(hook.name)
                    if layer not in recorded:
                        return act
                    act = act.clone()
                    w_lo, w_hi = orig.window  # the last block may run in two row windows
                    for h in rec[layer]:
                        act[:, :, h] = recorded[layer][:, w_lo - lo:w_hi - lo, h]
                    return act

                first = min(layer for layer in rec if layer > ls)
                resid = orig.cache[H.resid_pre(first)][:, lo:hi].repeat(k, 1, 1)
                logits = orig.resume(first, resid, rows=ap.repeat(k), lo=lo,
                                     fwd_hooks=[(rec_name[layer], patch) for layer in rec])
            out[ls, heads] = metric_values(m, logits, prompts, k, columns=cols is not None)
    kv = receiver_input in ("k", "v") and info.is_gqa
    recv = "logits" if to_logits else [C.label(C.KVHead(layer, h) if kv else C.Head(layer, h))
                                       for layer in sorted(rec) for h in rec[layer]]
    meta = {"method": "path_patching", "target": "z (sender heads)", "receivers": recv,
            "receiver_input": None if to_logits else receiver_input, "metric": m.name,
            "orig": "clean", "new": "corrupted", "n_examples": b,
            "note": ("k/v receivers are key/value heads (GQA)" if receiver_input in ("k", "v")
                     and info.is_gqa and not to_logits else ""),
            "title": f"Path patching: sender heads -> {'logits' if to_logits else receiver_input}"}
    coords = {"layer": [C.layer_label(x) for x in layers], "head": C.head_axis_labels(info.n_heads)}
    return finish(out[layers], ("layer", "head"), coords, meta, clean_pe, corr_pe, "noising")

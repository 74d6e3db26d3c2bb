"""Direct versus total effect of components: the Hydra effect (McGrath et al. 2023) and
self-repair (Rushing & Nanda 2024).

Target: each prompt's clean top-1 token ``t*`` at its answer position. ``c~`` is a resample
ablation of component ``c`` (its activation on another prompt of the distribution).

* Direct effect ``DE = W_U[:, t*] . N(c(x) - c~)``, where ``N`` is the final norm's linear part
  with its scale frozen from the clean run (LayerNorm's centring, 1/scale, the weight). It is
  read from the component's own output hook (``attn_out`` for a head or attention layer,
  ``mlp_out`` for an MLP), so it is exact for every architecture, post-norms included.
* Total effect ``TE = logit_t*(x) - logit_t*(x | do(c = c~))`` with the final norm recomputed
  (``freeze_final_scale=False``, the default) or frozen. Logits are taken before any final
  softcap, so DE and TE live on the same scale.
* Compensation ``DE - TE``; ``downstream[c, k, (attn, mlp)]`` is each later layer's change in
  direct effect. With the scale frozen, ``DE - TE`` equals the sum of ``downstream`` exactly
  (the final residual stream is the sum of the layer outputs); with it recomputed, the gap is the
  final-norm share of self-repair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from torch import Tensor

from interp import _unembed as U
from interp import components as C
from interp import hooks as H
from interp.ablation._components import (
    Component,
    Replayer,
    parse_components,
    scoped_hooks,
    sources,
    sweep_layer_hooks,
)
from interp.metrics import bootstrap_ci
from interp.models import as_model, describe
from interp.prompts import PromptSet
from interp.results import Result

EFFECTS = ["direct", "total", "compensation"]


@dataclass(kw_only=True)
class HydraResult(Result):
    """``values[component, effect]`` with effect = direct, total, compensation (mean over
    prompts); ``per_example`` and ``ci`` alongside. ``downstream[component, layer, 2]``: mean
    change in the direct effect of each later attention layer (``[..., 0]``) and MLP
    (``[..., 1]``) when the component is ablated."""

    downstream: Tensor
    target_ids: list
    value_name = "effect"

    def plot(self, *, title: str | None = None) -> go.Figure:
        """Direct vs total effect per component; points below the diagonal are compensated."""
        de, te = self.values[:, 0].tolist(), self.values[:, 1].tolist()
        names = self.labels("component")
        lo, hi = min(de + te + [0.0]), max(de + te + [0.0])
        fig = go.Figure([
            go.Scatter(x=de, y=te, mode="markers", text=names,
                       hovertemplate="%{text}<br>direct %{x:.3f}<br>total %{y:.3f}<extra></extra>",
                       name="components"),
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line_dash="dash", name="total = direct"),
        ])
        fig.update_layout(title=title or "Direct vs total effect (resample ablation)",
                          xaxis_title="direct effect (logit of clean top-1)", yaxis_title="total effect")
        return fig


def _own_hook(c: Component) -> tuple[str, int]:
    return ("attn", c.layer) if c.kind in ("head", "attn") else ("mlp", c.layer)


def direct_vs_total(
    model,
    prompts: PromptSet,
    components: Sequence[str] | None = None,
    *,
    reference: PromptSet | None = None,
    freeze_final_scale: bool = False,
    max_batch: int = 512,
    seed: int = 0,
    n_boot: int = 1000,
) -> HydraResult:
    """Direct effect, total effect and compensation of each component (default: every head and
    every MLP) under a resample ablation (``reference`` prompts, else the corrupted prompts,
    else a seeded shuffle of the prompts)."""
    model = as_model(model)
    prompts.check(model)
    U.require_linear_head(model, "direct_vs_total (its direct effect)")
    info = describe(model)
    if components is None:
        components = C.head_labels(info.n_layers, info.n_heads) + C.mlp_labels(info.n_layers)
    comps = parse_components(model, components)
    src, rows, _ = sources(model, comps, "resample", prompts, reference, None, seed)
    b, L = len(prompts), info.n_layers
    ap = prompts.answer_pos
    outs = {("attn", k): H.attn_out(k) for k in range(L)} | {("mlp", k): H.mlp_out(k) for k in range(L)}
    rep = Replayer(model, prompts.clean_tokens, extra=set(outs.values()) | U.scale_hooks(model))
    device = rep.logits.device
    bi = torch.arange(b, device=device)
    ap = ap.to(device)
    target = rep.logits[bi, ap].argmax(-1)
    scale = U.final_scale(model, rep.cache, bi, ap)  # [b, 1]

    def lin(x: Tensor, n: int) -> Tensor:  # frozen final norm without its bias, [n*b, d]
        return U.frozen_norm_linear(model, x, scale.repeat(n, 1))

    def logit(resid: Tensor, n: int) -> Tensor:  # pre-softcap logit of t*, [n*b]
        cols = target.repeat(n)[:, None]
        if not freeze_final_scale:
            return U.decode_columns(model, resid, cols, cap=False)[:, 0]
        u_t = U.unembed_directions(model, target.repeat(n))
        return (lin(resid, n) * u_t).sum(-1) + U.logit_bias(model, u_t, target.repeat(n))

    u = U.unembed_directions(model, target)  # [b, d]
    clean_out = {key: rep.cache[name][bi, ap] for key, name in outs.items()}
    with torch.no_grad():
        clean_logit = logit(_final_resid(rep, ap), 1)
    per = torch.zeros(len(comps), 3, b, device="cpu")
    down = torch.zeros(len(comps), L, 2, device="cpu")
    per_call = max(1, max_batch // b)
    index = {c: i for i, c in enumerate(comps)}
    with torch.no_grad():
        for layer in range(L):
            layer_comps = [c for c in comps if c.layer == layer]
            for start in range(0, len(layer_comps), per_call):
                chunk = layer_comps[start:start + per_call]
                n = len(chunk)
                rec: dict[tuple[str, int], Tensor] = {}

                def recorder(key, rec=rec, n=n):
                    def hook(act, hook):
                        rows = torch.arange(n * b, device=act.device)
                        rec[key] = act[rows, ap.repeat(n).to(act.device)].detach()
                        return act

                    return hook

                hooks = sweep_layer_hooks(chunk, b, src, rows)
                hooks += [(name, recorder(key)) for key, name in outs.items() if key[1] >= layer]
                with scoped_hooks(model, hooks):
                    final = rep.run(layer, n)
                final = final[torch.arange(n * b, device=device), ap.repeat(n)]
                te = (clean_logit.repeat(n) - logit(final, n)).view(n, b)
                dde = {key: (lin(rec[key] - clean_out[key].repeat(n, 1), n) * u.repeat(n, 1)).sum(-1).view(n, b)
                       for key in rec}
                for j, c in enumerate(chunk):
                    own = _own_hook(c)
                    de = -dde[own][j]
                    i = index[c]
                    per[i, 0], per[i, 1], per[i, 2] = de.cpu(), te[j].cpu(), (de - te[j]).cpu()
                    for (kind, k), v in dde.items():
                        after = k > c.layer or (kind == "mlp" and c.kind != "mlp" and k == c.layer)
                        if after:
                            down[i, k, 0 if kind == "attn" else 1] = v[j].mean().cpu()
    tok = getattr(model, "tokenizer", None)
    targets = [tok.decode([int(t)]) if tok is not None else int(t) for t in target]
    return HydraResult(
        values=per.mean(-1), dims=("component", "effect"),
        coords={"component": [c.label for c in comps], "effect": list(EFFECTS)},
        per_example=per, ci=bootstrap_ci(per, n_boot=n_boot, seed=seed), downstream=down,
        target_ids=target.cpu().tolist(),
        meta={"method": "direct_vs_total", "ablation": "resample", "freeze_final_scale": freeze_final_scale,
              "targets": targets, "clean_logit": float(clean_logit.mean()),
              "note": "logit of the clean top-1 token before any final softcap; DE with the "
                      "final-norm scale frozen from the clean run"},
    )


def _final_resid(rep: Replayer, ap: Tensor) -> Tensor:
    """The clean final residual stream at the answer positions (a replay of the last block)."""
    final = rep.run(rep.n_layers - 1, 1)
    return final[torch.arange(rep.b, device=final.device), ap.to(final.device)]

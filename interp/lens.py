"""Logit lens (nostalgebraist 2020) and direct logit attribution.

Logit lens: decode the residual stream before every layer (``resid_pre[l]``) and after the last
(``resid_post[L-1]``) with the model's own final norm (statistics recomputed on each h_l) and
unembedding, plus the final logit softcap where the architecture has one (Gemma 2). The last row
therefore equals the model's logits (tested on every test family).

Direct logit attribution (DLA): with the final norm's scale frozen from the clean run, the final
residual stream is a sum of component outputs (embeddings, each head's ``z_h @ W_O[h]``, the
attention output bias, each MLP), and the logit difference is linear in it. Each component's
share is ``norm_lin(c) . (W_U[:, answer] - W_U[:, wrong])``; the remainder (the final norm's bias
and the unembedding bias) is reported separately, so components + remainder = the model's logit
difference before any softcap (tested to 1e-3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from interp import _unembed as U
from interp import hooks as H
from interp.models import as_model, describe
from interp.prompts import PromptSet
from interp.results import Result


def _decode(model, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """Final norm (recomputed statistics) + unembedding + softcap, as the model's own head."""
    return U.decode(model, resid)


@dataclass(kw_only=True)
class LogitLensResult(Result):
    """values = probability of the target token, [layer, example, pos] (rows L0.., final)."""

    top_ids: Tensor  # [layer, example, pos, k]
    top_probs: Tensor  # [layer, example, pos, k]
    target_rank: Tensor  # [layer, example, pos] 1-based
    kl: Tensor  # [layer, example, pos]  KL(p_final || p_layer)
    entropy: Tensor  # [layer, example, pos]
    top_tokens: list | None = None  # [layer][example][pos] token string of the top-1
    value_name = "target_prob"

    def first_top1_layer(self, position: int | None = None, example: int = 0) -> int | None:
        """Index of the first row (0..n_layers; n_layers = final) where the target is top-1."""
        pos = self.meta["answer_pos"][example] if position is None else position
        ranks = self.target_rank[:, example, pos]
        hit = (ranks == 1).nonzero()
        return int(hit[0]) if len(hit) else None

    def plot(self, *, example: int = 0, title: str | None = None, max_pos: int = 40, **_) -> go.Figure:
        """Layers x positions grid: the top token's text in each cell, coloured by its probability."""
        n = min(int(self.meta["answer_pos"][example]) + 1, max_pos)
        start = max(0, int(self.meta["answer_pos"][example]) + 1 - max_pos)
        probs = self.top_probs[:, example, start:n, 0]
        text = [[self.top_tokens[layer][example][p] for p in range(start, n)]
                for layer in range(len(self.coords["layer"]))] if self.top_tokens else None
        xlabels = [f"{p}:{self.coords['pos'][p] if isinstance(self.coords['pos'][p], str) else p}"
                   for p in range(start, n)]
        fig = go.Figure(go.Heatmap(
            z=probs.tolist(), x=xlabels, y=self.labels("layer"), text=text,
            texttemplate="%{text}" if text else None, colorscale="Blues", zmin=0, zmax=1,
            hovertemplate="%{y} pos %{x}<br>top: %{text} (p=%{z:.3f})<extra></extra>",
        ))
        fig.update_layout(title=title or "Logit lens: top token per layer and position",
                          yaxis_autorange="reversed", xaxis_title="position", yaxis_title="layer",
                          height=120 + 40 * len(self.coords["layer"]))
        return fig


def logit_lens(
    model,
    prompts: PromptSet | Tensor,
    *,
    k: int = 5,
    target: Literal["answer", "final_top1"] | Tensor = "answer",
) -> LogitLensResult:
    """Logit lens over ``resid_pre`` of every layer plus the final ``resid_post``, every position.

    ``target``: "answer" (the PromptSet's answer at every position; for raw tokens the next
    token), "final_top1" (the model's own top-1 at each position), or a [batch] tensor of ids.
    """
    model = as_model(model)
    info = describe(model)
    U.check_head(model)
    if isinstance(prompts, PromptSet):
        prompts.check(model)
        tokens, answer_pos = prompts.clean_tokens, prompts.answer_pos
    else:
        tokens = torch.as_tensor(prompts)
        if tokens.ndim == 1:
            tokens = tokens[None]
        answer_pos = torch.full((tokens.shape[0],), tokens.shape[1] - 1)
    b, p = tokens.shape
    names = [H.resid_pre(layer) for layer in range(info.n_layers)] + [U.final_resid_hook(model)]
    tokens = tokens.to(model.cfg.device)
    with torch.no_grad():
        final_logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        final_logp = final_logits.float().log_softmax(-1)
        if isinstance(target, Tensor):
            tgt = target.to(tokens.device)[:, None].expand(b, p)
        elif target == "final_top1":
            tgt = final_logits.argmax(-1)
        elif target == "answer" and isinstance(prompts, PromptSet):
            tgt = prompts.answer_ids.to(tokens.device)[:, None].expand(b, p)
        else:  # raw tokens: the next token, the last position its own top-1
            tgt = torch.cat([tokens[:, 1:], final_logits[:, -1:].argmax(-1)], dim=1)
        rows = {key: [] for key in ("top_ids", "top_probs", "rank", "kl", "ent", "tprob")}
        v = final_logits.shape[-1]
        clip = 1.0 / (10 * v)
        p_final = final_logp.exp().clamp(min=clip)
        for name in names:
            logits = _decode(model, cache[name]).float()
            logp = logits.log_softmax(-1)
            prob = logp.exp()
            top = prob.topk(k, dim=-1)
            t_logit = logits.gather(-1, tgt[..., None])
            rows["top_ids"].append(top.indices)
            rows["top_probs"].append(top.values)
            rows["rank"].append((logits >= t_logit).sum(-1))
            rows["kl"].append((p_final * (p_final.log() - prob.clamp(min=clip).log())).sum(-1))
            rows["ent"].append(-(prob * logp.clamp(min=-1e9)).nan_to_num().sum(-1))
            rows["tprob"].append(prob.gather(-1, tgt[..., None])[..., 0])
    stack = {key: torch.stack(val).cpu() for key, val in rows.items()}
    tok = getattr(model, "tokenizer", None)
    pos_labels: list = list(range(p))
    top_tokens = None
    if tok is not None:
        pos_labels = [tok.decode([int(t)]) for t in tokens[0]]
        top_tokens = [[[tok.decode([int(t)]) for t in stack["top_ids"][layer, e, :, 0]]
                       for e in range(b)] for layer in range(len(names))]
    return LogitLensResult(
        values=stack["tprob"], dims=("layer", "example", "pos"),
        coords={"layer": [f"L{i}" for i in range(info.n_layers)] + ["final"],
                "example": list(range(b)), "pos": pos_labels},
        meta={"method": "logit_lens", "answer_pos": answer_pos.tolist(), "k": k,
              "target": target if isinstance(target, str) else "ids"},
        top_ids=stack["top_ids"], top_probs=stack["top_probs"], target_rank=stack["rank"],
        kl=stack["kl"], entropy=stack["ent"], top_tokens=top_tokens,
    )


# --------------------------------------------------------------------------------------------
# Direct logit attribution
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class DLAResult(Result):
    """values: mean direct contribution to the logit difference; per_example alongside.

    ``by="heads"``: values [layer, head] and ``others`` holds embed / attn-bias / MLP / remainder
    contributions ([component] vector with ``other_labels``)."""

    others: Tensor | None = None  # [n_other]
    other_labels: list | None = None
    value_name = "dla"

    def total(self) -> float:
        """Sum of all components and the remainder (= the model's logit difference)."""
        extra = float(self.others.sum()) if self.others is not None else 0.0
        return float(self.values.sum()) + extra

    def components_frame(self):
        import pandas as pd

        rows = [{"component": f"L{layer}H{h}", "dla": float(self.values[layer, h])}
                for layer in range(self.values.shape[0]) for h in range(self.values.shape[1])]
        if self.others is not None:
            rows += [{"component": lbl, "dla": float(x)} for lbl, x in zip(self.other_labels, self.others)]
        return pd.DataFrame(rows)

    def plot_bars(self, title: str | None = None) -> go.Figure:
        df = self.components_frame()
        df = df[~df.component.str.startswith("L")] if self.others is not None else df
        return go.Figure(go.Bar(x=df.component, y=df.dla)).update_layout(
            title=title or "Direct logit attribution: non-head components", yaxis_title="logit diff")


def _logit_dir(model, prompts: PromptSet) -> Float[Tensor, "batch d_model"]:
    return (U.unembed_directions(model, prompts.answer_ids)
            - U.unembed_directions(model, prompts.require_wrong()))


def _check_additive(model, cache, final: Tensor, bi: Tensor, ap: Tensor) -> None:
    """Refuse a model whose final residual stream is not the embedding plus every attention
    and MLP output (blocks that normalise after adding to the stream: post-norm, e.g. GPT-1,
    BERT): there, components have no direct contribution to split."""
    L = describe(model).n_layers
    total = cache[H.resid_pre(0)][bi, ap] + sum(
        cache[H.attn_out(layer)][bi, ap] + cache[H.mlp_out(layer)][bi, ap] for layer in range(L))
    if float((total - final).abs().max()) > 1e-3 * (1.0 + float(final.abs().max())):
        family = describe(model).architecture
        raise ValueError(
            f"direct logit attribution needs the final residual stream to be the sum of the "
            f"embedding and every attention and MLP output, but on {family} it is not (its "
            "blocks normalise after adding to the stream, i.e. post-norm), so a component has "
            "no direct path to the logits. Use activation patching or direct_vs_total's total "
            "effects instead."
        )


def direct_logit_attribution(
    model,
    prompts: PromptSet,
    *,
    source_positions: bool = False,
) -> DLAResult:
    """Direct contribution of every head and MLP to the logit difference at the answer position.

    The final norm's scale is frozen from the clean run (as in McGrath et al. 2023's direct
    effect); LayerNorm's centring is applied to each component. With ``source_positions`` each
    head's contribution is also split by the key position it reads from
    (``pattern[q, k] * v[k] @ W_O``; Chughtai et al. 2024), stored in ``meta["by_source"]``
    as [layer, head, key_pos] for the first example... and as the field ``per_source``.
    """
    model = as_model(model)
    info = describe(model)
    prompts.check(model)
    U.check_head(model)
    U.require_linear_head(model, "direct logit attribution")
    device = model.cfg.device
    tokens = prompts.clean_tokens.to(device)
    b = tokens.shape[0]
    bi = torch.arange(b, device=device)
    ap = prompts.answer_pos.to(device)
    right, wrong = prompts.answer_ids.to(device), prompts.require_wrong().to(device)
    names = {H.z(layer) for layer in range(info.n_layers)} | {
        H.attn_out(layer) for layer in range(info.n_layers)} | {
        H.mlp_out(layer) for layer in range(info.n_layers)} | {
        H.resid_pre(0), U.final_resid_hook(model)} | U.scale_hooks(model)
    if source_positions:
        names |= {H.pattern(layer) for layer in range(info.n_layers)} | {
            H.v(layer) for layer in range(info.n_layers)}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        direction = _logit_dir(model, prompts)  # [b, d]
        scale = U.final_scale(model, cache, bi, ap)  # [b, 1]

        def project(x: Tensor) -> Tensor:  # x [b, ..., d] at the answer position -> [b, ...]
            x = U.frozen_norm_linear(model, x, scale)
            return (x * direction.view(b, *([1] * (x.ndim - 2)), -1).to(x)).sum(-1)

        W_O = model.W_O  # [L, H, d_head, d_model]
        heads = torch.zeros(info.n_layers, info.n_heads, b, device=device)
        others, labels = [], []
        others.append(project(cache[H.resid_pre(0)][bi, ap]))
        labels.append("embed")
        per_source = []
        for layer in range(info.n_layers):
            z = cache[H.z(layer)][bi, ap]  # [b, H, d_head]
            out = torch.einsum("bhe,hed->bhd", z, W_O[layer])
            heads[layer] = project(out).T
            attn_bias = cache[H.attn_out(layer)][bi, ap] - out.sum(1)
            others.append(project(attn_bias))
            labels.append(f"attn_bias{layer}")
            others.append(project(cache[H.mlp_out(layer)][bi, ap]))
            labels.append(f"MLP{layer}")
            if source_positions:
                pat = cache[H.pattern(layer)][bi, :, ap]  # [b, H, key]
                v = cache[H.v(layer)]  # [b, key, kv_heads, d_head]
                v = v.repeat_interleave(info.group_size, dim=2)
                src = torch.einsum("bhk,bkhe,hed->bhkd", pat, v, W_O[layer])
                per_source.append(project(src).mean(0))  # [H, key]
        others.append(U.logit_bias(model, direction, right, wrong))
        labels.append("remainder(norm bias + unembed bias)")
        others_t = torch.stack(others).cpu()  # [n_other, b]
        heads = heads.cpu()
        # the model's own logit difference before any softcap
        final = cache[U.final_resid_hook(model)][bi, ap]
        _check_additive(model, cache, final, bi, ap)
        raw = U.decode(model, final, cap=False)
        model_ld = (raw[bi, right] - raw[bi, wrong]).cpu()
    meta = {"method": "direct_logit_attribution", "model_logit_diff": model_ld.mean().item(),
            "model_logit_diff_per_example": model_ld.tolist(),
            "note": "logit difference before the final softcap (if any); final-norm scale frozen"}
    res = DLAResult(
        values=heads.mean(-1), dims=("layer", "head"), per_example=heads, meta=meta,
        others=others_t.mean(-1), other_labels=labels,
    )
    if source_positions:
        res.meta["per_source"] = torch.stack(per_source).cpu().tolist()  # [layer, head, key_pos]
    return res

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
from typing import Literal

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from interp import _bridge as B
from interp import _unembed as U
from interp import components as C
from interp import hooks as H
from interp.models import as_model, describe
from interp.prompts import PromptSet
from interp.results import Result


def _rowdot(a: Float[Tensor, "... v"], b: Float[Tensor, "... v"]) -> Float[Tensor, "..."]:
    """``(a * b).sum(-1)`` without materialising the product."""
    return torch.einsum("...v,...v->...", a, b)


def _lens_row(logits: Float[Tensor, "n d_vocab"], tgt: Tensor, k: int, p_final: Tensor,
              neg_h_final: Tensor, rows: dict[str, list], scratch: Tensor) -> None:
    """Top-k, target probability and rank, entropy and KL(final || layer) of one layer's
    logits [n rows, vocab], in log space (no probability underflows to an infinite KL). Five
    passes over the full-vocabulary tensor, all into ``scratch`` (a reused buffer of the same
    shape; a fresh full-vocabulary tensor per step costs more in page faults than the step):
    top-k, exp(logits - max), exp * logits, p_final * logits, and the rank comparison."""
    top = U.topk_rows(logits, k)
    m = top.values[:, :1]
    e = torch.sub(logits, m, out=scratch).exp_()  # exp(logits - max): every value in (0, 1]
    s = e.sum(-1, keepdim=True)
    lse = m + s.log()
    ent_dot = e.mul_(logits).sum(-1, keepdim=True) / s  # sum p * logits
    t_logit = logits.gather(-1, tgt[:, None])
    rows["top_ids"].append(top.indices)
    rows["top_probs"].append((top.values - lse).exp())
    rows["tprob"].append((t_logit - lse).exp()[:, 0])
    # KL = sum p_f log p_f - sum p_f * (logits - lse);  H = lse - sum p * logits
    rows["kl"].append((neg_h_final - torch.mul(p_final, logits, out=scratch).sum(-1)
                       + lse[:, 0]).clamp_min(0))
    rows["ent"].append(lse[:, 0] - ent_dot[:, 0])
    # rank: how many logits are >= the target's (as 0/1 floats, summed)
    rows["rank"].append(torch.sub(logits, t_logit, out=scratch).ge_(0).sum(-1).long())


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

    def _cell_columns(self) -> dict:
        """Per (layer, example, pos): the target's rank, KL(final || layer), entropy, and the
        top-1 token's probability and text."""
        cols = {"target_rank": self.target_rank.reshape(-1).numpy(),
                "kl": self.kl.reshape(-1).double().numpy(),
                "entropy": self.entropy.reshape(-1).double().numpy(),
                "top1_prob": self.top_probs[..., 0].reshape(-1).double().numpy()}
        if self.top_tokens is not None:
            cols["top1"] = [t for layer in self.top_tokens for ex in layer for t in ex]
        return cols

    def plot(self, *, example: int = 0, title: str | None = None, max_pos: int = 40) -> go.Figure:
        """Layers x positions grid: the top token's text in each cell, coloured by its probability."""
        n = min(int(self.meta["answer_pos"][example]) + 1, max_pos)
        start = max(0, int(self.meta["answer_pos"][example]) + 1 - max_pos)
        probs = self.top_probs[:, example, start:n, 0]
        text = [[self.top_tokens[layer][example][p] for p in range(start, n)]
                for layer in range(len(self.coords["layer"]))] if self.top_tokens else None
        xlabels = self.labels("pos")[start:n]
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
        tokens = prompts if isinstance(prompts, torch.Tensor) else torch.as_tensor(prompts, device="cpu")
        if tokens.ndim == 1:
            tokens = tokens[None]
        answer_pos = torch.full((tokens.shape[0],), tokens.shape[1] - 1, device="cpu")
    b, p = tokens.shape
    names = [H.resid_pre(layer) for layer in range(info.n_layers)] + [U.final_resid_hook(model)]
    tokens = tokens.to(model.cfg.device)
    with torch.no_grad():
        cached = set(names[:-1])  # the final row reads the model's own logits
        final_logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in cached)
        if isinstance(target, Tensor):
            tgt = target.to(tokens.device)[:, None].expand(b, p)
        elif target == "final_top1":
            tgt = final_logits.argmax(-1)
        elif target == "answer" and isinstance(prompts, PromptSet):
            tgt = prompts.answer_ids.to(tokens.device)[:, None].expand(b, p)
        else:  # raw tokens: the next token, the last position its own top-1
            tgt = torch.cat([tokens[:, 1:], final_logits[:, -1:].argmax(-1)], dim=1)
        rows = {key: [] for key in ("top_ids", "top_probs", "rank", "kl", "ent", "tprob")}
        final = final_logits.float().reshape(b * p, -1)
        final_lse = final.logsumexp(-1, keepdim=True)
        p_final = (final - final_lse).exp_()
        # sum_v p_final * log p_final: the constant part of every layer's KL
        neg_h_final = _rowdot(p_final, final) - final_lse[..., 0]
        tgt = tgt.reshape(-1)
        # two full-vocabulary buffers, reused by every layer: the logits and a scratch
        logits, scratch = torch.empty_like(final), torch.empty_like(final)
        for i, name in enumerate(names):
            # the last row is the model's own output: reuse its logits (no extra unembedding)
            if i == len(names) - 1:
                logits = final
            else:
                U.decode_into(model, cache[name].reshape(b * p, -1), logits)
            _lens_row(logits, tgt, k, p_final, neg_h_final, rows, scratch)
        del logits, scratch
    stack = {key: torch.stack(val).reshape(len(names), b, p, *val[0].shape[1:]).cpu()
             for key, val in rows.items()}
    tok = getattr(model, "tokenizer", None)
    pos_labels = C.pos_labels(p)
    top_tokens = None
    if tok is not None:
        pos_labels = C.pos_labels([tok.decode([int(t)]) for t in tokens[0]])
        top1 = stack["top_ids"][..., 0]
        # decode each distinct id once (a tokenizer call per cell costs more than the lens)
        text = {i: tok.decode([i]) for i in torch.unique(top1).tolist()}
        top_tokens = [[[text[i] for i in row] for row in layer_ids]
                      for layer_ids in top1.tolist()]
    return LogitLensResult(
        values=stack["tprob"], dims=("layer", "example", "pos"),
        coords={"layer": C.layer_labels(info.n_layers) + ["final"], "pos": pos_labels},
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
    others_per_example: Tensor | None = None  # [n_other, batch]
    per_source: Tensor | None = None  # [layer, head, batch, key_pos] (source_positions=True)
    value_name = "dla"

    def total(self) -> float:
        """Sum of all components and the remainder (= the model's logit difference)."""
        extra = float(self.others.sum()) if self.others is not None else 0.0
        return float(self.values.sum()) + extra

    @property
    def components(self) -> Result:
        """Every component's share as one result, dims ``("component",)``: the heads
        (``L0H0``, ...), then embed / attention biases / MLPs / remainder."""
        n_l, n_h = self.values.shape
        names = C.head_labels(n_l, n_h) + list(self.other_labels or [])
        vals = [self.values.reshape(-1)] + ([self.others] if self.others is not None else [])
        return Result(values=torch.cat(vals), dims=("component",), coords={"component": names},
                      meta=dict(self.meta))

    def accumulated(self) -> tuple[list[str], Tensor]:
        """The logit difference carried by the residual stream after the embeddings and after
        each layer (frozen final-norm scale): cumulative sums of the components, one row per
        example, ``[n_layers + 1, batch]``. The last row plus the remainder (norm and unembed
        biases) is the model's logit difference."""
        if self.per_example is None or self.others_per_example is None:
            raise ValueError("accumulated() needs per-example values (from "
                             "direct_logit_attribution).")
        labels = list(self.other_labels)
        rows = [self.others_per_example[labels.index("embed")]]
        for layer in range(self.values.shape[0]):
            step = self.per_example[layer].sum(0)
            step = step + self.others_per_example[labels.index(f"attn_bias{layer}")]
            step = step + self.others_per_example[labels.index(f"MLP{layer}")]
            rows.append(rows[-1] + step)
        return ["embed"] + [f"after L{layer}" for layer in range(self.values.shape[0])], torch.stack(rows)

    def plot_bars(self, title: str | None = None) -> go.Figure:
        """Bars of the non-head components (embed, attention biases, MLPs, remainder)."""
        n = self.values.numel()
        comp = self.components
        return go.Figure(go.Bar(x=comp.labels("component")[n:], y=comp.values[n:].tolist())).update_layout(
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
    if float((total - final).abs().max()) > B.tolerance(model, 1e-3) * (1.0 + float(final.abs().max())):
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
    (``pattern[q, k] * v[k] @ W_O``; Chughtai et al. 2024): the field ``per_source``
    [layer, head, example, key_pos] (each example at its own positions; summed over key
    positions it is the head's per-example contribution), and its mean over examples as
    ``meta["per_source"]`` [layer, head, key_pos] (meaningful only when the examples share one
    layout).
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
            labels.append(C.label(C.MLP(layer)))
            if source_positions:
                pat = cache[H.pattern(layer)][bi, :, ap]  # [b, H, key]
                v = cache[H.v(layer)]  # [b, key, kv_heads, d_head]
                v = v.repeat_interleave(info.group_size, dim=2)
                src = torch.einsum("bhk,bkhe,hed->bhkd", pat, v, W_O[layer])
                per_source.append(project(src).permute(1, 0, 2))  # [H, b, key]
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
        others=others_t.mean(-1), other_labels=labels, others_per_example=others_t,
    )
    if source_positions:
        res.per_source = torch.stack(per_source).cpu()  # [layer, head, b, key_pos]
        res.meta["per_source"] = res.per_source.mean(2).tolist()  # [layer, head, key_pos]
    return res

"""Zoo validation: ablating the top induction head must break in-context copying, while a head
that is neither an induction nor a previous-token head must barely matter."""

from __future__ import annotations

from typing import Any

import torch

from interp.ablation._components import Method, hooks_for, parse_components, scoped_hooks, sources
from interp.heads import induction_scores, previous_token_scores, repeated_tokens
from interp.models import describe


def _second_half_loss(model, tokens, seq_len: int) -> float:
    """Mean next-token loss on the predictable tokens of ``[BOS] + r + r``: the second copy
    after its first token (targets at positions seq_len+2 .. 2*seq_len)."""
    logits = model(tokens)
    logp = logits[:, :-1].float().log_softmax(-1)
    nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0]  # nll[:, i] predicts tokens[:, i+1]
    return float(nll[:, seq_len + 1:].mean())


def induction_ablation_check(
    model, *, seq_len: int = 50, batch: int = 10, seed: int = 0, method: Method = "mean",
    max_ratio_control: float = 1.2, min_ratio_top: float = 3.0,
) -> dict[str, Any]:
    """Second-half loss on repeated random tokens, clean vs with the top induction head ablated
    vs with a control head ablated (the head whose larger of induction and previous-token score
    is smallest). ``passed`` when the top head raises the loss >= ``min_ratio_top`` x and the
    control head <= ``max_ratio_control`` x. Mean ablation uses the same sequences' per-position
    means; scores are measured on a different seed than the loss."""
    info = describe(model)
    ind = induction_scores(model, seq_len=seq_len, batch=batch, seed=seed + 1).values
    prev = previous_token_scores(model, seq_len=seq_len, batch=batch, seed=seed + 1).values
    top_l, top_h = divmod(int(ind.argmax()), info.n_heads)
    other = torch.maximum(ind, prev).clone()
    other[top_l, top_h] = float("inf")
    c_l, c_h = divmod(int(other.argmin()), info.n_heads)
    tokens = repeated_tokens(model, seq_len=seq_len, batch=batch, seed=seed)
    from interp.prompts import PromptSet

    ref = PromptSet(clean_tokens=tokens, answer_ids=tokens[:, -1],
                    answer_pos=torch.full((batch,), tokens.shape[1] - 1))
    out: dict[str, Any] = {"top_head": f"L{top_l}H{top_h}", "top_induction_score": float(ind[top_l, top_h]),
                           "control_head": f"L{c_l}H{c_h}",
                           "control_scores": {"induction": float(ind[c_l, c_h]), "previous_token": float(prev[c_l, c_h])},
                           "method": method, "seq_len": seq_len, "batch": batch, "seed": seed}
    with torch.no_grad():
        out["loss_clean"] = _second_half_loss(model, tokens, seq_len)
        for key, label in (("top", out["top_head"]), ("control", out["control_head"])):
            comps = parse_components(model, [label])
            src, rows, _ = sources(model, comps, method, ref, None, None, seed)
            with scoped_hooks(model, hooks_for(comps, src, rows)):
                out[f"loss_{key}"] = _second_half_loss(model, tokens, seq_len)
            out[f"ratio_{key}"] = out[f"loss_{key}"] / out["loss_clean"]
        # the whole set of induction heads (score > 0.4, the ARENA threshold) at once
        ind_heads = [f"L{lh // info.n_heads}H{lh % info.n_heads}"
                     for lh in (ind.flatten() > 0.4).nonzero().flatten().tolist()]
        out["induction_heads"] = ind_heads
        if ind_heads:
            comps = parse_components(model, ind_heads)
            src, rows, _ = sources(model, comps, method, ref, None, None, seed)
            with scoped_hooks(model, hooks_for(comps, src, rows)):
                out["loss_all_induction"] = _second_half_loss(model, tokens, seq_len)
            out["ratio_all_induction"] = out["loss_all_induction"] / out["loss_clean"]
    out["passed"] = bool(out["ratio_top"] >= min_ratio_top and out["ratio_control"] <= max_ratio_control)
    return out

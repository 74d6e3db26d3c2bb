"""Logit lens and DLA: invariants on every test family, parity with plain computations."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_no_hooks

from interp import hooks as H
from interp import prompts
from interp.lens import direct_logit_attribution, logit_lens


def test_last_row_equals_model_logits(tiny_model):
    ps = prompts.ioi(tiny_model, n=4, seed=0)
    res = logit_lens(tiny_model, ps, k=3)
    with torch.no_grad():
        logits = tiny_model(ps.clean_tokens).float()
    probs = logits.softmax(-1)
    top = probs.topk(3, dim=-1)
    assert torch.allclose(res.top_probs[-1], top.values, atol=1e-4)
    assert torch.equal(res.top_ids[-1][..., 0], top.indices[..., 0])
    tprob = probs.gather(-1, ps.answer_ids[:, None, None].expand(-1, ps.n_pos, 1))[..., 0]
    assert torch.allclose(res.values[-1], tprob, atol=1e-5)
    assert float(res.kl[-1].abs().max()) < 1e-4
    assert res.values.shape == (tiny_model.cfg.n_layers + 1, 4, ps.n_pos)
    assert_no_hooks(tiny_model)


def test_lens_rows_match_manual_decode(tiny_gpt2):
    """Row l equals ln_final + unembed applied to resid_pre[l], computed by hand (LayerNorm)."""
    toks = torch.randint(2, 500, (2, 9), generator=torch.Generator().manual_seed(0))
    res = logit_lens(tiny_gpt2, toks, k=1)
    _, cache = tiny_gpt2.run_with_cache(toks)
    ln = tiny_gpt2.original_model.transformer.ln_f
    for layer in range(3):
        x = cache[H.resid_pre(layer)]
        logits = ln(x) @ tiny_gpt2.original_model.lm_head.weight.T
        assert torch.equal(res.top_ids[layer, ..., 0], logits.argmax(-1))
        ranks = (logits >= logits.gather(-1, torch.cat([toks[:, 1:], res.top_ids[-1, :, -1:, 0]], 1)[..., None])).sum(-1)
        assert torch.equal(res.target_rank[layer], ranks)


def test_dla_sums_to_logit_difference(tiny_model):
    ps = prompts.ioi(tiny_model, n=6, seed=1)
    res = direct_logit_attribution(tiny_model, ps)
    per_ex = res.per_example.sum((0, 1))  # heads, per example
    assert res.values.shape == (3, 4)
    assert res.total() == pytest.approx(res.meta["model_logit_diff"], abs=1e-3)
    # also per example: heads + others == model ld
    assert_no_hooks(tiny_model)
    assert torch.isfinite(per_ex).all()


def test_dla_head_matches_ablation_linearisation(tiny_gpt2):
    """A head's DLA equals the logit-diff change when its output is removed from the final
    residual stream with the final-norm scale frozen (computed independently)."""
    ps = prompts.ioi(tiny_gpt2, n=3, seed=4)
    res = direct_logit_attribution(tiny_gpt2, ps)
    _, cache = tiny_gpt2.run_with_cache(ps.clean_tokens)
    bi, ap = torch.arange(3), ps.answer_pos
    layer, head = 1, 2
    out = cache[H.z(layer)][bi, ap, head] @ tiny_gpt2.W_O[layer, head]
    final = cache[H.resid_post(2)][bi, ap]
    scale = cache[H.LN_FINAL_SCALE][bi, ap]
    ln = tiny_gpt2.original_model.transformer.ln_f

    def frozen(x):
        return (x - x.mean(-1, keepdim=True)) / scale * ln.weight + ln.bias

    wu = tiny_gpt2.W_U
    d = wu[:, ps.answer_ids] - wu[:, ps.wrong_ids]
    full = (frozen(final) * d.T).sum(-1)
    without = (frozen(final - out) * d.T).sum(-1)
    assert torch.allclose(res.per_example[layer, head], full - without, atol=1e-4)


def test_dla_source_positions_sum_to_head(tiny_llama):
    ps = prompts.ioi(tiny_llama, n=2, seed=3)
    res = direct_logit_attribution(tiny_llama, ps, source_positions=True)
    src = torch.tensor(res.meta["per_source"])  # [layer, head, key]
    assert torch.allclose(src.sum(-1), res.values, atol=1e-4)
    # per example, at each example's own positions: sums to the head's per-example contribution
    assert res.per_source.shape[:3] == res.per_example.shape
    assert torch.allclose(res.per_source.sum(-1), res.per_example, atol=1e-4)


def test_lens_plot_and_first_top1(tiny_gpt2):
    ps = prompts.ioi(tiny_gpt2, n=2)
    res = logit_lens(tiny_gpt2, ps)
    fig = res.plot()
    assert fig.data[0].type == "heatmap" and len(fig.data[0].y) == 4
    layer = res.first_top1_layer()
    assert layer is None or 0 <= layer <= 3
    assert len(res.to_frame()) == 4 * 2 * ps.n_pos


# --- parity with transformer-lens's own logit lens and DLA ------------------------------------


def _aligned_prompts(seed=0, b=3, p=8):
    from interp.prompts import PromptSet

    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(3, 400, (b, p), generator=g)
    ans, wrong = torch.randint(3, 400, (b,), generator=g), torch.randint(3, 400, (b,), generator=g)
    return PromptSet(clean_tokens=toks, answer_ids=ans, wrong_ids=wrong, answer_pos=torch.full((b,), p - 1))


def test_logit_lens_matches_transformer_lens(tiny_model):
    """TL's ``tools.analysis.logit_lens`` (final norm recomputed, W_U, b_U, output transform)
    gives the same top-k probabilities, target ranks (TL: 0-based) and entropies at every layer
    and position."""
    from transformer_lens.tools.analysis.logit_lens import logit_lens as tl_logit_lens

    ps = _aligned_prompts()
    ours = logit_lens(tiny_model, ps, k=3)
    with torch.no_grad():
        top = tl_logit_lens(tiny_model, ps.clean_tokens, positions=None, return_type="probs", top_k=3)
        tgt = tl_logit_lens(tiny_model, ps.clean_tokens, positions=None, return_type="probs",
                            targets=ps.answer_ids[:, None].expand(-1, ps.n_pos))
    assert top.values.shape == ours.top_probs.shape
    assert torch.allclose(top.values.float(), ours.top_probs, atol=1e-5)
    assert torch.equal(top.readout.top_ids[..., 0], ours.top_ids[..., 0])
    assert torch.equal(tgt.readout.target_ranks[..., 0] + 1, ours.target_rank)
    assert torch.allclose(tgt.values[..., 0].float(), ours.values, atol=1e-5)
    assert torch.allclose(top.readout.entropy.float(), ours.entropy, atol=1e-4)
    assert_no_hooks(tiny_model)


def test_dla_matches_transformer_lens_cache(tiny_model):
    """Per-head and per-MLP DLA equal TL's ``stack_head_results`` / ``decompose_resid`` passed
    through ``apply_ln_to_stack`` (final layer, cached scale) and projected on the residual
    direction of answer - wrong. TL's stack is unscaled by the final norm's weight (it expects
    folded weights), so that weight is applied here."""
    from interp._bridge import final_norm_params as _final_norm_params

    ps = _aligned_prompts(seed=1)
    ours = direct_logit_attribution(tiny_model, ps)
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(ps.clean_tokens)
        w, _ = _final_norm_params(tiny_model)
        direction = (tiny_model.tokens_to_residual_directions(ps.answer_ids)
                     - tiny_model.tokens_to_residual_directions(ps.wrong_ids))
        # full-context stacks, sliced at the answer position afterwards
        heads = cache.apply_ln_to_stack(cache.stack_head_results(layer=-1), layer=-1)[:, :, -1]
        tl_heads = (heads * w * direction).sum(-1)  # [layer*head, batch]
        stack, labels = cache.decompose_resid(layer=-1, return_labels=True)
        parts = cache.apply_ln_to_stack(stack, layer=-1)[:, :, -1]
        tl_parts = (parts * w * direction).sum(-1).mean(-1)
    assert torch.allclose(tl_heads.view_as(ours.per_example), ours.per_example, atol=1e-4)
    for layer in range(tiny_model.cfg.n_layers):
        mine = float(ours.others[ours.other_labels.index(f"MLP{layer}")])
        assert mine == pytest.approx(float(tl_parts[labels.index(f"{layer}_mlp_out")]), abs=1e-4)

"""Ablation, knockout sweeps, head importance, pruning and the Hydra effect.

Fast paths are checked against plain loops of ``run_with_hooks`` written here, independent of
the library's hook code; invariants are exact identities of the residual stream.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import assert_no_hooks, load_tiny

from interp import hooks as H
from interp import prompts as P
from interp.ablation import (
    AblationResult,
    HydraResult,
    ablate,
    ablated,
    direct_vs_total,
    head_importance,
    knockout_sweep,
    prune_heads,
)
from interp.metrics import logit_diff_fn, logits_at


def _ld(logits, ps):
    return logit_diff_fn(logits_at(logits, ps.answer_pos), ps).float()


def _zero_head(h):
    def hook(z, hook):
        z = z.clone()
        z[:, :, h] = 0
        return z

    return hook


def _set_head(h, value):
    def hook(z, hook):
        z = z.clone()
        z[:, :, h] = value[:, :, h] if value.ndim == 4 else value
        return z

    return hook


def _replace(value):
    def hook(act, hook):
        return value.expand_as(act).clone()

    return hook


# ---------------------------------------------------------------------------------------------
# ablate / ablated
# ---------------------------------------------------------------------------------------------


def test_zero_ablation_matches_manual_hook(tiny_model):
    ps = P.ioi(tiny_model, n=5, seed=0)
    res = ablate(tiny_model, ps, ["L1H2", "MLP0"], method="zero")
    with torch.no_grad():
        clean = _ld(tiny_model(ps.clean_tokens), ps)
        manual = _ld(tiny_model.run_with_hooks(ps.clean_tokens, fwd_hooks=[
            (H.z(1), _zero_head(2)), (H.mlp_out(0), _replace(torch.zeros(())))]), ps)
    assert torch.allclose(res.baseline_per_example, clean, atol=1e-5)
    assert torch.allclose(res.ablated_per_example, manual, atol=1e-5)
    assert res.values[0] == pytest.approx(float((manual - clean).mean()), abs=1e-5)
    lo, hi = res.ci[0].tolist()
    assert lo <= float(res.values[0]) <= hi
    assert len(res.top_before) == 5 and len(res.top_after[0]) == 5
    assert_no_hooks(tiny_model)


def test_head_ablation_is_gqa_aware(tiny_gqa_model):
    """Ablating query head 1 zeroes its z slice only: the shared k/v and other heads' z stay."""
    m = tiny_gqa_model
    toks = P.ioi(m, n=3, seed=1).clean_tokens
    _, clean = m.run_with_cache(toks)
    with ablated(m, ["L1H1"]):
        _, abl = m.run_with_cache(toks)
    assert torch.equal(abl[H.k(1)], clean[H.k(1)]) and torch.equal(abl[H.v(1)], clean[H.v(1)])
    assert float(abl[H.z(1)][:, :, 1].abs().max()) == 0.0
    keep = [0, 2, 3]
    assert torch.equal(abl[H.z(1)][:, :, keep], clean[H.z(1)][:, :, keep])
    assert not torch.allclose(abl[H.resid_post(2)], clean[H.resid_post(2)])
    assert_no_hooks(m)


def test_mean_ablation_per_position_and_pooled(tiny_llama):
    m = tiny_llama
    toks = torch.randint(3, 400, (4, 8), generator=torch.Generator().manual_seed(0))
    ref = P.PromptSet(clean_tokens=toks, answer_ids=toks[:, -1], answer_pos=torch.full((4,), 7))
    _, rc = m.run_with_cache(toks)
    target = toks[:2].flip(0)
    with ablated(m, ["L0H3", "ATTN2"], method="mean", reference=ref):
        _, abl = m.run_with_cache(target)
    assert torch.allclose(abl[H.z(0)][:, :, 3], rc[H.z(0)][:, :, 3].mean(0).expand(2, -1, -1), atol=1e-6)
    assert torch.allclose(abl[H.attn_out(2)], rc[H.attn_out(2)].mean(0).expand(2, -1, -1), atol=1e-6)
    # padded reference: mean over real tokens only, the same at every position
    ragged = P.PromptSet.from_token_lists([toks[0, :5].tolist(), toks[1].tolist()], [1, 2])
    _, rr = m.run_with_cache(ragged.clean_tokens)
    real = torch.cat([rr[H.mlp_out(1)][0, :5], rr[H.mlp_out(1)][1, :8]])
    with ablated(m, ["MLP1"], method="mean", reference=ragged):
        _, abl = m.run_with_cache(target)
    assert torch.allclose(abl[H.mlp_out(1)], real.mean(0).expand(2, 8, -1), atol=1e-5)
    with pytest.raises(ValueError, match="per-position"):
        ablate(m, P.ioi(m, n=2), ["MLP1"], method="mean", reference=ragged, per_position=True)
    assert_no_hooks(m)


def test_resample_uses_corrupted_prompts(tiny_gpt2):
    m = tiny_gpt2
    ps = P.ioi(m, n=4, seed=2, corruption="abc")
    _, corr = m.run_with_cache(ps.corrupted_tokens)
    with torch.no_grad():
        manual = _ld(m.run_with_hooks(ps.clean_tokens, fwd_hooks=[(H.z(2), _set_head(0, corr[H.z(2)]))]), ps)
    res = ablate(m, ps, ["L2H0"], method="resample")
    assert torch.allclose(res.ablated_per_example, manual, atol=1e-5)


def test_no_hooks_left_when_metric_or_body_raises(tiny_gpt2):
    ps = P.ioi(tiny_gpt2, n=2)

    def bad_metric(logits, prompts):
        raise RuntimeError("metric failed")

    with pytest.raises(RuntimeError, match="metric failed"):
        ablate(tiny_gpt2, ps, ["L0H0"], metric=bad_metric)
    assert_no_hooks(tiny_gpt2)
    with pytest.raises(KeyError), ablated(tiny_gpt2, ["L0H0", "MLP1"]):
        raise KeyError("body failed")
    assert_no_hooks(tiny_gpt2)
    with pytest.raises(RuntimeError):
        knockout_sweep(tiny_gpt2, ps, metric=bad_metric)
    assert_no_hooks(tiny_gpt2)


@pytest.mark.parametrize("bad, match", [("L9H0", "out of range"), ("L0H7", "out of range"),
                                        ("head3", "cannot read"), ([], "no components")])
def test_bad_components_fail_clearly(tiny_gpt2, bad, match):
    with pytest.raises((ValueError, IndexError), match=match):
        ablate(tiny_gpt2, P.ioi(tiny_gpt2, n=2), bad)


def test_bad_method_and_reference(tiny_gpt2):
    ps = P.ioi(tiny_gpt2, n=2)
    with pytest.raises(ValueError, match="unknown ablation method"):
        ablate(tiny_gpt2, ps, ["L0H0"], method="noise")
    with pytest.raises(ValueError, match="needs reference"), ablated(tiny_gpt2, ["L0H0"], method="resample"):
        pass
    assert_no_hooks(tiny_gpt2)


# ---------------------------------------------------------------------------------------------
# knockout sweep: parity with a plain loop of run_with_hooks
# ---------------------------------------------------------------------------------------------


def _reference_sweep(model, ps, method):
    L, nh = model.cfg.n_layers, model.cfg.n_heads
    names = [H.z(layer) for layer in range(L)] + [H.mlp_out(layer) for layer in range(L)]
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(ps.clean_tokens, names_filter=lambda n: n in names)
        base = _ld(clean_logits, ps)
        heads = torch.zeros(L, nh, len(ps))
        mlps = torch.zeros(L, len(ps))
        for layer in range(L):
            zmean = cache[H.z(layer)].mean(0, keepdim=True)
            mmean = cache[H.mlp_out(layer)].mean(0, keepdim=True)
            for h in range(nh):
                hook = _zero_head(h) if method == "zero" else _set_head(h, zmean)
                out = model.run_with_hooks(ps.clean_tokens, fwd_hooks=[(H.z(layer), hook)])
                heads[layer, h] = _ld(out, ps) - base
            rep = torch.zeros(()) if method == "zero" else mmean
            out = model.run_with_hooks(ps.clean_tokens, fwd_hooks=[(H.mlp_out(layer), _replace(rep))])
            mlps[layer] = _ld(out, ps) - base
    return heads, mlps


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_knockout_sweep_matches_loop(tiny_model, method):
    toks = torch.randint(3, 400, (3, 10), generator=torch.Generator().manual_seed(1))
    ps = P.PromptSet(clean_tokens=toks, answer_ids=torch.tensor([5, 6, 7]),
                     wrong_ids=torch.tensor([8, 9, 10]), answer_pos=torch.full((3,), 9))
    res = knockout_sweep(tiny_model, ps, method=method, max_batch=7)  # forces several chunks
    heads, mlps = _reference_sweep(tiny_model, ps, method)
    assert res.meta["per_position"] == (method == "mean")
    assert float((res.per_example - heads).abs().max()) <= 1e-4
    assert float((res.mlp_per_example - mlps).abs().max()) <= 1e-4
    assert res.values.shape == (3, 4) and res.ci.shape == (3, 4, 2)
    assert float(heads.abs().max()) > 1e-3  # the ablations do something
    assert_no_hooks(tiny_model)


def test_knockout_sweep_implementations_agree_on_ioi(tiny_llama):
    ps = P.ioi(tiny_llama, n=4, seed=3)  # ragged lengths (padding), resample from corrupted
    a = knockout_sweep(tiny_llama, ps, method="resample")
    b = knockout_sweep(tiny_llama, ps, method="resample", implementation="loop")
    assert float((a.per_example - b.per_example).abs().max()) <= 1e-4
    assert float((a.mlp_per_example - b.mlp_per_example).abs().max()) <= 1e-4
    # one cell against ablate()
    one = ablate(tiny_llama, ps, ["L2H3"], method="resample")
    assert torch.allclose(one.per_example[0], a.per_example[2, 3], atol=1e-4)


def test_results_roundtrip_and_plot(tiny_gpt2, tmp_path):
    ps = P.ioi(tiny_gpt2, n=3)
    res = knockout_sweep(tiny_gpt2, ps)
    assert res.coords == {"layer": ["L0", "L1", "L2"], "head": ["H0", "H1", "H2", "H3"]}
    back = AblationResult.load(res.save(tmp_path / "ko"))
    assert torch.equal(back.values, res.values) and torch.equal(back.mlp_values, res.mlp_values)
    assert res.plot().data[0].type == "heatmap"
    assert len(res.top(3)) == 3 and len(res.mlps.to_frame()) == 3
    assert res.mlps.labels("component") == ["MLP0", "MLP1", "MLP2"]
    assert torch.equal(res.mlps.values, res.mlp_values) and torch.equal(res.mlps.ci, res.mlp_ci)


# ---------------------------------------------------------------------------------------------
# head importance and pruning
# ---------------------------------------------------------------------------------------------


def _batch_loss(model, ps, gates):
    fwd = [(H.z(layer), (lambda z, hook, g=gates[layer]: z * g[None, None, :, None]))
           for layer in range(gates.shape[0])]
    with torch.no_grad():
        logits = model.run_with_hooks(ps.clean_tokens, fwd_hooks=fwd)
    logp = logits_at(logits, ps.answer_pos).double().log_softmax(-1)
    return float(-logp.gather(-1, ps.answer_ids[:, None]).mean())


@pytest.mark.parametrize("family", [
    "gpt2", "llama", pytest.param("neox", marks=pytest.mark.slow),
    pytest.param("qwen2", marks=pytest.mark.slow), pytest.param("gemma2", marks=pytest.mark.slow)])
def test_head_importance_equals_finite_differences(tiny_dirs, family):
    tiny_model = load_tiny(tiny_dirs, family)
    ps = P.ioi(tiny_model, n=4, seed=5)
    res = head_importance(tiny_model, ps, batch_size=2, normalize=False)
    L, nh = 3, 4
    ref = torch.zeros(L, nh)
    eps = 1e-2
    for start in (0, 2):
        batch = ps.subset(slice(start, start + 2))
        for layer in range(L):
            for h in range(nh):
                up, down = torch.ones(L, nh), torch.ones(L, nh)
                up[layer, h] += eps
                down[layer, h] -= eps
                g = (_batch_loss(tiny_model, batch, up) - _batch_loss(tiny_model, batch, down)) / (2 * eps)
                ref[layer, h] += abs(g)
    ref /= len(ps)  # one loss token per prompt
    assert torch.allclose(res.values, ref, rtol=2e-2, atol=2e-5), (res.values, ref)
    norm = head_importance(tiny_model, ps, batch_size=2).values
    per_layer = ref / ref.norm(dim=-1, keepdim=True)
    expect = (per_layer - per_layer.min()) / (per_layer.max() - per_layer.min())
    assert torch.allclose(norm, expect, atol=1e-2)
    assert float(norm.min()) == 0.0 and float(norm.max()) == pytest.approx(1.0)
    assert_no_hooks(tiny_model)


def test_prune_heads_curve_and_kept_set(tiny_llama):
    ps = P.ioi(tiny_llama, n=6, seed=6)
    res = prune_heads(tiny_llama, ps, step=0.1, stop_at=0.9, metric="prob")
    df = res.to_frame()
    kept_n = df.heads_kept.tolist()
    assert kept_n[0] == 12 and all(a > b for a, b in itertools.pairwise(kept_n))  # monotone
    assert all(a - b == 1 for a, b in itertools.pairwise(kept_n))  # 10% of 12 heads -> 1 per step
    acc = df.accepted.tolist()
    assert all(acc[:-1]) and (not acc[-1] or kept_n[-1] == 1)  # stops at the first miss
    orig = res.meta["original"]
    assert all(s >= 0.9 * orig for s, a in zip(df.value, acc) if a)
    last_ok = max(i for i, a in enumerate(acc) if a)
    assert len(res.kept) == kept_n[last_ok] == int(res.mask.sum())
    # the kept set alone reproduces the score recorded for it
    gates = res.mask
    fwd = [(H.z(layer), (lambda z, hook, g=gates[layer]: z * g[None, None, :, None])) for layer in range(3)]
    with torch.no_grad():
        probs = logits_at(tiny_llama.run_with_hooks(ps.clean_tokens, fwd_hooks=fwd), ps.answer_pos).softmax(-1)
    score = float(probs.gather(-1, ps.answer_ids[:, None]).mean())
    assert score == pytest.approx(float(df.value[last_ok]), rel=1e-4)
    assert {f"L{a}H{b}" for a, b in (gates == 1).nonzero().tolist()} == set(res.kept)
    assert res.plot().data[0].type == "scatter"
    assert_no_hooks(tiny_llama)


# ---------------------------------------------------------------------------------------------
# direct vs total effect
# ---------------------------------------------------------------------------------------------


def test_compensation_equals_downstream_direct_effects(tiny_model):
    """With the final-norm scale frozen the final residual is a sum of layer outputs, so
    DE - TE is exactly the summed change in later layers' direct effects; components with
    nothing downstream (the last MLP) have TE == DE."""
    ps = P.ioi(tiny_model, n=4, seed=7)
    res = direct_vs_total(tiny_model, ps, freeze_final_scale=True)
    assert isinstance(res, HydraResult)
    comp = res.per_example[:, 2].mean(-1)
    assert torch.allclose(comp, res.downstream.sum((1, 2)), atol=1e-4)
    last = res.coords["component"].index("MLP2")
    assert torch.allclose(res.per_example[last, 0], res.per_example[last, 1], atol=1e-4)
    assert float(res.downstream[last].abs().max()) == 0.0
    assert float(res.values[:, 0].abs().max()) > 1e-3
    unfrozen = direct_vs_total(tiny_model, ps, ["MLP2"])
    assert torch.allclose(unfrozen.per_example[0, 0], res.per_example[last, 0], atol=1e-5)  # same DE
    assert_no_hooks(tiny_model)


def test_direct_effect_matches_hand_projection(tiny_gpt2):
    m = tiny_gpt2
    ps = P.ioi(m, n=3, seed=8, corruption="abc")
    res = direct_vs_total(m, ps, ["L1H0", "L1H1", "L1H2", "L1H3", "ATTN1"])
    bi, ap = torch.arange(3), ps.answer_pos
    _, cc = m.run_with_cache(ps.clean_tokens)
    _, rc = m.run_with_cache(ps.corrupted_tokens)
    target = cc["logits"][bi, ap].argmax(-1) if "logits" in cc else m(ps.clean_tokens)[bi, ap].argmax(-1)
    ln = m.original_model.transformer.ln_f
    scale = cc[H.LN_FINAL_SCALE][bi, ap]
    for h in range(4):
        diff = (cc[H.z(1)][bi, ap, h] - rc[H.z(1)][bi, ap, h]) @ m.W_O[1, h]
        de = ((diff - diff.mean(-1, keepdim=True)) / scale * ln.weight * m.W_U[:, target].T).sum(-1)
        assert torch.allclose(res.per_example[h, 0], de, atol=1e-4)
    # a layer's heads add up to the whole layer (attn_out is linear in z)
    assert torch.allclose(res.per_example[:4, 0].sum(0), res.per_example[4, 0], atol=1e-4)
    assert res.plot().data[0].type == "scatter" and len(res.to_frame()) == 5 * 3


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_knockout_on_ragged_prompts_runs_in_length_groups(tiny_dirs, method, monkeypatch):
    """Right-padded prompts of different lengths are replayed in groups of similar length, each
    cut after its last answer: the numbers equal one batch and the one-forward-per-ablation
    loop (resample: each example keeps its own source row)."""
    from interp._engine import schedule as S
    from interp.ablation import _ablate as A

    model = load_tiny(tiny_dirs, "gpt2")
    g = torch.Generator().manual_seed(2)
    b, p = 8, 12
    clean = torch.randint(3, 60, (b, p), generator=g)
    corr = torch.randint(3, 60, (b, p), generator=g)
    ans_pos = torch.tensor([4, 11, 5, 10, 4, 11, 6, 9])
    for i in range(b):
        clean[i, ans_pos[i] + 1:] = 0
        corr[i, ans_pos[i] + 1:] = 0
    ans = torch.randint(3, 60, (b,), generator=g)
    ps = P.PromptSet(clean_tokens=clean, corrupted_tokens=corr, answer_ids=ans,
                     wrong_ids=(ans + 1) % 60 + 3, answer_pos=ans_pos, pad_id=0)
    groups = S.window_groups(torch.zeros(b, dtype=torch.long), ans_pos + 1)
    assert groups is not None and len(groups) >= 2
    grouped = knockout_sweep(model, ps, method=method)
    with monkeypatch.context() as mp:
        mp.setattr(A, "group_plan", lambda *a, **k: None)
        one = knockout_sweep(model, ps, method=method)
    loop = knockout_sweep(model, ps, method=method, implementation="loop")
    for ref in (one, loop):
        assert float((grouped.per_example - ref.per_example).abs().max()) <= 1e-4
        assert float((grouped.mlp_per_example - ref.mlp_per_example).abs().max()) <= 1e-4
        assert torch.allclose(grouped.baseline_per_example, ref.baseline_per_example, atol=1e-5)
    assert float(grouped.per_example.abs().max()) > 1e-3
    assert_no_hooks(model)

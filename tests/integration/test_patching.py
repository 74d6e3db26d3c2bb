"""Activation patching: parity with transformer-lens's sweeps, slow loops, and invariants."""

from __future__ import annotations

import pytest
import torch
from helpers import FAMILIES, assert_no_hooks, load_tiny

from interp import hooks as H
from interp.models import describe
from interp.patching import PatchingResult, activation_patching
from interp.prompts import PromptSet


def _pairs(model, b: int = 2, p: int = 5, seed: int = 0) -> PromptSet:
    g = torch.Generator().manual_seed(seed)
    v = min(int(model.cfg.d_vocab), 60)
    clean = torch.randint(1, v, (b, p), generator=g)
    corr = torch.randint(1, v, (b, p), generator=g)
    ans = torch.randint(1, v, (b,), generator=g)
    wrong = (ans + 1) % v + 1
    pos = torch.tensor([p - 1 - (i % 2) for i in range(b)])  # per-example answer positions
    return PromptSet(clean_tokens=clean, corrupted_tokens=corr, answer_ids=ans, wrong_ids=wrong,
                     answer_pos=pos)


def _tl_metric(ps: PromptSet):
    b = torch.arange(len(ps))

    def metric(logits):
        row = logits[b, ps.answer_pos]
        return row[b, ps.answer_ids] - row[b, ps.wrong_ids]

    return metric


def _tl_fns():
    from transformer_lens import patching as P

    return {
        ("resid_pre", True): P.get_act_patch_resid_pre,
        ("resid_mid", True): P.get_act_patch_resid_mid,
        ("attn_out", True): P.get_act_patch_attn_out,
        ("mlp_out", True): P.get_act_patch_mlp_out,
        ("z", False): P.get_act_patch_attn_head_out_all_pos,
        ("z", True): P.get_act_patch_attn_head_out_by_pos,
        ("q", False): P.get_act_patch_attn_head_q_all_pos,
        ("k", False): P.get_act_patch_attn_head_k_all_pos,
        ("v", False): P.get_act_patch_attn_head_v_all_pos,
        ("pattern", False): P.get_act_patch_attn_head_pattern_all_pos,
        ("q", True): P.get_act_patch_attn_head_q_by_pos,
        ("k", True): P.get_act_patch_attn_head_k_by_pos,
        ("v", True): P.get_act_patch_attn_head_v_by_pos,
        ("pattern", True): P.get_act_patch_attn_head_pattern_by_pos,
    }


def _check_tl(model, target, per_pos, direction="denoising", p=5):
    ps = _pairs(model, p=p)
    fn = _tl_fns()[(target, per_pos)]
    src, base = ((ps.clean_tokens, ps.corrupted_tokens) if direction == "denoising"
                 else (ps.corrupted_tokens, ps.clean_tokens))
    _, cache = model.run_with_cache(src)
    ref = fn(model, base, cache, _tl_metric(ps), reduce="none")
    ref_pe = ref.values
    if target == "pattern" and per_pos:  # TL: [layer, head, dest_pos]; ours: [layer, pos, head]
        ref_pe = ref_pe.permute(0, 2, 1, 3)
    res = activation_patching(model, ps, target=target, per_position=per_pos, direction=direction)
    assert res.raw_per_example.shape == ref_pe.shape
    diff = (res.raw_per_example - ref_pe.cpu()).abs().max().item()
    assert diff <= 1e-4, f"{target} per_position={per_pos}: max |diff| {diff}"
    # the sweep must actually move the metric somewhere (a patch that did nothing would also agree)
    base_pe = torch.tensor(res.meta["corrupted_per_example" if direction == "denoising"
                                    else "clean_per_example"])
    assert (res.raw_per_example - base_pe).abs().max() > 1e-4
    assert_no_hooks(model)
    return res


@pytest.mark.parametrize("target,per_pos", [("resid_pre", True), ("z", False), ("v", False)])
def test_parity_with_transformer_lens(tiny_model, target, per_pos):
    _check_tl(tiny_model, target, per_pos, p=4)


def test_parity_noising_and_by_position(tiny_llama):
    _check_tl(tiny_llama, "z", True, direction="noising", p=4)
    _check_tl(tiny_llama, "pattern", True, p=4)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_parity_every_sweep_every_family(tiny_dirs, family):
    model = load_tiny(tiny_dirs, family)
    for (target, per_pos) in _tl_fns():
        if target == "resid_mid" and not describe(model).has_resid_mid:
            continue
        for direction in ("denoising", "noising"):
            _check_tl(model, target, per_pos, direction)


def _aligned_pairs(model, b: int = 3, p: int = 7, seed: int = 1) -> PromptSet:
    """Corrupted = clean with two tokens replaced (positions 2 and 4), as in IOI-style pairs:
    the patches before position 2 are no-ops and later ones start at their own position."""
    g = torch.Generator().manual_seed(seed)
    v = min(int(model.cfg.d_vocab), 60)
    clean = torch.randint(1, v, (b, p), generator=g)
    corr = clean.clone()
    corr[:, 2] = (clean[:, 2] + 7) % (v - 1) + 1
    corr[:, 4] = (clean[:, 4] + 11) % (v - 1) + 1
    ans = torch.randint(1, v, (b,), generator=g)
    pos = torch.tensor([p - 1 - (i % 3) for i in range(b)])  # 6, 5, 4: rows after some answers
    return PromptSet(clean_tokens=clean, corrupted_tokens=corr, answer_ids=ans,
                     wrong_ids=(ans + 1) % v + 1, answer_pos=pos)


@pytest.mark.parametrize("family", FAMILIES)
def test_windowed_resume_matches_full_forward(tiny_dirs, family):
    """Resuming on positions lo.. with the base keys/values in front (and the last block split
    into key/value rows and answer rows) gives the model's own logits; answer rows before lo
    come back as the base run's."""
    from interp._engine.restart import Restarter

    model = load_tiny(tiny_dirs, family)
    n_layers = describe(model).n_layers
    toks = _aligned_pairs(model).clean_tokens
    eng = Restarter(model, toks, names=[H.resid_pre(x) for x in range(n_layers)])
    assert eng.can_window, "the position-window fast path is off for this family"
    rows = torch.tensor([6, 5, 2])
    want = eng.logits[torch.arange(3), rows]
    for layer in range(n_layers):
        for lo in (0, 1, 3):
            resid = eng.cache[H.resid_pre(layer)][:, lo:]
            got = eng.resume(layer, resid, rows=rows, lo=lo)
            assert (got - want).abs().max() < 1e-4, (layer, lo)
            full = eng.unembed(eng.run_blocks(layer, resid, lo=lo))
            assert (full - eng.logits[:, lo:]).abs().max() < 1e-4, (layer, lo)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target,per_pos", [("z", True), ("resid_pre", True), ("k", False),
                                            ("pattern", True), ("mlp_out", True)])
def test_parity_on_aligned_pairs(tiny_dirs, family, target, per_pos):
    """Pairs that share most tokens exercise the no-op skip and the position windows."""
    model = load_tiny(tiny_dirs, family)
    ps = _aligned_pairs(model)
    _, cache = model.run_with_cache(ps.clean_tokens)
    ref = _tl_fns()[(target, per_pos)](model, ps.corrupted_tokens, cache, _tl_metric(ps),
                                       reduce="none").values
    if target == "pattern" and per_pos:
        ref = ref.permute(0, 2, 1, 3)
    res = activation_patching(model, ps, target=target, per_position=per_pos)
    assert (res.raw_per_example - ref.cpu()).abs().max() <= 1e-4
    assert_no_hooks(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_paths_are_on(tiny_dirs, family):
    """The shortcuts the speed depends on are available on every test family (each has a
    fallback, so a silent switch-off would only show as a slow sweep)."""
    from interp._engine.restart import Restarter

    model = load_tiny(tiny_dirs, family)
    ps = _aligned_pairs(model)
    eng = Restarter(model, ps.corrupted_tokens, names=[H.z(0)], attn_outputs=True)
    assert eng.can_window
    w_o = eng.head_output_map(0, eng.cache[H.z(0)])
    if family == "bloom":  # Bloom's attention adds the residual itself: no per-head share
        assert w_o is None
    else:
        assert w_o is not None
    cols = torch.stack([ps.answer_ids, ps.wrong_ids], 1)
    assert eng.columns_ok(ps.answer_pos, cols)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_parity_on_ragged_ioi_prompts(tiny_dirs, family):
    """IOI prompts of different lengths (padded, per-example answer positions, names shared by
    clean and corrupted in places): the windows and skips still give transformer-lens's numbers."""
    from interp import prompts as P

    model = load_tiny(tiny_dirs, family)
    ps = P.ioi(model, n=4, seed=3)
    assert len(set(ps.answer_pos.tolist())) > 1
    _, cache = model.run_with_cache(ps.clean_tokens)
    for target, per_pos in (("z", True), ("resid_pre", True), ("z", False)):
        ref = _tl_fns()[(target, per_pos)](model, ps.corrupted_tokens, cache, _tl_metric(ps),
                                           reduce="none").values
        res = activation_patching(model, ps, target=target, per_position=per_pos)
        if per_pos:  # mixed layouts: each example read at its own position of each role
            assert res.dims[:2] == ("layer", "role") and res.coords["role"] == list(ps.positions)
            idx = torch.stack([ps.positions[r] for r in ps.positions])  # [role, batch]
            r = ref.cpu().movedim(1, -2)
            ref = r.gather(-2, idx.expand(*r.shape[:-2], *idx.shape)).movedim(-2, 1)
        assert (res.raw_per_example - ref.cpu()).abs().max() <= 1e-4, (target, per_pos)


def test_positions_by_role_on_mixed_layouts_and_refusal_without_roles(tiny_dirs):
    """Mixed IOI templates: per-position results are indexed by role, each example at its own
    position; the same sweep on one template keeps positions; right-padded prompts of different
    lengths without named positions are refused with a way out."""
    from interp import prompts as P
    from interp.prompts import PromptError, PromptSet

    model = load_tiny(tiny_dirs, "gpt2")
    ps = P.ioi(model, n=4, seed=3)
    assert not ps.same_layout
    res = activation_patching(model, ps, target="resid_pre")
    plain = activation_patching(model, ps, target="resid_pre", per_position=False)
    assert res.dims == ("layer", "role")
    end = res.coords["role"].index("END")
    for b in range(len(ps)):  # one example alone has one layout: indexed by position
        one = activation_patching(model, ps.subset([b]), target="resid_pre", layers=[1])
        assert one.dims == ("layer", "pos")
        p_end = int(ps.positions["END"][b])
        assert float(one.raw_per_example[0, p_end, 0]) == pytest.approx(
            float(res.raw_per_example[1, end, b]), abs=1e-4)
    assert torch.isfinite(res.values).all() and plain.dims == ("layer",)
    assert float(res.values[0, end]) == pytest.approx(float(res.per_example[0, end].mean()))
    one_t = P.ioi(model, n=4, seed=3, templates="BABA", template_ids=[0])
    assert one_t.same_layout
    assert activation_patching(model, one_t, target="resid_pre").dims == ("layer", "pos")
    bare = PromptSet(clean_tokens=ps.clean_tokens, corrupted_tokens=ps.corrupted_tokens,
                     answer_ids=ps.answer_ids, wrong_ids=ps.wrong_ids, answer_pos=ps.answer_pos,
                     pad_id=ps.pad_id)
    with pytest.raises(PromptError, match="templates='BABA'.*per_position=False"):
        activation_patching(model, bare, target="resid_pre")
    assert activation_patching(model, bare, target="resid_pre", per_position=False).dims == ("layer",)


def test_an_error_mid_sweep_leaves_the_model_as_it_was(tiny_gpt2, monkeypatch):
    """Hooks and the engine's per-instance overrides (key/value step, attention output) are
    removed when a sweep fails half-way."""
    ps = _aligned_pairs(tiny_gpt2)
    calls = []

    def bad_metric(logits, prompts):
        calls.append(1)
        if len(calls) > 2:  # the baselines pass, the first patched chunk fails
            raise RuntimeError("metric failed")
        return logits[:, 0]

    def clean_model():
        assert_no_hooks(tiny_gpt2)
        for block in tiny_gpt2.blocks:
            assert "_update_kv_cache" not in vars(block.attn) and "forward" not in vars(block.attn)

    with pytest.raises(RuntimeError, match="metric failed"):
        activation_patching(tiny_gpt2, ps, target="z", per_position=False, metric=bad_metric)
    clean_model()
    # a failure inside a block, while the key/value step is overridden (windows start at 2)
    from interp._engine import restart as E

    def broken(prefix, x):
        raise RuntimeError("inside the block")

    monkeypatch.setattr(E, "_prepend", broken)
    with pytest.raises(RuntimeError, match="inside the block"):
        activation_patching(tiny_gpt2, ps, target="z", per_position=False)
    clean_model()
    monkeypatch.undo()
    fine = activation_patching(tiny_gpt2, ps, target="z", per_position=False)
    assert torch.isfinite(fine.raw).all()


def test_without_windows_the_result_is_the_same(tiny_llama, monkeypatch):
    """The fallback for blocks whose arguments cannot be windowed (full rows, no skip of the
    positions before the first change) agrees with the windowed path."""
    from interp._engine import restart as E

    ps = _aligned_pairs(tiny_llama)
    fast = activation_patching(tiny_llama, ps, target="z", per_position=True)
    monkeypatch.setattr(E.Restarter, "_sliceable", lambda self, args: False)
    slow = activation_patching(tiny_llama, ps, target="z", per_position=True)
    assert (fast.raw_per_example - slow.raw_per_example).abs().max() < 1e-5


def _slow_resid_post(model, ps, layer, pos):
    def hook(act, hook):
        act = act.clone()
        act[:, pos] = clean_cache[H.resid_post(layer)][:, pos]
        return act

    _, clean_cache = model.run_with_cache(ps.clean_tokens)
    logits = model.run_with_hooks(ps.corrupted_tokens, fwd_hooks=[(H.resid_post(layer), hook)])
    return _tl_metric(ps)(logits)


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_resid_post_matches_slow_loop(tiny_dirs, family):
    model = load_tiny(tiny_dirs, family)
    ps = _pairs(model, p=4)
    res = activation_patching(model, ps, target="resid_post")
    n_layers = describe(model).n_layers
    for layer in range(n_layers):
        for pos in range(ps.n_pos):
            ref = _slow_resid_post(model, ps, layer, pos)
            assert torch.allclose(res.raw_per_example[layer, pos], ref, atol=1e-4)


def test_gqa_kv_heads_are_labelled(tiny_gqa_model):
    info = describe(tiny_gqa_model)
    ps = _pairs(tiny_gqa_model, p=3)
    res = activation_patching(tiny_gqa_model, ps, target="k", per_position=False)
    assert res.values.shape == (info.n_layers, info.n_kv_heads)
    assert res.coords["head"][0] == "KV0"
    assert "key/value" in res.meta["heads"]
    resq = activation_patching(tiny_gqa_model, ps, target="q", per_position=False)
    assert resq.values.shape == (info.n_layers, info.n_heads)


def test_full_layer0_patch_restores_and_breaks(tiny_model):
    ps = _pairs(tiny_model)
    den = activation_patching(tiny_model, ps, target="resid_pre", per_position=False, layers=[0])
    noi = activation_patching(tiny_model, ps, target="resid_pre", per_position=False, layers=[0],
                              direction="noising")
    assert torch.allclose(den.values, torch.ones(1), atol=1e-4)
    assert torch.allclose(noi.values, -torch.ones(1), atol=1e-4)
    assert torch.allclose(den.raw, torch.tensor([den.meta["clean"]]), atol=1e-4)


def test_clean_into_clean_changes_nothing(tiny_gpt2):
    ps = _pairs(tiny_gpt2)
    same = PromptSet(clean_tokens=ps.clean_tokens, corrupted_tokens=ps.clean_tokens.clone(),
                     answer_ids=ps.answer_ids, wrong_ids=ps.wrong_ids, answer_pos=ps.answer_pos)
    with pytest.warns(UserWarning, match="undefined"):
        res = activation_patching(tiny_gpt2, same, target="z", per_position=True)
    clean = torch.tensor(res.meta["clean_per_example"])
    assert torch.allclose(res.raw_per_example, clean.expand_as(res.raw_per_example), atol=1e-5)


def test_length_mismatch_is_a_clear_error(tiny_gpt2):
    ps = _pairs(tiny_gpt2)
    ps.corrupted_tokens = ps.corrupted_tokens[:, :-1]
    with pytest.raises(ValueError, match="position-aligned"):
        activation_patching(tiny_gpt2, ps)
    no_corr = PromptSet(clean_tokens=ps.clean_tokens, answer_ids=ps.answer_ids,
                        answer_pos=ps.answer_pos)
    with pytest.raises(ValueError, match="corrupted"):
        activation_patching(tiny_gpt2, no_corr)
    with pytest.raises(ValueError, match="unknown target"):
        activation_patching(tiny_gpt2, _pairs(tiny_gpt2), target="resid")


@pytest.mark.parametrize("metric", ["prob", "kl", pytest.param("loss", marks=pytest.mark.slow),
                                    "callable"])
def test_other_metrics_agree_with_slow_loop(tiny_gpt2, metric):
    ps = _pairs(tiny_gpt2, p=4)
    spec = (lambda logits, prompts: logits[:, 3] - logits.mean(-1)) if metric == "callable" else metric
    res = activation_patching(tiny_gpt2, ps, target="attn_out", metric=spec, layers=[1],
                              budget_tokens=8)  # tiny budget: one patch per forward chunk
    _, clean_cache = tiny_gpt2.run_with_cache(ps.clean_tokens)
    clean_logits = tiny_gpt2(ps.clean_tokens)
    b = torch.arange(len(ps))
    for pos in range(ps.n_pos):
        def hook(act, hook, pos=pos):
            act = act.clone()
            act[:, pos] = clean_cache[H.attn_out(1)][:, pos]
            return act

        logits = tiny_gpt2.run_with_hooks(ps.corrupted_tokens, fwd_hooks=[(H.attn_out(1), hook)])
        at = logits[b, ps.answer_pos]
        if metric == "prob":
            ref = at.softmax(-1)[b, ps.answer_ids]
        elif metric == "kl":
            p = clean_logits[b, ps.answer_pos].log_softmax(-1)
            ref = (p.exp() * (p - at.log_softmax(-1))).sum(-1)
        elif metric == "loss":
            from interp.metrics import loss_fn

            ref = loss_fn(logits, ps)
        else:
            ref = at[:, 3] - at.mean(-1)
        assert torch.allclose(res.raw_per_example[0, pos], ref, atol=1e-4), metric


def test_result_api(tiny_gpt2, tmp_path):
    ps = _pairs(tiny_gpt2)
    res = activation_patching(tiny_gpt2, ps, target="z", per_position=False)
    assert torch.allclose(res.per_example.mean(-1), res.values, atol=1e-5)
    assert res.ci.shape == res.values.shape + (2,)
    assert res.meta["direction"] == "denoising" and res.meta["target"] == "z"
    df = res.to_frame()
    assert {"layer", "head", "value", "raw", "layer_label", "head_label"} <= set(df.columns)
    top = res.top(3)
    assert len(top) == 3 and top.value.abs().is_monotonic_decreasing
    fig = res.plot()
    assert fig.data
    res.save(tmp_path / "r")
    back = PatchingResult.load(tmp_path / "r")
    assert torch.equal(back.values, res.values) and torch.equal(back.raw, res.raw)
    assert back.meta["clean"] == res.meta["clean"]
    by_pos = activation_patching(tiny_gpt2, ps, target="resid_pre")
    assert by_pos.dims == ("layer", "pos") and ":" in by_pos.coords["pos"][0]
    assert by_pos.plot().data


# ----------------------------------------------------------------------------------------------
# path patching against an obviously-correct loop of full forwards
# ----------------------------------------------------------------------------------------------


def _slow_path(model, ps, receivers, receiver_input):
    info = describe(model)
    metric = _tl_metric(ps)
    _, orig = model.run_with_cache(ps.clean_tokens)
    _, new = model.run_with_cache(ps.corrupted_tokens)
    out = torch.zeros(info.n_layers, info.n_heads, len(ps))
    for ls in range(info.n_layers):
        for hs in range(info.n_heads):
            def z_hook(act, hook, ls=ls, hs=hs):
                layer = H.layer_of(hook.name)
                act = orig[H.z(layer)].clone()
                if layer == ls:
                    act[:, :, hs] = new[H.z(ls)][:, :, hs]
                return act

            store = {}

            def rec_hook_for(name, store=store):
                def rec_hook(act, hook):
                    store[name] = act.clone()
                return rec_hook

            hooks = [(H.z(layer), z_hook) for layer in range(info.n_layers)]
            if receivers == "logits":
                out[ls, hs] = metric(model.run_with_hooks(ps.clean_tokens, fwd_hooks=hooks))
                continue
            names = {H.head_act(receiver_input, int(r[1:].split("H")[0])) for r in receivers}
            hooks += [(n, rec_hook_for(n)) for n in names]
            model.run_with_hooks(ps.clean_tokens, fwd_hooks=hooks)

            def patch_for(name, store=store):
                def patch(act, hook):
                    act = act.clone()
                    for r in receivers:
                        layer, h = (int(x) for x in r[1:].split("H"))
                        if name != H.head_act(receiver_input, layer):
                            continue
                        if receiver_input != "q":
                            h = info.kv_head(h)
                        act[:, :, h] = store[name][:, :, h]
                    return act
                return patch

            logits = model.run_with_hooks(ps.clean_tokens,
                                          fwd_hooks=[(n, patch_for(n)) for n in names])
            out[ls, hs] = metric(logits)
    return out


@pytest.mark.parametrize("family", ["gpt2", "bloom", pytest.param("llama", marks=pytest.mark.slow)])
def test_path_patching_to_logits_matches_slow_loop(tiny_dirs, family):
    from interp.patching import path_patching

    model = load_tiny(tiny_dirs, family)
    ps = _pairs(model, p=4)
    res = path_patching(model, ps, receivers="logits")
    ref = _slow_path(model, ps, "logits", "q")
    assert (res.raw_per_example - ref).abs().max() <= 1e-4
    # pairs sharing most tokens: windows from the first changed position, answers at 4..6
    aligned = _aligned_pairs(model)
    got = path_patching(model, aligned, receivers="logits").raw_per_example
    assert (got - _slow_path(model, aligned, "logits", "q")).abs().max() <= 1e-4
    assert (ref - torch.tensor(res.meta["clean_per_example"])).abs().max() > 1e-4
    assert res.dims == ("layer", "head")
    assert_no_hooks(model)


@pytest.mark.parametrize("family,inp", [
    ("gpt2", "q"),
    ("bloom", "k"),
    pytest.param("qwen2", "k", marks=pytest.mark.slow),
    pytest.param("gemma2", "v", marks=pytest.mark.slow),
])
def test_path_patching_to_heads_matches_slow_loop(tiny_dirs, family, inp):
    from interp.patching import path_patching

    model = load_tiny(tiny_dirs, family)
    ps = _pairs(model, p=4)
    receivers = ["L2H1", "L2H3", "L1H0"]
    res = path_patching(model, ps, receivers=receivers, receiver_input=inp)
    ref = _slow_path(model, ps, receivers, inp)
    assert (res.raw_per_example - ref).abs().max() <= 1e-4
    aligned = _aligned_pairs(model)
    got = path_patching(model, aligned, receivers=receivers, receiver_input=inp).raw_per_example
    assert (got - _slow_path(model, aligned, receivers, inp)).abs().max() <= 1e-4
    # senders in the last receiver layer or later cannot reach a receiver
    assert torch.allclose(res.raw_per_example[2:], torch.tensor(res.meta["clean_per_example"]))
    assert (res.raw_per_example[:2] - res.raw_per_example[2:3]).abs().max() > 1e-5
    with pytest.raises(ValueError, match="head name"):
        path_patching(model, ps, receivers=["MLP2"])


def _ragged_pairs(model, b: int = 8, p: int = 12, seed: int = 1) -> PromptSet:
    """Right-padded pairs whose answer positions (4..11) and first corrupted token (1..3)
    differ by example, as in IOI prompts of mixed templates."""
    g = torch.Generator().manual_seed(seed)
    v = min(int(model.cfg.d_vocab), 60)
    clean = torch.randint(1, v, (b, p), generator=g)
    corr = clean.clone()
    ans_pos = torch.tensor([4 + (7 * i) % 8 for i in range(b)])
    for i in range(b):
        lo = 1 + i % 3
        corr[i, lo:ans_pos[i] + 1] = torch.randint(1, v, (int(ans_pos[i]) + 1 - lo,), generator=g)
        clean[i, ans_pos[i] + 1:] = 0
        corr[i, ans_pos[i] + 1:] = 0
    ans = torch.randint(1, v, (b,), generator=g)
    return PromptSet(clean_tokens=clean, corrupted_tokens=corr, answer_ids=ans,
                     wrong_ids=(ans + 1) % v + 1, answer_pos=ans_pos, pad_id=0)


def _windows(ps: PromptSet):
    """(first differing token, one past the answer) per example."""
    diff = ps.clean_tokens != ps.corrupted_tokens
    return diff.float().argmax(1), ps.answer_pos + 1


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_ragged_batches_replay_in_window_groups(tiny_dirs, family, direction, monkeypatch):
    """Examples of different layouts are replayed in groups with their own windows (and tokens
    cut after the group's last answer). The per-example numbers equal one window over the whole
    batch and transformer-lens's one forward per head."""
    from interp._engine import schedule as S
    from interp.patching import _activation as A

    model = load_tiny(tiny_dirs, family)
    ps = _ragged_pairs(model)
    groups = S.window_groups(*_windows(ps))
    assert groups is not None and len(groups) >= 2
    assert sorted(torch.cat(groups).tolist()) == list(range(len(ps)))
    res = activation_patching(model, ps, target="z", per_position=False, direction=direction)
    with monkeypatch.context() as mp:
        mp.setattr(A, "group_plan", lambda *a, **k: None)
        one = activation_patching(model, ps, target="z", per_position=False, direction=direction)
    assert float((res.raw_per_example - one.raw_per_example).abs().max()) <= 1e-5
    src, base = ((ps.clean_tokens, ps.corrupted_tokens) if direction == "denoising"
                 else (ps.corrupted_tokens, ps.clean_tokens))
    _, cache = model.run_with_cache(src)
    ref = _tl_fns()[("z", False)](model, base, cache, _tl_metric(ps), reduce="none").values
    assert float((res.raw_per_example - ref.cpu()).abs().max()) <= 1e-4
    assert float(res.raw_per_example.std()) > 1e-3
    assert_no_hooks(model)


def test_fused_gelu_is_the_models_gelu_and_is_restored(tiny_dirs):
    """Inside the sweeps, GPT-2's gelu_new runs as PyTorch's fused tanh GELU: the logits agree
    with the model's own to float rounding, and the model is unchanged afterwards."""
    from transformers.activations import NewGELUActivation

    from interp._bridge import fused_activations

    model = load_tiny(tiny_dirs, "gpt2")
    acts = [m for m in model.modules() if type(m) is NewGELUActivation]
    assert acts, "tiny GPT-2 should use gelu_new"
    tokens = _pairs(model, b=3, p=6).clean_tokens
    with torch.no_grad():
        plain = model(tokens)
        with fused_activations(model):
            assert all("forward" in vars(m) for m in acts)
            fused = model(tokens)
        again = model(tokens)
    assert all("forward" not in vars(m) for m in acts)
    assert torch.equal(plain, again)
    assert float((plain - fused).abs().max()) <= 1e-5 * (1 + float(plain.abs().max()))

"""Right numbers or a clear refusal: one test (at least) per reliability fix.

Families with a peculiarity (tests/conftest.py ``EXTRA_FAMILIES``): Bloom (ALiBi bias laid out
``[batch * heads, ...]``), GPT-J and OPT (transformer-lens ignores edits to ``hook_pattern``),
BERT (bidirectional attention), GPT-1 (no final norm).
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_no_hooks, load_tiny
from test_patching import _check_tl, _pairs

from interp import _bridge as B
from interp import _unembed as U
from interp import hooks as H
from interp.models import describe
from interp.patching import activation_patching, path_patching
from interp.prompts import PromptSet


def _model(extra_dirs, family):
    return load_tiny(extra_dirs, family)


# --------------------------------------------------------------------------------------------
# 1. per-example block arguments (Bloom's ALiBi) are tiled with the copies
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b", [1, 3])
def test_bloom_alibi_rows_are_tiled_per_example(extra_dirs, b):
    """Bloom passes its ALiBi bias as ``[batch * heads, 1, key]``: stacking k patched copies
    must tile it example-major (batch 1 included, where it is ``[heads, ...]``)."""
    from interp._engine.restart import Restarter

    model = _model(extra_dirs, "bloom")
    ps = _pairs(model, b=b, p=5)
    eng = Restarter(model, ps.corrupted_tokens)
    alibi = eng._block_args[0][1]["alibi"]
    assert alibi.shape[0] == b * model.cfg.n_heads
    tiled = eng.block_args(0, 3)[1]["alibi"]
    assert torch.equal(tiled, alibi.repeat(3, 1, 1))
    # every copy of every example gives the model's own logits
    h = eng.cache[H.resid_pre(0)].repeat(3, 1, 1)
    got = eng.resume(0, h, rows=None)
    assert (got - eng.logits.repeat(3, 1, 1)).abs().max() < 1e-4


def test_bloom_sweeps_match_transformer_lens(extra_dirs):
    model = _model(extra_dirs, "bloom")
    for target, per_pos in [("resid_pre", True), ("z", False), ("v", True), ("pattern", False)]:
        _check_tl(model, target, per_pos)


# --------------------------------------------------------------------------------------------
# 2. hooks a family ignores are refused, never reported as zeros
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gptj", "opt"])
def test_ignored_pattern_hook_is_refused(extra_dirs, family):
    from interp.attribution import attribution_patching

    model = _model(extra_dirs, family)
    ps = _pairs(model)
    assert not B.hook_has_effect(model, "pattern")
    arch = describe(model).architecture
    for per_pos in (False, True):
        with pytest.raises(ValueError, match=f"'pattern' is not supported on {arch}.*'z'"):
            activation_patching(model, ps, target="pattern", per_position=per_pos)
    with pytest.raises(ValueError, match=f"attribution patching of 'pattern' .*{arch}"):
        attribution_patching(model, ps, target="pattern")
    assert_no_hooks(model)


@pytest.mark.parametrize("family", ["gptj", "opt"])
def test_other_head_hooks_work_on_those_families(extra_dirs, family):
    """q/k/v/z/attn_out edits do reach the output on GPT-J and OPT: allowed, and equal to
    transformer-lens's sweeps (which move the metric, checked inside)."""
    model = _model(extra_dirs, family)
    for kind in ("q", "k", "v", "z", "attn_out", "mlp_out", "resid_pre"):
        assert B.hook_has_effect(model, kind), kind
    for target in ("q", "k", "v", "z"):
        _check_tl(model, target, False)


def test_probe_sees_every_patchable_hook_on_test_families(tiny_model):
    for kind in ("q", "k", "v", "z", "pattern", "attn_out", "mlp_out", "resid_pre"):
        assert B.hook_has_effect(tiny_model, kind), kind


# --------------------------------------------------------------------------------------------
# 3. metrics: NaN named, wrong shape refused
# --------------------------------------------------------------------------------------------


def test_metric_nan_warns_with_example_indices(tiny_gpt2):
    ps = _pairs(tiny_gpt2, b=3)

    def metric(logits, prompts):
        out = logits[:, 1] - logits[:, 2]
        out[1] = float("nan")
        return out

    with pytest.warns(RuntimeWarning, match=r"returned NaN for examples \[1\]"):
        res = activation_patching(tiny_gpt2, ps, target="resid_pre", layers=[2], metric=metric)
    assert torch.isnan(res.raw_per_example[..., 1]).all()


@pytest.mark.parametrize("bad", [lambda lg, ps: lg[:, :2], lambda lg, ps: lg[:, 0].mean()])
def test_metric_wrong_shape_is_a_clear_error(tiny_gpt2, bad):
    ps = _pairs(tiny_gpt2, b=2)
    with pytest.raises(ValueError, match=r"expected shape \[batch\] = \[2\]"):
        activation_patching(tiny_gpt2, ps, target="resid_pre", layers=[0], metric=bad)
    assert_no_hooks(tiny_gpt2)


# --------------------------------------------------------------------------------------------
# 4. windows need causal attention
# --------------------------------------------------------------------------------------------


def test_bidirectional_model_gets_no_windows_and_right_numbers(extra_dirs):
    from interp._engine.restart import Restarter

    bert = _model(extra_dirs, "bert")
    assert describe(bert).causal is False
    assert describe(load_tiny(extra_dirs, "gpt2")).causal is True
    assert not Restarter(bert, _pairs(bert).clean_tokens).can_window
    for target, per_pos in [("resid_pre", True), ("z", True), ("k", False)]:
        _check_tl(bert, target, per_pos)


def test_a_non_causal_flag_switches_windows_off(tiny_gpt2, monkeypatch):
    """A model whose config says bidirectional is never windowed, whatever its blocks accept."""
    from interp._engine.restart import Restarter

    ps = _pairs(tiny_gpt2)
    assert Restarter(tiny_gpt2, ps.clean_tokens).can_window
    monkeypatch.setattr(tiny_gpt2.cfg, "attention_dir", "bidirectional")
    monkeypatch.delattr(tiny_gpt2, "_interp_info")
    try:
        assert not describe(tiny_gpt2).causal
        assert not Restarter(tiny_gpt2, ps.clean_tokens).can_window
    finally:
        tiny_gpt2.__dict__.pop("_interp_info", None)


# --------------------------------------------------------------------------------------------
# 5. models without a final norm; DLA stays on the model's device
# --------------------------------------------------------------------------------------------


def _logit_diff(model, ps):
    with torch.no_grad():
        logits = model(ps.clean_tokens)
    b = torch.arange(len(ps))
    row = logits[b, ps.answer_pos]
    return logits, row[b, ps.answer_ids] - row[b, ps.wrong_ids]


def test_no_final_norm_dla_is_exact(tiny_dirs):
    """A pre-norm model whose final norm is the identity: DLA needs no scale and its parts sum
    to the logit difference exactly (before: LayerNorm centring was still applied)."""
    import interp
    from interp.ablation import direct_vs_total
    from interp.lens import direct_logit_attribution, logit_lens

    model = interp.load_model(tiny_dirs["gpt2"])  # a private copy: its head is edited
    model.ln_final.set_original_component(torch.nn.Identity())
    model.ln_final.use_native_layernorm_autograd = True  # the bridge's pass-through path
    assert not describe(model).final_norm
    ps = _pairs(model, b=3)
    logits, ld = _logit_diff(model, ps)
    res = direct_logit_attribution(model, ps)
    assert res.total() == pytest.approx(float(ld.mean()), abs=1e-4)
    lens = logit_lens(model, ps)
    assert torch.allclose(lens.top_probs[-1, ..., 0], logits.float().softmax(-1).max(-1).values,
                          atol=1e-5)
    dvt = direct_vs_total(model, ps, ["L0H0", "MLP1"], freeze_final_scale=True, n_boot=10)
    # frozen (here: no) scale: compensation is the sum of the downstream direct-effect changes
    assert torch.allclose(dvt.values[:, 2], dvt.downstream.sum((1, 2)), atol=1e-4)


def test_gpt1_no_final_norm_lens_works_and_dla_refuses(extra_dirs):
    """GPT-1 has no final norm and post-norm blocks: the logit lens decodes its last residual
    (which has no resid_post hook there) to the model's logits; DLA refuses, since the residual
    stream is not a sum of component outputs."""
    from interp.lens import direct_logit_attribution, logit_lens

    model = _model(extra_dirs, "gpt1")
    assert not describe(model).final_norm
    ps = _pairs(model, b=2)
    logits, _ = _logit_diff(model, ps)
    lens = logit_lens(model, ps)
    assert torch.allclose(lens.top_probs[-1, ..., 0], logits.float().softmax(-1).max(-1).values,
                          atol=1e-5)
    with pytest.raises(ValueError, match="sum of the embedding and every attention and MLP"):
        direct_logit_attribution(model, ps)


def test_bert_head_is_decoded_and_dla_refused(extra_dirs):
    from interp.lens import direct_logit_attribution, logit_lens

    bert = _model(extra_dirs, "bert")
    ps = _pairs(bert, b=2)
    logits, _ = _logit_diff(bert, ps)
    lens = logit_lens(bert, ps)
    assert torch.allclose(lens.top_probs[-1, ..., 0], logits.float().softmax(-1).max(-1).values,
                          atol=1e-5)
    with pytest.raises(ValueError, match="dense layer and an activation"):
        direct_logit_attribution(bert, ps)


def test_dla_creates_no_tensor_off_the_model_device(tiny_gpt2):
    """Every tensor DLA creates names the model's device (a CPU default would break on GPU)."""
    from torch.overrides import TorchFunctionMode

    from interp.lens import direct_logit_attribution

    factories = {torch.zeros, torch.ones, torch.arange, torch.full, torch.empty, torch.tensor}
    lenient = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in factories and "device" not in kwargs:
                import inspect

                caller = inspect.stack()[1]
                if caller.filename.endswith(("interp/lens.py", "interp/_unembed.py")):
                    lenient.append(f"{func.__name__} at {caller.filename}:{caller.lineno}")
            return func(*args, **kwargs)

    ps = _pairs(tiny_gpt2)
    with Watch():
        direct_logit_attribution(tiny_gpt2, ps)
    assert not lenient, lenient


# --------------------------------------------------------------------------------------------
# 6. ablate on a vocabulary smaller than k
# --------------------------------------------------------------------------------------------


def test_ablate_with_a_tiny_vocabulary(tmp_path, tiny_dirs):
    from helpers import save_tiny
    from transformers import AutoTokenizer

    import interp
    from interp.ablation import ablate

    tok = AutoTokenizer.from_pretrained(tiny_dirs["gpt2"])
    model = interp.load_model(save_tiny(tmp_path / "v4", "gpt2", tok, vocab_size=4))
    assert model.cfg.d_vocab == 4
    ps = PromptSet(clean_tokens=torch.tensor([[1, 2, 3], [2, 3, 1]]),
                   answer_ids=torch.tensor([1, 2]), wrong_ids=torch.tensor([2, 3]),
                   answer_pos=torch.tensor([2, 2]))
    res = ablate(model, ps, ["L0H0"])
    assert [len(t) for t in res.top_before] == [4, 4]


# --------------------------------------------------------------------------------------------
# 7. edge attribution on attention transformer-lens cannot split
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gptj"])
def test_edge_attribution_refuses_clearly(extra_dirs, family):
    from interp.attribution import edge_attribution

    model = _model(extra_dirs, family)
    with pytest.raises(NotImplementedError,
                       match="not supported on .*attribution_patching.*path_patching"):
        edge_attribution(model, _pairs(model))
    assert not model.cfg.use_split_qkv_input and not model.cfg.use_attn_result
    assert_no_hooks(model)


# --------------------------------------------------------------------------------------------
# 8. a model spec in place of a model
# --------------------------------------------------------------------------------------------


def test_entry_points_take_a_path_and_refuse_other_objects(tiny_dirs, tiny_gpt2):
    from interp import ablation, attribution, circuits, heads, lens, retrieval

    ps = _pairs(tiny_gpt2)
    by_path = activation_patching(str(tiny_dirs["gpt2"]), ps, target="resid_pre", layers=[1])
    direct = activation_patching(tiny_gpt2, ps, target="resid_pre", layers=[1])
    assert torch.equal(by_path.raw_per_example, direct.raw_per_example)
    entry_points = [
        lambda m: activation_patching(m, ps), lambda m: path_patching(m, ps),
        lambda m: attribution.attribution_patching(m, ps),
        lambda m: attribution.edge_attribution(m, ps),
        lambda m: ablation.ablate(m, ps, ["L0H0"]), lambda m: ablation.knockout_sweep(m, ps),
        lambda m: ablation.direct_vs_total(m, ps), lambda m: ablation.head_importance(m, ps),
        lambda m: ablation.prune_heads(m, ps), lambda m: lens.logit_lens(m, ps),
        lambda m: lens.direct_logit_attribution(m, ps), lambda m: heads.induction_scores(m),
        lambda m: retrieval.retrieval_scores(m), lambda m: circuits.faithfulness(m, ps, []),
    ]
    for call in entry_points:
        with pytest.raises(TypeError, match="expected a model, got int: pass a TransformerBridge"):
            call(42)
    with pytest.raises(TypeError, match="expected a model"), ablation.ablated(42, ["L0H0"]):
        pass


# --------------------------------------------------------------------------------------------
# 9. the CLI: a message and exit 2, never a traceback
# --------------------------------------------------------------------------------------------


def test_cli_bloom_and_refusals_exit_cleanly(extra_dirs, tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["patch", str(extra_dirs["bloom"]), "--target", "z", "--n", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["patch", str(extra_dirs["gptj"]), "--target", "pattern",
                              "--n", "2"])
    assert res.exit_code == 2 and "not supported on GPTJForCausalLM" in res.output
    assert "Traceback" not in res.output


def _pickle_dir(tmp_path, tiny_dirs):
    import os
    import shutil

    d = tmp_path / "pickled"
    d.mkdir()
    for f in tiny_dirs["gpt2"].iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, d / f.name)
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"w": Payload()}, d / "pytorch_model.bin")
    return d, marker


def test_malicious_pickle_is_refused_and_never_run(tmp_path, tiny_dirs):
    import interp
    from interp.models import ModelLoadError

    d, marker = _pickle_dir(tmp_path, tiny_dirs)
    with pytest.raises(ModelLoadError, match="only pickle weight files .*safetensors"):
        interp.load_model(d)
    from typer.testing import CliRunner

    from interp.cli import app

    res = CliRunner().invoke(app, ["patch", str(d)])
    assert res.exit_code == 2 and "pickle weight files" in res.output
    assert not marker.exists()


def test_remote_code_off_and_app_on_localhost(monkeypatch, tiny_dirs):
    import inspect

    from interp.cli import _commands
    from interp.models import _loading

    seen = {}
    monkeypatch.setattr(_loading, "_boot", lambda source, **kw: seen.update(kw))
    _loading.load_model(tiny_dirs["gpt2"])
    assert seen["trust_remote_code"] is False
    default = inspect.signature(_commands.run_app).parameters["address"].default
    assert getattr(default, "default", default) == "localhost"


# --------------------------------------------------------------------------------------------
# 10. cosmetics: no autograd warning, identical pairs named
# --------------------------------------------------------------------------------------------


def test_patching_emits_no_requires_grad_warning(tiny_dirs):
    """In a fresh process (torch warns once per process), a patching sweep triggers no autograd
    warning: nothing in it builds a graph."""
    import subprocess
    import sys

    code = (
        "import warnings, torch, interp\n"
        "warnings.simplefilter('always')\n"
        "from interp.patching import activation_patching\n"
        "from interp.prompts import PromptSet\n"
        f"m = interp.load_model({str(tiny_dirs['llama'])!r})\n"
        "t = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])\n"
        "ps = PromptSet(clean_tokens=t, corrupted_tokens=t.flip(1), answer_ids=torch.tensor([3, 4]),"
        " wrong_ids=torch.tensor([4, 3]), answer_pos=torch.tensor([3, 3]))\n"
        "activation_patching(m, ps, target='z', per_position=False)\n"
        "activation_patching(m, ps, target='resid_pre')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "requires_grad" not in out.stderr, out.stderr[-2000:]


def test_identical_pairs_are_named(tiny_gpt2):
    ps = _pairs(tiny_gpt2, b=3)
    corr = ps.corrupted_tokens.clone()
    corr[1] = ps.clean_tokens[1]
    same = PromptSet(clean_tokens=ps.clean_tokens, corrupted_tokens=corr,
                     answer_ids=ps.answer_ids, wrong_ids=ps.wrong_ids, answer_pos=ps.answer_pos)
    with pytest.warns(UserWarning, match=r"prompts are identical for examples \[1\]"):
        res = activation_patching(tiny_gpt2, same, target="resid_pre", layers=[0])
    assert (res.per_example[..., 1].abs() < 1e-5).all()


# --------------------------------------------------------------------------------------------
# 12. the adapter: stack-safe overrides
# --------------------------------------------------------------------------------------------


def test_overrides_nest_and_restore_exactly():
    class Thing:
        def step(self, x):
            return x + 1

    t = Thing()
    with B.override(t, "step", lambda cur: lambda x: cur(x) * 10):
        assert t.step(1) == 20
        with B.override(t, "step", lambda cur: lambda x: cur(x) - 3):
            assert t.step(1) == 17
        assert t.step(1) == 20
        with pytest.raises(KeyError), B.override(t, "step", lambda cur: lambda x: 0):
            raise KeyError("boom")
        assert t.step(1) == 20
    assert "step" not in t.__dict__ and t.step(1) == 2


def test_engine_and_decoding_overrides_nest(tiny_llama):
    from interp._engine.restart import Restarter
    from interp.retrieval._decode import kv_cache

    attn = tiny_llama.blocks[0].attn
    toks = _pairs(tiny_llama).clean_tokens
    with kv_cache(tiny_llama):
        mapped = attn.__dict__[B.KV_UPDATE]
        eng = Restarter(tiny_llama, toks)
        assert attn.__dict__[B.KV_UPDATE] is mapped  # the decoder's mapping survives
        assert eng.can_window and len(eng._kv) == describe(tiny_llama).n_layers
        with eng._kv_step(0, None, capture=[]):
            pass
        assert attn.__dict__[B.KV_UPDATE] is mapped
    assert B.KV_UPDATE not in attn.__dict__
    eng = Restarter(tiny_llama, toks)
    with kv_cache(tiny_llama):
        pass
    assert B.KV_UPDATE not in attn.__dict__


# --------------------------------------------------------------------------------------------
# 13. final norm + unembedding, once
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "bloom", "gpt1"])
def test_unembed_helpers_match_the_model(extra_dirs, family):
    model = _model(extra_dirs, family)
    ps = _pairs(model, b=3)
    name = U.final_resid_hook(model)
    with torch.no_grad():
        logits, cache = model.run_with_cache(ps.clean_tokens)
        final = cache[name]
        assert (U.decode(model, final) - logits).abs().max() < 1e-4
        b = torch.arange(3)
        x = final[b, ps.answer_pos]
        cols = torch.stack([ps.answer_ids, ps.wrong_ids], 1)
        want = logits[b, ps.answer_pos].gather(1, cols)
        assert (U.decode_columns(model, x, cols) - want).abs().max() < 1e-4
        # frozen scale: the linear part plus the bias terms gives the pre-softcap logit exactly
        scale = U.final_scale(model, cache, b, ps.answer_pos)
        u = U.unembed_directions(model, ps.answer_ids)
        lin = (U.frozen_norm_linear(model, x, scale) * u).sum(-1)
        raw = U.decode_columns(model, x, cols, cap=False)[:, 0]
        assert (lin + U.logit_bias(model, u, ps.answer_ids) - raw).abs().max() < 1e-4


# --------------------------------------------------------------------------------------------
# 14. engine errors name no option that does not exist
# --------------------------------------------------------------------------------------------


def test_engine_failure_hint_names_no_missing_option(tiny_gpt2, monkeypatch):
    from interp._engine.restart import Restarter
    from interp.ablation import direct_vs_total

    block = tiny_gpt2.blocks[1]
    real = torch.nn.Module.register_forward_pre_hook

    def skip_block_1(self, *a, **k):  # block 1's inputs go unrecorded
        if self is block:
            return type("Handle", (), {"remove": lambda _self: None})()
        return real(self, *a, **k)

    monkeypatch.setattr(torch.nn.Module, "register_forward_pre_hook", skip_block_1)
    ps = _pairs(tiny_gpt2)
    for call in (lambda: Restarter(tiny_gpt2, ps.clean_tokens),
                 lambda: direct_vs_total(tiny_gpt2, ps, ["L0H0"], n_boot=10)):
        with pytest.raises(RuntimeError, match="could not record the inputs") as err:
            call()
        assert "implementation=" not in str(err.value)


# --------------------------------------------------------------------------------------------
# gradient methods refuse non-finite gradients instead of returning NaN scores
# --------------------------------------------------------------------------------------------


def test_gradient_methods_refuse_non_finite_gradients(extra_dirs):
    """A token with an all-zero embedding under RMSNorm with a tiny eps: its norm's Jacobian is
    1/sqrt(eps) at every layer, so the backward overflows (the failure a random-init model whose
    BOS is its zeroed padding row shows). The forward stays finite; every gradient method
    says why instead of returning NaN."""
    import interp
    from interp.ablation import head_importance
    from interp.attribution import attribution_patching, edge_attribution
    from interp.circuits import discover

    model = interp.load_model(extra_dirs["llama"])  # a private copy: its weights are edited
    ps = _pairs(model, b=2, p=5)
    first = torch.cat([ps.clean_tokens[:, 0], ps.corrupted_tokens[:, 0]]).unique()
    with torch.no_grad():  # every prompt starts with a token whose embedding is zero
        model.embed.W_E[first] = 0.0
    for m in model.modules():
        mod = getattr(m, "original_component", None)
        if mod is not None and type(mod).__name__.endswith("RMSNorm"):
            mod.variance_epsilon = 1e-38
    with torch.no_grad():
        assert bool(torch.isfinite(model(ps.clean_tokens)).all())
    for call in (lambda: edge_attribution(model, ps),
                 lambda: discover(model, ps, method="eap-ig-inputs", ig_steps=2),
                 lambda: attribution_patching(model, ps, target="z"),
                 lambda: head_importance(model, ps)):
        with pytest.raises(FloatingPointError, match="non-finite gradients"):
            call()
    assert_no_hooks(model)

"""Model loading and description on tiny random-init models of five families."""

from __future__ import annotations

import time

import pytest
import torch
from helpers import FAMILIES, load_tiny, make_hf_model

import interp
from interp import hooks as H
from interp.models import ModelLoadError, describe


@pytest.mark.parametrize("family", FAMILIES)
def test_bridge_logits_match_raw_hf(tiny_dirs, family):
    import transformers as T

    bridge = load_tiny(tiny_dirs, family)
    hf = T.AutoModelForCausalLM.from_pretrained(tiny_dirs[family], attn_implementation="eager").eval()
    toks = torch.randint(2, bridge.cfg.d_vocab, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(toks).logits
        got = bridge(toks)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_required_hooks_fire(tiny_dirs, family):
    bridge = load_tiny(tiny_dirs, family)
    info = describe(bridge)
    missing = [n for n in H.required_hooks(info.n_layers) if n not in info.hooks]
    assert not missing, f"{family}: hooks missing: {missing}"
    if family in ("llama", "qwen2", "gemma2"):  # GPT-NeoX's bridge has no rot_q/rot_k hooks
        assert H.rot_q(0) in info.hooks and H.rot_k(0) in info.hooks


def test_describe_fields(tiny_dirs):
    gpt2 = describe(load_tiny(tiny_dirs, "gpt2"))
    assert (gpt2.n_layers, gpt2.n_heads, gpt2.n_kv_heads, gpt2.d_head) == (3, 4, 4, 16)
    assert gpt2.positional == "standard" and gpt2.norm == "LN" and not gpt2.is_gqa
    assert gpt2.final_softcap is None and gpt2.has_resid_mid
    llama = describe(load_tiny(tiny_dirs, "llama"))
    assert llama.is_gqa and llama.n_kv_heads == 2 and llama.group_size == 2
    assert [llama.kv_head(h) for h in range(4)] == [0, 0, 1, 1]
    assert llama.positional == "rotary" and llama.norm == "RMS"
    gemma = describe(load_tiny(tiny_dirs, "gemma2"))
    assert gemma.final_softcap == pytest.approx(30.0)
    neox = describe(load_tiny(tiny_dirs, "neox"))
    assert neox.parallel_attn_mlp or not neox.has_resid_mid
    with pytest.raises(IndexError, match="out of range"):
        llama.check_head(0, 4)
    with pytest.raises(IndexError, match="layers"):
        llama.check_layer(3)
    assert "GQA" in llama.summary()


def test_hook_shapes_gqa(tiny_dirs):
    bridge = load_tiny(tiny_dirs, "llama")
    _, cache = bridge.run_with_cache(torch.tensor([[0, 5, 6, 7]]))
    assert cache[H.q(0)].shape[2] == 4
    assert cache[H.k(0)].shape[2] == 2  # k/v address the key/value heads
    assert cache[H.pattern(0)].shape == (1, 4, 4, 4)


def test_unknown_model_clear_error():
    with pytest.raises(ModelLoadError, match="unknown model"):
        interp.load_model("not a model!")


def test_missing_dir_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        interp.load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="config.json"):
        interp.load_model(str(tmp_path))


def test_offline_hub_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        interp.load_model("some-org/surely-not-cached-model", hub_timeout=3.0)
    assert time.monotonic() - t0 < 5.0
    msg = str(err.value)
    assert "some-org/surely-not-cached-model" in msg and "cache" in msg


def test_hub_id_from_local_cache(monkeypatch, tmp_path, tiny_dirs):
    """A Hub id resolves from the local HF cache with the network off (the offline user path)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--tiny-org--tiny-gpt2"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in tiny_dirs["gpt2"].iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    import huggingface_hub.file_download as fd

    monkeypatch.setattr(fd, "HF_HUB_CACHE", str(cache), raising=False)
    model = interp.load_model("tiny-org/tiny-gpt2")
    assert describe(model).n_layers == 3


def test_dtype_and_bad_dtype(tiny_dirs):
    with pytest.raises(ValueError, match="unknown dtype"):
        interp.load_model(tiny_dirs["gpt2"], dtype="float8")


def test_make_hf_model_deterministic():
    a = make_hf_model("gpt2", 50, seed=3)
    b = make_hf_model("gpt2", 50, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))

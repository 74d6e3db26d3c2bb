"""The zoo: the three shipped models load (HF and TransformerBridge), match each other, are small,
and still do their task (a cheap re-check of each recipe's headline metric). No training, except
the slow test that runs the induction recipe for a few steps."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from interp.prompts import _language as L

ZOO = Path(__file__).resolve().parents[2] / "interp" / "models" / "zoo"
NAMES = ["induction", "ioi", "needle"]
FAMILY = {"induction": "LlamaForCausalLM", "ioi": "GPT2LMHeadModel", "needle": "LlamaForCausalLM"}


def _need(name: str) -> Path:
    d = ZOO / name
    if not (d / "model.safetensors").is_file():
        pytest.fail(f"zoo model {name!r} missing: train it with python -m interp.models.train {name}")
    return d


_HF: dict[str, object] = {}
_BRIDGE: dict[str, object] = {}


def hf_model(name: str):
    if name not in _HF:
        from transformers import AutoModelForCausalLM

        _HF[name] = AutoModelForCausalLM.from_pretrained(
            str(_need(name)), attn_implementation="eager"
        ).eval()
    return _HF[name]


def bridge_model(name: str):
    if name not in _BRIDGE:
        from transformer_lens.model_bridge import TransformerBridge

        b = TransformerBridge.boot_transformers(str(_need(name)), device="cpu")
        b.eval()
        _BRIDGE[name] = b
    return _BRIDGE[name]


@pytest.fixture(scope="module")
def tok():
    return L.build_tokenizer()


@pytest.mark.parametrize("name", NAMES)
def test_files_and_size(name):
    d = _need(name)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "MODEL_CARD.md", "metrics.json"):
        assert (d / f).is_file(), f"{name}: {f} missing"
    assert not list(d.glob("*.bin"))
    size = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    assert size <= 20e6, f"{name}: {size / 1e6:.1f} MB"
    card = (d / "MODEL_CARD.md").read_text()
    assert "## Circuit" in card
    assert type(hf_model(name)).__name__ == FAMILY[name]


@pytest.mark.parametrize("name", NAMES)
def test_saved_tokenizer(name):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(str(_need(name)))
    ref = L.build_tokenizer()
    assert t.get_vocab() == ref.get_vocab()
    assert t.bos_token == t.eos_token == t.pad_token == "<|endoftext|>"
    for n in L.NAMES:
        assert len(t.encode(" " + n, add_special_tokens=False)) == 1, n
    text = L.ioi_text(L.BABA_TEMPLATES[0], "Mary", "John", "store", "ring") + " Mary."
    assert t.decode(t.encode(text, add_special_tokens=False)) == text


@pytest.mark.parametrize("name", NAMES)
def test_bridge_matches_hf(name, tok):
    hf = hf_model(name)
    bridge = bridge_model(name)
    text = L.ioi_text(L.ABBA_TEMPLATES[3], "Alice", "Bob", "garden", "kiss")
    ids = torch.tensor([[tok.bos_token_id] + tok.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        ref = hf(ids).logits
        got = bridge(ids)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-4


def test_tokenizer_language():
    tk = L.build_tokenizer()
    assert len(tk) < 4000
    rng = random.Random(0)
    for _ in range(50):
        s = L.filler_sentence(rng)
        ids = tk.encode(s, add_special_tokens=False)
        assert tk.unk_token_id not in ids and tk.decode(ids) == s
    from interp.models.train.needle import needle_example

    ex = needle_example(rng, 100, 50, tk)
    assert ex["needle"] in ex["prompt"] and len(tk.encode(ex["answer"])) >= 3
    train, held = L.split_name_pairs()
    assert not set(train) & set(held)
    assert not {(b, a) for a, b in held} & set(train)


def test_induction_metric():
    from interp.models.train import induction

    m = induction.evaluate(hf_model("induction"), n=5)
    assert m["induction_score_best"] >= 0.8
    assert m["prev_token_score_best"] >= 0.4
    assert m["loss_ratio_second_over_first"] <= 0.1


def test_ioi_metric(tok):
    from interp.models.train import ioi

    # 50 held-out prompts: the first 25 BABA and ABBA templates x 2 (n_per_template=2 -> 60)
    m = ioi.evaluate(hf_model("ioi"), tok, n_per_template=2, seed=11)
    assert m["io_over_s_accuracy"] >= 0.9
    assert m["mean_logit_diff"] > 0


def test_needle_metric(tok):
    from interp.models.train import needle

    m = needle.evaluate(hf_model("needle"), tok, n_per_depth=1, seed=5,
                        depths=[0, 10, 20, 30, 40, 50, 60, 70, 80, 100], lo=256, hi=320)
    assert m["exact_match_mean"] >= 0.8, m


@pytest.mark.slow
def test_induction_recipe_runs(tmp_path):
    from transformers import AutoModelForCausalLM

    from interp.models.train.__main__ import main

    out = tmp_path / "induction"
    assert main(["induction", "--out", str(out), "--max-steps", "3", "--minutes", "1"]) == 0
    assert (out / "MODEL_CARD.md").is_file() and (out / "metrics.json").is_file()
    AutoModelForCausalLM.from_pretrained(str(out))

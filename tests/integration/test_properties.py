"""Property tests of activation patching over random tiny models of four families.

For random configurations (layers, heads, head size, GQA, seed, batch, length) of GPT-2, NeoX,
Llama (grouped-query attention) and Bloom (ALiBi):

* a head whose output weights are zero cannot change anything: patching any of its cells gives
  exactly 0, per example too (per-example scores are paired: each example minus its own base);
* patching the clean run into itself gives exactly the clean metric;
* patching every position of ``resid_pre`` at layer 0 replays the source run: the raw metric is
  the clean metric exactly, per example, and the normalised score is 1.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from helpers import build_model
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from interp.prompts import PromptSet

FAMILIES = ["gpt2", "neox", "llama", "bloom"]
VOCAB = 64


def _hf_model(family: str, n_layers: int, n_heads: int, d_head: int, seed: int):
    import transformers as T

    d = n_heads * d_head
    common = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if family == "gpt2":
        cfg = T.GPT2Config(n_layer=n_layers, n_head=n_heads, n_embd=d, n_positions=32, **common)
        cls = T.GPT2LMHeadModel
    elif family == "neox":
        cfg = T.GPTNeoXConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads,
                              hidden_size=d, intermediate_size=2 * d, max_position_embeddings=32,
                              rotary_pct=0.5, **common)
        cls = T.GPTNeoXForCausalLM
    elif family == "llama":
        cfg = T.LlamaConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads,
                            num_key_value_heads=n_heads // 2, hidden_size=d,
                            intermediate_size=2 * d, max_position_embeddings=32, **common)
        cls = T.LlamaForCausalLM
    else:
        cfg = T.BloomConfig(n_layer=n_layers, n_head=n_heads, hidden_size=d, **common)
        cls = T.BloomForCausalLM
    return build_model(cls, cfg, seed)


def _zero_head_output(model, family: str, layer: int, head: int, d_head: int) -> None:
    sl = slice(head * d_head, (head + 1) * d_head)
    with torch.no_grad():
        if family == "gpt2":  # Conv1D: [in, out]
            model.transformer.h[layer].attn.c_proj.weight[sl, :] = 0
        elif family == "neox":
            model.gpt_neox.layers[layer].attention.dense.weight[:, sl] = 0
        elif family == "llama":
            model.model.layers[layer].self_attn.o_proj.weight[:, sl] = 0
        else:
            model.transformer.h[layer].self_attention.dense.weight[:, sl] = 0


_TOK: list = []


def _tokenizer():
    """The tests' word-level tokenizer, built once (ids beyond the tiny vocabulary are unused)."""
    if not _TOK:
        from helpers import build_test_tokenizer

        _TOK.append(build_test_tokenizer(Path(tempfile.mkdtemp()) / "tok"))
    return _TOK[0]


@st.composite
def cases(draw, family: str):
    n_layers = draw(st.integers(1, 2))
    n_heads = draw(st.sampled_from([2, 4]))
    return dict(
        family=family, n_layers=n_layers, n_heads=n_heads, d_head=draw(st.sampled_from([8, 16])),
        seed=draw(st.integers(0, 2**16)), batch=draw(st.integers(1, 3)),
        n_pos=draw(st.integers(3, 6)), layer=draw(st.integers(0, n_layers - 1)),
        head=draw(st.integers(0, n_heads - 1)),
    )


def _prompts(c: dict) -> PromptSet:
    g = torch.Generator().manual_seed(c["seed"])
    b, p = c["batch"], c["n_pos"]
    clean = torch.randint(1, VOCAB, (b, p), generator=g)
    corr = torch.randint(1, VOCAB, (b, p), generator=g)
    ans = torch.randint(1, VOCAB, (b,), generator=g)
    pos = torch.tensor([p - 1 - (i % 2) for i in range(b)])
    return PromptSet(clean_tokens=clean, corrupted_tokens=corr, answer_ids=ans,
                     wrong_ids=ans % (VOCAB - 1) + 1, answer_pos=pos)


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_invariants(family):
    _invariants(family)


@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def _invariants_given(family, data):
    _check(data.draw(cases(family)))


def _invariants(family: str) -> None:
    _invariants_given(family)


def _check(c: dict) -> None:
    import interp
    from interp.patching import activation_patching

    hf = _hf_model(c["family"], c["n_layers"], c["n_heads"], c["d_head"], c["seed"])
    _zero_head_output(hf, c["family"], c["layer"], c["head"], c["d_head"])
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf.save_pretrained(tmp, safe_serialization=True)
        _tokenizer().save_pretrained(tmp)
        model = interp.load_model(tmp)
        ps = _prompts(c)
        with torch.no_grad():
            logits = model(ps.clean_tokens)
            corr = model(ps.corrupted_tokens)
        bi = torch.arange(c["batch"])

        def ld(x):
            row = x[bi, ps.answer_pos]
            return row[bi, ps.answer_ids] - row[bi, ps.wrong_ids]

        assume(abs(float(ld(logits).mean() - ld(corr).mean())) > 1e-3)
        layer, head = c["layer"], c["head"]
        for per_pos in (True, False):
            res = activation_patching(model, ps, target="z", per_position=per_pos)
            mine = res.per_example[layer, :, head] if per_pos else res.per_example[layer, head]
            assert torch.equal(mine, torch.zeros_like(mine)), (c, per_pos, mine)
            assert res.per_example.abs().max() > 0  # other heads do something
        full = activation_patching(model, ps, target="resid_pre", per_position=False, layers=[0])
        clean_pe = torch.tensor(full.meta["clean_per_example"])
        assert torch.equal(full.raw_per_example[0], clean_pe)
        assert abs(float(full.values[0]) - 1.0) < 1e-5
        same = PromptSet(clean_tokens=ps.clean_tokens, corrupted_tokens=ps.clean_tokens.clone(),
                         answer_ids=ps.answer_ids, wrong_ids=ps.wrong_ids,
                         answer_pos=ps.answer_pos)
        still = activation_patching(model, same, target="z", per_position=True)
        assert torch.equal(still.raw_per_example,
                           clean_pe.expand_as(still.raw_per_example).to(still.raw_per_example))

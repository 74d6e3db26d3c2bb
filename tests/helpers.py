"""Helpers shared by every test tier: tiny random-init models of several families saved in
Hugging Face format (loaded with ``interp.load_model(directory)``, the path a Hub model takes),
and checks used across tiers. Fixtures live in ``conftest.py``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

FAMILIES = ["gpt2", "neox", "llama", "qwen2", "gemma2", "bloom"]
GQA_FAMILIES = ["llama", "qwen2", "gemma2"]
# families with a known peculiarity, used by the reliability tests: hooks transformer-lens ignores
# (gptj, opt: hook_pattern), bidirectional attention (bert), no final norm (gpt1)
EXTRA_FAMILIES = ["gptj", "opt", "bert", "gpt1"]

def build_test_tokenizer(save_dir: Path):
    """The zoo's shared word-level tokenizer (GPT-2 style: ' Mary' is one token)."""
    from interp.prompts import _language as languages

    return languages.save_tokenizer(save_dir)


def make_hf_model(family: str, vocab_size: int, *, seed: int = 0):
    import transformers as T

    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if family == "gpt2":
        cfg = T.GPT2Config(n_layer=3, n_head=4, n_embd=64, n_positions=128, **common)
        cls = T.GPT2LMHeadModel
    elif family == "neox":
        cfg = T.GPTNeoXConfig(num_hidden_layers=3, num_attention_heads=4, hidden_size=64,
                              intermediate_size=128, max_position_embeddings=128, rotary_pct=0.25,
                              **common)
        cls = T.GPTNeoXForCausalLM
    elif family == "llama":
        cfg = T.LlamaConfig(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                            hidden_size=64, intermediate_size=128, max_position_embeddings=128,
                            **common)
        cls = T.LlamaForCausalLM
    elif family == "qwen2":
        cfg = T.Qwen2Config(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                            hidden_size=64, intermediate_size=128, max_position_embeddings=128,
                            **common)
        cls = T.Qwen2ForCausalLM
    elif family == "gemma2":
        cfg = T.Gemma2Config(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                             hidden_size=64, head_dim=16, intermediate_size=128,
                             max_position_embeddings=128, final_logit_softcapping=30.0,
                             attn_logit_softcapping=50.0, sliding_window=64, **common)
        cls = T.Gemma2ForCausalLM
    elif family == "bloom":  # ALiBi: a per-(example, head) bias goes into every block
        cfg = T.BloomConfig(n_layer=3, n_head=4, hidden_size=64, **common)
        cls = T.BloomForCausalLM
    elif family == "gptj":
        cfg = T.GPTJConfig(n_layer=3, n_head=4, n_embd=64, n_positions=128, rotary_dim=8,
                           **common)
        cls = T.GPTJForCausalLM
    elif family == "opt":
        cfg = T.OPTConfig(num_hidden_layers=3, num_attention_heads=4, hidden_size=64,
                          ffn_dim=128, word_embed_proj_dim=64, max_position_embeddings=128,
                          **common)
        cls = T.OPTForCausalLM
    elif family == "gpt1":  # post-norm blocks, no final norm
        cfg = T.OpenAIGPTConfig(n_layer=2, n_head=4, n_embd=64, n_positions=128,
                                vocab_size=vocab_size)
        cls = T.OpenAIGPTLMHeadModel
    elif family == "bert":  # bidirectional attention (not causal)
        cfg = T.BertConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=64,
                           intermediate_size=128, max_position_embeddings=128,
                           **{k: v for k, v in common.items() if k == "vocab_size"},
                           pad_token_id=0)
        cls = T.BertForMaskedLM
    else:
        raise ValueError(family)
    return build_model(cls, cfg, seed)


def build_model(cls, cfg, seed: int):
    """``cls(cfg)`` with eager attention and a fixed seed; random init is tiny, so the matrices
    (not the embeddings) are scaled up a little so that attention patterns are not uniform."""
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name and "wte" not in name and "wpe" not in name:
                p.mul_(3.0)
    return model


def save_tiny(d: Path, family: str, tok, *, vocab_size: int | None = None, seed: int = 0) -> Path:
    """A tiny random model of ``family`` saved with the test tokenizer in ``d`` (HF format)."""
    model = make_hf_model(family, vocab_size=vocab_size or len(tok), seed=seed)
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


_CACHE: dict[str, object] = {}


def load_tiny(tiny_dirs, family: str):
    if family not in _CACHE:
        import interp

        # INTERP_TEST_DEVICE=cuda runs the tests that use these fixtures on a GPU (make gpu-check)
        _CACHE[family] = interp.load_model(tiny_dirs[family],
                                           device=os.environ.get("INTERP_TEST_DEVICE"))
    return _CACHE[family]


def assert_no_hooks(model) -> None:
    """No user hook is left on any hook point of ``model``."""
    left = [name for name, point in model.hook_dict.items() if point.has_hooks(including_permanent=False)]
    assert not left, f"hooks left on the model: {left[:5]}"

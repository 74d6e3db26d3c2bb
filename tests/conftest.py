"""Shared fixtures: tiny random-init models of several families, saved in HF format.

Every model goes through ``interp.load_model(directory)``, the same path as a Hub model. The
helpers behind them are in ``helpers.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import (
    EXTRA_FAMILIES,
    FAMILIES,
    GQA_FAMILIES,
    build_test_tokenizer,
    load_tiny,
    save_tiny,
)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    tok_dir = root / "_tokenizer"
    tok = build_test_tokenizer(tok_dir)
    return {fam: save_tiny(root / fam, fam, tok) for fam in FAMILIES}


@pytest.fixture(scope="session")
def extra_dirs(tmp_path_factory, tiny_dirs) -> dict[str, Path]:
    """Tiny models of EXTRA_FAMILIES (plus every family of ``tiny_dirs``)."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("extra_models")
    tok = AutoTokenizer.from_pretrained(tiny_dirs["gpt2"])
    out = dict(tiny_dirs)
    out.update({fam: save_tiny(root / fam, fam, tok) for fam in EXTRA_FAMILIES})
    return out


@pytest.fixture(params=FAMILIES)
def tiny_model(request, tiny_dirs):
    """A TransformerBridge for each test family (parametrised)."""
    return load_tiny(tiny_dirs, request.param)


@pytest.fixture(params=GQA_FAMILIES)
def tiny_gqa_model(request, tiny_dirs):
    return load_tiny(tiny_dirs, request.param)


@pytest.fixture
def tiny_gpt2(tiny_dirs):
    return load_tiny(tiny_dirs, "gpt2")


@pytest.fixture
def tiny_llama(tiny_dirs):
    return load_tiny(tiny_dirs, "llama")

"""PromptSet and generators: shapes, alignment, answers, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from interp import prompts
from interp.prompts import PromptError, PromptSet

from conftest import load_tiny


@pytest.fixture
def model(tiny_dirs):
    return load_tiny(tiny_dirs, "gpt2")


def test_ioi_prompts_aligned_and_answers(model):
    ps = prompts.ioi(model, n=20, seed=1)
    tok = model.tokenizer
    assert len(ps) == 20 and ps.has_corrupted
    for i in range(len(ps)):
        n = int(ps.answer_pos[i]) + 1
        text = tok.decode(ps.clean_tokens[i, 1:n].tolist())
        assert text == ps.clean_text[i]
        assert ps.clean_text[i].rstrip().endswith(("to", "said to"))
        io = tok.decode([int(ps.answer_ids[i])]).strip()
        s = tok.decode([int(ps.wrong_ids[i])]).strip()
        assert io != s and io in ps.clean_text[i] and ps.clean_text[i].count(s) == 2
        # the ABC corruption has three other names and the same token length
        assert not any(x in ps.corrupted_text[i].split() for x in (io, s))
        assert int((ps.corrupted_tokens[i, :n] != ps.clean_tokens[i, :n]).sum()) == 3
    assert set(ps.meta["template"]) == {"ABBA", "BABA"}


def test_ioi_swap_corruption(model):
    ps = prompts.ioi(model, n=6, corruption="swap", templates="BABA")
    for i in range(len(ps)):
        io = model.tokenizer.decode([int(ps.answer_ids[i])]).strip()
        assert ps.corrupted_text[i].count(io) == 2


def test_induction_prompts(model):
    ps = prompts.induction(model, n=4, seq_len=20, seed=0)
    assert ps.clean_tokens.shape == (4, 1 + 20 + 19)
    first, second = ps.clean_tokens[:, 1:21], ps.clean_tokens[:, 21:]
    assert torch.equal(first[:, :19], second)
    assert torch.equal(ps.answer_ids, first[:, -1])
    assert torch.equal(ps.corrupted_tokens[:, 21:], second)
    with pytest.raises(PromptError, match="exceed the context"):
        prompts.induction(model, seq_len=100)


def test_needle_prompts(model):
    ps = prompts.needle(model, lengths=(40,), depths=(0.0, 0.5, 1.0))
    assert len(ps) == 3 and ps.has_corrupted
    for i in range(3):
        assert ps.meta["needle"][i] in ps.clean_text[i]
        assert int(ps.answer_ids[i]) == ps.meta["answer_tokens"][i][0]
        assert len(ps.meta["answer_tokens"][i]) >= 3
    with pytest.raises(PromptError, match="context"):
        prompts.needle(model, lengths=(400,), depths=(0.5,))


def test_from_pairs_and_errors(model):
    ps = PromptSet.from_pairs(model, ["Then, Mary and John went to the store. John gave a ring to"],
                              [" Mary"], corrupted=["Then, Alice and Bob went to the store. Bob gave a ring to"],
                              wrong=[" John"])
    assert len(ps) == 1 and ps.answer_pos.item() == ps.n_pos - 1
    with pytest.raises(PromptError, match="token lengths differ"):
        PromptSet.from_pairs(model, ["Mary went to the store"], [" John"], corrupted=["Mary went to the"])
    with pytest.raises(PromptError, match="is 2 tokens"):
        PromptSet.from_pairs(model, ["Mary went to"], [" the store"])
    with pytest.raises(PromptError, match="empty"):
        PromptSet.from_pairs(model, ["  "], [" Mary"])
    with pytest.raises(PromptError, match="empty"):
        PromptSet.from_pairs(model, ["Mary went to"], [""])
    with pytest.raises(PromptError, match="context"):
        PromptSet.from_pairs(model, [" the" * 200], [" Mary"])


def test_check_detects_mismatched_tokenizer(model):
    ps = PromptSet(clean_tokens=torch.tensor([[0, 5, 10_000]]), answer_ids=torch.tensor([3]),
                   answer_pos=torch.tensor([2]))
    with pytest.raises(PromptError, match="does not match the model"):
        ps.check(model)


def test_subset_save_load(model, tmp_path):
    ps = prompts.ioi(model, n=8)
    sub = ps.subset([1, 3])
    assert len(sub) == 2 and sub.clean_text == [ps.clean_text[1], ps.clean_text[3]]
    assert torch.equal(sub.meta["pos_S2"], ps.meta["pos_S2"][[1, 3]])
    ps.save(tmp_path / "ps")
    back = PromptSet.load(tmp_path / "ps")
    assert torch.equal(back.clean_tokens, ps.clean_tokens) and back.clean_text == ps.clean_text
    assert torch.equal(back.meta["pos_IO"], ps.meta["pos_IO"])


def test_promptset_shape_validation():
    with pytest.raises(PromptError, match="answer_ids"):
        PromptSet(clean_tokens=torch.zeros(2, 3, dtype=torch.long), answer_ids=torch.zeros(3, dtype=torch.long),
                  answer_pos=torch.zeros(2, dtype=torch.long))

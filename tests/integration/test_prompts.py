"""PromptSet and generators: shapes, alignment, answers, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch
from helpers import load_tiny

from interp import prompts
from interp.prompts import PromptError, PromptSet


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
    ps = prompts.needle(model, lengths=(40,), depths=(0, 50, 100))
    tok = model.tokenizer
    assert len(ps) == 3 and ps.has_corrupted and ps.meta["grid"] == [(40, 0), (40, 50), (40, 100)]
    for i in range(3):
        assert ps.meta["needle"][i] in ps.clean_text[i]
        assert int(ps.answer_ids[i]) == ps.meta["answer_tokens"][i][0]
        assert len(ps.meta["answer_tokens"][i]) >= 3
        # the named span holds the answer's tokens; the corruption differs only inside it
        a, b = int(ps.positions["needle_start"][i]), int(ps.positions["needle_end"][i])
        assert ps.clean_tokens[i, a:b + 1].tolist() == ps.meta["answer_tokens"][i]
        diff = (ps.clean_tokens[i] != ps.corrupted_tokens[i]).nonzero().flatten().tolist()
        assert diff and a <= min(diff) and max(diff) <= b
        assert int(ps.wrong_ids[i]) == int(ps.corrupted_tokens[i, a]) != int(ps.answer_ids[i])
        assert tok.decode(ps.clean_tokens[i, : int(ps.answer_pos[i]) + 1].tolist()).endswith("is")
    # depth 0 puts the needle first, depth 100 last (before the question)
    assert int(ps.positions["needle_start"][0]) < int(ps.positions["needle_start"][2])
    with pytest.raises(PromptError, match="context"):
        prompts.needle(model, lengths=(400,), depths=(50,))
    with pytest.raises(PromptError, match="multiply them by 100"):
        prompts.needle(model, lengths=(40,), depths=(0.0, 0.5, 1.0))
    with pytest.raises(PromptError, match="0..100"):
        prompts.needle(model, lengths=(40,), depths=(150,))


def test_needle_prompts_are_the_retrieval_trials(model):
    """Same settings, same token ids: the prompt set and the retrieval-score trial grid share one
    builder and one depth unit (percent)."""
    from interp.retrieval._scores import _trials
    from interp.retrieval._trials import default_needles

    ps = prompts.needle(model, n=2, lengths=(40, 56), depths=(0, 33, 100), seed=3)
    trials = _trials(model, default_needles(2, 3), None, [40, 56], [0, 33, 100], 0, 3)
    assert len(trials) == len(ps)
    for i, t in enumerate(trials):
        assert ps.clean_tokens[i, : len(t.ids)].tolist() == t.ids
        assert ps.meta["grid"][i] == (t.ctx_len, t.depth)
        assert (int(ps.positions["needle_start"][i]), int(ps.positions["needle_end"][i]) + 1) == t.span


def test_induction_is_the_heads_repeated_tokens(model):
    """One generator, one layout: the prompt + answer is heads.repeated_tokens' sequence."""
    from interp import heads

    ps = prompts.induction(model, n=3, seq_len=12, seed=7)
    full = heads.repeated_tokens(model, seq_len=12, batch=3, seed=7)
    assert torch.equal(torch.cat([ps.clean_tokens, ps.answer_ids[:, None]], dim=1), full)
    # named positions: A = first copy of the last token, B = the answer's first-copy position
    idx = torch.arange(3)
    end, a, b = ps.positions["END"], ps.positions["A"], ps.positions["B"]
    assert torch.equal(end, ps.answer_pos)
    assert torch.equal(ps.clean_tokens[idx, a], ps.clean_tokens[idx, end])
    assert torch.equal(ps.clean_tokens[idx, b], ps.answer_ids)
    special = set(model.tokenizer.all_special_ids)
    assert not special & set(full[:, 1:].flatten().tolist())


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


# --- PromptSpec ---------------------------------------------------------------------------------


def test_prompt_spec_defaults_hash_and_round_trip(model):
    import json

    from interp.prompts import PROMPT_KINDS, PromptSpec

    assert {"ioi", "induction", "needle", "custom"} <= set(PROMPT_KINDS)
    a = PromptSpec("ioi")
    b = PromptSpec("ioi", n=8, seed=0, options={"corruption": "abc", "templates": "mixed"})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1  # defaults filled in
    assert a != PromptSpec("ioi", options={"corruption": "swap"})
    with pytest.raises(TypeError):
        a.options["x"] = 1  # frozen mapping
    for spec in (PromptSpec("induction", n=3, seed=2, options={"seq_len": 7}),
                 PromptSpec("needle", options={"lengths": [40], "depths": [0, 100]}),
                 PromptSpec("custom", options={"clean": ["Then, Mary and John went to"],
                                               "answers": [" Mary"]})):
        back = PromptSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and hash(back) == hash(spec)
        line = spec.describe()
        assert "\n" not in line and spec.kind in line.lower()
    # building through the spec is the generator with the same settings
    ps = PromptSpec("ioi", n=5, seed=3, options={"corruption": "swap"}).build(model)
    ref = prompts.ioi(model, n=5, seed=3, corruption="swap")
    assert torch.equal(ps.clean_tokens, ref.clean_tokens) and torch.equal(ps.wrong_ids, ref.wrong_ids)
    assert ps.meta["spec"]["kind"] == "ioi"
    ind = PromptSpec("induction", n=2, options={"seq_len": 6}).build(model)
    assert torch.equal(ind.clean_tokens, prompts.induction(model, n=2, seq_len=6).clean_tokens)


def test_prompt_spec_errors_name_the_choices():
    from interp.prompts import PromptSpec

    with pytest.raises(PromptError, match="the kinds are ioi, induction, needle, custom"):
        PromptSpec("nope")
    with pytest.raises(PromptError, match=r"no option\(s\) \['seqlen'\].*seq_len"):
        PromptSpec("induction", options={"seqlen": 5})
    with pytest.raises(PromptError, match="clean"):
        PromptSpec("custom")
    with pytest.raises(PromptError, match="positive integer"):
        PromptSpec("ioi", n=0)
    with pytest.raises(PromptError, match="multiply them by 100"):
        PromptSpec("needle", options={"depths": [0.25]})
    with pytest.raises(PromptError, match="unknown prompt spec key"):
        PromptSpec.from_dict({"kind": "ioi", "size": 3})


def test_cli_builds_prompts_through_the_spec(model):
    from interp.cli._common import PromptKind, _prompts
    from interp.prompts import PROMPT_KINDS, PromptSpec

    assert {k.value for k in PromptKind} - {"auto"} <= set(PROMPT_KINDS)
    for kind in ("ioi", "induction"):
        got = _prompts(model, kind, 3, 1)
        ref = PromptSpec(kind, n=3, seed=1).build(model)
        assert torch.equal(got.clean_tokens, ref.clean_tokens)


# --- unknown words and tokenizers ---------------------------------------------------------------


def test_unknown_answers_are_refused_and_prompt_words_warned(model):
    from interp.prompts import UnknownTokenWarning

    with pytest.raises(PromptError, match=r"' Zorblax' is not in the tokenizer's vocabulary.*<unk>"):
        prompts.single_token(model.tokenizer, " Zorblax")
    with pytest.raises(PromptError, match="wrong answer ' Qwerty'"):
        PromptSet.from_pairs(model, ["Then, Mary and John went to"], [" Mary"], wrong=[" Qwerty"])
    with pytest.warns(UnknownTokenWarning, match=r"\['Zorblax', 'glimmered'\]"):
        ps = PromptSet.from_pairs(model, ["Then, Zorblax and John glimmered to"], [" John"])
    assert ps.meta["unknown_words"] == ["Zorblax", "glimmered"]
    with pytest.warns(UnknownTokenWarning, match="Zorblax"):
        prompts.encode(model.tokenizer, "Zorblax went to")
    # known words: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownTokenWarning)
        PromptSet.from_pairs(model, ["Then, Mary and John went to"], [" Mary"])
    # the IOI name pool never uses a name the tokenizer does not know
    assert prompts.single_token_words(model.tokenizer, ["Mary", "Zorblax"]) == ["Mary"]


def _permuted_tokenizer(tmp_path):
    """The zoo tokenizer with two token ids swapped: same size, different mapping."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from interp.prompts import _language as L

    vocab = dict(L._vocab())
    vocab["\u0120Mary"], vocab["\u0120John"] = vocab["\u0120John"], vocab["\u0120Mary"]  # " Mary"
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=L.UNK))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=L.BOS, eos_token=L.BOS, pad_token=L.BOS,
                            unk_token=L.UNK).save_pretrained(tmp_path / "permuted")
    return AutoTokenizer.from_pretrained(tmp_path / "permuted")


def test_check_refuses_prompts_of_another_tokenizer(model, monkeypatch, tmp_path):
    from interp.patching import activation_patching
    from interp.prompts import tokenizer_fingerprint

    other = _permuted_tokenizer(tmp_path)
    assert len(other) == len(model.tokenizer)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(model.tokenizer)
    ps = prompts.ioi(model, n=2)
    assert ps.tokenizer_fp == tokenizer_fingerprint(model.tokenizer)
    ps.check(model)
    monkeypatch.setattr(model, "tokenizer", other)
    with pytest.raises(PromptError, match="different tokenizer"):
        ps.check(model)
    with pytest.raises(PromptError, match="different tokenizer"):
        activation_patching(model, ps, target="resid_pre", per_position=False)
    # raw token tensors carry no tokenizer: no check
    raw = PromptSet(clean_tokens=ps.clean_tokens, answer_ids=ps.answer_ids, answer_pos=ps.answer_pos)
    raw.check(model)


def test_fingerprint_is_computed_once_per_tokenizer(model, tmp_path):
    from interp.prompts import tokenizer_fingerprint

    tok = _permuted_tokenizer(tmp_path)
    calls = []
    real = tok.get_vocab
    tok.get_vocab = lambda: calls.append(1) or real()
    fp = tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(tok) == fp and len(calls) == 1


def test_fingerprint_survives_save_and_subset(model, tmp_path):
    ps = prompts.ioi(model, n=4)
    ps.save(tmp_path / "ps")
    back = PromptSet.load(tmp_path / "ps")
    assert back.tokenizer_fp == ps.tokenizer_fp and back.subset([0]).tokenizer_fp == ps.tokenizer_fp
    assert torch.equal(back.positions["S2"], ps.positions["S2"])


# --- named positions and honest position labels -----------------------------------------------


def test_ioi_named_positions(model):
    ps = prompts.ioi(model, n=12, seed=2)
    idx = torch.arange(len(ps))
    assert torch.equal(ps.clean_tokens[idx, ps.positions["IO"]], ps.answer_ids)
    assert torch.equal(ps.clean_tokens[idx, ps.positions["S1"]], ps.wrong_ids)
    assert torch.equal(ps.clean_tokens[idx, ps.positions["S2"]], ps.wrong_ids)
    assert bool((ps.positions["S1"] < ps.positions["S2"]).all())
    assert torch.equal(ps.positions["END"], ps.answer_pos)


def test_position_labels_on_mixed_template_ioi(model):
    """Mixed templates end at different positions; no label may claim a token that some
    example does not have there, and padding / differing ends are named."""
    from interp.patching import activation_patching

    ps = prompts.ioi(model, n=10, seed=0)
    assert not ps.aligned
    tok = model.tokenizer
    labels = ps.position_labels(model)
    assert len(labels) == ps.n_pos
    for p, label in enumerate(labels):
        real = ps.answer_pos >= p
        col = ps.clean_tokens[:, p]
        head = label.split(" [")[0]
        assert head.startswith(f"{p}:")
        if not head[len(f"{p}:"):].startswith("<"):
            assert bool(real.all()) and bool((col == col[0]).all())
            assert head == f"{p}:{tok.decode([int(col[0])])}"
        ends = int((ps.answer_pos == p).sum())
        assert (f"[END {ends}/10]" in label) == (0 < ends < 10)
        assert ("[pad " in label) == (not bool(real.all()))
    last = labels[-1]
    assert "<|endoftext|>" not in last and "[pad" in last and "[END" in last
    # the first position is BOS for everyone
    assert labels[0] == "0:<|endoftext|>"
    # per-position patching on these mixed layouts is indexed by role, not by these positions
    res = activation_patching(model, ps, target="resid_pre", layers=[0], per_position=True)
    assert "pos" not in res.coords and list(res.coords["role"]) == list(ps.positions)
    one = prompts.ioi(model, n=6, templates="BABA", template_ids=[0], seed=1)  # one layout
    res = activation_patching(model, one, target="resid_pre", layers=[0], per_position=True)
    assert list(res.coords["pos"]) == one.position_labels(model)


def test_position_labels_use_shared_roles(model):
    ps = prompts.ioi(model, n=6, templates="BABA", template_ids=[0], seed=1)
    assert ps.aligned
    labels = ps.position_labels(model)
    io = int(ps.positions["IO"][0])
    assert labels[io] == f"{io}:<IO>"  # names differ, the role is the same
    assert labels[-1].endswith(" to") and "[" not in labels[-1]
    ind = prompts.induction(model, n=3, seq_len=5)
    lab = ind.position_labels(model)
    assert lab[int(ind.positions["B"][0])] == f"{int(ind.positions['B'][0])}:<B>"
    assert lab[2] == "2:<mixed>"


def test_prompts_do_not_import_the_training_recipes():
    import subprocess
    import sys

    code = ("import sys, interp.prompts\n"
            "print(any(m.startswith('interp.models.train') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    from interp.models.train import ioi, needle
    from interp.prompts import _language

    assert ioi.L is _language and needle.L is _language


def test_subset_of_a_token_built_prompt_set():
    """A prompt set made from token ids (no texts) can be subset."""
    ps = PromptSet.from_token_lists([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [4, 5, 6],
                                    corrupted=[[1, 9, 3], [4, 9, 6], [7, 9, 9]], wrong=[7, 8, 9])
    sub = ps.subset([2, 0])
    assert sub.clean_tokens.tolist() == [[7, 8, 9], [1, 2, 3]]
    assert sub.answer_ids.tolist() == [6, 4] and sub.wrong_ids.tolist() == [9, 7]
    assert sub.clean_text == [] and sub.corrupted_text == ps.corrupted_text

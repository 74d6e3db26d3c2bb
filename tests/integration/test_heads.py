"""Head pattern scores: parity with transformer-lens detect_head and plain loops."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_no_hooks
from transformer_lens.head_detector import detect_head

from interp import heads
from interp.heads import HeadScores, detect_heads, induction_scores, previous_token_scores

TEXTS = ["Then, Mary and John went to the store. John gave a ring to Mary",
         "After the lunch, Anna and Paul went to the garden. Paul gave a bone to Anna"]


@pytest.mark.parametrize("kind", ["previous_token", "duplicate_token", "induction"])
@pytest.mark.parametrize("method", ["mul", "abs"])
def test_detect_heads_matches_transformer_lens(tiny_model, kind, method):
    ours = detect_heads(tiny_model, TEXTS, kind, method=method, exclude_bos=kind == "induction")
    ref = detect_head(tiny_model, TEXTS, f"{kind}_head", error_measure=method,
                      exclude_bos=kind == "induction")
    assert torch.allclose(ours.values, ref.float(), atol=1e-4)
    assert_no_hooks(tiny_model)


def test_diagonal_scores_match_loop(tiny_gqa_model):
    seq_len = 12
    res = induction_scores(tiny_gqa_model, seq_len=seq_len, batch=3, seed=5)
    prev = previous_token_scores(tiny_gqa_model, seq_len=seq_len, batch=3, seed=5)
    toks = heads.repeated_tokens(tiny_gqa_model, seq_len=seq_len, batch=3, seed=5)
    assert torch.equal(toks[:, 1:1 + seq_len], toks[:, 1 + seq_len:])
    _, cache = tiny_gqa_model.run_with_cache(toks)
    for layer in range(3):
        pat = cache[f"blocks.{layer}.attn.hook_pattern"]
        for h in range(4):
            vals, pv = [], []
            for b in range(3):
                for q in range(toks.shape[1]):
                    k = q - seq_len + 1
                    if k >= 0:
                        vals.append(pat[b, h, q, k])
                    if q >= 1:
                        pv.append(pat[b, h, q, q - 1])
            assert float(res.values[layer, h]) == pytest.approx(float(torch.stack(vals).mean()), abs=1e-5)
            assert float(prev.values[layer, h]) == pytest.approx(float(torch.stack(pv).mean()), abs=1e-5)
    # GQA: each query head names its key/value group
    assert res.meta["kv_group"][0] == [0, 0, 1, 1]


def test_head_scores_api(tmp_path):
    class _M:  # a stand-in exposing only what from_tensor needs is not possible; build directly
        pass

    hs = HeadScores(values=torch.tensor([[0.1, 0.9], [0.5, 0.2]]), dims=("layer", "head"),
                    meta={"kv_group": [[0, 0], [0, 0]]})
    assert hs.above(0.3) == [(0, 1), (1, 0)]
    assert hs.best() == ((0, 1), pytest.approx(0.9))
    r = hs.top(4)
    assert r.component_label.tolist()[:2] == ["L0H1", "L1H0"] and "kv_head" in r
    back = HeadScores.load(hs.save(tmp_path / "hs"))
    assert torch.equal(back.values, hs.values)
    assert back.meta["kv_group"] == hs.meta["kv_group"] and back.top(4).equals(r)
    # per-trial scores (retrieval) survive the round trip
    pe = HeadScores(values=hs.values, dims=("layer", "head"), per_example=torch.rand(2, 2, 5))
    assert torch.equal(HeadScores.load(pe.save(tmp_path / "pe")).per_example, pe.per_example)
    assert hs.plot().data[0].type == "heatmap"


def test_bad_inputs(tiny_gpt2):
    with pytest.raises(ValueError, match="context"):
        induction_scores(tiny_gpt2, seq_len=100)
    with pytest.raises(ValueError, match="method"):
        detect_heads(tiny_gpt2, TEXTS, "induction", method="max")
    with pytest.raises(ValueError, match="unknown pattern"):
        detect_heads(tiny_gpt2, TEXTS, "copy")


@pytest.mark.slow
def test_zoo_induction_model_heads():
    """Target on the zoo's induction model: an induction head and a previous-token head
    exist (ARENA's 0.4 threshold on the prefix-matching scores) and the previous-token head sits
    in an earlier layer than the induction head (the two-layer induction circuit)."""
    import interp

    model = interp.load_model("induction")
    ind = induction_scores(model, seq_len=50, batch=10, seed=0)
    prev = previous_token_scores(model, seq_len=50, batch=10, seed=0)
    (ind_head, ind_v), (prev_head, prev_v) = ind.best(), prev.best()
    print("induction", ind.top(5), "previous token", prev.top(5))
    assert ind_v > 0.4, f"no induction head: best {ind_head} scores {ind_v:.3f}"
    assert prev_v > 0.4, f"no previous-token head: best {prev_head} scores {prev_v:.3f}"
    assert prev_head[0] < ind_head[0]
    # the transformer-lens convention's best induction head is one of the heads found above
    toks = heads.repeated_tokens(model, seq_len=30, batch=4, seed=1)
    tl = detect_heads(model, toks, "induction", exclude_bos=True)
    assert tl.best()[0] in ind.above(0.4)


def test_repeated_tokens_is_the_prompts_generator(tiny_gqa_model):
    """One generator: heads and the induction prompt sets draw the same [BOS] + r + r."""
    from interp import prompts

    toks = heads.repeated_tokens(tiny_gqa_model, seq_len=9, batch=4, seed=2)
    assert torch.equal(toks, prompts.repeated_tokens(tiny_gqa_model, seq_len=9, batch=4, seed=2))
    assert toks.shape == (4, 1 + 2 * 9)
    assert torch.equal(toks[:, 1:10], toks[:, 10:])
    assert (toks[:, 0] == tiny_gqa_model.tokenizer.bos_token_id).all()
    special = set(tiny_gqa_model.tokenizer.all_special_ids)
    assert not special & set(toks[:, 1:].flatten().tolist())
    no_bos = heads.repeated_tokens(tiny_gqa_model, seq_len=9, batch=4, seed=2, bos=False)
    assert torch.equal(no_bos, toks[:, 1:])


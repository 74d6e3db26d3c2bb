"""Retrieval heads: ROUGE, trials, copy-paste scoring, reference/fast parity, masks, DeCoRe."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_no_hooks

from interp.models import describe
from interp.retrieval import _scores as R
from interp.retrieval._decode import greedy_decode, mask_hooks, stop_ids
from interp.retrieval._rouge import rouge1_recall, rouge_tokens
from interp.retrieval._trials import build_trials, default_haystack, default_needles, find_span


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # decoding runs many small forwards: one thread avoids oversubscribing a shared machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


GRID = {"lengths": [40, 56], "depths": [0, 50, 100], "max_new_tokens": 5}
GRID1 = dict(GRID, needles=default_needles(1, seed=4))  # 6 trials


# --- ROUGE-1 recall (hand-computed) -----------------------------------------------------------

def test_rouge1_recall_hand_cases():
    assert rouge_tokens("Take a walk, in Chaoyang-Park!") == ["take", "a", "walk", "in", "chaoyang", "park"]
    assert rouge1_recall("alpha bravo charlie", " alpha bravo charlie.") == 1.0
    assert rouge1_recall("alpha bravo charlie", "bravo") == pytest.approx(1 / 3)
    # clipped counts: reference "a a b" vs prediction "a b b" -> min(2,1)+min(1,2) = 2 of 3
    assert rouge1_recall("a a b", "a b b") == pytest.approx(2 / 3)
    assert rouge1_recall("Alpha", "ALPHA") == 1.0  # case-insensitive
    assert rouge1_recall("x y", "") == 0.0
    with pytest.raises(ValueError, match="no words"):
        rouge1_recall("...", "x")


# --- trials -----------------------------------------------------------------------------------

def test_find_span_overlap_rule():
    assert find_span([9, 1, 2, 3, 4], [2, 3, 4]) == (2, 5)
    assert find_span([9, 1, 2, 3, 4], [5, 6]) is None
    # 9 of 10 unique tokens is not > 0.9; all 10 is
    ans = list(range(10, 20))
    assert find_span([0] + ans[:9] + [99], ans) is None
    assert find_span([0, 0] + ans, ans) == (2, 12)


def test_build_trials_layout(tiny_llama):
    tok = tiny_llama.tokenizer
    needles = default_needles(2, seed=3)
    trials = build_trials(tiny_llama, needles, [default_haystack(seed=3)], [40, 64], [0, 33, 100])
    assert len(trials) == 2 * 2 * 3
    for t in trials:
        assert len(t.ids) == t.ctx_len  # BOS + context + needle + question
        a, b = t.span
        assert tok.decode(t.ids[a:b]).split() == needles[t.needle_index].answer.split()
        text = tok.decode(t.ids[1:])
        assert text.endswith(needles[t.needle_index].question)
        nd = needles[t.needle_index]
        before = text.split(" " + nd.needle)[0]
        if t.depth == 0:
            assert before == ""
        elif t.depth == 100:
            assert text.endswith(" " + nd.needle + nd.question)
        else:
            assert before == "" or before.endswith(".")  # stepped back to just after a period
    with pytest.raises(ValueError, match="no room"):
        build_trials(tiny_llama, needles, ["The cat slept."], [10], [0])


def _reference_trial(tok, bos, needle, haystack, ctx_len, depth):
    """The trial from its definition, with integer arithmetic: cycle the haystack tokens to fill
    the budget, insert at floor(budget * depth / 100) (the end for 100), step back to just after a
    period token."""
    import itertools

    enc = lambda t: list(tok.encode(t, add_special_tokens=False))  # noqa: E731
    hay, nd, q = enc(haystack), enc(" " + needle.needle.strip()), enc(needle.question)
    budget = ctx_len - len(bos) - len(nd) - len(q)
    context = list(itertools.islice(itertools.cycle(hay), budget))
    ins = budget if depth == 100 else budget * depth // 100
    while 0 < ins < budget and not tok.decode([context[ins - 1]]).strip().endswith("."):
        ins -= 1
    return bos + context[:ins] + nd + context[ins:] + q


def test_trial_grid_matches_its_definition_and_the_needle_prompts(tiny_llama):
    """The retrieval grid (one builder, depths in percent) equals the trials built from their
    definition, and the ``needle`` prompt set holds the same token ids."""
    from interp import prompts

    tok = tiny_llama.tokenizer
    lengths, depths = [40, 57, 64], [0, 7, 33, 50, 99, 100]
    trials = R._trials(tiny_llama, None, None, lengths, depths, 5, 2)
    needles = default_needles(3, seed=2)
    ref = [_reference_trial(tok, [tok.bos_token_id], nd, default_haystack(seed=2 + i), n, d)
           for i, nd in enumerate(needles) for n in lengths for d in depths]
    assert [t.ids for t in trials] == ref
    assert [(t.ctx_len, t.depth) for t in trials] == [(n, d) for _ in needles for n in lengths
                                                     for d in depths]
    ps = prompts.needle(tiny_llama, 3, lengths=lengths, depths=depths, seed=2)
    assert [ps.clean_tokens[i, : int(ps.answer_pos[i]) + 1].tolist() for i in range(len(ps))] == ref
    # the default depths are the paper's 10 (round(linspace(0, 100, 10)))
    assert R.DEFAULT_DEPTHS == tuple(round(x) for x in torch.linspace(0, 100, 10).tolist())


def test_fraction_depths_are_refused(tiny_gpt2):
    # they used to be truncated to 0 by int(); now they say what unit is expected
    with pytest.raises(ValueError, match="multiply them by 100"):
        R.retrieval_scores(tiny_gpt2, lengths=[40], depths=[0.25, 0.5])
    with pytest.raises(ValueError, match="multiply them by 100"):
        build_trials(tiny_gpt2, default_needles(1), [default_haystack()], [40], [0.5])


# --- scoring ----------------------------------------------------------------------------------

def test_trial_scores_hand_case():
    prompt = [0, 5, 7, 8, 9, 3]  # span [2, 5) = tokens 7 8 9
    gen = [7, 8, 7, 4]
    # one layer, three heads, four steps of argmax keys
    jstar = torch.tensor([[[2, 3, 2, 2],     # copies 7, 8, 7 (repeat counts twice); step 4 wrong token
                           [1, 3, 4, 6],     # key 1 outside span; 3 -> 8 ok; 4 -> 9 != 7; 6 generated
                           [5, 5, 5, 5]]])   # never inside the span
    s = R.trial_scores(jstar, gen, prompt, (2, 5))
    assert s.tolist() == [[3 / 3, 1 / 3, 0.0]]
    # each needle token counted once: head 0 copied 7 and 8 (2 of 3 tokens), head 1 copied 8
    f = R.trial_fractions(jstar, gen, prompt, (2, 5))
    assert f.tolist() == [[2 / 3, 1 / 3, 0.0]]


def test_fraction_counting_is_bounded_and_below_events():
    from interp.models import load_model

    model = load_model("needle")
    grid = {"lengths": [64], "depths": [0, 100], "max_new_tokens": 12, "batch_size": 4}
    ev = R.retrieval_scores(model, **grid)
    fr = R.retrieval_scores(model, counting="fraction", **grid)
    assert fr.meta["counting"] == "fraction" and "fraction" in fr.meta["title"]
    assert float(fr.per_example.max()) <= 1.0 and float(fr.values.max()) > 0.3
    assert torch.all(fr.per_example <= ev.per_example + 1e-12)  # repeats only add to events
    with pytest.raises(ValueError, match="counting must be"):
        R.retrieval_scores(model, counting="both", **grid)


def _internal_runs(model, impl):
    trials = R._trials(model, GRID1["needles"], None, GRID["lengths"], GRID["depths"], 5, 0)
    is_stop = stop_ids(model, ("\n",))
    if impl == "reference":
        return [R._reference_trial(model, t, 5, is_stop) for t in trials]
    runs, fallbacks = R._fast_trials(model, trials, 5, is_stop, batch_size=4, progress=False)
    assert fallbacks == 0
    return runs


@pytest.mark.parametrize("fam", ["gpt2", "llama"])
def test_fast_equals_reference(tiny_dirs, fam):
    from helpers import load_tiny

    model = load_tiny(tiny_dirs, fam)
    ref = _internal_runs(model, "reference")
    fast = _internal_runs(model, "fast")
    for (g1, j1), (g2, j2) in zip(ref, fast):
        assert g1 == g2
        assert torch.equal(j1, j2)  # every head's argmax key at every decode step
    a = R.retrieval_scores(model, implementation="reference", min_recall=-1, **GRID1)
    b = R.retrieval_scores(model, implementation="fast", min_recall=-1, **GRID1)
    assert torch.equal(a.values, b.values) and torch.equal(a.per_example, b.per_example)
    assert a.meta["n_accepted"] == b.meta["n_accepted"] == a.meta["n_trials"] == 6
    assert a.values.shape == (3, 4) and b.meta["kv_group"][0] == ([0, 0, 1, 1] if fam == "llama" else [0, 1, 2, 3])
    assert_no_hooks(model)


def test_scores_mean_over_accepted_only(tiny_gpt2):
    res = R.retrieval_scores(tiny_gpt2, **GRID)
    acc = torch.tensor([t["accepted"] for t in res.meta["trials"]])
    if acc.any():
        assert torch.allclose(res.values, res.per_example[..., acc].mean(-1))
    else:
        assert torch.equal(res.values, torch.zeros(3, 4)) and res.meta["n_accepted"] == 0
    assert all(t["accepted"] == (t["recall"] > 0.5) for t in res.meta["trials"])


# --- decoding and masks ----------------------------------------------------------------------

def test_cached_decode_matches_uncached_and_transformer_lens(tiny_model):
    ids = torch.randint(2, 1000, (3, 12), generator=torch.Generator().manual_seed(0)).tolist()
    def never(t):
        return False
    cached = greedy_decode(tiny_model, ids, max_new_tokens=6, is_stop=never)
    plain = greedy_decode(tiny_model, ids, max_new_tokens=6, is_stop=never, use_cache=False)
    assert cached == plain
    tl = tiny_model.generate(torch.tensor(ids), max_new_tokens=6, do_sample=False,
                             use_past_kv_cache=False, stop_at_eos=False, verbose=False)
    assert tl[:, 12:].tolist() == plain
    # masked decoding: the KV-cached path equals recomputing with the mask on decode positions
    heads = [(0, 1), (2, 3)]
    for mode in ("query", "output"):
        a = greedy_decode(tiny_model, ids, max_new_tokens=6, is_stop=never, heads=heads, mode=mode)
        b = greedy_decode(tiny_model, ids, max_new_tokens=6, is_stop=never, heads=heads, mode=mode,
                          use_cache=False)
        assert a == b
    assert_no_hooks(tiny_model)


def test_query_mask_makes_attention_uniform(tiny_model):
    ids = torch.randint(2, 1000, (2, 10), generator=torch.Generator().manual_seed(1))
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(3)]
    with tiny_model.hooks(fwd_hooks=mask_hooks(tiny_model, [(1, 2)], mode="query", from_pos=4)):
        _, cache = tiny_model.run_with_cache(ids, names_filter=lambda n: n in names)
    _, clean = tiny_model.run_with_cache(ids, names_filter=lambda n: n in names)
    pat = cache[names[1]]  # [batch, head, q, k]
    alibi = describe(tiny_model).positional == "alibi"
    for q in range(4, 10):
        if alibi:  # a zero query leaves only the position bias: the same row for any content
            assert torch.allclose(pat[0, 2, q], pat[1, 2, q], atol=1e-6)
            assert bool((pat[0, 2, q, : q + 1].diff() > 0).all())  # ALiBi favours recent keys
        else:
            assert torch.allclose(pat[:, 2, q, : q + 1], torch.full((2, q + 1), 1 / (q + 1)),
                                  atol=1e-6)
    assert torch.allclose(pat[:, 2, :4], clean[names[1]][:, 2, :4], atol=1e-6)  # prefill untouched
    assert torch.allclose(cache[names[0]], clean[names[0]])  # earlier layer untouched
    assert not torch.allclose(pat[:, 2, 9], clean[names[1]][:, 2, 9])
    assert_no_hooks(tiny_model)


def test_masking_experiment_runs(tiny_gpt2):
    scores = R.retrieval_scores(tiny_gpt2, **GRID1)
    scores.values[1, 2] = 0.9  # pretend a retrieval head, to check the top/random split
    res = R.masking_experiment(tiny_gpt2, scores=scores, k=2, n_random=2, **GRID1)
    assert res.meta["top_heads"][0] == "L1H2"
    for draw in res.meta["random_heads"]:
        assert not set(draw) & set(res.meta["top_heads"])
    assert res.values.shape == (3,) and ((0 <= res.values) & (res.values <= 100)).all()
    assert res.drop_top == pytest.approx(float(res.values[0] - res.values[1]))
    assert res.plot() is not None
    with pytest.raises(ValueError, match="form"):
        R.masking_experiment(tiny_gpt2, heads=["3.2"], **GRID)
    assert_no_hooks(tiny_gpt2)


def test_decore_alpha_zero_is_greedy(tiny_gqa_model):
    ids = torch.randint(2, 1000, (1, 15), generator=torch.Generator().manual_seed(2))
    out = R.decore_generate(tiny_gqa_model, ids[0], heads=["L0H1", (2, 3)], alpha=0.0,
                            max_new_tokens=8)
    tl = tiny_gqa_model.generate(ids, max_new_tokens=8, do_sample=False, use_past_kv_cache=False,
                                 verbose=False)
    assert out.tokens == tl[0, 15:15 + len(out.tokens)].tolist()
    ent = R.decore_generate(tiny_gqa_model, ids[0], heads=["L0H1"], max_new_tokens=4)
    assert all(a > 0 for a in ent.alphas)  # entropy-guided alpha
    assert_no_hooks(tiny_gqa_model)


def test_bad_inputs(tiny_gpt2):
    with pytest.raises(ValueError, match="implementation"):
        R.retrieval_scores(tiny_gpt2, implementation="slow", **GRID)
    with pytest.raises(ValueError, match="exceeds"):
        R.retrieval_scores(tiny_gpt2, lengths=[200], depths=[0])
    with pytest.raises(ValueError, match="percent"):
        R.retrieval_scores(tiny_gpt2, lengths=[40], depths=[0.5, 150])
    with pytest.raises(ValueError, match="not found"):
        R.retrieval_scores(tiny_gpt2, needles=[("The cat slept.", " Question:", "purple dragon")],
                           lengths=[40], depths=[0])


# --- zoo validation (needs the trained `needle` model; slow) --------------------------------

@pytest.mark.slow
def test_zoo_needle_retrieval_heads_and_masking():
    """Targets on the zoo's needle model: retrieval heads exist (max score >= 0.5);
    masking the top heads drops needle accuracy by >= 50 points, K random heads by <= 10."""
    import interp

    model = interp.load_model("needle")
    grid = {"needles": default_needles(3, seed=11), "lengths": [128, 256, 384],
                "depths": [0, 25, 50, 75, 100], "max_new_tokens": 8, "stop": ("\n", ".")}
    scores = R.retrieval_scores(model, **grid)
    assert scores.meta["n_accepted"] >= scores.meta["n_trials"] // 2, "the model fails most needles"
    (best, value) = scores.best()
    assert value >= 0.5, f"best retrieval head {best} scores only {value:.2f}"
    k = max(1, min(8, len(scores.meta["retrieval_heads"])))
    res = R.masking_experiment(model, scores=scores, k=k, n_random=3, **grid)
    print(scores.top(10), res.to_frame(), res.meta)
    assert res.drop_top >= 50, f"masking the top {k} heads drops accuracy only {res.drop_top:.1f} points"
    assert res.drop_random <= 10, f"masking {k} random heads drops accuracy {res.drop_random:.1f} points"

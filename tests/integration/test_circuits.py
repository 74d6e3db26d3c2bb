"""Circuit graphs and faithfulness."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_no_hooks, load_tiny

from interp import hooks as H
from interp import prompts, results
from interp.circuits import Circuit, FaithfulnessResult, faithfulness
from interp.components import Head
from interp.metrics import LOGIT_DIFF


def test_circuit_from_edges_and_exports(tmp_path):
    edges = [("input", "L0H1", 0.5), ("L0H1", "l1h0", -2.0), ("L1H0", "logits", 1.0),
             ("MLP0", "logits", 0.01)]
    c = Circuit.from_edges(edges, n_layers=2, top_n=3)
    # node names are stored in their one printed form ("input" -> "embed", "l1h0" -> "L1H0")
    assert [e[:2] for e in c.edges] == [("L0H1", "L1H0"), ("L1H0", "logits"), ("embed", "L0H1")]
    assert "MLP0" not in c.nodes and c.heads() == [(0, 1), (1, 0)]
    assert '"L0H1" -> "L1H0"' in c.to_dot()
    fig = c.plot()
    assert len(fig.data) == 4
    assert Circuit.from_edges(edges, n_layers=2, threshold=0.9).nodes == ["L0H1", "L1H0", "logits"]
    with pytest.raises(ValueError, match="unknown node"):
        Circuit(nodes=["head7"], n_layers=2)
    with pytest.raises(ValueError, match="unknown node"):
        Circuit(nodes=["L5H0"], n_layers=2)  # layer out of range
    # as a result: one cell per edge, the shared frame schema, the shared directory format
    df = c.to_frame()
    assert list(df.columns) == ["edge", "edge_label", "value", "src", "dst"]
    assert df.edge_label.tolist() == ["L0H1->L1H0", "L1H0->logits", "embed->L0H1"]
    assert df.value.tolist() == [-2.0, 1.0, 0.5]
    back = results.load(c.save(tmp_path / "c"))
    assert isinstance(back, Circuit) and back.equals(c) and back.edges == c.edges
    assert Circuit.from_json(c.to_json()).equals(c)
    # a node-only circuit round-trips too
    nodes = Circuit.from_components("L1H0, mlp0", n_layers=2)
    assert nodes.nodes == ["L1H0", "MLP0"] and len(nodes.to_frame()) == 0
    assert results.load(nodes.save(tmp_path / "n")).equals(nodes)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_faithfulness_full_circuit_is_one_and_zero_matches_manual(tiny_dirs, family):
    model = load_tiny(tiny_dirs, family)
    ps = prompts.ioi(model, n=8, seed=2)
    everything = [(layer, h) for layer in range(3) for h in range(4)]
    full = faithfulness(model, ps, everything)
    assert isinstance(full, FaithfulnessResult)
    assert full.faithfulness == pytest.approx(1.0, abs=1e-5)
    assert full.circuit == pytest.approx(full.model, abs=1e-5)
    keep = [(0, 1), (2, 3)]
    res = faithfulness(model, ps, keep, ablation="zero")

    def zero_others(z, hook):
        layer = H.layer_of(hook.name)
        z = z.clone()
        for h in range(4):
            if (layer, h) not in keep:
                z[:, :, h] = 0
        return z

    logits = model.run_with_hooks(ps.clean_tokens, fwd_hooks=[(lambda n: n.endswith("hook_z"), zero_others)])
    manual = LOGIT_DIFF.from_full(logits, ps)
    assert res.circuit == pytest.approx(manual.mean().item(), abs=1e-5)
    assert torch.allclose(res.per_example[1], manual.float().cpu(), atol=1e-5)
    clean = LOGIT_DIFF.from_full(model(ps.clean_tokens), ps).mean().item()
    corr = LOGIT_DIFF.from_full(model(ps.corrupted_tokens), ps).mean().item()
    assert res.model == pytest.approx(clean, abs=1e-5)
    assert res.corrupted == pytest.approx(corr, abs=1e-5)
    assert res.faithfulness == pytest.approx((res.circuit - corr) / (clean - corr), rel=1e-5)
    assert res.heads == ["L0H1", "L2H3"] and (res.n_heads, res.n_heads_total) == (2, 12)
    assert res.meta["faithfulness"] == pytest.approx(res.faithfulness)
    with pytest.raises(IndexError, match="head L0H9 out of range"):
        faithfulness(model, ps, [(0, 9)])
    assert_no_hooks(model)


def test_faithfulness_accepts_every_head_form(tiny_gpt2):
    ps = prompts.ioi(tiny_gpt2, n=4, seed=1)
    ref = faithfulness(tiny_gpt2, ps, [(2, 3), (0, 1)])
    forms = [["L2H3", "L0H1"], "L2H3, l0h1", [Head(2, 3), Head(0, 1)], ["L2H3", (0, 1)],
             Circuit(nodes=["embed", "L0H1", "L2H3", "MLP1", "logits"], n_layers=3)]
    for form in forms:
        got = faithfulness(tiny_gpt2, ps, form)
        assert got.heads == ["L0H1", "L2H3"] and torch.equal(got.values, ref.values), form
    one = faithfulness(tiny_gpt2, ps, ["L2H3"])
    assert one.heads == ["L2H3"]
    assert torch.equal(one.values, faithfulness(tiny_gpt2, ps, (2, 3)).values)
    with pytest.raises(ValueError, match="MLP1 is not one"):
        faithfulness(tiny_gpt2, ps, ["L2H3", "MLP1"])
    with pytest.raises(ValueError, match="cannot read component"):
        faithfulness(tiny_gpt2, ps, ["L2.H3x"])
    assert_no_hooks(tiny_gpt2)

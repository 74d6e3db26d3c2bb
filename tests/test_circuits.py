"""Circuit graphs and faithfulness."""

from __future__ import annotations

import pytest
import torch

from interp import hooks as H
from interp import prompts
from interp.circuits import Circuit, faithfulness
from interp.metrics import LOGIT_DIFF

from conftest import assert_no_hooks, load_tiny


def test_circuit_from_edges_and_exports():
    edges = [("input", "L0H1", 0.5), ("L0H1", "L1H0", -2.0), ("L1H0", "logits", 1.0),
             ("MLP0", "logits", 0.01)]
    c = Circuit.from_edges(edges, n_layers=2, top_n=3)
    assert [e[:2] for e in c.edges] == [("L0H1", "L1H0"), ("L1H0", "logits"), ("input", "L0H1")]
    assert "MLP0" not in c.nodes and c.heads() == [(0, 1), (1, 0)]
    assert '"L0H1" -> "L1H0"' in c.to_dot()
    fig = c.plot()
    assert len(fig.data) == 4
    assert Circuit.from_edges(edges, n_layers=2, threshold=0.9).nodes == ["L0H1", "L1H0", "logits"]
    with pytest.raises(ValueError, match="unknown node"):
        Circuit(nodes=["head7"], n_layers=2)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_faithfulness_full_circuit_is_one_and_zero_matches_manual(tiny_dirs, family):
    model = load_tiny(tiny_dirs, family)
    ps = prompts.ioi(model, n=8, seed=2)
    everything = [(layer, h) for layer in range(3) for h in range(4)]
    full = faithfulness(model, ps, everything)
    assert full["faithfulness"] == pytest.approx(1.0, abs=1e-5)
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
    manual = LOGIT_DIFF.from_full(logits, ps).mean().item()
    assert res["circuit"] == pytest.approx(manual, abs=1e-5)
    with pytest.raises(IndexError):
        faithfulness(model, ps, [(0, 9)])
    assert_no_hooks(model)

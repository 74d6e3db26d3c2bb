"""Result base (frames, top, plots, save/load) and metrics, without a model."""

from __future__ import annotations

import pytest
import torch

from interp.metrics import bootstrap_ci, logit_diff_fn, logits_at, loss_fn, normalise, resolve_metric
from interp.prompts import PromptSet
from interp.results import Result


def _ps():
    return PromptSet(clean_tokens=torch.tensor([[0, 1, 2, 3], [0, 2, 1, 0]]),
                     answer_ids=torch.tensor([3, 1]), wrong_ids=torch.tensor([2, 2]),
                     answer_pos=torch.tensor([3, 2]))


def test_result_frame_top_plot_save(tmp_path):
    v = torch.tensor([[0.1, -0.9], [0.5, 0.0], [0.2, 0.3]])
    r = Result(values=v, dims=("layer", "head"), meta={"metric": "logit_diff"},
               ci=torch.stack([v - 0.1, v + 0.1], -1))
    df = r.to_frame()
    assert len(df) == 6 and list(df.columns[:2]) == ["layer", "head"]
    top = r.top(2)
    assert (top["layer"].tolist(), top["head"].tolist()) == ([0, 1], [1, 0])
    fig = r.plot()
    assert fig.data[0].type == "heatmap" and list(fig.data[0].y) == ["L0", "L1", "L2"]
    back = Result.load(r.save(tmp_path / "r"))
    assert torch.equal(back.values, v) and back.meta == r.meta and torch.equal(back.ci, r.ci)
    with pytest.raises(ValueError, match="labels"):
        Result(values=v, dims=("layer", "head"), coords={"head": ["a"]})
    three = Result(values=torch.randn(2, 3, 4), dims=("layer", "pos", "head"))
    assert len(three.plot().data) == 4


def test_metrics_and_normalise():
    ps = _ps()
    logits = torch.randn(2, 4, 5)
    ans = logits_at(logits, ps.answer_pos)
    assert torch.equal(ans[1], logits[1, 2])
    ld = logit_diff_fn(ans, ps)
    assert torch.allclose(ld, torch.stack([logits[0, 3, 3] - logits[0, 3, 2], logits[1, 2, 1] - logits[1, 2, 2]]))
    # loss on example 1 covers predictions of tokens 1..2 only (answer_pos=2)
    lp = logits.log_softmax(-1)
    ref1 = -(lp[1, 0, 2] + lp[1, 1, 1]) / 2
    assert torch.allclose(loss_fn(logits, ps)[1], ref1)
    kl = resolve_metric("kl", clean_answer_logits=ans)
    assert torch.allclose(kl(ans, ps), torch.zeros(2), atol=1e-6)
    assert normalise(torch.tensor(2.0), 3.0, 1.0).item() == pytest.approx(0.5)
    assert normalise(torch.tensor(1.0), 3.0, 1.0, "noising").item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="undefined"):
        normalise(torch.tensor(1.0), 1.0, 1.0)
    with pytest.raises(ValueError, match="unknown metric"):
        resolve_metric("accuracy")


def test_bootstrap_ci_contains_mean():
    x = torch.randn(3, 200) + torch.tensor([[0.0], [1.0], [5.0]])
    ci = bootstrap_ci(x)
    m = x.mean(-1)
    assert ci.shape == (3, 2) and bool(((ci[:, 0] <= m) & (m <= ci[:, 1])).all())
    assert bool((ci[:, 1] - ci[:, 0] < 0.6).all())

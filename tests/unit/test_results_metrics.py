"""Result base (frames, top, plots, save/load) and metrics, without a model."""

from __future__ import annotations

import math

import pytest
import torch

from interp.dynamics import TrackResult
from interp.metrics import (
    bootstrap_ci,
    logit_diff_fn,
    logits_at,
    loss_fn,
    normalise,
    resolve_metric,
)
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
    assert list(df.columns) == ["layer", "layer_label", "head", "head_label", "value", "ci_low",
                                "ci_high", "component_label"]
    assert len(df) == 6 and df.component_label.tolist()[:3] == ["L0H0", "L0H1", "L1H0"]
    top = r.top(2)
    assert (top["layer"].tolist(), top["head"].tolist()) == ([0, 1], [1, 0])
    assert r.top(1, by="value").component_label.tolist() == ["L1H0"]
    fig = r.plot()
    assert fig.data[0].type == "heatmap" and list(fig.data[0].y) == ["L0", "L1", "L2"]
    back = Result.load(r.save(tmp_path / "r"))
    assert torch.equal(back.values, v) and back.meta == r.meta and torch.equal(back.ci, r.ci)
    assert back.equals(r) and not back.equals(Result(values=v + 1, dims=("layer", "head")))
    with pytest.raises(ValueError, match="labels"):
        Result(values=v, dims=("layer", "head"), coords={"head": ["a"]})
    with pytest.raises(ValueError, match="not in dims"):
        Result(values=v, dims=("layer", "head"), coords={"pos": ["a"]})
    three = Result(values=torch.randn(2, 3, 4), dims=("layer", "pos", "head"))
    assert len(three.plot().data) == 4
    # integer labels on a layer/head axis become "L<i>"/"H<i>"; others are str()-ed
    ints = Result(values=torch.zeros(2, 2), dims=("layer", "example"),
                  coords={"layer": [0, 5], "example": [0, 1]})
    assert ints.coords == {"layer": ["L0", "L5"], "example": ["0", "1"]}


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


# ----------------------------------------------------------------------------------------------
# the result contract, for every result type built from plain arrays
# ----------------------------------------------------------------------------------------------


def _every_result():
    from interp.ablation import AblationResult, HydraResult, PruningResult
    from interp.attribution import EdgeAttributionResult
    from interp.circuits import Circuit, FaithfulnessCurve, FaithfulnessResult
    from interp.heads import HeadScores
    from interp.lens import DLAResult, LogitLensResult
    from interp.patching import PatchingResult
    from interp.retrieval import MaskingResult

    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    pe = rnd(3, 4, 5)
    v = pe.mean(-1)
    ci = torch.stack([v - 0.2, v + 0.2], -1)
    out = {
        "Result": Result(values=rnd(2, 3), dims=("layer", "head")),
        "PatchingResult": PatchingResult(
            values=v, dims=("layer", "head"), per_example=pe, ci=ci, raw=v * 2,
            raw_per_example=pe * 2,
            meta={"clean": 1.0, "corrupted": 0.0, "direction": "denoising"}),
        "PatchingResult/pos": PatchingResult(
            values=rnd(2, 3), dims=("layer", "pos"),
            coords={"layer": ["L0", "L3"], "pos": ["0:<s>", "1: Mary", "2: and"]}),
        "AblationResult": AblationResult(
            values=v, dims=("layer", "head"), per_example=pe, ci=ci, baseline_per_example=rnd(5),
            mlp_values=rnd(3), mlp_per_example=rnd(3, 5), mlp_ci=rnd(3, 2),
            meta={"baseline": 1.5, "metric": "logit_diff", "kv_group": [[0, 0, 1, 1]] * 3}),
        "AblationResult/ablate": AblationResult(
            values=rnd(1), dims=("ablation",), coords={"ablation": ["L0H1+MLP2"]},
            top_before=[[("a", 0.5), ("b", 0.25)]], top_after=[[("b", 0.5), ("a", 0.1)]],
            meta={"baseline": 1.0, "ablated": 0.5}),
        "HydraResult": HydraResult(
            values=rnd(3, 3), dims=("component", "effect"), per_example=rnd(3, 3, 4),
            coords={"component": ["L0H0", "ATTN1", "MLP1"],
                    "effect": ["direct", "total", "compensation"]},
            downstream=rnd(3, 2, 2), target_ids=[5, 6, 7, 8]),
        "PruningResult": PruningResult(
            values=torch.tensor([2.0, 1.9, 1.5]), dims=("step",),
            heads_kept=torch.tensor([12, 11, 10]), accepted=torch.tensor([True, True, False]),
            mask=torch.ones(3, 4), kept=["L0H0", "L0H1"],
            meta={"original": 2.0, "stop_at": 0.9, "metric": "logit_diff"}),
        "EdgeAttributionResult": EdgeAttributionResult(
            values=rnd(3, 2), dims=("src", "dst"),
            coords={"src": ["embed", "L0H0", "MLP0"], "dst": ["L1H0", "logits"]},
            by_input=rnd(3, 2, 1, 3),
            meta={"valid": [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]], "n_layers": 2}),
        "LogitLensResult": LogitLensResult(
            values=rnd(3, 2, 4).sigmoid(), dims=("layer", "example", "pos"),
            coords={"layer": ["L0", "L1", "final"], "pos": ["0:<s>", "1:a", "2:b", "3:c"]},
            top_ids=torch.randint(0, 9, (3, 2, 4, 2), generator=g),
            top_probs=rnd(3, 2, 4, 2).sigmoid(),
            target_rank=torch.randint(1, 9, (3, 2, 4), generator=g), kl=rnd(3, 2, 4).abs(),
            entropy=rnd(3, 2, 4).abs(),
            top_tokens=[[[f"t{i}{e}{p}" for p in range(4)] for e in range(2)] for i in range(3)],
            meta={"answer_pos": [3, 2]}),
        "DLAResult": DLAResult(
            values=rnd(2, 3), dims=("layer", "head"), per_example=rnd(2, 3, 4), others=rnd(3),
            other_labels=["embed", "MLP0", "MLP1"]),
        "HeadScores": HeadScores(values=rnd(3, 4).abs(), dims=("layer", "head"),
                                 meta={"kv_group": [[0, 0, 1, 1]] * 3, "title": "t"}),
        "MaskingResult": MaskingResult(
            values=torch.tensor([90.0, 40.0, 85.0]), dims=("condition",),
            coords={"condition": ["baseline", "top_k", "random_k"]}, meta={"top_heads": ["L0H1"]}),
        "Circuit": Circuit.from_edges([("embed", "L0H1", 0.5), ("L0H1", "logits", -1.0)],
                                      n_layers=2),
        "FaithfulnessResult": FaithfulnessResult(
            values=torch.tensor([3.0, 2.4, 0.0]), dims=("run",), per_example=rnd(3, 4),
            coords={"run": ["model", "circuit", "corrupted"]}, heads=["L0H1"],
            meta={"n_heads_total": 12, "metric": "logit_diff"}),
        "FaithfulnessCurve": FaithfulnessCurve(
            values=rnd(2, 4), dims=("ranking", "size"),
            coords={"ranking": ["signed", "abs"], "size": ["1", "10", "50", "100"]},
            meta={"cpr": 0.8, "cmd": 0.2, "n_edges": [1, 5, 20, 40], "method": "eap"}),
        "TrackResult": TrackResult(
            values=rnd(3, 2), dims=("step", "measure"),
            coords={"step": ["0", "100", "1000"], "measure": ["train_loss", "test_loss"]},
            meta={"name": "losses", "steps": [0, 100, 1000]}),
    }
    return out


RESULTS = list(_every_result())


def test_every_result_type_is_covered():
    from interp.results import _REGISTRY

    covered = {type(r).__name__ for r in _every_result().values()}
    missing = set(_REGISTRY) - covered
    assert not missing, f"result types without a contract test: {missing}"


@pytest.mark.parametrize("name", RESULTS)
def test_frame_schema_and_labels(name):
    r = _every_result()[name]
    for d in r.dims:
        labels = r.coords[d]
        assert len(labels) == r.values.shape[r.dims.index(d)]
        assert all(isinstance(x, str) for x in labels), (d, labels)
    if "layer" in r.dims:
        assert all(x.startswith("L") or x == "final" for x in r.coords["layer"])
    if "head" in r.dims:
        assert all(x.startswith(("H", "KV")) for x in r.coords["head"])
    df = r.to_frame()
    expect = [c for d in r.dims for c in (d, f"{d}_label")] + ["value"]
    expect += ["ci_low", "ci_high"] if r.ci is not None else []
    assert list(df.columns[:len(expect)]) == expect
    assert not ({"score", "delta", "effect", "dla", "accuracy"} - set(r.dims)) & set(df.columns)
    assert len(df) == r.values.numel()
    for d in r.dims:
        assert df[d].dtype.kind == "i"
        assert df[f"{d}_label"].tolist() == [r.coords[d][i] for i in df[d]]
    # the value column is the tensor in C order, row by row
    cells = [r.values[tuple(int(df[d].iloc[i]) for d in r.dims)].item() for i in range(len(df))]
    assert df["value"].tolist() == pytest.approx(cells, nan_ok=True)
    if r.ci is not None:
        assert df.ci_low.tolist() == pytest.approx(r.ci[..., 0].reshape(-1).tolist())
    top = r.top(2)
    assert list(top.columns) == list(df.columns) and len(top) == min(2, len(df))


@pytest.mark.parametrize("name", RESULTS)
def test_save_load_round_trip(name, tmp_path):
    from interp import results

    r = _every_result()[name]
    path = r.save(tmp_path / "r")
    assert sorted(p.name for p in path.iterdir()) == ["result.json", "tensors.safetensors"]
    back = results.load(path)
    assert type(back) is type(r) and back.equals(r)
    assert back.to_frame().equals(r.to_frame())
    assert type(r).load(path).equals(r)
    changed = results.load(path)
    changed.meta["extra"] = 1
    assert not changed.equals(r)


@pytest.mark.parametrize("name", RESULTS)
def test_plot_rejects_unknown_options(name):
    r = _every_result()[name]
    fig = r.plot()
    assert fig.data
    accepted = type(r).plot.accepted
    with pytest.raises(TypeError) as e:
        r.plot(no_such_option=1)
    msg = str(e.value)
    assert "no_such_option" in msg and all(a in msg for a in accepted), msg
    assert r.plot(title="custom").layout.title.text == "custom"


def test_result_load_errors(tmp_path):
    from interp import results
    from interp.heads import HeadScores

    with pytest.raises(FileNotFoundError, match="not a saved result"):
        results.load(tmp_path)
    path = Result(values=torch.zeros(2), dims=("layer",)).save(tmp_path / "plain")
    with pytest.raises(TypeError, match="interp.results.load"):
        HeadScores.load(path)


def test_plot_must_not_swallow_options():
    with pytest.raises(TypeError, match="explicitly"):
        class Bad(Result):
            def plot(self, *, title=None, **kw):
                return None


def test_sub_results_of_knockout_and_dla():
    r = _every_result()
    ko = r["AblationResult"]
    mlps = ko.mlps
    assert mlps.dims == ("component",) and mlps.labels("component") == ["MLP0", "MLP1", "MLP2"]
    assert torch.equal(mlps.values, ko.mlp_values)
    assert torch.equal(mlps.per_example, ko.mlp_per_example)
    assert mlps.to_frame().component_label.tolist() == ["MLP0", "MLP1", "MLP2"]
    dla = r["DLAResult"]
    comp = dla.components
    assert comp.labels("component") == ["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2",
                                        "embed", "MLP0", "MLP1"]
    assert torch.equal(comp.values, torch.cat([dla.values.reshape(-1), dla.others]))
    assert float(comp.values.sum()) == pytest.approx(dla.total(), abs=1e-5)
    bars = dla.plot_bars()
    assert list(bars.data[0].x) == ["embed", "MLP0", "MLP1"]
    from interp.ablation import AblationResult

    with pytest.raises(ValueError, match="include_mlps"):
        _ = AblationResult(values=torch.zeros(1), dims=("ablation",)).mlps


def test_faithfulness_result_numbers():
    f = _every_result()["FaithfulnessResult"]
    assert (f.model, f.circuit, f.corrupted) == pytest.approx((3.0, 2.4, 0.0))
    assert f.faithfulness == pytest.approx(0.8) and (f.n_heads, f.n_heads_total) == (1, 12)
    same = type(f)(values=torch.tensor([1.0, 0.5, 1.0]), dims=("run",),
                   coords={"run": ["model", "circuit", "corrupted"]}, meta={"n_heads_total": 4})
    assert math.isnan(same.faithfulness)


def test_head_score_maps_use_a_fixed_scale():
    """Noise-level scores are drawn on the 0-1 scale, not stretched to fill the colour range;
    scores above 1 (retrieval copy events) widen it to their maximum."""
    from interp.heads import HeadScores

    low = HeadScores(values=torch.full((2, 3), 0.02) + torch.arange(6.0).view(2, 3) * 1e-3,
                     dims=("layer", "head"))
    trace = low.plot().data[0]
    assert (trace.zmin, trace.zmax) == (0.0, 1.0)
    high = HeadScores(values=torch.tensor([[0.5, 1.7]]), dims=("layer", "head"))
    assert high.plot().data[0].zmax == pytest.approx(1.7)

"""Checkpoints and ``track``: one model at a time, a step axis, caching, Hub revisions; the
grokking progress measures on logits whose Fourier structure is known by construction."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import build_test_tokenizer, save_tiny

import interp
from interp.dynamics import Checkpoint, Checkpoints, TrackResult, track
from interp.dynamics import grokking as G


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Three 'checkpoints' of one tiny GPT-2: different seeds stand in for training steps."""
    root = tmp_path_factory.mktemp("run")
    tok = build_test_tokenizer(root / "_tok")
    for step, seed in ((0, 0), (100, 1), (20, 2)):
        save_tiny(root / f"step_{step}", "gpt2", tok, seed=seed)
    (root / "step_5").mkdir()  # no config.json: not a checkpoint
    (root / "notes").mkdir()
    return root


def test_from_dir_finds_steps_in_order(run_dir):
    cps = Checkpoints.from_dir(run_dir)
    assert cps.steps == [0, 20, 100]
    assert cps[1].spec.endswith("step_20") and cps[1].revision is None
    assert cps.subset(2).steps == [0, 100]
    with pytest.raises(FileNotFoundError, match="step_<N>"):
        Checkpoints.from_dir(run_dir / "notes")
    with pytest.raises(ValueError, match="share a step"):
        Checkpoints((Checkpoint(1, "a"), Checkpoint(1, "b")))


def test_track_scalar_and_grid_match_each_checkpoint(run_dir, tmp_path):
    cps = Checkpoints.from_dir(run_dir)
    res = track(cps, lambda m: float(m.W_E.detach().norm()), name="embed norm", progress=False)
    assert isinstance(res, TrackResult) and res.dims == ("step",)
    assert res.coords["step"] == ["0", "20", "100"]
    for i, cp in enumerate(cps):
        want = float(interp.load_model(cp.spec).W_E.detach().norm())
        assert float(res.values[i]) == pytest.approx(want, rel=1e-6)
    assert len(set(res.values.tolist())) == 3  # the checkpoints differ

    from interp.heads import induction_scores

    grid = track(cps, lambda m: induction_scores(m, seq_len=8, batch=2), progress=False)
    assert grid.dims[0] == "step" and grid.values.shape[0] == 3 and grid.values.ndim == 3
    frame = grid.to_frame()
    assert {"step_label", "layer_label", "head_label", "value"} <= set(frame.columns)
    fig = res.plot(log_x=True)
    assert len(fig.data) == 1 and list(fig.data[0].x) == [0, 20, 100]


def test_track_caches_per_checkpoint(run_dir, tmp_path, monkeypatch):
    cps = Checkpoints.from_dir(run_dir)
    calls = []

    def fn(m, step):
        calls.append(step)
        return torch.tensor([step, 2.0 * step])
    a = track(cps, fn, name="twice", cache_dir=tmp_path, progress=False, pass_step=True)
    assert calls == [0, 20, 100]
    monkeypatch.setattr(Checkpoint, "load", lambda self, **kw: pytest.fail("reloaded"))
    b = track(cps, fn, name="twice", cache_dir=tmp_path, progress=False, pass_step=True)
    assert calls == [0, 20, 100] and torch.equal(a.values, b.values)
    assert a.values[:, 1].tolist() == [0.0, 40.0, 200.0]


def test_track_refuses_changing_shapes(run_dir):
    cps = Checkpoints.from_dir(run_dir)
    with pytest.raises(ValueError, match="shape"):
        track(cps, lambda m, s: torch.zeros(1 + s // 20), pass_step=True, progress=False)
    with pytest.raises(TypeError, match="number, a tensor or a Result"):
        track(cps, lambda m: "x", progress=False)


def test_hub_revisions_reach_the_loader(monkeypatch):
    seen = []
    import interp.models

    monkeypatch.setattr(interp.models, "load_model", lambda spec, **kw: seen.append((spec, kw)))
    cps = Checkpoints.hub("EleutherAI/pythia-70m", [1000, 0])
    assert [c.revision for c in cps] == ["step0", "step1000"]
    cps[1].load(device="cpu")
    assert seen == [("EleutherAI/pythia-70m", {"device": "cpu", "revision": "step1000"})]


# --- grokking measures on constructed logits ------------------------------------------------


def test_fourier_basis_is_orthonormal():
    for p in (5, 59):
        B, names = G.fourier_basis(p)
        assert B.shape == (p, p) and len(names) == p
        assert torch.allclose(B @ B.T, torch.eye(p, dtype=B.dtype), atol=1e-10)


def _cos_logits(p, keys, scale=3.0):
    a = torch.arange(p, dtype=torch.float64)[:, None, None]
    b = torch.arange(p, dtype=torch.float64)[None, :, None]
    c = torch.arange(p, dtype=torch.float64)[None, None, :]
    return scale * sum(torch.cos(2 * math.pi * k / p * (a + b - c)) for k in keys)


def test_measures_on_a_pure_key_frequency_model():
    p, keys = 31, [3, 7]
    logits = _cos_logits(p, keys)
    assert G.cos_fit_fraction(logits, keys) == pytest.approx(1.0, abs=1e-9)
    restricted = G.restricted_logits(logits, keys)
    assert torch.allclose(restricted, logits, atol=1e-9)  # all of it is key-frequency signal
    # removing the key frequencies leaves nothing: uniform prediction, loss log p
    assert G._ce(logits - restricted) == pytest.approx(math.log(p), abs=1e-9)
    # the wrong frequency explains nothing and restricting to it destroys the answer
    assert G.cos_fit_fraction(logits, [5]) == pytest.approx(0.0, abs=1e-9)
    assert G._ce(G.restricted_logits(logits, [5])) == pytest.approx(math.log(p), abs=1e-9)
    assert G._ce(logits) < 0.5 * math.log(p)


def test_key_frequencies_from_norms():
    norms = torch.tensor([0.1, 5.0, 0.2, 4.0, 0.05, 1.0])
    assert G.key_frequencies(norms) == [2, 4]
    assert G.key_frequencies(norms, ratio=0.1) == [2, 4, 6]

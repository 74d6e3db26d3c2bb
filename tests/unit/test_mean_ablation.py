"""The one mean-ablation statistic: padding never enters a mean."""

from __future__ import annotations

import torch

from interp.ablation._components import mean_activation


def _loop_mean(act, ap, per_position):
    b, n = act.shape[:2]
    if not per_position:
        rows = [act[i, p] for i in range(b) for p in range(n) if p <= ap[i]]
        return torch.stack(rows).mean(0)[None, None]
    out = []
    every = torch.stack([act[i, p] for i in range(b) for p in range(n) if p <= ap[i]]).mean(0)
    for p in range(n):
        rows = [act[i, p] for i in range(b) if p <= ap[i]]
        out.append(torch.stack(rows).mean(0) if rows else every)
    return torch.stack(out)[None]


def test_mean_activation_ignores_padding_and_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    act = torch.randn(4, 7, 3, 5, generator=g)
    ap = torch.tensor([6, 3, 4, 2])
    for per_position in (True, False):
        got = mean_activation(act, ap, per_position=per_position)
        want = _loop_mean(act, ap, per_position)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-6)
        # padding (positions after each answer) can hold anything
        poisoned = act.clone()
        for i, a in enumerate(ap.tolist()):
            poisoned[i, a + 1:] = 1e6
        assert torch.equal(mean_activation(poisoned, ap, per_position=per_position), got)


def test_mean_activation_without_answer_positions_is_the_plain_mean():
    act = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.allclose(mean_activation(act, None, per_position=True)[0], act.mean(0))
    assert torch.allclose(mean_activation(act, None, per_position=False)[0, 0], act.mean((0, 1)))

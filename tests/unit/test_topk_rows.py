"""The blocked top-k the logit lens uses equals torch.topk."""

from __future__ import annotations

import pytest
import torch

from interp._unembed import topk_rows


@pytest.mark.parametrize(("n", "v", "k"), [(7, 50257, 5), (3, 4096, 5), (5, 151936, 10),
                                           (4, 600, 1), (2, 50, 5), (3, 2000, 64)])
def test_topk_rows_equals_torch_topk(n, v, k):
    g = torch.Generator().manual_seed(v + k)
    x = torch.randn(n, v, generator=g)
    x[0, : min(k, v)] += 50.0  # row 0: the whole top-k inside the first block
    if n > 1:
        x[1, -1] = 80.0  # row 1: the maximum in the ragged tail
    got, ref = topk_rows(x, k), x.topk(min(k, v), dim=-1)
    assert torch.equal(got.values, ref.values)
    assert torch.equal(got.indices, ref.indices)


def test_topk_rows_values_under_ties():
    x = torch.zeros(2, 5000)
    x[:, 100:110] = 1.0  # ten tied maxima: any five of them are a right answer
    got = topk_rows(x, 5)
    assert torch.equal(got.values, torch.ones(2, 5))
    assert bool(((got.indices >= 100) & (got.indices < 110)).all())


def test_topk_rows_leaves_tied_block_maxima_to_torch():
    x = torch.randn(3, 50257)
    x[1] = 0.0  # a row of equal logits (a zero residual): torch.topk decides, as before
    got, ref = topk_rows(x, 5), x.topk(5, dim=-1)
    assert torch.equal(got.values, ref.values) and torch.equal(got.indices, ref.indices)

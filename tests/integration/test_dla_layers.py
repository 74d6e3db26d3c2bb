"""DLA's logit difference by layer: cumulative sums of the components, ending at the model's."""

from __future__ import annotations

import torch

from interp import prompts as P
from interp.lens import direct_logit_attribution


def test_accumulated_ends_at_the_model_logit_difference(tiny_model):
    g = torch.Generator().manual_seed(2)
    n = tiny_model.cfg.d_vocab
    clean = torch.randint(1, n, (4, 6), generator=g)
    ps = P.PromptSet(clean_tokens=clean, corrupted_tokens=clean.flip(0),
                     answer_ids=torch.randint(1, n, (4,), generator=g),
                     wrong_ids=torch.randint(1, n, (4,), generator=g),
                     answer_pos=torch.tensor([5, 4, 5, 3]))
    res = direct_logit_attribution(tiny_model, ps)
    labels, acc = res.accumulated()
    assert acc.shape == (tiny_model.cfg.n_layers + 1, 4) and len(labels) == acc.shape[0]
    rem = res.others_per_example[res.other_labels.index("remainder(norm bias + unembed bias)")]
    want = torch.tensor(res.meta["model_logit_diff_per_example"])
    assert torch.allclose(acc[-1] + rem, want, atol=1e-3)
    # each step adds exactly that layer's heads, attention bias and MLP
    step = acc[1] - acc[0]
    lab = res.other_labels
    parts = (res.per_example[0].sum(0) + res.others_per_example[lab.index("attn_bias0")]
             + res.others_per_example[lab.index("MLP0")])
    assert torch.allclose(step, parts, atol=1e-5)

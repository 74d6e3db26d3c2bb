"""The logit lens's per-layer statistics against the plain full-tensor formulas."""

from __future__ import annotations

import torch

from interp.lens import _lens_row


def test_lens_row_matches_plain_formulas():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(15, 97, generator=g) * 4
    final = torch.randn(15, 97, generator=g) * 4
    tgt = torch.randint(0, 97, (15,), generator=g)
    p_final = final.softmax(-1)
    neg_h = (p_final * final.log_softmax(-1)).sum(-1)
    rows = {key: [] for key in ("top_ids", "top_probs", "rank", "kl", "ent", "tprob")}
    scratch = torch.full_like(logits, float("nan"))  # reused buffer: its content must not matter
    _lens_row(logits, tgt, 4, p_final, neg_h, rows, scratch)
    logp = logits.log_softmax(-1)
    prob = logp.exp()
    top = prob.topk(4, dim=-1)
    assert torch.equal(rows["top_ids"][0], top.indices)
    assert torch.allclose(rows["top_probs"][0], top.values, atol=1e-6)
    assert torch.allclose(rows["tprob"][0], prob.gather(-1, tgt[..., None])[..., 0], atol=1e-6)
    t_logit = logits.gather(-1, tgt[..., None])
    assert torch.equal(rows["rank"][0], (logits >= t_logit).sum(-1))
    assert torch.allclose(rows["ent"][0], -(prob * logp).sum(-1), atol=1e-4)
    kl = (p_final * (final.log_softmax(-1) - logp)).sum(-1)
    assert torch.allclose(rows["kl"][0], kl, atol=1e-4)


def test_lens_row_kl_is_finite_where_probabilities_underflow():
    """A layer that puts ~all mass on one token: float32 probabilities of the rest are 0, yet
    the KL from a spread-out final distribution is finite and exact in log space."""
    logits = torch.full((1, 50), -200.0)
    logits[..., 0] = 200.0
    final = torch.zeros(1, 50)
    p_final = final.softmax(-1)
    neg_h = (p_final * final.log_softmax(-1)).sum(-1)
    rows = {key: [] for key in ("top_ids", "top_probs", "rank", "kl", "ent", "tprob")}
    _lens_row(logits, torch.zeros(1, dtype=torch.long), 3, p_final, neg_h, rows,
              torch.empty_like(logits))
    want = (p_final.double() * (final.double().log_softmax(-1)
                                - logits.double().log_softmax(-1))).sum(-1)
    assert torch.isfinite(rows["kl"][0]).all()
    assert torch.allclose(rows["kl"][0].double(), want, rtol=1e-4)


def test_final_norm_and_unembedding_reproduce_the_logits(tiny_model):
    """The lens reads every row through the model's own final norm and unembedding: applied to
    the last residual they give the model's logits (the final row itself reuses them)."""
    from interp import _unembed as U
    from interp import hooks as H

    tokens = torch.randint(1, tiny_model.cfg.d_vocab, (2, 7), generator=torch.Generator().manual_seed(1))
    last = H.resid_post(tiny_model.cfg.n_layers - 1)
    with torch.no_grad():
        logits, cache = tiny_model.run_with_cache(tokens, names_filter=lambda n: n == last)
        assert torch.allclose(U.decode(tiny_model, cache[last]), logits, atol=1e-4)
        # the lens's in-place variant, into a reused buffer holding garbage
        flat = cache[last].reshape(-1, cache[last].shape[-1])
        out = torch.full((flat.shape[0], logits.shape[-1]), 7.0)
        U.decode_into(tiny_model, flat, out)
        assert torch.allclose(out, logits.reshape(out.shape), atol=1e-4)

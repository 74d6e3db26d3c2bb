"""Induction heads (Olsson et al. 2022; Elhage et al. 2021) on the zoo `induction` model.

1. Score every head on repeated random tokens [BOS] + r + r: previous-token score
   (attention to the previous token) and induction score (attention to the token after the
   previous occurrence of the current token).
2. Confirm by ablation: mean-ablating the top induction head, or the previous-token head it
   reads from, must raise the loss on the predictable second copy; a head that is neither must not.
3. K-composition (Elhage et al. 2021): how much of the induction head's key side (W_QK) reads
   the previous-token head's output (W_OV): ||W_OV W_QK^T||_F / (||W_OV||_F ||W_QK||_F) in
   transformer-lens's row-vector convention (Elhage et al.'s ||W_QK W_OV||_F in column vectors),
   against every other (layer-0 head, later head) pair. The score reads the weights only, so on
   a rotary model (the zoo `induction` model is a 2-layer Llama) it ignores the rotation.

Run: python examples/induction_heads.py [--fast] [--model induction]
"""

from __future__ import annotations

import sys

import torch
from _common import Report, head_label, load, parse_args, table

THRESHOLD = 0.4  # the usual induction / previous-token threshold (ARENA's tutorials)


def second_half_loss(model, tokens: torch.Tensor, seq_len: int) -> float:
    """Mean next-token loss on the predictable tokens of [BOS] + r + r (second copy, after its
    first token)."""
    logp = model(tokens)[:, :-1].float().log_softmax(-1)
    nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0]
    return float(nll[:, seq_len + 1:].mean())


def k_composition(model, sender: tuple[int, int], receiver: tuple[int, int]) -> float:
    """||W_OV^s (W_QK^r)^T||_F / (||W_OV^s||_F ||W_QK^r||_F), row-vector convention."""
    (ls, hs), (lr, hr) = sender, receiver
    w_ov = model.W_V[ls, hs] @ model.W_O[ls, hs]  # [d_model, d_model]: x -> x W_V W_O
    w_qk = model.W_Q[lr, hr] @ model.W_K[lr, hr].T  # [d_model, d_model]: score = x_q W_QK x_k^T
    return float(torch.linalg.matrix_norm(w_ov @ w_qk.T) /
                 (torch.linalg.matrix_norm(w_ov) * torch.linalg.matrix_norm(w_qk)))


def main(argv=None) -> int:
    args = parse_args(__doc__, "induction", argv)
    from interp.ablation import ablated
    from interp.heads import induction_scores, previous_token_scores, repeated_tokens
    from interp.models import describe
    from interp.prompts import PromptSet

    model = load(args.model)
    info = describe(model)
    rep = Report(f"induction heads on {args.model}")
    seq_len, batch = (30, 6) if args.fast else (50, 20)
    seq_len = min(seq_len, (info.n_ctx - 1) // 2)

    # 1. scores (on one seed), ablation (on another)
    ind = induction_scores(model, seq_len=seq_len, batch=batch, seed=args.seed + 1)
    prev = previous_token_scores(model, seq_len=seq_len, batch=batch, seed=args.seed + 1)
    perfect = seq_len / (seq_len + 2)
    ind_heads = ind.above(THRESHOLD)
    first_ind = min((layer for layer, _ in ind_heads), default=info.n_layers)
    prev_heads = [lh for lh in prev.above(THRESHOLD) if lh[0] < first_ind]
    rows = [[head_label(layer, h), float(prev.values[layer, h]), float(ind.values[layer, h]),
             "induction" if (layer, h) in ind_heads else "previous-token" if (layer, h) in prev_heads
             else ""] for layer in range(info.n_layers) for h in range(info.n_heads)]
    table(f"Head scores on [BOS]+r+r, |r|={seq_len}, {batch} sequences (perfect induction = "
          f"{perfect:.2f}; role = score > {THRESHOLD})", ["head", "previous-token", "induction", "role"],
          rows)
    (il, ih), i_score = ind.best()
    rep.check("top induction score", i_score, i_score > THRESHOLD, f"> {THRESHOLD}",
              f"ARENA/Olsson threshold for an induction head (perfect = {perfect:.2f})")
    rep.check("induction heads in layer >= 1", ", ".join(head_label(*lh) for lh in ind_heads) or "none",
              bool(ind_heads) and first_ind >= 1, "all in layer >= 1",
              "an induction head composes with an earlier head, so it cannot sit in layer 0")
    rep.check("previous-token heads before them", ", ".join(head_label(*lh) for lh in prev_heads) or "none",
              bool(prev_heads), f">= 1 head > {THRESHOLD}", "the induction mechanism needs a "
              "previous-token head in an earlier layer (Olsson et al. 2022)")
    if not ind_heads or not prev_heads:
        return rep.finish()

    # 2. ablation confirms the roles (mean ablation per position on other sequences' statistics)
    tokens = repeated_tokens(model, seq_len=seq_len, batch=batch, seed=args.seed)
    ref = PromptSet(clean_tokens=tokens, answer_ids=tokens[:, -1],
                    answer_pos=torch.full((batch,), tokens.shape[1] - 1))
    clean = second_half_loss(model, tokens, seq_len)
    groups = {"all induction heads": ind_heads, "all previous-token heads": prev_heads,
              "top induction head alone": [(il, ih)]}
    losses = {}
    for role, hs in groups.items():
        with ablated(model, [head_label(*lh) for lh in hs], method="mean", reference=ref):
            losses[role] = second_half_loss(model, tokens, seq_len)
    table("Mean-ablating heads: loss on the predictable second copy",
          ["ablated", "heads", "loss", "x clean"],
          [["nothing", "-", clean, 1.0]] +
          [[role, ", ".join(head_label(*lh) for lh in groups[role]), v, v / clean]
           for role, v in losses.items()])
    r_ind = losses["all induction heads"] / clean
    r_prev = losses["all previous-token heads"] / clean
    rep.check("loss x clean, induction heads ablated", r_ind, r_ind >= 3, ">= 3",
              "copying is the only way to predict random tokens (model construction)")
    rep.check("loss x clean, previous-token heads ablated", r_prev, r_prev >= 3, ">= 3",
              "the induction heads' keys need the previous token (Olsson et al. 2022)")

    # 3. K-composition: every (layer-0 head -> later head) pair
    from transformer_lens import FactoredMatrix
    from transformer_lens.utilities.matrix import composition_scores

    senders = [(0, h) for h in range(info.n_heads)]
    receivers = [(layer, h) for layer in range(1, info.n_layers) for h in range(info.n_heads)]
    pairs = {(s, r): k_composition(model, s, r) for s in senders for r in receivers}
    p0 = prev_heads[0]
    tl = float(composition_scores(model.OV[p0[0], p0[1]], model.QK[il, ih].T))
    ours = k_composition(model, p0, (il, ih))
    comp_pairs = [(s, r) for s in prev_heads if s[0] == 0 for r in ind_heads]
    comp = torch.tensor([pairs[k] for k in comp_pairs])
    others = torch.tensor([v for k, v in pairs.items() if k not in comp_pairs])
    others_in = torch.tensor([pairs[(s, r)] for s in senders for r in ind_heads
                              if (s, r) not in comp_pairs])
    auc = float((comp[:, None] > others_in[None, :]).float().mean()) if len(others_in) else 1.0
    g = torch.Generator().manual_seed(args.seed)
    d, dh = info.d_model, info.d_head

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    rand_base = sum(float(composition_scores(FactoredMatrix(rand(d, dh), rand(dh, d)),
                                             FactoredMatrix(rand(d, dh), rand(dh, d)).T))
                    for _ in range(20)) / 20
    table("K-composition, row = sender (layer 0), column = receiver", ["sender", "prev score"] +
          [head_label(*r) for r in receivers],
          [[head_label(*s), float(prev.values[s])] + [pairs[(s, r)] for r in receivers] for s in senders])
    top_sender = {r: max(senders, key=lambda s: pairs[(s, r)]) for r in ind_heads}
    hits = sum(top_sender[r] in prev_heads for r in ind_heads)
    table("K-composition: previous-token -> induction pairs against the other pairs",
          ["pairs", "mean", "min", "other pairs mean", "other pairs max",
           "other senders into induction heads: max", "AUC", "random low-rank baseline"],
          [[len(comp_pairs), float(comp.mean()), float(comp.min()), float(others.mean()),
            float(others.max()), float(others_in.max()) if len(others_in) else float("nan"), auc,
            rand_base]])
    rep.check("our K-comp == transformer-lens composition_scores", abs(ours - tl),
              abs(ours - tl) < 1e-4, "|diff| < 1e-4", "same definition, independent code")
    rep.check("induction heads whose top K-composer is a previous-token head",
              f"{hits}/{len(ind_heads)}", hits == len(ind_heads), "all",
              "Elhage et al. 2021: the induction head's key reads the previous-token head")
    rep.check("AUC: prev->induction pairs vs other senders into the induction heads", auc,
              auc >= 0.9, ">= 0.9", "the composing pairs stand out from the baseline of other pairs")
    rep.check("prev->induction K-comp over the random low-rank baseline", float(comp.mean()) / rand_base,
              float(comp.mean()) > 2 * rand_base, "> 2x", "Elhage et al. 2021 compare to random matrices")

    pl, ph = prev_heads[0]
    p_score = float(prev.values[pl, ph])
    table("Found vs paper", ["", "this model", "Olsson et al. 2022 / ARENA 2-layer attn-only"],
          [["previous-token head", f"{head_label(pl, ph)} ({p_score:.2f})", "L0H7 (ARENA attn_only_2L)"],
           ["induction head", f"{head_label(il, ih)} ({i_score:.2f})", "L1H4, L1H10 (> 0.4)"]])
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())

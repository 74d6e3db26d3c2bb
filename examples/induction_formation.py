"""Induction heads form in a phase change (Olsson et al. 2022) on the zoo `induction` model's
checkpoints.

Over the checkpoints the recipe kept while training the model:

1. Best induction score and best previous-token score over heads (on [BOS] + r + r).
2. In-context-learning score: loss on the repeated half minus loss on the first half of
   [BOS] + r + r (negative when the model uses the context; Olsson et al. use loss at token
   ~500 minus token ~50 on natural text).
3. The phase change: the best induction score goes from 20% to 80% of its rise within 10% of
   the run, after a plateau; the in-context-learning score falls in that window, and the
   previous-token score reaches half its rise no later than the induction score does
   (K-composition needs a previous-token head).

Run: python examples/induction_formation.py [--fast]
"""

from __future__ import annotations

import sys

from _common import Report, parse_args, table, zoo_checkpoints

THRESHOLD = 0.4  # the usual induction / previous-token threshold


def icl_score(model, seq_len: int, batch: int, seed: int) -> float:
    """Mean loss on the repeated half minus mean loss on the first half of [BOS] + r + r."""
    from interp.heads import repeated_tokens

    toks = repeated_tokens(model, seq_len=seq_len, batch=batch, seed=seed)
    logp = model(toks)[:, :-1].float().log_softmax(-1)
    nll = -logp.gather(-1, toks[:, 1:, None])[..., 0]
    return float(nll[:, seq_len + 1:].mean() - nll[:, 1:seq_len].mean())


def main(argv=None) -> int:
    args = parse_args(__doc__, "induction", argv)
    import torch

    from interp.dynamics import track
    from interp.heads import induction_scores, previous_token_scores

    cps = zoo_checkpoints(args, "induction")
    seq_len, batch = (30, 6) if args.fast else (50, 16)

    def measure(model):
        ind = induction_scores(model, seq_len=seq_len, batch=batch, seed=args.seed + 1)
        prev = previous_token_scores(model, seq_len=seq_len, batch=batch, seed=args.seed + 1)
        return torch.tensor([float(ind.values.max()), float(prev.values[0].max()),
                             icl_score(model, seq_len, batch, args.seed + 2)])
    res = track(cps, measure, name="induction formation", progress=False)
    steps = cps.steps
    ind, prev, icl = (res.values[:, i].tolist() for i in range(3))
    table("Over training (best head scores; ICL = repeated-half loss - first-half loss)",
          ["step", "best induction", "best previous-token (layer 0)", "ICL score"],
          [[s, a, b, c] for s, a, b, c in zip(steps, ind, prev, icl)])

    total = steps[-1]

    def crossing(vals, frac):
        """The step (linear between checkpoints) where ``vals`` first covers ``frac`` of its
        change from the first to the last checkpoint."""
        target = vals[0] + frac * (vals[-1] - vals[0])
        up = vals[-1] >= vals[0]
        for i in range(1, len(vals)):
            if (vals[i] >= target) if up else (vals[i] <= target):
                a, b = vals[i - 1], vals[i]
                t = 0.0 if b == a else (target - a) / (b - a)
                return steps[i - 1] + t * (steps[i] - steps[i - 1])
        return float(total)
    t20, t50, t80 = (crossing(ind, f) for f in (0.2, 0.5, 0.8))
    width = t80 - t20
    icl_mid, prev_mid = crossing(icl, 0.5), crossing(prev, 0.5)
    rep = Report("induction-head formation on zoo induction")
    rep.check("induction score: steps from 20% to 80% of its rise", f"{width:.0f} "
              f"({t20:.0f}-{t80:.0f})", width <= 0.1 * total, f"<= 10% of the run ({total} steps)",
              "a phase change: the heads appear in a narrow window (Olsson et al. 2022, Fig. 1)")
    rep.check("plateau before it (step of 20%)", f"{t20:.0f}", t20 >= 0.2 * total,
              ">= 20% of the run", "nothing forms early; the change comes after a plateau")
    rep.check("in-context-learning score: step of half its fall", f"{icl_mid:.0f}",
              t20 <= icl_mid <= t80 + width, f"in {t20:.0f}-{t80 + width:.0f}",
              "induction heads are what makes the repeated tokens cheap (Olsson et al. 2022)")
    rep.check("previous-token score: step of half its rise", f"{prev_mid:.0f}", prev_mid <= t50,
              f"<= {t50:.0f} (induction's half)", "induction heads read a previous-token head "
              "(K-composition), so it cannot form after them (Olsson et al. 2022; Singh et al. "
              "2024: they form together)")
    rep.check("final best induction score", ind[-1], ind[-1] > THRESHOLD, f"> {THRESHOLD}",
              "the shipped model has induction heads")
    rep.check("final ICL score", icl[-1], icl[-1] < -1.0, "< -1 nat",
              "the repeated half is much cheaper than the first")
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())

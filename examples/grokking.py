"""Grokking modular addition (Nanda et al. 2023) on the zoo `modadd` model's checkpoints.

The model (one layer, ReLU MLP) was trained full batch on a fixed fraction of all pairs
a + b mod p with strong weight decay. Over its shipped checkpoints:

1. Train and test loss: the training pairs are memorised long before the test pairs are
   predicted (the grokking delay).
2. Restricted loss (logits kept only along cos/sin(w_k (a + b)) for the key frequencies of the
   final embedding) falls before the test loss does.
3. The excluded loss (the logits minus those components, on the training pairs) rises during
   circuit formation, between memorisation and grokking.
4. The weight norm falls in cleanup; the embedding ends on a few key frequencies.
5. The final logits are mostly sum_k alpha_k cos(w_k (a + b - c)) (fraction of variance).

Run: python examples/grokking.py [--fast]
"""

from __future__ import annotations

import math
import sys

from _common import Report, parse_args, table, zoo_checkpoints


def main(argv=None) -> int:
    args = parse_args(__doc__, "modadd", argv)
    from interp.dynamics import grokking as G
    from interp.models import zoo_path

    cps = zoo_checkpoints(args, "modadd")
    if args.fast:
        cps = cps.subset(12)
    mask = G.load_split(zoo_path("modadd"))
    res = G.progress_over_training(cps, mask, progress=False)
    keys = res.meta["key_frequencies"]
    steps = cps.steps
    col = {m: res.values[:, i].tolist() for i, m in enumerate(G.MEASURES)}
    p = int(round(math.sqrt(len(mask))))
    log_p = math.log(p)

    table(f"Progress measures over training (key frequencies {keys}, p = {p})",
          ["step"] + list(G.MEASURES),
          [[s] + [col[m][i] for m in G.MEASURES] for i, s in enumerate(steps)])

    tp = G.turning_points(res)
    mem, grok, restr = tp["memorised"], tp["grokked"], tp["restricted"]
    i_mem = steps.index(mem) if mem is not None else 0
    excl_peak = tp["excluded_peak_value"]
    rep = Report("grokking on zoo modadd")

    rep.check("memorised (train loss < 0.05) at step", mem if mem is not None else "never",
              mem is not None and col["test_loss"][i_mem] > 1.0,
              "test loss still > 1 then", "memorisation comes first (paper: ~1.4k of 40k epochs)")
    rep.check("grokked (test loss < 0.1) at step", grok if grok is not None else "never",
              grok is not None and mem is not None and grok >= 3 * max(mem, 1),
              ">= 3x the memorisation step", "the grokking delay (paper: ~13k vs ~1.4k epochs)")
    norms = G.embedding_frequency_norms(cps[-1].load()).pow(2)
    share = float(norms[[k - 1 for k in keys]].sum() / norms.sum())
    rep.check("restricted loss < 0.5 at step", restr if restr is not None else "never",
              restr is not None and grok is not None and restr <= grok, "<= the grokking step",
              "the key-frequency circuit works before test loss falls (paper: Fig. 7)")
    rep.check("key frequencies of the final embedding", len(keys), 1 <= len(keys) <= 6,
              "1 to 6", f"a sparse Fourier solution (found {keys}; paper: 5 in its main run)")
    rep.check("embedding norm^2 on the key frequencies", share, share >= 0.8, ">= 0.8",
              "the embedding concentrates on them (paper: Fig. 3)")
    excl_ratio = excl_peak / max(col["excluded_loss"][i_mem], 1e-9)
    peak = tp["excluded_peak"]
    rep.check("excluded loss peak / at memorisation", excl_ratio,
              excl_ratio >= 2 and mem is not None and grok is not None and mem <= peak <= grok,
              ">= 2, peaking between memorisation and grokking",
              f"it rises during circuit formation (peak at step {peak}; paper: Fig. 7)")
    wn = col["weight_norm"][-1] / col["weight_norm"][i_mem]
    rep.check("weight norm final / at memorisation", wn, wn <= 0.85, "<= 0.85",
              "weight decay cleans up (paper: the norm falls in cleanup)")
    rep.check("final test loss", col["test_loss"][-1], col["test_loss"][-1] < 0.1, "< 0.1",
              "the model generalises")
    rep.check("final restricted loss / log p", col["restricted_loss"][-1] / log_p,
              col["restricted_loss"][-1] < 0.1 * log_p, "< 0.1",
              "the key frequencies alone predict the answer")
    rep.check("variance of final logits explained by sum cos(w_k(a+b-c))", col["cos_fit"][-1],
              col["cos_fit"][-1] >= 0.5, ">= 0.5",
              "the logits are mostly the paper's cosine form")
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())

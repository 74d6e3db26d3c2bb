"""Head pruning (Michel et al. 2019, "Are Sixteen Heads Really Better than One?") on the zoo
`ioi` model: greedily mask the 10% of heads with the lowest importance I_h = E|dL/dxi_h|
(recomputed under the current mask) while the logit difference stays >= 90% of the original.

The paper finds large fractions of heads prunable (about 20% on WMT, about 40% on BERT/MNLI)
at a small cost. Expected here, for reasons independent of this run:
* some heads are removable (>= 10%: one pruning step), since a trained model has redundant heads;
* not all heads: the IOI task needs attention to move names, so pruning stops before 100%;
* the heads kept include the heads with the largest knock-out effect (importance tracks the effect).

Run: python examples/pruning.py [--fast] [--model ioi]
"""

from __future__ import annotations

import sys

from _common import Report, head_label, load, parse_args, table


def main(argv=None) -> int:
    args = parse_args(__doc__, "ioi", argv)
    from interp import prompts as P
    from interp.ablation import knockout_sweep, prune_heads
    from interp.models import describe

    model = load(args.model)
    info = describe(model)
    n = 16 if args.fast else 64
    ps = P.ioi(model, n=n, seed=args.seed)
    res = prune_heads(model, ps, step=0.1, stop_at=0.9, metric="logit_diff")
    curve = res.to_frame()[["heads_kept", "value", "fraction", "accepted"]]
    table("Greedy pruning curve (10% of heads per step; value = metric)", list(curve.columns),
          [list(r) for r in curve.itertuples(index=False)])
    total = info.n_layers * info.n_heads
    removable = (total - len(res.kept)) / total
    sweep = knockout_sweep(model, ps, method="zero", include_mlps=False)
    flat = sweep.values.flatten().argsort()  # most negative change first
    key = [head_label(int(i) // info.n_heads, int(i) % info.n_heads) for i in flat[:2]]
    table("Result vs paper", ["", "this model", "Michel et al. 2019"],
          [["heads removable at >= 90% of the metric", f"{removable:.0%} ({total - len(res.kept)}/{total})",
            "~20% (WMT), ~40% (BERT)"],
           ["heads kept", ", ".join(res.kept), ""]])
    rep = Report(f"pruning on {args.model}")
    rep.check("fraction of heads removable", removable, removable >= 0.1, ">= 0.1",
              "trained transformers have redundant heads (Michel et al. 2019)")
    rep.check("fraction of heads removable", removable, removable < 1.0, "< 1.0",
              "the task needs attention to move names")
    rep.check("top-2 knock-out heads are kept", ", ".join(key), all(k in res.kept for k in key),
              "both kept", "importance should track a head's causal effect")
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())

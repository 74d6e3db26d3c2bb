"""Retrieval heads (Wu et al. 2024) and DeCoRe (Gema et al. 2024) on the zoo `needle` model.

1. Retrieval score per head on needle-in-a-haystack trials: the share of the needle's tokens a
   head copies (argmax attention on the needle token being emitted), over trials answered right.
2. Masking table: needle accuracy with the top-K retrieval heads masked against K random other
   heads (Wu et al.: masking retrieval heads breaks retrieval, masking random heads does not).
3. DeCoRe (contrast the model with its retrieval-masked self, alpha = entropy) against plain
   greedy decoding (alpha = 0) on needle prompts, scored by exact match of the code.

Run: python examples/retrieval_heads.py [--fast] [--model needle]
"""

from __future__ import annotations

import sys

from _common import Report, load, parse_args, table


def main(argv=None) -> int:
    args = parse_args(__doc__, "needle", argv)
    from interp import prompts as P
    from interp.models import describe
    from interp.retrieval import (
        decore_generate,
        masking_experiment,
        retrieval_scores,
        rouge1_recall,
    )

    model = load(args.model)
    info = describe(model)
    rep = Report(f"retrieval heads on {args.model}")
    grid = {"lengths": [128] if args.fast else [128, 256, 384],
            "depths": [0, 50, 100] if args.fast else [0, 25, 50, 75, 100]}
    scores = retrieval_scores(model, **grid, seed=args.seed)
    ranked = scores.top(10)
    n_heads = info.n_layers * info.n_heads
    ret = scores.meta["retrieval_heads"]
    table(f"Retrieval scores ({scores.meta['n_accepted']}/{scores.meta['n_trials']} trials "
          f"answered), top 10", ["head", "score", "kv head"],
          [[r.component_label, float(r.value), int(r.kv_head)] for r in ranked.itertuples()])
    rep.check("trials answered (ROUGE-1 recall > 0.5)",
              scores.meta["n_accepted"] / scores.meta["n_trials"],
              scores.meta["n_accepted"] / scores.meta["n_trials"] >= 0.9, ">= 0.9",
              "zoo card: exact match 1.00 at every depth")
    rep.check("heads above the 0.1 threshold", len(ret), len(ret) >= 1, ">= 1",
              "copying the needle needs a head that attends to it (Wu et al. 2024)")

    k = 4 if args.fast else 6
    mask = masking_experiment(model, k=k, n_random=2 if args.fast else 5, scores=scores, **grid,
                              seed=args.seed)
    base, top, rand = (float(x) for x in mask.values)
    table(f"Masking (query masked on decode steps), K = {k} of {n_heads} heads",
          ["condition", "accuracy (ROUGE-1 x100)", "heads"],
          [["baseline", base, "-"], [f"top-{k} retrieval heads", top, ", ".join(mask.meta["top_heads"])],
           [f"random {k} (mean of {len(mask.meta['random_heads'])})", rand,
            " | ".join(", ".join(d) for d in mask.meta["random_heads"])],
           ["paper (Wu et al. 2024, LLaMA-2-7B-80K, K=20)", "top: 94.7 -> 63.6", "random: ~no change"]])
    rep.check("accuracy drop, top-K masked", base - top, base - top >= 30, ">= 30 points",
              "Wu et al.: masking retrieval heads breaks needle retrieval")
    rep.check("top-K drop minus random-K drop", (base - top) - (base - rand),
              (base - top) - (base - rand) >= 20, ">= 20 points",
              "Wu et al.: random heads of the same number barely matter")

    ps = P.needle(model, 2 if args.fast else 6, lengths=(128,), depths=(0, 50, 100),
                  seed=args.seed + 1)
    heads = mask.meta["top_heads"]
    rows, em = [], {"greedy": 0, "DeCoRe": 0}
    for i in range(len(ps)):
        ids = ps.clean_tokens[i, : int(ps.answer_pos[i]) + 1]
        answer = ps.meta["answer_text"][i]
        n_new = len(ps.meta["answer_tokens"][i]) + 1
        g = decore_generate(model, ids, heads=heads, alpha=0.0, max_new_tokens=n_new)
        d = decore_generate(model, ids, heads=heads, alpha=None, max_new_tokens=n_new)
        for name, out in (("greedy", g), ("DeCoRe", d)):
            em[name] += rouge1_recall(answer, out.text) >= 1
        rows.append([answer, g.text.strip(), d.text.strip(), sum(d.alphas) / len(d.alphas)])
    table("DeCoRe (entropy alpha) vs greedy on needle prompts", ["answer", "greedy", "DeCoRe",
                                                                 "mean alpha"], rows[:8])
    n = len(ps)
    table("Exact match", ["decoder", "exact match"], [[k_, v / n] for k_, v in em.items()])
    rep.check("DeCoRe exact match vs greedy", em["DeCoRe"] / n - em["greedy"] / n,
              em["DeCoRe"] >= em["greedy"] - 0.05 * n, ">= -0.05",
              "Gema et al.: contrasting with the retrieval-masked model does not lose faithful answers")
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())

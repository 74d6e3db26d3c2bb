"""Logit lens (nostalgebraist 2020) on the zoo models: the layer where the answer first becomes
the top-1 prediction at the answer position.

The lens decodes resid_pre of every layer, then the final resid_post, with the model's own final
norm and unembedding. Rows are L0 (the embeddings alone) .. L{n-1}, then "final" (= the model's
logits). Expected, for reasons independent of this run:
* the final row is the model's own prediction, so its top-1 rate equals the model's accuracy;
* L0 sees only the current token's embedding, which cannot know an answer that has to be copied
  from the context (IOI: a name; induction: a random token; needle: a code word), so the answer is
  top-1 there for (almost) no prompt;
* the answer first becomes top-1 after the layer(s) that move it (>= L1), and stays top-1 at
  the final row once the model is right.

Run: python examples/logit_lens.py [--fast] [--model ioi|induction|needle|all]
"""

from __future__ import annotations

import statistics
import sys

import torch
from _common import Report, load, parse_args, table


def prompts_for(model, name: str, n: int, seed: int):
    from interp import prompts as P
    from interp.models import ZOO

    task = ZOO[name].task if name in ZOO else "ioi"
    if task == "ioi":
        return P.ioi(model, n=n, seed=seed)
    if task == "induction":
        return P.induction(model, n=n, seq_len=30, seed=seed)
    return P.needle(model, max(1, n // 3), lengths=(256,), depths=(0, 50, 100), seed=seed)


def analyse(name: str, n: int, seed: int, rep: Report) -> list:
    from interp.lens import logit_lens

    model = load(name)
    ps = prompts_for(model, name, n, seed)
    res = logit_lens(model, ps)
    ap = torch.as_tensor(res.meta["answer_pos"])
    idx = torch.arange(len(ap))
    top1 = (res.target_rank[:, idx, ap] == 1).float()  # [row, example]
    with torch.no_grad():
        logits = model(ps.clean_tokens)
    acc = float((logits[idx, ap].argmax(-1) == ps.answer_ids.to(logits.device)).float().mean())
    rows = res.coords["layer"]
    firsts = [res.first_top1_layer(example=e) for e in range(len(ps))]
    hit = [f for f in firsts if f is not None]
    median_first = rows[int(statistics.median_low(hit))] if hit else "never"
    table(f"Logit lens on {name} ({len(ps)} prompts): share of prompts with the answer top-1",
          ["row"] + rows, [["answer top-1"] + [float(x) for x in top1.mean(1)],
                           ["answer prob"] + [float(x) for x in res.values[:, idx, ap].mean(1)]])
    rep.check(f"{name}: final row top-1 rate == model accuracy", abs(float(top1[-1].mean()) - acc),
              abs(float(top1[-1].mean()) - acc) < 1e-6, "0", "the final row is the model's logits")
    rep.check(f"{name}: model accuracy", acc, acc >= 0.9, ">= 0.9", "zoo model card targets")
    rep.check(f"{name}: answer top-1 at L0", float(top1[0].mean()), float(top1[0].mean()) <= 0.1,
              "<= 0.1", "the embedding alone cannot know a copied answer")
    rep.check(f"{name}: median first top-1 row", median_first,
              bool(hit) and statistics.median_low(hit) >= 1, ">= L1",
              "the answer must be moved by attention first")
    return [name, median_first, f"{len(hit)}/{len(ps)}", acc]


def main(argv=None) -> int:
    args = parse_args(__doc__, "all", argv)
    names = ["ioi", "induction", "needle"] if args.model == "all" else [args.model]
    n = 6 if args.fast else 30
    rep = Report("logit lens")
    found = [analyse(name, n, args.seed, rep) for name in names]
    table("Where the answer first becomes top-1 (median over prompts)",
          ["model", "first top-1 row", "prompts reaching top-1", "accuracy"], found)
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())

"""Indirect-object identification (Wang et al. 2022) on the zoo `ioi` model (or `--model gpt2`).

Steps: (1) logit difference LD = logit(IO) - logit(S) at the last token; (2) residual-stream
patching layer x position on one template (clean into p_ABC-corrupted, denoising); (3) head
patching (all positions); (4) path patching: heads whose direct path to the logits carries the
effect ("direct heads"; name movers attend to IO, S-suppression heads attend to S), heads that
change the direct heads' queries (S-inhibition analogues) or keys/values; duplicate-token and
induction analogues by their attention at S2; (5) circuit faithfulness: every head outside the
circuit mean-ablated (interp.circuits.faithfulness), against random head sets of the same size.

Checks use ranges with reasons independent of this run (the zoo card's targets, the paper's
claims, the structure of a causal transformer). With --model gpt2 (weights must be on the
machine) the classes are compared with the paper's.

Run: python examples/ioi_circuit.py [--fast] [--model ioi|gpt2]
"""

from __future__ import annotations

import random
import sys

import torch
from _common import Report, head_label, load, parse_args, table

from interp.components import parse

# The circuit of Wang et al. 2022 (GPT-2 small), by class.
PAPER_CLASSES = {
    "name mover": ["L9H9", "L9H6", "L10H0"],
    "backup name mover": ["L9H0", "L9H7", "L10H1", "L10H2", "L10H6", "L10H10", "L11H2", "L11H9"],
    "negative name mover": ["L10H7", "L11H10"],
    "S-inhibition": ["L7H3", "L7H9", "L8H6", "L8H10"],
    "induction": ["L5H5", "L5H8", "L5H9", "L6H9"],
    "duplicate token": ["L0H1", "L0H10", "L3H0"],
    "previous token": ["L2H2", "L4H11"],
}
# which of our classes corresponds to each of the paper's
OUR_CLASS = {"name mover": "name mover", "backup name mover": "name mover",
             "negative name mover": "negative name mover", "S-inhibition": "S-inhibition",
             "induction": "induction", "duplicate token": "duplicate-token"}
DIRECT, FEED, ATT = 0.05, 0.02, 0.3  # path-score and attention thresholds (set before any run)


def split(label: str) -> tuple[int, int]:
    """'L3H2' -> (3, 2)."""
    h = parse(label)
    return h.layer, h.head


def labels(mask: torch.Tensor) -> list[str]:
    return [head_label(a, b) for a, b in mask.nonzero().tolist()]


def attention_at(model, ps, query: str, key: str, shift: int = 0) -> torch.Tensor:
    """Mean attention [layer, head] from position ``query`` to ``key`` (+shift), per prompt."""
    from interp import hooks as H
    from interp.models import describe

    info = describe(model)
    names = {H.pattern(layer) for layer in range(info.n_layers)}
    _, cache = model.run_with_cache(ps.clean_tokens, names_filter=lambda n: n in names)
    pos = {"END": ps.answer_pos, "IO": ps.meta["pos_IO"], "S1": ps.meta["pos_S1"],
           "S2": ps.meta["pos_S2"]}
    b = torch.arange(len(ps))
    q, k = pos[query], pos[key] + shift
    return torch.stack([cache[H.pattern(layer)][b, :, q, k].float().mean(0)
                        for layer in range(info.n_layers)]).cpu()


def main(argv=None) -> int:
    args = parse_args(__doc__, "ioi", argv)
    from interp import prompts as P
    from interp.circuits import faithfulness
    from interp.models import describe
    from interp.patching import activation_patching, path_patching

    model = load(args.model)
    info = describe(model)
    zoo = args.model == "ioi"
    rep = Report(f"IOI on {args.model}")
    n = 16 if args.fast else 64
    ps = P.ioi(model, n=n, seed=args.seed)

    # 1. logit difference
    logits = model(ps.clean_tokens)
    b = torch.arange(len(ps))
    end = logits[b, ps.answer_pos]
    ld = end[b, ps.answer_ids] - end[b, ps.wrong_ids]
    acc = float((ld > 0).float().mean())
    lo, hi = (3.0, float("inf")) if zoo else (2.5, 4.5)
    rep.check("mean logit difference", float(ld.mean()), lo <= float(ld.mean()) <= hi,
              f"[{lo}, {hi}]", "zoo card target >= 3" if zoo else "paper: ~3.55 on p_IOI")
    rep.check("IO-over-S accuracy", acc, acc >= 0.95 if zoo else acc >= 0.9,
              ">= 0.95" if zoo else ">= 0.9", "zoo card target" if zoo else "paper: GPT-2 prefers S in ~1%")

    # 2. residual patching layer x position on one template (aligned positions)
    one = P.ioi(model, n=max(8, n // 2), seed=args.seed, templates="BABA", template_ids=[0])
    resid = activation_patching(model, one, target="resid_pre", per_position=True, progress=False)
    toks = one.str_tokens(model, 0)
    table("resid_pre patching (denoising; 1 = clean restored), template BABA 0",
          ["layer"] + [f"{i}:{t.strip()}" for i, t in enumerate(toks)],
          [[lab] + [float(v) for v in resid.values[i]] for i, lab in enumerate(resid.coords["layer"])])
    end_pos = int(one.answer_pos[0])
    names_pos = {int(one.meta[k][0]) for k in ("pos_IO", "pos_S1", "pos_S2")}
    first_max = int(resid.values[0].argmax())
    last_max = int(resid.values[-1].argmax())
    rep.check("L0: best position is a name", toks[first_max].strip(), first_max in names_pos,
              "IO, S1 or S2", "before any layer only the name tokens differ from the corruption")
    rep.check(f"L{info.n_layers - 1}: best position is END", toks[last_max].strip(),
              last_max == end_pos, toks[end_pos].strip(), "the last layer reads the answer at END")

    # 3. head patching (all positions)
    z = activation_patching(model, ps, target="z", per_position=False)
    table("Head patching of z (denoising), [layer, head]", ["layer"] + z.labels("head"),
          [[lab] + [float(v) for v in z.values[i]] for i, lab in enumerate(z.labels("layer"))])

    # 4. path patching and classes
    direct = path_patching(model, ps, receivers="logits")
    att_io, att_s = attention_at(model, ps, "END", "IO"), attention_at(model, ps, "END", "S2")
    classes: dict[str, list[str]] = {}
    for lab in labels(direct.values.abs() >= DIRECT):
        la, h = int(lab[1:lab.index("H")]), int(lab[lab.index("H") + 1:])
        s = float(direct.values[la, h])
        to_io = float(att_io[la, h]) >= float(att_s[la, h])
        role = ("name mover" if s < 0 else "negative name mover") if to_io else \
            ("S-suppression" if s < 0 else "S-copying")
        classes.setdefault(role, []).append(lab)
    direct_heads = [h for role in classes for h in classes[role]]
    recv = [h for h in direct_heads if int(h[1:h.index("H")]) > 0]
    feeders = {}
    if recv:
        for inp in ("q", "k", "v"):
            feeders[inp] = path_patching(model, ps, receivers=recv, receiver_input=inp)
        q_heads = [h for h in labels(feeders["q"].values.abs() >= FEED) if h not in direct_heads]
        kv = (feeders["k"].values.abs() >= FEED) | (feeders["v"].values.abs() >= FEED)
        kv_heads = [h for h in labels(kv) if h not in direct_heads + q_heads]
        if q_heads:
            classes["S-inhibition (q of direct heads)"] = q_heads
        if kv_heads:
            classes["k/v inputs of direct heads"] = kv_heads
    dup = attention_at(model, ps, "S2", "S1")
    indu = attention_at(model, ps, "S2", "S1", shift=1)
    strong = z.values.abs() >= FEED
    classes["duplicate-token (S2->S1)"] = labels((dup >= ATT) & strong)
    classes["induction (S2->S1+1)"] = labels((indu >= ATT) & strong)
    classes = {k: v for k, v in classes.items() if v}

    def score_text(h: str) -> str:
        la, hd = int(h[1:h.index("H")]), int(h[h.index("H") + 1:])
        parts = [f"direct {float(direct.values[la, hd]):+.2f}", f"z {float(z.values[la, hd]):+.2f}",
                 f"END->IO {float(att_io[la, hd]):.2f}", f"END->S2 {float(att_s[la, hd]):.2f}"]
        return f"{h} ({', '.join(parts)})"

    table("Head classes found (path patching scores are noising: -1 = carries all of LD)",
          ["class", "heads (scores)"], [[k, "; ".join(score_text(h) for h in v)] for k, v in classes.items()])
    total_direct = float(sum(direct.values[int(h[1:h.index("H")]), int(h[h.index("H") + 1:])]
                             for h in direct_heads))
    rep.check("direct path of the direct heads (sum)", total_direct, total_direct <= -0.5, "<= -0.5",
              "Wang et al.: a few heads write the answer to the logits directly")
    # attention from END to a name, weighted by each direct head's share of the direct effect
    w = torch.tensor([abs(float(direct.values[la, hd])) for la, hd in map(split, direct_heads)])
    a_name = torch.tensor([max(float(att_io[la, hd]), float(att_s[la, hd]))
                           for la, hd in map(split, direct_heads)])
    weighted = float((w * a_name).sum() / w.sum()) if len(w) else 0.0
    rep.check("direct heads' attention from END to a name (weighted by |direct|)", weighted,
              weighted >= 0.5, ">= 0.5",
              "the direct effect must come from heads that read a name (Wang et al. 2022)")

    # 5. faithfulness against random circuits of the same size
    circuit = sorted({h for v in classes.values() for h in v})
    heads = circuit  # labels such as "L9H9"; faithfulness reads any head form
    f = faithfulness(model, ps, heads, ablation="mean")
    rng = random.Random(args.seed)
    everything = [(a, c) for a in range(info.n_layers) for c in range(info.n_heads)]
    rand = [faithfulness(model, ps, rng.sample(everything, len(heads)), ablation="mean").faithfulness
            for _ in range(3 if args.fast else 10)]
    table("Circuit faithfulness (heads outside mean-ablated over p_ABC)",
          ["circuit", "heads", "LD model", "LD circuit", "LD corrupted", "faithfulness", "random sets (mean)", "paper"],
          [[", ".join(circuit), f"{f.n_heads}/{f.n_heads_total}", f.model, f.circuit, f.corrupted,
            f.faithfulness, sum(rand) / len(rand), "87%"]])
    rep.check("circuit faithfulness", f.faithfulness, 0.6 <= f.faithfulness <= 1.4, "[0.6, 1.4]",
              "paper: the circuit recovers ~87% of the model's LD")
    rep.check("circuit beats random head sets of its size", f.faithfulness - max(rand),
              f.faithfulness > max(rand), "> every random set", "the circuit is specific, not its size")

    if not zoo:
        rows = []
        for cls, paper in PAPER_CLASSES.items():
            mine = [h for k, v in classes.items() if k.startswith(OUR_CLASS.get(cls, "?")) for h in v]
            rows.append([cls, ", ".join(paper), ", ".join(mine), len(set(paper) & set(mine))])
        table("Found vs paper (Wang et al. 2022)", ["class", "paper", "found", "overlap"], rows)
        nm = set(PAPER_CLASSES["name mover"] + PAPER_CLASSES["backup name mover"])
        rep.check("paper name movers among our direct heads", len(nm & set(direct_heads)),
                  len(nm & set(direct_heads)) >= 2, ">= 2", "the paper's name movers (9.9, 9.6, 10.0)")
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())

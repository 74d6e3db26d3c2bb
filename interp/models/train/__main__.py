"""Train (or re-evaluate) a zoo model: ``python -m interp.models.train NAME [--out DIR] [--minutes M]``.

NAME is one of induction, ioi, needle, modadd. ``--eval-only`` re-runs the recipe's eval on the saved
model in DIR and rewrites metrics.json and MODEL_CARD.md (keeping the recorded training info).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from interp.models.train import common as C

DEFAULT_MINUTES = {"induction": 20.0, "ioi": 30.0, "needle": 45.0, "modadd": 30.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m interp.models.train", description=__doc__)
    ap.add_argument("name", choices=sorted(DEFAULT_MINUTES))
    ap.add_argument("--out", type=Path, default=None, help="output dir (default: the zoo)")
    ap.add_argument("--minutes", type=float, default=None, help="training time budget")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--answer-weight", type=float, default=None,
                    help="ioi only: extra loss weight on the IOI answer token")
    ap.add_argument("--resume", action="store_true",
                    help="continue training the model saved in DIR (a fresh LR schedule)")
    args = ap.parse_args(argv)

    out = (args.out or C.ZOO_DIR / args.name).resolve()
    mod = importlib.import_module(f"interp.models.train.{args.name}")
    cmd = "python -m interp.models.train " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.threads:
        import os

        os.environ["INTERP_TRAIN_THREADS"] = str(args.threads)
    if args.eval_only and args.name == "modadd":  # measured on its checkpoints
        res = mod.finish(out)
    elif args.eval_only:
        from transformers import AutoModelForCausalLM

        from interp.prompts import _language as L

        C.setup(0)
        model = AutoModelForCausalLM.from_pretrained(str(out))
        info = C.read_metrics(out).get("training", {})
        info = {k: v for k, v in info.items() if k not in ("seed", "optimizer")}
        info.setdefault("command", cmd)
        res = mod.finish(out, model, L.build_tokenizer(), info, command=info.get("command"))
    else:
        kw = {}
        if args.max_steps is not None:
            kw["max_steps"] = args.max_steps
        if args.answer_weight is not None:
            kw["answer_weight"] = args.answer_weight
        if args.resume:
            from transformers import AutoModelForCausalLM

            kw["init_model"] = AutoModelForCausalLM.from_pretrained(str(out))
            kw["prior"] = C.read_metrics(out).get("training", {})
        res = mod.train(out, minutes=args.minutes or DEFAULT_MINUTES[args.name], command=cmd, **kw)
    print(json.dumps(res["eval"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

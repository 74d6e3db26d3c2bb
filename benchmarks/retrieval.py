"""Retrieval-head score: fast (KV-cached batched decoding + one teacher-forced forward) against the
step-by-step reference, on the zoo's `needle` model, same trials, same process, one thread each.

Last line: ``retrieval: speedup=<x> max_abs_diff=<d>`` (target: speedup >= 10, diff == 0).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="needle")
    ap.add_argument("--lengths", default="128,256,384")
    ap.add_argument("--depths", default=None, help="comma-separated percents (default: the paper's 10)")
    ap.add_argument("--needles", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=50)
    ap.add_argument("--stop", default="newline", choices=["newline", "newline,period"],
                    help="newline = the paper's rule (with 50 tokens); newline,period ends at the needle's period")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    import interp
    from interp.retrieval import retrieval_scores
    from interp.retrieval._trials import default_needles

    model = interp.load_model(args.model)
    kw = {"needles": default_needles(args.needles),
              "lengths": [int(x) for x in args.lengths.split(",")],
              "depths": None if args.depths is None else [int(x) for x in args.depths.split(",")],
              "max_new_tokens": args.max_new_tokens,
              "stop": ("\n", ".") if args.stop == "newline,period" else ("\n",)}
    retrieval_scores(model, **{**kw, "lengths": kw["lengths"][:1], "depths": [0]})  # warm-up
    t0 = time.perf_counter()
    fast = retrieval_scores(model, implementation="fast", **kw)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = retrieval_scores(model, implementation="reference", **kw)
    t_ref = time.perf_counter() - t0
    diff = float((fast.values - ref.values).abs().max())
    diff_trials = float((fast.per_example - ref.per_example).abs().max())
    steps = sum(t["n_steps"] for t in ref.meta["trials"])
    print(f"model={args.model} trials={ref.meta['n_trials']} accepted={ref.meta['n_accepted']} "
          f"decode_steps={steps} stop={args.stop} max_new_tokens={args.max_new_tokens}")
    print(f"reference {t_ref:.1f}s  fast {t_fast:.1f}s  fast_fallbacks={fast.meta['fast_fallbacks']}")
    print(f"per-trial max_abs_diff={diff_trials}  retrieval heads (>0.1): {ref.meta['retrieval_heads']}")
    print(ref.top(10).to_string(index=False))
    print(f"retrieval: speedup={t_ref / t_fast:.1f} max_abs_diff={diff}")


if __name__ == "__main__":
    main()

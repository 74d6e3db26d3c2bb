"""Local vs Ray: the same sweeps in one process (all cores) and on a local Ray cluster.

Two workloads, each timed in the same run both ways:

* retrieval scoring of the zoo ``needle`` model (Wu et al. 2024 grid, enough trials for about
  30 s in one process), sharded by trials;
* a knockout sweep (every head and MLP, mean ablation) on a GPT-2-small-shaped random-init model
  (``benchmarks/real.py`` makes the directory), 16 IOI pairs, sharded by layers.

"local" is the unsharded call in this process with every core (``torch.get_num_threads()``);
"ray" is a :class:`~interp.distributed.RayExecutor` with ``--workers`` actors of one CPU (one
torch thread) each. Worker start-up (Ray plus one model load per worker) is timed apart from
the sweep: the first Ray call (start-up included) is reported apart, the second is timed; the
workers stay up between calls, so a session pays the start-up once. ``max_abs_diff``
compares the Ray result with the same shards computed in-process (``LocalExecutor``) with the
workers' thread count (one), which the library guarantees bit-identical (CPU BLAS kernels round
differently with different thread counts); ``diff_vs_unsharded`` compares it with the unsharded
call at every core. The unsharded 1-thread time of each workload is printed too: with it the
best a 2-worker run can do (half of it) can be read against the all-core local time.

Last line: ``distributed: workers=<n> speedup_retrieval=<x> speedup_knockout=<y>
max_abs_diff=<d>`` (speedup = local seconds / Ray seconds, start-up excluded).

    python benchmarks/distributed.py [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")


def _max_diff(a, b) -> float:
    out = 0.0
    for name in ("values", "per_example"):
        x, y = getattr(a, name, None), getattr(b, name, None)
        if x is None or y is None:
            continue
        out = max(out, float((x.float() - y.float()).nan_to_num(0.0).abs().max()))
    return out


class one_thread:
    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    args = ap.parse_args()

    import ray
    from real import model_dir

    import interp
    from interp import prompts as P
    from interp.ablation import knockout_sweep
    from interp.distributed import LocalExecutor, RayExecutor
    from interp.retrieval import retrieval_scores

    threads = torch.get_num_threads()
    print(f"local: one process, {threads} torch threads; ray: {args.workers} workers x 1 CPU")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    rows = []
    speed = {}
    worst = 0.0

    # --- retrieval scoring on the zoo needle model, sharded by trials -------------------------
    needle = interp.load_model("needle")
    grid = dict(lengths=[128, 256] if args.quick else list(range(32, 513, 32)),
                depths=[0, 50, 100] if args.quick else list(range(0, 101, 10)),
                max_new_tokens=8, batch_size=8)
    local, t_local = timed(lambda: retrieval_scores(needle, **grid))
    ex = RayExecutor(n_workers=args.workers, progress=False)
    _, t_start = timed(lambda: retrieval_scores(needle, **grid, executor=ex))
    remote, t_ray = timed(lambda: retrieval_scores(needle, **grid, executor=ex))
    with one_thread():  # the workers' thread count: BLAS rounding depends on it
        same = retrieval_scores(needle, **grid, executor=LocalExecutor(progress=False))
    d = _max_diff(remote, same)
    worst = max(worst, d)
    speed["retrieval"] = t_local / t_ray
    with one_thread():
        _, t_one = timed(lambda: retrieval_scores(needle, **grid))
    rows.append(("retrieval (needle, %d trials)" % remote.meta["n_trials"], t_local, t_ray,
                 t_start, remote.meta["shards"], d, _max_diff(remote, local), t_one))
    ex.shutdown()

    # --- knockout sweep on a GPT-2-small shape, sharded by layers ------------------------------
    gpt2 = interp.load_model(model_dir("gpt2"))
    ps = P.ioi(gpt2, 8 if args.quick else 16, seed=0)
    kw = dict(method="mean", n_boot=200)
    local, t_local = timed(lambda: knockout_sweep(gpt2, ps, **kw))
    # one layer per shard (the default): ablating layer 0 reruns every later block, layer 11
    # only the last one, so equal-sized layer blocks would leave one worker idle; single layers
    # handed out in order (the costliest first) balance the workers
    ex = RayExecutor(n_workers=args.workers, progress=False)
    _, t_start = timed(lambda: knockout_sweep(gpt2, ps, **kw, executor=ex))
    remote, t_ray = timed(lambda: knockout_sweep(gpt2, ps, **kw, executor=ex))
    with one_thread():
        same = knockout_sweep(gpt2, ps, **kw, executor=LocalExecutor(progress=False))
    d = _max_diff(remote, same)
    worst = max(worst, d)
    speed["knockout"] = t_local / t_ray
    with one_thread():
        _, t_one = timed(lambda: knockout_sweep(gpt2, ps, **kw))
    rows.append(("knockout (GPT-2-small shape, %d pairs)" % ps.clean_tokens.shape[0], t_local,
                 t_ray, t_start, remote.meta["shards"], d, _max_diff(remote, local), t_one))
    ex.shutdown()
    ray.shutdown()

    print(f"\n{'workload':42s} {'local s':>8s} {'ray s':>7s} {'speedup':>8s} {'1st call s':>10s} "
          f"{'shards':>6s} {'max_abs_diff':>12s} {'diff_vs_unsharded':>17s} {'1-thread s':>10s}")
    for name, tl, tr, ts, n, d, du, t1 in rows:
        print(f"{name:42s} {tl:8.1f} {tr:7.1f} {tl / tr:8.2f} {ts:10.1f} {n:6d} {d:12.3g} "
              f"{du:17.3g} {t1:10.1f}")
    print(f"distributed: workers={args.workers} speedup_retrieval={speed['retrieval']:.2f} "
          f"speedup_knockout={speed['knockout']:.2f} max_abs_diff={worst:.3g}")


if __name__ == "__main__":
    main()

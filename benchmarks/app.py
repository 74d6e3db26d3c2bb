"""Time to render each explorer page with warm caches on the default model (AppTest).

Each page is rendered once to fill the caches (model, prompts, results), then rendered again
``--repeats`` times; the page's time is the median of the warm renders. Pages that need an
optional heavy toggle (pruning, masking) are timed in their default state.

    python benchmarks/app.py            # last line: app: slowest_page_s=<t> pages=<n>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["model", "attention", "patching", "ablation", "lens", "retrieval", "circuit", "export"]
TARGET_S = 2.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None, help="model spec (default: the app's default)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "interp" / "app" / "explorer.py"), default_timeout=1800)
    if args.model:
        at.session_state["model_spec"] = args.model
    t0 = time.perf_counter()
    at.run()
    print(f"first render (loads the model): {time.perf_counter() - t0:.2f}s", flush=True)
    rows = []
    for name in PAGES:
        path = f"pages/{name}.py"
        t0 = time.perf_counter()
        at.switch_page(path).run()
        cold = time.perf_counter() - t0
        if at.exception or at.error:
            msgs = [e.value for e in at.exception] + [e.value for e in at.error]
            print(f"{name}: page shows an error: {msgs[0][:200]}", file=sys.stderr)
            return 1
        warm = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            at.switch_page(path).run()
            warm.append(time.perf_counter() - t0)
        med = statistics.median(warm)
        rows.append((name, cold, med))
        print(f"{name:10s} cold {cold:7.2f}s  warm {med:6.3f}s  "
              f"{'ok' if med <= TARGET_S else 'SLOW'}", flush=True)
    slowest = max(r[2] for r in rows)
    print(f"app: slowest_page_s={slowest:.3f} pages={len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

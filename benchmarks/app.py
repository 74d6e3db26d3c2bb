"""Time to render each explorer page on the default model (AppTest).

First screen: a fresh Python process that imports Streamlit's AppTest and renders the app's
first page (imports, model load and all), timed from before the process starts. Then each page
is rendered once cold (its results computed) and ``--repeats`` times warm (cached); a page's warm
time is the median. Pages that need an optional heavy toggle (pruning, masking, the faithfulness
curve) are timed in their default state. Targets: warm <= 1 s, cold <= 5 s, first screen <= 8 s.

    python benchmarks/app.py
    # last line: app: slowest_page_s=<warm> slowest_cold_s=<cold> first_screen_s=<s> pages=<n>
    #   slowest_first_s=<cold> slowest_warm_s=<warm>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["model", "attention", "patching", "ablation", "lens", "dla", "retrieval", "circuit",
         "training", "export"]
TARGET_S, TARGET_COLD_S, TARGET_FIRST_S = 1.0, 5.0, 8.0
FIRST = """
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({entry!r}, default_timeout=600)
{model}at.run()
assert not at.exception, [e.value for e in at.exception]
"""


def first_screen(model: str | None) -> float:
    """Seconds from starting a fresh interpreter to the first page rendered."""
    import subprocess

    code = FIRST.format(entry=str(ROOT / "interp" / "app" / "explorer.py"),
                        model=f"at.session_state['model_spec'] = {model!r}\n" if model else "")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None, help="model spec (default: the app's default)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from streamlit.testing.v1 import AppTest

    first = first_screen(args.model)
    print(f"first screen, fresh process: {first:.2f}s "
          f"{'ok' if first <= TARGET_FIRST_S else 'SLOW'}", flush=True)
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
        print(f"{name:10s} cold {cold:7.2f}s {'ok' if cold <= TARGET_COLD_S else 'SLOW'}  "
              f"warm {med:6.3f}s {'ok' if med <= TARGET_S else 'SLOW'}", flush=True)
    slowest = max(r[2] for r in rows)
    slowest_cold = max(r[1] for r in rows)
    # slowest_first_s / slowest_warm_s: the same two numbers under the names of the real-size
    # targets (first visit <= 10 s, warm <= 2 s on a GPT-2-small shape)
    print(f"app: slowest_page_s={slowest:.3f} slowest_cold_s={slowest_cold:.2f} "
          f"first_screen_s={first:.2f} pages={len(rows)} slowest_first_s={slowest_cold:.2f} "
          f"slowest_warm_s={slowest:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared plumbing of the reproduction scripts: arguments, checks with independent expected
ranges, and rich tables. Not a library module: the scripts import it from their own folder."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass, field

from interp.components import Head, label


def parse_args(doc: str, default_model: str, argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--fast", action="store_true", help="small prompt sets (CI mode)")
    p.add_argument("--model", default=default_model, help=f"model to analyse (default {default_model})")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def load(spec: str):
    """Load a model; exit 2 with the loader's own message when it cannot be loaded."""
    import torch

    from interp.models import ModelLoadError, load_model

    torch.set_grad_enabled(False)
    warnings.filterwarnings("ignore", message="run_with_hooks: skipped")
    try:
        return load_model(spec)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


@dataclass
class Check:
    name: str
    value: float | str
    expected: str
    reason: str
    ok: bool


@dataclass
class Report:
    title: str
    checks: list[Check] = field(default_factory=list)
    start: float = field(default_factory=time.time)

    def check(self, name: str, value, ok: bool, expected: str, reason: str) -> bool:
        self.checks.append(Check(name, value, expected, reason, bool(ok)))
        return bool(ok)

    def finish(self) -> int:
        """Print the checks table; return the exit code (1 if any check failed)."""
        table("Checks: " + self.title, ["check", "measured", "expected", "why", "ok"],
              [[c.name, fmt(c.value), c.expected, c.reason, "PASS" if c.ok else "FAIL"]
               for c in self.checks])
        failed = [c.name for c in self.checks if not c.ok]
        print(f"{len(self.checks) - len(failed)}/{len(self.checks)} checks passed "
              f"in {time.time() - self.start:.0f} s")
        if failed:
            print("FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1 if failed else 0


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[fmt(x) for x in r])
    Console(width=160).print(t)


def head_label(layer: int, head: int) -> str:
    return label(Head(layer, head))


def zoo_checkpoints(args, name: str):
    """The checkpoints shipped with zoo model ``name`` (gradients off); exit 2 when the script
    was asked for another model."""
    import torch

    from interp.dynamics import Checkpoints

    torch.set_grad_enabled(False)
    if args.model != name:
        print(f"error: this reproduction reads the zoo {name} model's checkpoints only",
              file=sys.stderr)
        sys.exit(2)
    return Checkpoints.zoo(name)

"""Every reproduction in examples/ runs in fast mode and passes its own checks (exit code 0).

Each script checks its numbers against ranges with an independent reason (paper, model
construction, zoo targets); a failed check exits 1, so these tests fail when a finding rots.
They run in the default suite (about 40 s together on an idle 2-core machine), so `make test`
and CI catch a finding that rots.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def test_every_example_is_listed():
    assert {"grokking.py", "induction_formation.py", "induction_heads.py", "ioi_circuit.py", "logit_lens.py", "pruning.py",
            "retrieval_heads.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_fast_mode_passes(script):
    out = subprocess.run([sys.executable, script, "--fast"], cwd=EXAMPLES, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, f"{script} failed:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"
    assert "checks passed" in out.stdout


def test_unknown_model_fails_clearly():
    out = subprocess.run([sys.executable, "ioi_circuit.py", "--fast", "--model", "no-such-model"],
                         cwd=EXAMPLES, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert "cannot load 'no-such-model'" in out.stderr

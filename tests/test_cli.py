"""The interp command: help, zoo listing, clear errors, --out files."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from interp.cli import app

runner = CliRunner()


def test_help_lists_commands_and_does_not_import_torch():
    code = (
        "import sys; from interp.cli import app; "
        "print('torch' in sys.modules, 'transformer_lens' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("models", "app", "zoo"):
        assert cmd in res.output


def test_models_lists_zoo(tmp_path):
    res = runner.invoke(app, ["models", "--out", str(tmp_path / "zoo.json")])
    assert res.exit_code == 0, res.output
    assert "induction" in res.output and "needle" in res.output
    rows = json.loads((tmp_path / "zoo.json").read_text())
    assert {r["name"] for r in rows} == {"ioi", "induction", "needle"}


def test_bad_model_exits_nonzero_with_message():
    res = runner.invoke(app, ["models", "not a model!"])
    assert res.exit_code == 2
    assert "unknown model" in res.output


def test_describe_dir(tiny_dirs):
    res = runner.invoke(app, ["models", str(tiny_dirs["llama"])])
    assert res.exit_code == 0, res.output
    assert "GQA" in res.output and "3 layers" in res.output


def test_unknown_zoo_name():
    res = runner.invoke(app, ["zoo", "card", "nope"])
    assert res.exit_code == 2 and "unknown zoo model" in res.output

"""The interp command: help, zoo listing, clear errors, --out files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
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
    assert {r["name"] for r in rows} == {"ioi", "induction", "needle", "modadd"}


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


# ------------------------------------------------------------------------------------------------
# analysis commands on the zoo models (small prompt sets; numbers checked against the library)
# ------------------------------------------------------------------------------------------------


def test_help_is_lazy_for_every_command():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom interp.cli import app\n"
        "r = CliRunner()\n"
        "for c in ('patch', 'ablate', 'lens', 'heads'):\n"
        "    res = r.invoke(app, [c, '--help'])\n"
        "    assert res.exit_code == 0 and 'Examples' in res.output, (c, res.output)\n"
        "print('torch' in sys.modules, 'transformer_lens' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_bad_out_extension_fails_before_loading():
    res = runner.invoke(app, ["patch", "ioi", "--out", "x.xlsx"])
    assert res.exit_code == 2 and "unknown extension" in res.output


def test_bad_target_and_unknown_model():
    res = runner.invoke(app, ["patch", "ioi", "--target", "nonsense"])
    assert res.exit_code == 2 and "nonsense" in res.output
    res = runner.invoke(app, ["lens", "no-such-model"])
    assert res.exit_code == 2 and "cannot load 'no-such-model'" in res.output


def test_patch_heads_matches_library(tmp_path):
    import torch

    from interp import load_model
    from interp import prompts as P
    from interp.patching import activation_patching

    out = tmp_path / "p.json"
    res = runner.invoke(app, ["patch", "ioi", "--target", "z", "--all-positions", "--n", "4",
                              "--layers", "0,3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Activation patching" in res.output and "L3" in res.output
    doc = json.loads(out.read_text())
    model = load_model("ioi")
    ref = activation_patching(model, P.ioi(model, n=4, seed=0), target="z", per_position=False,
                              layers=[0, 3])
    assert doc["dims"] == ["layer", "head"]
    torch.testing.assert_close(torch.tensor(doc["values"]), ref.values, atol=1e-5, rtol=1e-4)


def test_patch_bad_layer():
    res = runner.invoke(app, ["patch", "ioi", "--layers", "0,9", "--n", "2"])
    assert res.exit_code == 2 and "out of range" in res.output


def test_ablate_heads_and_errors(tmp_path):
    out = tmp_path / "a.csv"
    res = runner.invoke(app, ["ablate", "ioi", "--heads", "L3H0,MLP1", "--n", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    import pandas as pd

    df = pd.read_csv(out)
    assert df.loc[0, "ablated"] == "L3H0+MLP1"
    assert abs(df.loc[0, "after"] - df.loc[0, "baseline"] - df.loc[0, "change"]) < 1e-4
    res = runner.invoke(app, ["ablate", "ioi", "--heads", "L3H99", "--n", "2"])
    assert res.exit_code == 2 and "out of range" in res.output
    res = runner.invoke(app, ["ablate", "ioi", "--heads", "X7", "--n", "2"])
    assert res.exit_code == 2 and "cannot read component" in res.output
    res = runner.invoke(app, ["ablate", "ioi"])
    assert res.exit_code == 2 and "--sweep" in res.output


def test_lens_and_heads_write_files(tmp_path):
    import torch

    from interp import load_model
    from interp.heads import previous_token_scores

    res = runner.invoke(app, ["lens", "ioi", "--n", "4", "--out", str(tmp_path / "l.csv")])
    assert res.exit_code == 0, res.output
    assert "final" in res.output and (tmp_path / "l.csv").read_text().count("\n") == 6  # header+5
    res = runner.invoke(app, ["lens", "ioi", "--n", "2", "--example", "5"])
    assert res.exit_code == 2 and "out of range" in res.output

    out = tmp_path / "h.json"
    res = runner.invoke(app, ["heads", "induction", "--score", "previous_token", "--seq-len", "10",
                              "--batch", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    ref = previous_token_scores(load_model("induction"), seq_len=10, batch=2, seed=0)
    torch.testing.assert_close(torch.tensor(doc["values"]), ref.values, atol=1e-6, rtol=0)
    res = runner.invoke(app, ["heads", "induction", "--out", str(tmp_path / "h.html"),
                              "--seq-len", "10", "--batch", "2"])
    assert res.exit_code == 0 and "<html>" in (tmp_path / "h.html").read_text()


def test_ablate_sweep_and_importance(tmp_path):
    import pandas as pd

    out = tmp_path / "s.csv"
    res = runner.invoke(app, ["ablate", "ioi", "--sweep", "--n", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert len(df) == 4 * 8 and "MLP" not in set(df.columns)
    assert "each MLP alone" in res.output
    res = runner.invoke(app, ["heads", "ioi", "--score", "importance", "--n", "4", "--top", "3"])
    assert res.exit_code == 0, res.output
    assert "top 3 heads by importance" in res.output


def test_patch_path_to_logits(tmp_path):
    out = tmp_path / "pp.json"
    res = runner.invoke(app, ["patch", "ioi", "--path", "--n", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["dims"] == ["layer", "head"] and doc["meta"]["direction"] == "noising"
    res = runner.invoke(app, ["patch", "ioi", "--path", "--receivers", "L9H0", "--n", "2"])
    assert res.exit_code == 2 and "out of range" in res.output


def test_circuit_writes_eap_ig_json_and_dot(tmp_path):
    out = tmp_path / "circuit.json"
    res = runner.invoke(app, ["circuit", "ioi", "--method", "eap", "--top-n", "20", "--n", "4",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "faithfulness" in res.output
    doc = json.loads(out.read_text())
    kept = [k for k, e in doc["edges"].items() if e["in_graph"]]
    assert 0 < len(kept) <= 20 and len(doc["edges"]) == 1519  # the ioi model's full graph
    top20 = sorted(doc["edges"], key=lambda k: -abs(doc["edges"][k]["score"]))[:20]
    assert set(kept) <= set(top20)  # the top 20 by |score|, less edges left dangling
    f = doc["meta"]["faithfulness"]
    assert f["faithfulness"] == pytest.approx((f["circuit"] - f["empty"]) / (f["full"] - f["empty"]))
    dot = tmp_path / "circuit.dot"
    res = runner.invoke(app, ["circuit", "ioi", "--method", "eap", "--threshold", "0.5", "--n", "4",
                              "--out", str(dot)])
    assert res.exit_code == 0, res.output
    assert dot.read_text().startswith("digraph circuit")


def test_circuit_refuses_bad_options():
    res = runner.invoke(app, ["circuit", "ioi", "--top-n", "5", "--threshold", "0.1"])
    assert res.exit_code == 2 and "not both" in res.output
    res = runner.invoke(app, ["circuit", "ioi", "--out", "c.txt"])
    assert res.exit_code == 2 and ".json" in res.output


def test_zoo_train_never_overwrites_the_shipped_weights(tmp_path, monkeypatch):
    from interp.models import zoo_path

    res = runner.invoke(app, ["zoo", "train", "ioi", "--out", str(zoo_path("ioi"))])
    assert res.exit_code == 2 and "--force" in res.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    res = runner.invoke(app, ["zoo", "train", "ioi", "--out", str(busy)])
    assert res.exit_code == 2 and "not empty" in res.output
    seen = []
    import interp.models.train.__main__ as trainer

    monkeypatch.setattr(trainer, "main", lambda argv: seen.append(argv) or 0)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["zoo", "train", "modadd", "--minutes", "1"])
    assert res.exit_code == 0, res.output
    assert seen == [["modadd", "--out", str((tmp_path / "zoo-runs" / "modadd").resolve()),
                     "--minutes", "1.0"]]


def test_device_option(monkeypatch):
    import torch

    res = runner.invoke(app, ["--device", "cpu", "models", "ioi"])
    assert res.exit_code == 0, res.output
    if not torch.cuda.is_available():
        res = runner.invoke(app, ["--device", "cuda", "models", "ioi"])
        assert res.exit_code == 2 and "not available" in res.output
    res = runner.invoke(app, ["--device", "tpu", "models", "ioi"])
    assert res.exit_code == 2 and "unknown device" in res.output
    from interp.cli import _common

    monkeypatch.setattr(_common, "DEVICE", None)  # later tests: the default again

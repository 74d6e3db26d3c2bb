"""The ``interp`` command.

Heavy libraries (torch, transformer-lens) are imported inside the commands, so ``interp --help``
answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(
    name="interp",
    help=(
        "Mechanistic-interpretability workbench: patching, ablation, logit lens, head scores.\n\n"
        "Examples:\n\n"
        "  interp models                       # the shipped zoo\n\n"
        "  interp models ioi                   # describe one model\n\n"
        "  interp patch ioi --target z         # head patching on IOI prompts\n\n"
        "  interp ablate ioi --heads L3H0,L3H1 # ablate two heads\n\n"
        "  interp lens ioi                     # logit lens at the answer position\n\n"
        "  interp heads induction --score induction\n\n"
        "  interp app                          # the Streamlit explorer"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
zoo_app = typer.Typer(help="Train or inspect the zoo models shipped with interp.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


class CliError(Exception):
    pass


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def _console():
    from rich.console import Console

    return Console()


def print_frame(df, title: str, max_rows: int = 30) -> None:
    """Print a pandas DataFrame as a rich table."""
    from rich.table import Table

    table = Table(title=title)
    for col in df.columns:
        table.add_column(str(col), justify="right" if df[col].dtype.kind in "fiu" else "left")
    for _, row in df.head(max_rows).iterrows():
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.tolist()])
    _console().print(table)
    if len(df) > max_rows:
        _console().print(f"... {len(df) - max_rows} more rows (use --out to save all)")


def write_out(out: Optional[Path], result: Any, frame) -> None:
    """Write ``--out`` by its extension: .json, .csv or .html."""
    if out is None:
        return
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(out, index=False)
    elif suffix == ".json":
        doc = result.to_json() if hasattr(result, "to_json") else json.loads(frame.to_json(orient="records"))
        out.write_text(json.dumps(doc, indent=1, default=str))
    elif suffix in (".html", ".htm"):
        fig = result.plot() if hasattr(result, "plot") else None
        body = fig.to_html(include_plotlyjs="inline", full_html=False) if fig is not None else ""
        out.write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>interp</title></head><body>"
            + body + frame.to_html(index=False) + "</body></html>"
        )
    else:
        _fail(f"--out {out}: unknown extension {suffix!r}; use .json, .csv or .html")
    typer.echo(f"wrote {out}")


def _load(spec: str):
    from interp.models import ModelLoadError, load_model

    try:
        return load_model(spec)
    except ModelLoadError as e:
        _fail(str(e))


def _prompts(model, kind: str, n: int, seed: int):
    from interp import prompts as P

    if kind == "auto":
        name = getattr(model.tokenizer, "name_or_path", "") or ""
        kind = next((k for k in ("induction", "needle") if k in Path(name).name), "ioi")
    try:
        if kind == "ioi":
            return P.ioi(model, n=n, seed=seed)
        if kind == "induction":
            return P.induction(model, n=n, seq_len=30, seed=seed)
        if kind == "needle":
            return P.needle(model, lengths=(256,), depths=(0.0, 0.25, 0.5, 0.75, 1.0), seed=seed)
    except P.PromptError as e:
        _fail(str(e))
    _fail(f"unknown prompt set {kind!r}; use ioi, induction, needle or auto")


@app.command()
def models(
    spec: Optional[str] = typer.Argument(None, help="a zoo name, HF directory or Hub id to describe"),
    out: Optional[Path] = typer.Option(None, "--out", help="write .json/.csv/.html"),
):
    """List the zoo, or describe any loadable model.

    Examples: `interp models`, `interp models needle`, `interp models ./my-hf-dir`.
    """
    import pandas as pd

    from interp.models import ZOO, zoo_path

    if spec is None:
        rows = [
            {"name": e.name, "family": e.family, "trained": (zoo_path(e.name) / "config.json").is_file(),
             "prompts": e.task, "summary": e.summary}
            for e in ZOO.values()
        ]
        df = pd.DataFrame(rows)
        print_frame(df, "interp zoo")
        write_out(out, None, df)
        return
    from interp.models import describe

    info = describe(_load(spec))
    typer.echo(info.summary())
    df = pd.DataFrame([{k: v for k, v in info.to_dict().items() if k != "hooks"}])
    write_out(out, None, df)


@app.command("app")
def run_app(
    model: str = typer.Option("ioi", "--model", "-m", help="model to open with"),
    port: int = typer.Option(8501, "--port"),
    address: str = typer.Option("localhost", "--address"),
):
    """Start the Streamlit Circuit Explorer on localhost.

    Example: `interp app --model induction --port 8502`.
    """
    import os
    import subprocess

    entry = Path(__file__).resolve().parent.parent / "apps" / "explorer.py"
    if not entry.is_file():
        _fail(f"the app is not installed next to the package ({entry} missing); run from a checkout")
    env = dict(os.environ, INTERP_MODEL=model)
    cmd = [sys.executable, "-m", "streamlit", "run", str(entry), "--server.address", address,
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    raise typer.Exit(subprocess.call(cmd, env=env))


@zoo_app.command("train")
def zoo_train(
    name: str = typer.Argument(..., help="induction, ioi or needle"),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="training time budget"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory (default: the zoo)"),
):
    """Train a zoo model with its deterministic recipe.

    Example: `interp zoo train induction --out /tmp/induction`.
    """
    from interp.models import ZOO
    from interp.models.train.__main__ import main

    if name not in ZOO:
        _fail(f"unknown zoo model {name!r}; choose one of {', '.join(ZOO)}")
    argv = [name]
    if minutes is not None:
        argv += ["--minutes", str(minutes)]
    if out is not None:
        argv += ["--out", str(out)]
    raise typer.Exit(main(argv))


@zoo_app.command("card")
def zoo_card(name: str = typer.Argument(..., help="induction, ioi or needle")):
    """Print a zoo model's card. Example: `interp zoo card ioi`."""
    from interp.models import ZOO, model_card

    if name not in ZOO:
        _fail(f"unknown zoo model {name!r}; choose one of {', '.join(ZOO)}")
    typer.echo(model_card(name) or f"(no card yet for {name})")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

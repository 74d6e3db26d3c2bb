"""Helpers of the ``interp`` command: option types, tables, ``--out`` files, clean failures.

Nothing here imports torch or transformer-lens at module level (``interp --help`` stays fast).
"""


from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

import typer


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


def write_out(out: Path | None, result: Any, frame) -> None:
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


#: the device models are loaded on (``interp --device ...``)
DEVICE: str | None = None


def _load(spec: str):
    import warnings

    from interp.models import ModelLoadError, load_model

    warnings.filterwarnings("ignore", message="run_with_hooks: skipped")

    try:
        return load_model(spec, device=DEVICE)
    except (ModelLoadError, ValueError) as e:
        _fail(str(e))
    except Exception as e:  # noqa: BLE001 - anything transformers raises: a message, not a traceback
        _fail(f"could not load model {spec!r}: {type(e).__name__}: {str(e).strip()[:500]}")


def _auto_kind(model, spec: str) -> str:
    """The zoo model's own task, else a kind named in the tokenizer's path, else IOI."""
    from interp.models import ZOO

    if spec in ZOO:
        if not ZOO[spec].task:
            _fail(f"zoo model {spec!r} reads no text prompts (inputs are token ids); use its "
                  "Python API instead (see its model card).")
        return ZOO[spec].task
    name = getattr(model.tokenizer, "name_or_path", "") or ""
    return next((k for k in ("induction", "needle") if k in Path(name).name), "ioi")


def _prompts(model, kind: str, n: int, seed: int, spec: str = ""):
    """Build the prompt set through ``PromptSpec`` (the kind's defaults; ``n`` and ``seed``)."""
    from interp import prompts as P

    if kind == "auto":
        kind = _auto_kind(model, spec)
    try:
        return P.PromptSpec(kind, n=n, seed=seed).build(model)
    except P.PromptError as e:
        _fail(str(e))


# ----------------------------------------------------------------------------------------------
# shared option types and helpers for the analysis commands
# ----------------------------------------------------------------------------------------------


class PromptKind(str, Enum):
    """``--prompts``: ``auto`` or a ``PromptSpec`` kind that needs no typed text."""

    auto = "auto"
    ioi = "ioi"
    induction = "induction"
    needle = "needle"


class PatchTarget(str, Enum):
    resid_pre = "resid_pre"
    resid_mid = "resid_mid"
    resid_post = "resid_post"
    attn_out = "attn_out"
    mlp_out = "mlp_out"
    z = "z"
    q = "q"
    k = "k"
    v = "v"
    pattern = "pattern"


class Direction(str, Enum):
    denoising = "denoising"
    noising = "noising"


class MetricName(str, Enum):
    logit_diff = "logit_diff"
    prob = "prob"
    logprob = "logprob"
    kl = "kl"
    loss = "loss"


class AblationMethod(str, Enum):
    zero = "zero"
    mean = "mean"
    resample = "resample"


class ScoreKind(str, Enum):
    induction = "induction"
    previous_token = "previous_token"
    duplicate_token = "duplicate_token"
    retrieval = "retrieval"
    importance = "importance"


_OUT_HELP = "write the full result to FILE: .json, .csv or .html (plot + table)"
_SUFFIXES = (".json", ".csv", ".html", ".htm")


def _check_out(out: Path | None) -> None:
    """Refuse a bad --out before any model is loaded."""
    if out is not None and out.suffix.lower() not in _SUFFIXES:
        _fail(f"--out {out}: unknown extension {out.suffix!r}; use .json, .csv or .html")


def _run(fn, *args, **kwargs):
    """Call a library function; turn its input errors into a clean exit 2 with its message."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, IndexError, TypeError, KeyError, NotImplementedError, RuntimeError) as e:
        _fail(str(e).strip("'\"") or type(e).__name__)


def _load_with_prompts(spec: str, kind: PromptKind, n: int, seed: int):
    model = _load(spec)
    return model, _prompts(model, kind.value, n, seed, spec)


def print_matrix(values, rows: list[str], cols: list[str], title: str, max_cols: int = 24) -> None:
    """A 2-D tensor as a rich table (rows x columns), values to 3 decimals, large |v| in bold."""
    from rich.table import Table

    vals = values.float()
    big = float(vals.abs().max()) if vals.numel() else 0.0
    table = Table(title=title)
    table.add_column("")
    shown = cols[:max_cols]
    for c in shown:
        table.add_column(str(c), justify="right")
    for i, r in enumerate(rows):
        cells = []
        for j in range(len(shown)):
            v = float(vals[i, j])
            txt = f"{v:.3f}"
            cells.append(f"[bold]{txt}[/bold]" if big > 0 and abs(v) >= 0.5 * big else txt)
        table.add_row(str(r), *cells)
    _console().print(table)
    if len(cols) > max_cols:
        _console().print(f"... {len(cols) - max_cols} more columns (use --out to save all)")


def _parse_list(text: str | None, what: str) -> list[str]:
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if not items:
        _fail(f"{what} is empty; give a comma-separated list, e.g. L3H0,L3H1")
    return items


def _parse_ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in _parse_list(text, what)]
    except ValueError:
        _fail(f"{what} must be comma-separated integers, got {text!r}")


def lens_frame(res, example: int = 0):
    """Per lens row: share of prompts with the answer top-1, mean answer probability and rank
    at each prompt's answer position, and one prompt's top-1 token."""
    import pandas as pd
    import torch

    ap = torch.as_tensor(res.meta["answer_pos"])
    idx = torch.arange(len(ap))
    rank = res.target_rank[:, idx, ap].float()  # [layer, example]
    prob = res.values[:, idx, ap].float()
    rows = []
    for i, label in enumerate(res.coords["layer"]):
        top_tok = res.top_tokens[i][example][int(ap[example])] if res.top_tokens else ""
        rows.append({"row": label, "top1 share": float((rank[i] == 1).float().mean()),
                     "answer p": float(prob[i].mean()), "rank (median)": float(rank[i].median()),
                     f"top1[ex{example}]": top_tok,
                     f"p[ex{example}]": float(res.top_probs[i, example, int(ap[example]), 0])})
    return pd.DataFrame(rows)




def readable(df):
    """A result frame for printing: each axis's string label in place of its integer index."""
    axes = [c[:-6] for c in df.columns if c.endswith("_label") and c[:-6] in df.columns]
    return df.drop(columns=axes).rename(columns={f"{d}_label": d for d in axes})


def readable_top(res, k: int):
    """``res.top(k)`` with label columns in place of their integer indices."""
    return readable(res.top(k))

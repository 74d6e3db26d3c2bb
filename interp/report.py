"""Session reports: figures, settings and numbers as one self-contained HTML file and as JSON.

The Streamlit explorer builds a ``Report`` from the results it shows, but nothing here depends
on streamlit: any script can collect sections and save them.

    rep = Report(title="IOI on the zoo model", model="ioi")
    rep.add("Logit lens", figures=[res.plot()], settings={"k": 5},
            numbers={"first top-1 layer": res.first_top1_layer()})
    rep.save("out/ioi_report")   # -> out/ioi_report.html, out/ioi_report.json

The HTML embeds plotly.js once (no network needed to open it); the JSON holds the same sections
with each figure as plotly's JSON, so ``plotly.io.from_json`` rebuilds it.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from interp import __version__


def _plain(x: Any) -> Any:
    """A JSON-friendly copy of ``x`` (tensors and numpy values become lists/floats)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if hasattr(x, "tolist"):
        return _plain(x.tolist())
    if hasattr(x, "item"):
        return _plain(x.item())
    return str(x)


@dataclass
class Section:
    """One part of a report: a title, figures, the settings that produced them, the numbers."""

    title: str
    figures: list[go.Figure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    text: str = ""

    def __post_init__(self) -> None:
        if not self.title.strip():
            raise ValueError("a report section needs a title.")
        for f in self.figures:
            if not isinstance(f, go.Figure):
                raise TypeError(
                    f"report figures must be plotly Figures (got {type(f).__name__}); "
                    "pass result.plot()."
                )
        for name, t in self.tables.items():
            if not isinstance(t, pd.DataFrame):
                raise TypeError(f"table {name!r} must be a pandas DataFrame, got {type(t).__name__}.")

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "text": self.text,
            "settings": _plain(self.settings),
            "numbers": _plain(self.numbers),
            "tables": {k: json.loads(t.to_json(orient="records")) for k, t in self.tables.items()},
            "figures": [json.loads(pio.to_json(f, validate=False)) for f in self.figures],
        }


@dataclass
class Report:
    """An ordered list of sections with the model and a title."""

    title: str = "interp report"
    model: str = ""
    sections: list[Section] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC)
                         .strftime("%Y-%m-%d %H:%M UTC"))

    def add(
        self,
        title: str,
        *,
        figures: Sequence[go.Figure] = (),
        settings: Mapping[str, Any] | None = None,
        numbers: Mapping[str, Any] | None = None,
        tables: Mapping[str, pd.DataFrame] | None = None,
        text: str = "",
    ) -> Section:
        sec = Section(title, list(figures), dict(settings or {}), dict(numbers or {}),
                      dict(tables or {}), text)
        self.sections.append(sec)
        return sec

    # --- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": "interp-report/1",
            "interp_version": __version__,
            "title": self.title,
            "model": self.model,
            "created": self.created,
            "settings": _plain(self.settings),
            "sections": [s.to_json() for s in self.sections],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Report:
        if doc.get("format") != "interp-report/1":
            raise ValueError("not an interp report JSON (missing format 'interp-report/1').")
        rep = cls(title=doc["title"], model=doc.get("model", ""), settings=dict(doc.get("settings", {})),
                  created=doc.get("created", ""))
        for s in doc["sections"]:
            rep.add(s["title"], figures=[pio.from_json(json.dumps(f)) for f in s["figures"]],
                    settings=s["settings"], numbers=s["numbers"],
                    tables={k: pd.DataFrame(v) for k, v in s["tables"].items()}, text=s["text"])
        return rep

    # --- HTML ----------------------------------------------------------------------------------
    def to_html(self) -> str:
        """One HTML document with plotly.js inlined once; opens offline."""
        from plotly.offline import get_plotlyjs

        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            f"<style>{_CSS}</style>",
            f"<script type='text/javascript'>{get_plotlyjs()}</script>",
            "</head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
            f"<p class='meta'>model <b>{html.escape(self.model or '-')}</b> · {html.escape(self.created)}"
            f" · interp {__version__}</p>",
        ]
        if self.settings:
            parts.append(_kv_table("Session settings", self.settings))
        if self.sections:
            parts.append("<ul class='toc'>" + "".join(
                f"<li><a href='#s{i}'>{html.escape(s.title)}</a></li>"
                for i, s in enumerate(self.sections)) + "</ul>")
        for i, s in enumerate(self.sections):
            parts.append(f"<section id='s{i}'><h2>{html.escape(s.title)}</h2>")
            if s.text:
                parts.append(f"<p>{html.escape(s.text)}</p>")
            if s.settings:
                parts.append(_kv_table("Settings", s.settings))
            if s.numbers:
                parts.append(_kv_table("Numbers", s.numbers))
            for j, fig in enumerate(s.figures):
                parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False,
                                         div_id=f"fig{i}_{j}", validate=False))
            for name, t in s.tables.items():
                parts.append(f"<h3>{html.escape(name)}</h3>")
                parts.append(t.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0,
                                       classes="tbl"))
            parts.append("</section>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.html`` and ``<path>.json`` (a suffix on ``path`` is replaced)."""
        path = Path(path)
        if path.suffix in (".html", ".json"):
            path = path.with_suffix("")
        path.parent.mkdir(parents=True, exist_ok=True)
        h, j = path.with_suffix(".html"), path.with_suffix(".json")
        h.write_text(self.to_html(), encoding="utf-8")
        j.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
        return h, j


def _fmt(v: Any) -> str:
    v = _plain(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v) if len(v) <= 20 else f"[{len(v)} values]"
    return str(v)


def _kv_table(caption: str, data: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in data.items())
    return f"<table class='kv'><caption>{html.escape(caption)}</caption>{rows}</table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1a202c}
h1{margin-bottom:.2em}.meta{color:#4a5568}section{border-top:1px solid #cbd5e0;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}th,td{padding:2px 10px;text-align:left;
border-bottom:1px solid #edf2f7}caption{text-align:left;font-weight:600;color:#2d3748}
.tbl td,.tbl th{font-size:90%}
"""

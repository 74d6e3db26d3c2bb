"""Export: every view recorded in this session as one self-contained HTML report and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from interp.app._common import current, guard, init_state
from interp.report import Report

init_state()
st.title("Export report")
st.caption("Every result you looked at in this session, as it was shown (model, prompts, "
           "settings, numbers and figures recorded at that moment, every setting you tried), "
           "in one HTML file (opens offline) and a JSON file. Nothing is recomputed.")
spec, model, key, prompts = current()
records = st.session_state.get("records", [])
if not records:
    st.info("Open some pages first (e.g. **Attention** or **Logit lens**); what they show is "
            "recorded here.")
    st.stop()
title = st.text_input("report title", f"interp explorer session ({len(records)} views)",
                      key="x_title")
labels = [f"{i + 1}. {r['title']} · {r['model']}" for i, r in enumerate(records)]
chosen = st.multiselect("sections", list(range(len(records))), default=list(range(len(records))),
                        key="x_sections", format_func=lambda i: labels[i])


def build() -> Report:
    models = sorted({records[i]["model"] for i in chosen})
    rep = Report(title=title, model=", ".join(models), settings={"views": len(chosen)})
    for i in chosen:
        r = records[i]
        rep.add(f"{r['title']} ({r['model']})", **r["section"])
    return rep


rep = guard("Building the report", build, hint="re-open the failing page to see its own message.")
st.write(f"{len(rep.sections)} section(s), {sum(len(s.figures) for s in rep.sections)} figure(s).")
stem = "interp-report-" + "-".join(sorted({records[i]["model"] for i in chosen})).replace("/", "_")
c1, c2 = st.columns(2)
c1.download_button("Download HTML report", rep.to_html(), file_name=f"{stem}.html", mime="text/html",
                   key="x_html", type="primary")
c2.download_button("Download JSON", json.dumps(rep.to_json(), indent=1), file_name=f"{stem}.json",
                   mime="application/json", key="x_json")
folder = st.text_input("or save both files into a folder on this machine", "reports", key="x_dir")
if st.button("Save to folder", key="x_save"):
    h, j = guard("Saving the report", rep.save, Path(folder) / stem,
                 hint="choose a folder you can write to.")
    st.success(f"Saved {h} and {j}")
for s in rep.sections:
    with st.expander(s.title):
        st.json({"settings": s.settings, "numbers": s.numbers}, expanded=True)

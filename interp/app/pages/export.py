"""Export: the pages visited in this session as one self-contained HTML report and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from interp.app._common import current, describe_key, guard, init_state
from interp.app._sections import BUILDERS
from interp.report import Report

init_state()
st.title("Export report")
st.caption("Collects every page you have opened in this session, with the settings you last used "
           "there, into one HTML file (figures, settings, numbers; opens offline) and a JSON file.")
spec, model, key, prompts = current()
visited = st.session_state.get("visited", {})
pages = [p for p in BUILDERS if p in visited]
if not pages:
    st.info("Open some pages first (e.g. **Attention** or **Logit lens**); they will appear here.")
    st.stop()
title = st.text_input("report title", f"interp explorer: {spec}", key="x_title")
chosen = st.multiselect("sections", pages, default=pages, key="x_sections",
                        format_func=lambda p: BUILDERS[p][0])


def build() -> Report:
    rep = Report(title=title, model=spec, settings={"prompts": describe_key(key)})
    for p in chosen:
        name, fn = BUILDERS[p]
        rep.add(name, **fn(spec, key, visited[p]))
    return rep


rep = guard("Building the report", build, hint="re-open the failing page to see its own message.")
st.write(f"{len(rep.sections)} section(s), {sum(len(s.figures) for s in rep.sections)} figure(s).")
stem = f"interp-report-{spec.replace('/', '_')}"
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

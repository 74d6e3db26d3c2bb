"""The Streamlit explorer under streamlit.testing.v1.AppTest, and the report library.

Every page: runs without exception, shows its key elements, and an interaction changes what is
shown. The zoo's default model is tiny, so a page renders in well under a second once cached.
"""

from __future__ import annotations

import importlib.util
import json
from html import escape
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ENTRY = Path(__file__).resolve().parent.parent / "apps" / "explorer.py"
TIMEOUT = 180


def has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def app(**state) -> AppTest:
    at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def page(at: AppTest, name: str) -> AppTest:
    return ok(at.switch_page(f"pages/{name}.py").run())


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# --------------------------------------------------------------------------------------------
# Model & prompts
# --------------------------------------------------------------------------------------------


def test_opens_on_default_model_with_a_real_example():
    from interp.models import DEFAULT_MODEL

    at = ok(app())
    assert at.session_state.model_spec == DEFAULT_MODEL
    assert at.title[0].value == "Model & prompts"
    m = metrics(at)
    assert "mean logit diff (clean)" in m and "mean logit diff (corrupted)" in m
    frames = at.dataframe
    assert len(frames[0].value) == 8  # the default prompt set: 8 IOI prompts
    assert any("Tokens" in md.value for md in at.markdown)


def test_changing_the_prompt_set_changes_the_page():
    at = ok(app())
    before = metrics(at)["mean logit diff (clean)"]
    at.selectbox(key="p_kind").set_value("induction").run()
    at.slider(key="p_len").set_value(10).run()
    ok(at.button(key="p_apply").click().run())
    assert at.session_state.prompt_key[0] == "induction"
    assert any("induction" in c.value for c in at.caption)
    assert metrics(at)["mean logit diff (clean)"] != before
    # tokens of an induction prompt: BOS + 10 + 9
    assert "Tokens (20)" in " ".join(md.value for md in at.markdown)


def test_bad_model_spec_is_a_message_not_a_traceback():
    at = app(model_spec="/no/such/model/dir")
    assert not at.exception
    assert at.error, "a bad model spec must show an error message"
    text = at.error[0].value
    assert "does not exist" in text and "What to do" in text


def test_bad_custom_prompt_is_a_message():
    at = ok(app())
    at.selectbox(key="p_kind").set_value("custom").run()
    at.text_input(key="p_ans").set_value(" Marymary Johnjohn").run()
    at.button(key="p_apply").click().run()
    assert not at.exception
    assert at.error and "token" in at.error[0].value


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


def test_attention_grid_head_and_overlay():
    from interp.models import describe
    from interp.models import load_model  # noqa: F401  (cached by the app already)

    at = page(app(), "attention")
    figs = charts(at)
    assert len(figs) == 2
    grid, big = figs
    n_panels = len([t for t in grid["data"] if t["type"] == "heatmap"])
    assert n_panels >= 4
    assert "L0H0" in big["layout"]["title"]["text"]
    at.selectbox(key="a_layer").set_value(1).run()
    at.selectbox(key="a_head").set_value(2).run()
    ok(at)
    big2 = charts(at)[1]
    assert "L1H2" in big2["layout"]["title"]["text"]
    assert big2["data"][0]["z"] != big["data"][0]["z"]
    # token labels on the axes
    assert any("Then" in str(x) or ":" in str(x) for x in big2["data"][0]["x"])
    at.selectbox(key="a_overlay").set_value("induction").run()
    ok(at)
    assert len(charts(at)) == 3
    assert "L1H2 induction score" in metrics(at)
    assert describe  # silence linters


# --------------------------------------------------------------------------------------------
# Logit lens
# --------------------------------------------------------------------------------------------


def test_logit_lens_grid_and_target_rank():
    at = page(app(), "lens")
    figs = charts(at)
    assert len(figs) == 3
    grid = figs[0]["data"][0]
    assert grid["type"] == "heatmap" and grid["y"][-1] == "final"
    m = metrics(at)
    assert {"target token", "rank at the final layer", "first layer where it is top-1"} <= set(m)
    # the rank curve's last point is the metric shown
    assert str(figs[1]["data"][0]["y"][-1]) == str(m["rank at the final layer"])
    at.number_input(key="l_example").set_value(3).run()
    ok(at)
    assert charts(at)[0]["data"][0]["z"] != grid["z"]


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def test_export_collects_visited_pages_and_saves(tmp_path):
    at = app()
    page(at, "attention")
    page(at, "lens")
    at = page(at, "export")
    assert {b.label for b in at.get("download_button")} == {"Download HTML report", "Download JSON"} or \
        len(at.get("download_button")) == 2
    at.text_input(key="x_dir").set_value(str(tmp_path)).run()
    ok(at.button(key="x_save").click().run())
    html = next(tmp_path.glob("*.html")).read_text()
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    titles = [s["title"] for s in doc["sections"]]
    assert titles == ["Model & prompts", "Attention", "Logit lens"]
    assert "<script src=" not in html and "Plotly.newPlot" in html
    assert all(escape(t) in html for t in titles)
    assert doc["model"] == at.session_state.model_spec


def test_pages_waiting_for_a_module_say_so():
    for name, mod in [("patching", "interp.patching"), ("ablation", "interp.ablation"),
                      ("retrieval", "interp.retrieval"), ("circuit", "interp.attribution")]:
        if has(mod):
            continue
        at = app().switch_page(f"pages/{name}.py").run()
        assert not at.exception
        assert at.warning and mod in at.warning[0].value


# --------------------------------------------------------------------------------------------
# interp.report (no streamlit)
# --------------------------------------------------------------------------------------------


def test_report_round_trip_and_self_contained(tmp_path):
    import pandas as pd
    import plotly.graph_objects as go
    import torch

    from interp.report import Report
    from interp.results import Result

    res = Result(values=torch.arange(6.0).reshape(2, 3), dims=("layer", "head"))
    rep = Report(title="t <x>", model="m", settings={"n": 3})
    rep.add("heat", figures=[res.plot()], settings={"a": 1}, numbers={"v": torch.tensor(2.5)},
            tables={"frame": res.to_frame()})
    rep.add("bars", figures=[go.Figure(go.Bar(x=["a"], y=[1]))], text="plain & simple")
    h, j = rep.save(tmp_path / "r.html")
    assert h.name == "r.html" and j.name == "r.json"
    html = h.read_text()
    assert "t &lt;x&gt;" in html and "plain &amp; simple" in html
    assert html.count("Plotly.newPlot") == 2 and "<script src=" not in html
    back = Report.from_json(json.loads(j.read_text()))
    assert [s.title for s in back.sections] == ["heat", "bars"]
    assert back.sections[0].numbers == {"v": 2.5}
    assert back.sections[0].figures[0].data[0].z == res.plot().data[0].z
    assert isinstance(back.sections[0].tables["frame"], pd.DataFrame)
    assert len(back.sections[0].tables["frame"]) == 6


def test_report_rejects_bad_sections():
    from interp.report import Report

    rep = Report()
    with pytest.raises(TypeError, match="plotly Figures"):
        rep.add("x", figures=["not a figure"])
    with pytest.raises(ValueError, match="title"):
        rep.add("  ")
    with pytest.raises(ValueError, match="interp report"):
        Report.from_json({"title": "x"})


def test_report_module_does_not_import_streamlit():
    src = (Path(__file__).resolve().parent.parent / "interp" / "report.py").read_text()
    assert "streamlit" not in src.replace("nothing here depends\non streamlit", "")
    for f in (Path(__file__).resolve().parent.parent / "interp").rglob("*.py"):
        assert "import streamlit" not in f.read_text(), f

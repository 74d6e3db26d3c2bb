"""The Streamlit explorer under streamlit.testing.v1.AppTest, and the report library.

Every page: runs without exception, shows its key elements, and an interaction changes what is
shown. The zoo's default model is tiny, so a page renders in well under a second once cached.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

ENTRY = Path(__file__).resolve().parents[2] / "interp" / "app" / "explorer.py"
TIMEOUT = 600


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
    from interp.prompts import PromptSpec

    key = at.session_state.prompt_key
    assert isinstance(key, PromptSpec) and key.kind == "induction" and key.options["seq_len"] == 10
    assert hash(key) == hash(PromptSpec("induction", options={"seq_len": 10}))
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


def test_unknown_words_are_refused_or_warned():
    at = ok(app())
    at.selectbox(key="p_kind").set_value("custom").run()
    at.text_input(key="p_ans").set_value(" Zorblax").run()
    at.button(key="p_apply").click().run()
    assert not at.exception
    assert at.error and "not in the tokenizer's vocabulary" in at.error[0].value
    at = ok(app())
    at.selectbox(key="p_kind").set_value("custom").run()
    at.text_area(key="p_clean").set_value("Then, Zorblax and John went to the store. John gave "
                                          "a drink to").run()
    at.text_input(key="p_ans").set_value(" John").run()
    ok(at.button(key="p_apply").click().run())
    assert any("Zorblax" in w.value for w in at.warning)


def test_needle_prompt_depths_are_percent():
    from interp.prompts import PromptSpec

    at = ok(app())
    at.selectbox(key="p_kind").set_value("needle").run()
    ms = at.multiselect(key="p_depths")
    assert "%" in ms.label and list(ms.value) == list(PromptSpec("needle").options["depths"])


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


def test_attention_grid_head_and_overlay():
    from interp.models import (
        describe,
        load_model,  # noqa: F401  (cached by the app already)
    )

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
    at.selectbox(key="a_overlay").set_value("previous token").run()
    ok(at)
    assert len(charts(at)) == 3
    on_prompt = float(metrics(at)["L1H2 previous token score"])  # default: on this prompt
    from interp.heads import detect_heads

    ps = at.session_state.prompt_key.build(load_model("ioi"))
    n = int(ps.answer_pos[0]) + 1
    want = detect_heads(load_model("ioi"), ps.clean_tokens[:1, :n], "previous_token")
    assert on_prompt == pytest.approx(float(want.values[1, 2]), abs=5e-4)
    at.radio(key="a_overlay_on").set_value("repeated random tokens").run()
    ok(at)
    assert "L1H2 previous token score" in metrics(at)
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
    top = at.dataframe[-1].value  # the top-k table follows the slider
    assert len(top.columns) == 1 + 5 and len(top) == len(grid["y"])
    at.slider(key="l_k").set_value(3).run()
    ok(at)
    assert len(at.dataframe[-1].value.columns) == 1 + 3
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
    assert titles == ["Model & prompts (ioi)", "Attention (ioi)", "Logit lens (ioi)"]
    assert "<script src=" not in html and "Plotly.newPlot" in html
    assert all(escape(t) in html for t in titles)
    assert doc["model"] == at.session_state.model_spec


def test_patching_sweep_and_cell_details():
    at = page(app(), "patching")
    m = metrics(at)
    assert {"clean logit_diff", "corrupted logit_diff", "largest |score|"} <= set(m)
    heat = charts(at)[0]["data"][0]
    assert heat["type"] == "heatmap" and len(heat["y"]) == len(heat["z"])
    # the default IOI prompts mix templates: positions are named roles, not indices
    assert heat["x"] == ["IO", "S1", "S2", "END"]
    at.selectbox(key="pt_cell_role").set_value(len(heat["x"]) - 1).run()
    ok(at)
    last = [k for k in metrics(at) if k.startswith("score at")]
    assert last and heat["x"][-1] in last[0]
    at.selectbox(key="pt_target").set_value("attn_out").run()
    ok(at)
    assert charts(at)[0]["data"][0]["z"] != heat["z"]
    assert "Activation patching (denoising) of attn_out" in json.dumps(charts(at)[0]["layout"])
    if "path patching" in at.radio(key="pt_mode").options:
        at.radio(key="pt_mode").set_value("path patching").run()
        ok(at)
        pp = charts(at)[0]["data"][0]
        # sender heads: layer x head
        assert pp["x"][0] == "H0" and pp["y"][0] == "L0"
        assert len(pp["z"]) == len(pp["y"]) and len(pp["z"][0]) == len(pp["x"])


def test_ablating_the_top_head_changes_the_logit_diff():
    at = page(app(), "ablation")
    m = metrics(at)
    before, after = float(m["logit diff before"]), float(m["logit diff after"])
    assert before != after, "ablating the head with the largest knockout effect must move the metric"
    comp = at.multiselect(key="ab_components").value
    assert len(comp) == 1
    # the knockout heatmap (each head alone, zero ablation) agrees with the ablation shown
    heat = charts(at)[0]["data"][0]
    layer, head = (int(x) for x in comp[0][1:].split("H"))
    assert abs(heat["z"][layer][head] - (after - before)) < 2e-3
    assert len(at.dataframe) >= 2  # top predictions before / after
    at.multiselect(key="ab_components").set_value(["MLP0", comp[0]]).run()
    ok(at)
    assert float(metrics(at)["logit diff after"]) != after
    at.multiselect(key="ab_components").set_value([]).run()
    ok(at)
    assert "logit diff after" not in metrics(at) and at.info


def test_circuit_methods_sizes_selection_and_export():
    at = page(app(), "circuit")
    m = metrics(at)
    kept = int(m["edges kept"])
    assert 1 <= kept <= 20  # the top 20, dangling edges pruned
    f20 = float(m["faithfulness"])
    assert charts(at) and len(at.get("download_button")) == 2
    graph = charts(at)[0]
    assert len(graph["layout"]["annotations"]) == kept  # one arrow per kept edge
    assert {"query input", "value input"} & {t.get("name") for t in graph["data"]}
    at.select_slider(key="ci_n").set_value(200).run()
    ok(at)
    assert 20 < int(metrics(at)["edges kept"]) <= 200
    assert float(metrics(at)["faithfulness"]) != f20
    at.radio(key="ci_mode").set_value("score threshold").run()
    at.slider(key="ci_thr").set_value(0.5).run()
    n_half = int(metrics(at)["edges kept"])
    at.slider(key="ci_thr").set_value(0.05).run()
    ok(at)
    assert int(metrics(at)["edges kept"]) > n_half >= 0
    at.radio(key="ci_method").set_value("EAP").run()
    ok(at)
    at.toggle(key="ci_curve").set_value(True).run()
    ok(at)
    m = metrics(at)
    assert 0 < float(m["CPR"]) and float(m["CMD"]) >= 0
    # a clicked node is stored as the shared selection; the page then shows that head
    at.session_state["selected_component"] = "L2H0"
    at.run()
    ok(at)
    assert any("Selected: L2H0" in h.value for h in at.subheader)
    assert "logit diff, with it mean-ablated" in metrics(at)
    at = page(at, "attention")  # the selection flows to the other pages
    assert (at.session_state["a_layer"], at.session_state["a_head"]) == (2, 0)
    at = page(at, "ablation")
    assert at.session_state["ab_components"] == ["L2H0"]
    home = ok(app(selected_component="L2H0"))  # the sidebar names the selection on every page
    assert any("selected: **L2H0**" in x.value for x in home.sidebar.markdown)


def test_export_includes_method_pages(tmp_path):
    at = app()
    for name in ("patching", "ablation", "circuit"):
        page(at, name)
    at = page(at, "export")
    at.text_input(key="x_dir").set_value(str(tmp_path)).run()
    ok(at.button(key="x_save").click().run())
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    titles = [s["title"] for s in doc["sections"]]
    for name in ("Patching", "Ablation", "Circuit"):
        assert f"{name} (ioi)" in titles, titles
    for s in doc["sections"]:
        if not s["title"].startswith("Model & prompts"):
            assert s["figures"], s["title"]


def test_report_keeps_every_view_as_shown_across_models(tmp_path):
    """Two models, the same page, two settings: the report has every view with its own model
    and numbers, recorded when shown (switching the model afterwards changes nothing)."""
    from interp.app._common import default_prompt_key

    at = app()
    at = page(at, "lens")
    at.number_input(key="l_example").set_value(1).run()
    ok(at)
    at.session_state["model_spec"] = "induction"
    at.session_state["prompt_key"] = default_prompt_key("induction")
    at = page(at, "lens")
    at = page(at, "export")
    at.text_input(key="x_dir").set_value(str(tmp_path)).run()
    ok(at.button(key="x_save").click().run())
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    lens = [s for s in doc["sections"] if s["title"].startswith("Logit lens")]
    assert [s["settings"]["model"] for s in lens] == ["ioi", "ioi", "induction"]
    assert [s["settings"]["example"] for s in lens[:2]] == [0, 1]
    assert lens[0]["numbers"] != lens[1]["numbers"] and lens[0]["numbers"] != lens[2]["numbers"]
    assert all(s["figures"] for s in lens)


def test_retrieval_scores_threshold_and_masking():
    # last: it swaps the cached model for the needle model
    from interp.prompts import PromptSpec

    at = app(model_spec="needle",
             prompt_key=PromptSpec("needle", options={"lengths": (64,), "depths": (0,)}),
             rt_lengths=[48], rt_depths=[50], rt_maxnew=6)
    at = page(at, "retrieval")
    m = metrics(at)
    assert "trials counted (recall > 50%)" in m and "best head (score)" in m
    assert charts(at)[0]["data"][0]["type"] == "heatmap"
    def md():
        return [x.value for x in at.markdown if "above" in x.value][0]
    at.slider(key="rt_thr").set_value(0.0).run()
    n_low = int(md().strip("*").split()[0])
    at.slider(key="rt_thr").set_value(1.0).run()
    n_high = int(md().strip("*").split()[0])
    assert n_low >= n_high
    # the default score is the fraction of the needle copied: on a fixed 0-1 scale
    heat = charts(at)[0]
    assert max(max(r) for r in heat["data"][0]["z"]) <= 1.0
    assert at.slider(key="rt_thr").max == 1.0 and "fraction" in json.dumps(heat["layout"]["title"])
    at.radio(key="rt_counting").set_value(
        "copy events per needle token (the paper's code; repeats count again)").run()
    ok(at)
    assert "copy events" in json.dumps(charts(at)[0]["layout"]["title"])
    at.toggle(key="rt_mask").set_value(True).run()
    ok(at)
    assert "accuracy, no mask" in metrics(at)


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
    src = (Path(__file__).resolve().parents[2] / "interp" / "report.py").read_text()
    assert "streamlit" not in src.replace("nothing here depends\non streamlit", "")
    pkg = Path(__file__).resolve().parents[2] / "interp"
    for f in pkg.rglob("*.py"):
        if f.is_relative_to(pkg / "app"):
            continue  # the explorer is the one place that imports streamlit
        assert "import streamlit" not in f.read_text(), f


def test_dla_page_shows_heads_and_the_logit_difference_by_layer():
    at = page(app(), "dla")
    assert at.title[0].value == "Direct logit attribution"
    m = metrics(at)
    model_ld, total = float(m["model logit difference"]), float(m["sum of components"])
    assert abs(model_ld - total) < 1e-2  # the components add up to the model's logit difference
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert any("per head" in t for t in titles)
    by_layer = next(c for c in charts(at) if "by layer" in c["layout"]["title"]["text"])
    from interp.models import DEFAULT_MODEL, zoo_path

    n_layers = json.loads((zoo_path(DEFAULT_MODEL) / "config.json").read_text())["n_layer"]
    assert len(by_layer["data"][-1]["y"]) == n_layers + 1  # after the embeddings + each layer
    # the largest head's contribution split by source position sums to its direct effect
    src = next(c for c in charts(at) if "source position" in c["layout"]["title"]["text"])
    head = src["layout"]["title"]["text"].split(" on example")[0]
    from interp.lens import direct_logit_attribution
    from interp.models import load_model

    ioi = load_model(DEFAULT_MODEL)
    res = direct_logit_attribution(ioi, at.session_state.prompt_key.build(ioi))
    hd = res.coords["layer"].index(head.split("H")[0]), int(head.split("H")[1])
    assert sum(src["data"][0]["y"]) == pytest.approx(float(res.per_example[hd][0]), abs=1e-3)
    at.session_state["selected_component"] = "L2H3"  # a selected head is the one shown
    at.run()
    ok(at)
    assert any(c["layout"]["title"]["text"].startswith("L2H3 on example")
               for c in charts(at))


def test_training_page_shows_grokking_over_the_checkpoints():
    at = page(app(), "training")
    m = metrics(at)
    mem, grok = int(m["memorised at step"]), int(m["grokked at step"])
    assert 0 < mem < grok  # memorisation first, generalisation later
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert any("Progress measures" in t for t in titles)
    fourier = next(c for c in charts(at) if "Fourier" in c["layout"]["title"]["text"])
    assert len(fourier["data"][0]["x"]) >= 10  # one column per checkpoint
    at.radio(key="tr_source").set_value("a directory").run()
    at.text_input(key="tr_dir").set_value("/no/such/run").run()
    assert at.error and "step_<N>" in at.error[0].value


def test_sidebar_device_choice():
    at = ok(app())
    box = at.sidebar.selectbox(key="device")
    assert box.value == "auto" and "cpu" in box.options
    box.set_value("cpu").run()
    ok(at)
    from interp.app._common import _load_model

    assert str(next(_load_model("ioi", "cpu").parameters()).device) == "cpu"
    assert float(metrics(at)["mean logit diff (clean)"]) > 0  # the page still computes


def test_pruning_curve_uses_enough_prompts():
    """The default IOI set has 8 prompts; the pruning curve estimates importance on 16 of the
    same kind, so it prunes past the first step."""
    at = page(app(), "ablation")
    at.toggle(key="ab_prune").set_value(True).run()
    ok(at)
    line = next(m.value for m in at.markdown if "heads kept" in m.value)
    assert "from 16 prompts" in line
    assert int(line.split()[0]) < 32  # the ioi model has 32 heads
    assert len(at.dataframe[-1].value) > 2  # more than one pruning step


def test_circuit_page_on_a_grouped_query_model():
    """The zoo needle model shares key/value heads (GQA): the circuit page scores, draws and
    evaluates its graph, and a selected head shows its attention and knockout."""
    from interp.prompts import PromptSpec

    at = app(model_spec="needle",
             prompt_key=PromptSpec("needle", n=2, options={"lengths": (64,), "depths": (50,)}))
    at = page(at, "circuit")
    m = metrics(at)
    assert 1 <= int(m["edges kept"]) <= 20 and m["faithfulness"] != "nan"
    assert len(charts(at)[0]["layout"]["annotations"]) == int(m["edges kept"])
    at.session_state["selected_component"] = "L1H0"
    at.run()
    ok(at)
    assert "logit diff, with it mean-ablated" in metrics(at)


def test_patching_refuses_unaligned_custom_prompts_with_a_way_out():
    """Typed prompts of different lengths carry no named positions: per-position patching is
    refused with what to do; patching whole activations still works."""
    from interp.models import load_model
    from interp.prompts import PromptSpec
    from interp.prompts import ioi as make_ioi

    model = load_model("ioi")
    ps = make_ioi(model, n=8, seed=0)
    lens = ps.answer_pos.tolist()
    a, b = 0, next(i for i in range(len(lens)) if lens[i] != lens[0])
    tok = model.tokenizer
    key = PromptSpec("custom", options={
        "clean": (ps.clean_text[a], ps.clean_text[b]),
        "corrupted": (ps.corrupted_text[a], ps.corrupted_text[b]),
        "answers": tuple(tok.decode([int(ps.answer_ids[i])]) for i in (a, b)),
        "wrong": tuple(tok.decode([int(ps.wrong_ids[i])]) for i in (a, b))})
    at = app(prompt_key=key)
    at = at.switch_page("pages/patching.py").run()
    assert not at.exception
    assert at.error and "per_position=False" in at.error[0].value
    at.checkbox(key="pt_perpos").set_value(False).run()
    ok(at)
    assert charts(at)

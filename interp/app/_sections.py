"""Report sections: for each page the user visited, rebuild its figures and numbers from the
cached results with the settings recorded by that page (nothing is recomputed if cached)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from interp import components as C_
from interp.app import _compute as C
from interp.app._common import describe_key, get_model, get_prompts

Builder = Callable[[str, tuple, dict], dict[str, Any]]
BUILDERS: dict[str, tuple[str, Builder]] = {}


def builder(page: str, title: str):
    def deco(fn: Builder) -> Builder:
        BUILDERS[page] = (title, fn)
        return fn
    return deco


@builder("model", "Model & prompts")
def _model(spec: str, key: tuple, s: dict) -> dict:
    from interp.models import describe

    model, ps = get_model(spec), get_prompts(spec, key)
    tok = model.tokenizer
    base = C.baseline(spec, key)
    numbers = {"mean logit diff (clean)": sum(base["clean"]) / len(base["clean"])}
    if "corrupted" in base:
        numbers["mean logit diff (corrupted)"] = sum(base["corrupted"]) / len(base["corrupted"])
    table = pd.DataFrame({"clean": ps.clean_text or [""] * len(ps),
                          "answer": [tok.decode([int(i)]) for i in ps.answer_ids],
                          "logit diff": base["clean"]})
    return dict(settings={"model": spec, "prompts": describe_key(key)}, numbers=numbers,
                tables={"prompts": table}, text=describe(model).summary())


@builder("attention", "Attention")
def _attention(spec: str, key: tuple, s: dict) -> dict:
    from interp.app._figures import attention_grid
    from interp.viz import attention_figure

    ex = int(s.get("example", 0))
    h = C_.parse(s.get("head", "L0H0"))
    layer, head = h.layer, h.head
    pats, toks = C.patterns(spec, key, ex), C.str_tokens(spec, key, ex)
    figs = [attention_grid(pats, toks, selected=(layer, head)),
            attention_figure(pats[layer, head], toks, title=f"{C_.label(h)} on example {ex}")]
    numbers = {}
    if s.get("overlay", "none") != "none":
        sc = (C.prompt_head_scores(spec, key, s["overlay"], ex)
              if s.get("overlay_on", "this prompt") == "this prompt"
              else C.head_scores(spec, s["overlay"]))
        figs.append(sc.plot(title=f"{s['overlay']} score per head"))
        best, val = sc.best()
        numbers = {f"best {s['overlay']} head": C_.label(C_.Head(*best)), "best score": val}
    return dict(settings=s, figures=figs, numbers=numbers)


@builder("lens", "Logit lens")
def _lens(spec: str, key: tuple, s: dict) -> dict:
    ex = int(s.get("example", 0))
    res = C.lens(spec, key, int(s.get("k", 5)))
    ap = int(get_prompts(spec, key).answer_pos[ex])
    first = res.first_top1_layer(example=ex)
    ranks = pd.DataFrame({"layer": res.coords["layer"], "target rank": res.target_rank[:, ex, ap].tolist(),
                          "target prob": res.values[:, ex, ap].tolist()})
    return dict(settings=s, figures=[res.plot(example=ex)],
                tables={"target token by layer": ranks,
                        f"top {int(s.get('k', 5))} tokens at the answer position":
                            C.lens_topk_table(spec, key, int(s.get("k", 5)), ex)},
                numbers={"first top-1 layer": "never" if first is None else res.coords["layer"][first],
                         "target rank, final layer": int(res.target_rank[-1, ex, ap]),
                         "target prob, final layer": float(res.values[-1, ex, ap])})


@builder("patching", "Patching")
def _patching(spec: str, key: tuple, s: dict) -> dict:
    if s.get("mode") == "path patching":
        recv = s.get("receivers", "logits")
        res = C.path_patching(spec, key, recv if recv == "logits" else tuple(recv),
                              s.get("receiver_input", "q"))
    else:
        res = C.act_patching(spec, key, s["target"], bool(s["per_position"]), s["direction"])
    top = res.top(10)
    return dict(settings=s, figures=[res.plot()], tables={"top cells": top},
                numbers={"clean": res.meta["clean"], "corrupted": res.meta["corrupted"],
                         "largest |score|": float(res.values.abs().max())})


@builder("ablation", "Ablation")
def _ablation(spec: str, key: tuple, s: dict) -> dict:
    ko = C.knockout(spec, key, s["method"])
    figs = [ko.plot(title=f"Knockout of each head ({s['method']})")]
    numbers: dict = {"baseline logit diff": ko.baseline}
    if s.get("components"):
        res = C.ablate(spec, key, tuple(s["components"]), s["method"])
        lo, hi = res.ci[0].tolist()
        numbers.update({"ablated logit diff": res.ablated, "change": float(res.values[0]),
                        "change 95% CI": [lo, hi]})
        tables = {"top predictions before (example 0)": pd.DataFrame(res.top_before[0], columns=["token", "prob"]),
                  "top predictions after (example 0)": pd.DataFrame(res.top_after[0], columns=["token", "prob"])}
    else:
        tables = {}
    tables["largest knockouts"] = ko.top(10)
    return dict(settings=s, figures=figs, numbers=numbers, tables=tables)


@builder("retrieval", "Retrieval heads")
def _retrieval(spec: str, key: tuple, s: dict) -> dict:
    sc = C.retrieval(spec, tuple(s["lengths"]), tuple(s["depths"]), int(s["max_new_tokens"]),
                     s.get("counting", "events"))
    above = [C_.label(C_.Head(a, b)) for a, b in sc.above(float(s["threshold"]))]
    return dict(settings=s, figures=[sc.plot(title=sc.meta["title"])],
                numbers={"trials counted": sc.meta["n_accepted"], "trials": sc.meta["n_trials"],
                         "heads above threshold": above},
                tables={"ranked heads": sc.top(10)[["component_label", "value"]]})


@builder("circuit", "Circuit")
def _circuit(spec: str, key: tuple, s: dict) -> dict:
    g = C.select(C.discover(spec, key, s["method"]), s["mode"], s["value"])
    ev = C.circuit_faithfulness(spec, key, s["method"], s["mode"], s["value"])
    numbers = {"edges kept": f"{g.n_in_graph}/{g.n_edges}", "nodes": int(g.nodes_in_graph.sum()),
               "faithfulness": ev["faithfulness"], "metric: full model": ev["full"],
               "metric: circuit": ev["circuit"], "metric: empty circuit": ev["empty"]}
    top = sorted(g.in_graph.nonzero()[:, 0].tolist(), key=lambda i: -abs(float(g.scores[i])))
    names = g.edge_names()
    text = "strongest edges: " + ", ".join(f"{names[i]} ({float(g.scores[i]):+.3g})"
                                           for i in top[:20])
    return dict(settings=s, figures=[g.plot()], numbers=numbers, text=text)


@builder("dla", "Direct logit attribution")
def _dla(spec: str, key: tuple, s: dict) -> dict:
    res = C.dla(spec, key)
    labels, acc = res.accumulated()
    top = res.top(1).iloc[0]
    by_layer = pd.DataFrame({"after": labels, "logit difference (mean)": acc.mean(-1).tolist()})
    return dict(settings=s, figures=[res.plot(title="Direct logit attribution per head"),
                                     res.plot_bars()],
                numbers={"model logit difference": res.meta["model_logit_diff"],
                         "sum of components": res.total(),
                         "largest head": f"{top['component_label']} ({float(top['value']):+.3f})"},
                tables={"logit difference carried by the residual stream": by_layer})

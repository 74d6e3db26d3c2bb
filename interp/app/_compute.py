"""Cached calls into the library, keyed by (model spec, prompt key, options).

Each function is one library call (plus slicing); results are pickled by ``st.cache_data`` so a
revisited page, or the export, reuses them. No method logic lives here.
"""

from __future__ import annotations

import streamlit as st

from interp.app._common import get_model, get_prompts


@st.cache_data(max_entries=16, show_spinner="Running the logit lens…")
def lens(spec: str, key: tuple, k: int = 5):
    from interp.lens import logit_lens

    return logit_lens(get_model(spec), get_prompts(spec, key), k=k)


def lens_topk_table(spec: str, key: tuple, k: int, example: int):
    """``[layer x k]`` table: the lens's top-k tokens (with probabilities) at the answer
    position of ``example``."""
    import pandas as pd

    res = lens(spec, key, k)
    tok = get_model(spec).tokenizer
    ap = int(get_prompts(spec, key).answer_pos[example])
    ids, probs = res.top_ids[:, example, ap, :k], res.top_probs[:, example, ap, :k]
    rows = []
    for i, layer in enumerate(res.coords["layer"]):
        row = {"layer": layer}
        for j in range(ids.shape[-1]):
            row[f"#{j + 1}"] = f"{tok.decode([int(ids[i, j])])!r} {float(probs[i, j]):.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


@st.cache_data(max_entries=16, show_spinner="Direct logit attribution…")
def dla(spec: str, key: tuple):
    from interp.lens import direct_logit_attribution

    return direct_logit_attribution(get_model(spec), get_prompts(spec, key))


@st.cache_data(max_entries=8, show_spinner="Splitting head contributions by source position…")
def dla_sources(spec: str, key: tuple):
    from interp.lens import direct_logit_attribution

    return direct_logit_attribution(get_model(spec), get_prompts(spec, key), source_positions=True)


@st.cache_data(max_entries=32, show_spinner="Caching attention patterns…")
def patterns(spec: str, key: tuple, example: int):
    """[layer, head, query, key] for one example, cut at its answer position."""
    from interp.heads import patterns as all_patterns

    ps = get_prompts(spec, key)
    n = int(ps.answer_pos[example]) + 1
    pats = all_patterns(get_model(spec), ps.clean_tokens[example:example + 1, :n])
    return pats[:, 0]


@st.cache_data(max_entries=16, show_spinner="Scoring heads…")
def head_scores(spec: str, kind: str):
    """Diagonal head scores on repeated random tokens (independent of the prompt set)."""
    from interp import heads

    model = get_model(spec)
    seq_len = max(4, min(20, (int(model.cfg.n_ctx) - 1) // 2))
    fn = {"induction": heads.induction_scores, "previous token": heads.previous_token_scores,
          "duplicate token": heads.duplicate_token_scores}[kind]
    return fn(model, seq_len=seq_len, batch=8)


@st.cache_data(max_entries=32, show_spinner="Scoring heads on this prompt…")
def prompt_head_scores(spec: str, key: tuple, kind: str, example: int):
    """transformer-lens's detection scores (``detect_heads``) on one prompt of the session, cut
    at its answer position: how much each head attends as a ``kind`` head would there."""
    from interp.heads import detect_heads

    ps = get_prompts(spec, key)
    n = int(ps.answer_pos[example]) + 1
    pattern = {"induction": "induction", "previous token": "previous_token",
               "duplicate token": "duplicate_token"}[kind]
    return detect_heads(get_model(spec), ps.clean_tokens[example:example + 1, :n], pattern)


@st.cache_data(max_entries=16, show_spinner=False)
def str_tokens(spec: str, key: tuple, example: int, corrupted: bool = False) -> list[str]:
    return get_prompts(spec, key).str_tokens(get_model(spec), example, corrupted=corrupted)


@st.cache_data(max_entries=16, show_spinner="Running the model…")
def baseline(spec: str, key: tuple) -> dict:
    """Clean and corrupted metric per example (logit difference answer - wrong)."""
    import torch

    from interp.metrics import resolve_metric

    model, ps = get_model(spec), get_prompts(spec, key)
    m = resolve_metric("logit_diff")
    out = {}
    with torch.no_grad():
        out["clean"] = m.from_full(model(ps.clean_tokens), ps).tolist()
        if ps.corrupted_tokens is not None:
            out["corrupted"] = m.from_full(model(ps.corrupted_tokens), ps).tolist()
    return out


@st.cache_data(max_entries=24, show_spinner=False)
def act_patching(spec: str, key: tuple, target: str, per_position: bool, direction: str):
    from interp.patching import activation_patching

    return activation_patching(get_model(spec), get_prompts(spec, key), target=target,
                               per_position=per_position, direction=direction)


@st.cache_data(max_entries=16, show_spinner=False)
def path_patching(spec: str, key: tuple, receivers: tuple | str, receiver_input: str):
    from interp import patching

    return patching.path_patching(get_model(spec), get_prompts(spec, key),
                                  receivers=receivers if receivers == "logits" else list(receivers),
                                  receiver_input=receiver_input)


def has_path_patching() -> bool:
    try:
        from interp import patching

        return callable(patching.path_patching)
    except (ImportError, AttributeError):
        return False


@st.cache_data(max_entries=32, show_spinner=False)
def ablate(spec: str, key: tuple, components: tuple, method: str):
    from interp.ablation import ablate as run

    return run(get_model(spec), get_prompts(spec, key), list(components), method=method)


@st.cache_data(max_entries=8, show_spinner=False)
def knockout(spec: str, key: tuple, method: str):
    from interp.ablation import knockout_sweep

    return knockout_sweep(get_model(spec), get_prompts(spec, key), method=method)


@st.cache_data(max_entries=8, show_spinner=False)
def prune(spec: str, key: tuple, step: float, stop_at: float, metric: str):
    """Greedy pruning on the session's prompts, or on 16 prompts of the same kind when the set
    is a generated one with fewer (on 8 IOI prompts the 90% criterion usually stops after one
    step: too few examples for a stable importance ranking)."""
    from dataclasses import replace

    from interp.ablation import prune_heads

    ps = get_prompts(spec, key)
    if key.kind not in ("custom", "needle") and len(ps) < PRUNE_MIN_PROMPTS:
        ps = get_prompts(spec, replace(key, n=PRUNE_MIN_PROMPTS))
    res = prune_heads(get_model(spec), ps, step=step, stop_at=stop_at, metric=metric)
    res.meta["n_examples"] = len(ps)
    return res


#: Prompts the app's pruning curve uses at least (see :func:`prune`).
PRUNE_MIN_PROMPTS = 16


@st.cache_data(max_entries=8, show_spinner=False)
def retrieval(spec: str, lengths: tuple, depths: tuple, max_new_tokens: int,
              counting: str = "events"):
    from interp.retrieval import retrieval_scores

    return retrieval_scores(get_model(spec), lengths=list(lengths), depths=list(depths),
                            max_new_tokens=max_new_tokens, counting=counting)


@st.cache_data(max_entries=8, show_spinner=False)
def masking(spec: str, lengths: tuple, depths: tuple, max_new_tokens: int, k: int, n_random: int,
            mode: str):
    from interp.retrieval import masking_experiment

    scores = retrieval(spec, lengths, depths, max_new_tokens)
    return masking_experiment(get_model(spec), k=k, n_random=n_random, scores=scores, mode=mode,
                              lengths=list(lengths), depths=list(depths),
                              max_new_tokens=max_new_tokens)


@st.cache_data(max_entries=8, show_spinner=False)
def edge_attribution(spec: str, key: tuple):
    from interp.attribution import edge_attribution as run

    return run(get_model(spec), get_prompts(spec, key))


@st.cache_data(max_entries=16, show_spinner=False)
def faithfulness(spec: str, key: tuple, heads: tuple):
    """``FaithfulnessResult`` of the heads (labels such as ``"L3H2"``)."""
    from interp.circuits import faithfulness as run

    return run(get_model(spec), get_prompts(spec, key), list(heads))


@st.cache_data(max_entries=16, show_spinner=False)
def discover(spec: str, key: tuple, method: str):
    """Every edge of the model's graph scored by ``method`` (nothing selected yet)."""
    from interp.circuits import discover as run

    return run(get_model(spec), get_prompts(spec, key), method=method)


def select(graph, mode: str, value: float):
    """``graph`` with ``top_n(value)`` or ``threshold(value x the largest |score|)`` applied."""
    if mode == "top edges":
        return graph.top_n(int(value))
    return graph.threshold(float(value) * float(graph.scores.abs().max()))


@st.cache_data(max_entries=32, show_spinner=False)
def circuit_faithfulness(spec: str, key: tuple, method: str, mode: str, value: float) -> dict:
    """``evaluate`` of the selected circuit: faithfulness, metric of model / circuit / empty."""
    from interp.circuits import evaluate

    g = select(discover(spec, key, method), mode, value)
    return evaluate(get_model(spec), get_prompts(spec, key), g)


@st.cache_data(max_entries=16, show_spinner=False)
def faithfulness_curve(spec: str, key: tuple, method: str):
    from interp.circuits import faithfulness_curve as run

    return run(get_model(spec), get_prompts(spec, key), discover(spec, key, method))

"""Model & prompts: pick the model and the prompt set; see tokens and the model's answers."""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from interp.app import _compute as C
from interp.app._common import (
    PROMPT_KINDS,
    TASK_OF,
    PromptSpec,
    current,
    default_prompt_key,
    describe_key,
    guard,
    init_state,
    make_prompt_key,
    remember,
)
from interp.app._figures import top_table
from interp.models import ZOO, describe

init_state()
ss = st.session_state
st.title("Model & prompts")
st.caption("Everything else in the explorer runs on the model and prompt set chosen here.")

with st.expander("Choose the model", expanded=False):
    source = st.radio("source", ["zoo", "local directory", "Hub id"], horizontal=True, key="m_source")
    if source == "zoo":
        names = [n for n in ZOO if ZOO[n].task]  # models that read text prompts
        cur = ss.model_spec if ss.model_spec in names else names[0]
        spec = st.selectbox("zoo model", names, index=names.index(cur), key="m_zoo",
                            format_func=lambda n: f"{n} - {ZOO[n].summary}")
    elif source == "local directory":
        spec = st.text_input("Hugging Face directory (config.json + *.safetensors + tokenizer)",
                             key="m_dir", placeholder="/path/to/model")
    else:
        spec = st.text_input("Hub id (from the local cache, or downloaded if the network allows)",
                             key="m_hub", placeholder="gpt2")
    if st.button("Load model", key="m_load", type="primary"):
        if not (spec or "").strip():
            st.error("Type a directory or a Hub id first.")
        else:
            ss.model_spec = spec.strip()
            ss.prompt_key = default_prompt_key(ss.model_spec)
            st.rerun()

with st.expander("Choose the prompt set", expanded=False):
    kinds = list(PROMPT_KINDS)
    kind = st.selectbox("prompt set", kinds, index=kinds.index(ss.prompt_key.kind), key="p_kind")
    opts: dict = {}
    if kind != "custom":
        dflt = PromptSpec.default(kind)  # the kind's defaults (the same as the library's)
        if kind == "needle":
            opts["n"] = st.slider("needles per (length, depth) cell", 1, 4, dflt.n, key="p_nneedles")
        else:
            opts["n"] = st.slider("number of prompts", 2, 64, dflt.n, key="p_n")
        opts["seed"] = st.number_input("seed", 0, 10_000, dflt.seed, key="p_seed")
    if kind == "ioi":
        corr = ["abc", "swap"]
        opts["corruption"] = st.radio("corruption", corr, horizontal=True, key="p_corr",
                                      index=corr.index(dflt.options["corruption"]),
                                      help="abc: three fresh names (p_ABC); swap: the two names swapped")
    elif kind == "induction":
        opts["seq_len"] = st.slider("repeated span length", 4, 60, dflt.options["seq_len"], key="p_len")
    elif kind == "needle":
        opts["lengths"] = st.multiselect(
            "context lengths (tokens, whole prompt)",
            sorted({32, 64, 96, 128, 256, 512, *dflt.options["lengths"]}),
            default=list(dflt.options["lengths"]), key="p_lengths")
        opts["depths"] = st.multiselect(
            "needle depths (% of the context)", sorted({0, 25, 50, 75, 100, *dflt.options["depths"]}),
            default=list(dflt.options["depths"]), key="p_depths")
    else:
        st.markdown("One prompt per line. Answers are single tokens, usually with a leading space.")
        opts["clean"] = st.text_area("clean prompts", "When Mary and John went to the store, John gave "
                                     "a drink to", key="p_clean").splitlines()
        opts["answers"] = st.text_input("answer(s), comma separated", " Mary", key="p_ans").split(",")
        corr = st.text_area("corrupted prompts (optional, same token length)", "", key="p_kcorr")
        wrong = st.text_input("wrong answer(s) for the logit difference", " John", key="p_wrong")
        opts["corrupted"] = [x for x in corr.splitlines() if x.strip()] or None
        opts["wrong"] = [w for w in wrong.split(",") if w] or None
        opts["clean"] = [x for x in opts["clean"] if x.strip()]
        opts["answers"] = [a for a in opts["answers"] if a]
    if st.button("Use these prompts", key="p_apply", type="primary"):
        new_key = guard("Reading the prompt options", make_prompt_key, kind, **opts)
        ss.prompt_key = new_key
        st.rerun()
    st.caption(f"The zoo model's own task: {', '.join(f'{k}: {v}' for k, v in TASK_OF.items())}")

spec, model, key, prompts = current()
info = describe(model)
remember("model", {"model": spec, "prompts": describe_key(key)})

c1, c2 = st.columns([2, 3])
with c1:
    st.subheader(f"Model: {spec}")
    st.write(info.summary())
    st.json({k: v for k, v in info.to_dict().items() if k != "hooks"}, expanded=False)
with c2:
    st.subheader("Prompts")
    st.write(describe_key(key))
    tok = model.tokenizer
    df = pd.DataFrame({
        "clean": prompts.clean_text or [""] * len(prompts),
        "answer": [tok.decode([int(i)]) for i in prompts.answer_ids],
        "corrupted": prompts.corrupted_text or [""] * len(prompts),
        "wrong": [tok.decode([int(i)]) for i in prompts.wrong_ids] if prompts.wrong_ids is not None
        else [""] * len(prompts),
    })
    st.dataframe(df, height=220)
    if prompts.meta.get("unknown_words"):
        st.warning(f"These prompt words are not in the tokenizer's vocabulary and each became one "
                   f"unknown token: {', '.join(prompts.meta['unknown_words'])}.")

ex = st.number_input("example", 0, len(prompts) - 1, 0, key="m_example")
toks = C.str_tokens(spec, key, ex)
chips = " ".join(
    f"<span style='border:1px solid #cbd5e0;border-radius:4px;padding:1px 4px;margin:1px;"
    f"display:inline-block;font-family:monospace'><sub style='color:#a0aec0'>{i}</sub>"
    f"{html.escape(t).replace(' ', '&middot;')}</span>" for i, t in enumerate(toks))
st.markdown(f"**Tokens ({len(toks)})** &nbsp; {chips}", unsafe_allow_html=True)

base = guard("Running the model", C.baseline, spec, key)
lens = guard("Reading the model's predictions", C.lens, spec, key)
ap = int(prompts.answer_pos[ex])
m1, m2, m3 = st.columns(3)
m1.metric("logit diff (clean), this example", f"{base['clean'][ex]:.3f}")
m2.metric("mean logit diff (clean)", f"{sum(base['clean']) / len(base['clean']):.3f}")
if "corrupted" in base:
    m3.metric("mean logit diff (corrupted)", f"{sum(base['corrupted']) / len(base['corrupted']):.3f}")
st.markdown(f"**Top predictions at position {ap}** (answer {tok.decode([int(prompts.answer_ids[ex])])!r})")
st.dataframe(top_table(lens.top_ids[-1, ex, ap], lens.top_probs[-1, ex, ap], tok), hide_index=True)

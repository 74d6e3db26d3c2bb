"""Shared plumbing of the explorer: cached model and prompts, the current selection, errors.

Rules: the model lives in ``st.cache_resource(max_entries=1)``; results in
``st.cache_data`` keyed by (model spec, prompt key, options) -- see ``interp/app/_compute.py``;
``st.session_state`` holds only UI selections (model spec, prompt key, per-page settings).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from interp.models import DEFAULT_MODEL, ZOO

T = TypeVar("T")

#: prompt set per zoo model (the task that exercises its circuit)
TASK_OF = {name: e.task for name, e in ZOO.items()}
PROMPT_KINDS = ("ioi", "induction", "needle", "custom")


def default_model() -> str:
    return os.environ.get("INTERP_MODEL") or DEFAULT_MODEL


def default_prompt_key(spec: str) -> tuple:
    kind = TASK_OF.get(spec, "ioi")
    return make_prompt_key(kind)


def make_prompt_key(kind: str, *, n: int | None = None, seed: int = 0, **kw: Any) -> tuple:
    """A hashable description of a prompt set; the cache key for everything computed on it."""
    if kind == "ioi":
        return ("ioi", n or 8, seed, kw.get("corruption", "abc"))
    if kind == "induction":
        return ("induction", n or 8, kw.get("seq_len", 20), seed)
    if kind == "needle":
        return ("needle", tuple(kw.get("lengths", (64,))), tuple(kw.get("depths", (0.0, 0.5, 1.0))),
                seed)
    if kind == "custom":
        return ("custom", tuple(kw["clean"]), tuple(kw["answers"]),
                tuple(kw["corrupted"]) if kw.get("corrupted") else None,
                tuple(kw["wrong"]) if kw.get("wrong") else None)
    raise ValueError(f"unknown prompt kind {kind!r}; use one of {', '.join(PROMPT_KINDS)}")


def init_state() -> None:
    """Selections the pages share, with defaults that show a real example on the first screen."""
    ss = st.session_state
    if "model_spec" not in ss:
        ss.model_spec = default_model()
    if "prompt_key" not in ss:
        ss.prompt_key = default_prompt_key(ss.model_spec)
    ss.setdefault("visited", {})  # page id -> settings used there (for the report)


class UserFacingError(Exception):
    """Raised by guard() after the message is on the page."""


def guard(what: str, fn: Callable[..., T], *args: Any, hint: str = "", **kwargs: Any) -> T:
    """Run ``fn``; on failure show ``what`` failed, why, and what to do, then stop the page."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # shown to the user as a message, not as a traceback
        msg = str(e).strip() or type(e).__name__
        st.error(f"**{what} failed.** {msg}" + (f"\n\n**What to do:** {hint}" if hint else ""),
                 icon=":material/error:")
        with st.expander("technical details"):
            st.code("".join(traceback.format_exception_only(type(e), e)), language=None)
        st.stop()
        raise UserFacingError(msg) from e  # not reached: st.stop() ends the script run


@st.cache_resource(max_entries=1, show_spinner="Loading the model…")
def get_model(spec: str):
    from interp.models import load_model

    return load_model(spec)


@st.cache_data(max_entries=16, show_spinner="Building prompts…")
def get_prompts(spec: str, key: tuple):
    from interp import prompts as P

    model = get_model(spec)
    kind = key[0]
    if kind == "ioi":
        _, n, seed, corruption = key
        ps = P.ioi(model, n=n, seed=seed, corruption=corruption)
    elif kind == "induction":
        _, n, seq_len, seed = key
        ps = P.induction(model, n=n, seq_len=seq_len, seed=seed)
    elif kind == "needle":
        _, lengths, depths, seed = key
        ps = P.needle(model, lengths=lengths, depths=depths, seed=seed)
    elif kind == "custom":
        _, clean, answers, corrupted, wrong = key
        ps = P.PromptSet.from_pairs(model, list(clean), list(answers),
                                    corrupted=list(corrupted) if corrupted else None,
                                    wrong=list(wrong) if wrong else None)
    else:
        raise ValueError(f"unknown prompt kind {kind!r}")
    return ps.check(model)


def current() -> tuple[str, Any, tuple, Any]:
    """(model spec, model, prompt key, prompts) of the session, or an error message and stop."""
    init_state()
    spec, key = st.session_state.model_spec, st.session_state.prompt_key
    model = guard(f"Loading model {spec!r}", get_model, spec,
                  hint="pick a zoo model (ioi, induction, needle), a local Hugging Face directory "
                       "or a cached Hub id on the **Model & prompts** page.")
    prompts = guard("Building the prompts", get_prompts, spec, key,
                    hint="change the prompt set on the **Model & prompts** page.")
    return spec, model, key, prompts


def describe_key(key: tuple) -> str:
    kind = key[0]
    if kind == "ioi":
        return f"IOI, {key[1]} prompts, {key[3].upper()} corruption, seed {key[2]}"
    if kind == "induction":
        return f"induction, {key[1]} prompts, repeated span {key[2]}, seed {key[3]}"
    if kind == "needle":
        return f"needle, lengths {list(key[1])}, depths {list(key[2])}, seed {key[3]}"
    return f"custom, {len(key[1])} prompt(s)"


def header(title: str, caption: str) -> tuple[str, Any, tuple, Any]:
    st.title(title)
    spec, model, key, prompts = current()
    st.caption(f"{caption}  \nModel **{spec}** · prompts: {describe_key(key)}")
    return spec, model, key, prompts


def remember(page: str, settings: dict) -> None:
    """Record that ``page`` was viewed with ``settings`` (the export recomputes from cache)."""
    st.session_state.setdefault("visited", {})[page] = dict(settings)

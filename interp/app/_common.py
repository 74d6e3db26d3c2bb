"""Shared plumbing of the explorer: cached model and prompts, the current selection, errors.

Rules: the model lives in ``st.cache_resource(max_entries=1)``; results in
``st.cache_data`` keyed by (model spec, prompt key, options) -- see ``interp/app/_compute.py``;
``st.session_state`` holds only UI selections (model spec, prompt key, per-page settings).
The prompt key is an ``interp.prompts.PromptSpec`` (frozen, hashable): the only way the app
builds prompts, with the same per-kind defaults as the library and the ``interp`` command.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from interp.models import DEFAULT_MODEL, ZOO
from interp.prompts import PROMPT_KINDS, PromptSpec  # noqa: F401 (PROMPT_KINDS: for the pages)

T = TypeVar("T")

#: prompt set per zoo model (the task that exercises its circuit)
TASK_OF = {name: e.task for name, e in ZOO.items() if e.task}


def default_model() -> str:
    return os.environ.get("INTERP_MODEL") or DEFAULT_MODEL


def default_prompt_key(spec: str) -> PromptSpec:
    """The model's own task (zoo) or IOI, with the kind's defaults."""
    return PromptSpec(TASK_OF.get(spec, "ioi"))


def make_prompt_key(kind: str, *, n: int | None = None, seed: int = 0, **options: Any) -> PromptSpec:
    """The PromptSpec for the options chosen on the page (validated: bad input raises)."""
    return PromptSpec(kind, n=n, seed=int(seed), options=options)


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


def device_choices() -> list[str]:
    """``auto`` (CUDA, else MPS, else CPU), ``cpu``, and each accelerator this machine has."""
    import torch

    out = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    return out + (["mps"] if mps is not None and mps.is_available() else [])


def app_device() -> str:
    """The device chosen in the sidebar (default: ``INTERP_DEVICE`` or ``auto``), resolved."""
    from interp.models import resolve_device

    return resolve_device(st.session_state.get("device") or os.environ.get("INTERP_DEVICE", "auto"))


def get_model(spec: str):
    """The session's model on the sidebar's device (loaded once per spec and device)."""
    return _load_model(spec, app_device())


@st.cache_resource(max_entries=1, show_spinner="Loading the model…")
def _load_model(spec: str, device: str):
    from interp.models import load_model

    return load_model(spec, device=device)


@st.cache_data(max_entries=16, show_spinner="Building prompts…")
def get_prompts(spec: str, key: PromptSpec):
    if not isinstance(key, PromptSpec):
        raise TypeError(f"the prompt key must be a PromptSpec, not {type(key).__name__}")
    import warnings

    with warnings.catch_warnings():
        # unknown words are recorded in meta["unknown_words"] and shown by the page instead
        warnings.simplefilter("ignore", UserWarning)
        return key.build(get_model(spec))


def current() -> tuple[str, Any, PromptSpec, Any]:
    """(model spec, model, prompt key, prompts) of the session, or an error message and stop."""
    init_state()
    spec, key = st.session_state.model_spec, st.session_state.prompt_key
    model = guard(f"Loading model {spec!r}", get_model, spec,
                  hint="pick a zoo model (ioi, induction, needle), a local Hugging Face directory "
                       "or a cached Hub id on the **Model & prompts** page.")
    prompts = guard("Building the prompts", get_prompts, spec, key,
                    hint="change the prompt set on the **Model & prompts** page.")
    return spec, model, key, prompts


def describe_key(key: PromptSpec) -> str:
    return key.describe()


def header(title: str, caption: str) -> tuple[str, Any, PromptSpec, Any]:
    st.title(title)
    spec, model, key, prompts = current()
    st.caption(f"{caption}  \nModel **{spec}** · prompts: {describe_key(key)}")
    return spec, model, key, prompts


def select_component(name: str | None) -> bool:
    """Select a head or MLP for every page (a click on a heatmap cell or a graph node; ``input``
    / ``logits`` / None clear it). True when the selection changed (the caller reruns then; a
    chart keeps reporting its last click, so an unchanged one must not rerun again)."""
    ss = st.session_state
    from interp.viz import node_label

    new = None if name is None or name in ("input", "logits") else node_label(name)
    if ss.get("selected_component") == new:
        return False
    if new is None:
        ss.pop("selected_component", None)
    else:
        ss["selected_component"] = new
    return True


def clicked(event) -> list[str]:
    """The ``customdata`` strings of the points a ``st.plotly_chart(on_select="rerun")`` event
    reports (the click targets of :func:`interp.app._figures.clickable` and graph nodes)."""
    points = event.selection.points if event else []
    return [p.get("customdata") for p in points if isinstance(p.get("customdata"), str)]


def selected_component() -> str | None:
    """The head (``L1H2``) or MLP (``MLP0``) selected on any page, or None."""
    return st.session_state.get("selected_component")


def remember(page: str, settings: dict) -> None:
    """Record what ``page`` shows now, for the report: its section (settings, numbers, figures)
    is built at this moment, with this model and these prompts, from the results the page has
    just computed (cached), and kept as a new record unless the last record of this page, model,
    prompts and settings is the same. The export writes the records; it recomputes nothing."""
    ss = st.session_state
    ss.setdefault("visited", {})[page] = dict(settings)
    from interp.app._sections import BUILDERS

    if page not in BUILDERS:
        return
    spec, key = ss.model_spec, ss.prompt_key
    ident = (page, spec, repr(key), repr(sorted(settings.items())))
    records = ss.setdefault("records", [])
    if any(r["ident"] == ident for r in records):
        return
    title, fn = BUILDERS[page]
    try:
        section = fn(spec, key, dict(settings))
    except Exception:  # noqa: BLE001  (the page itself shows the error; nothing to record)
        return
    section["settings"] = {"model": spec, "prompts": describe_key(key),
                           **dict(section.get("settings") or {})}
    records.append({"ident": ident, "page": page, "title": title, "model": spec,
                    "section": section})
    del records[:-MAX_RECORDS]


#: Records kept for the report (the oldest are dropped first).
MAX_RECORDS = 60

"""Retrieval heads page (waiting for `interp.retrieval`)."""

import streamlit as st

from apps._common import require_module

st.title("Retrieval heads")
require_module("interp.retrieval", "This page")

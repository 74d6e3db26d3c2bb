"""Patching page (waiting for `interp.patching`)."""

import streamlit as st

from apps._common import require_module

st.title("Patching")
require_module("interp.patching", "This page")

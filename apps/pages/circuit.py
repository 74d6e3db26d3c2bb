"""Circuit page (waiting for `interp.attribution`)."""

import streamlit as st

from apps._common import require_module

st.title("Circuit")
require_module("interp.attribution", "This page")

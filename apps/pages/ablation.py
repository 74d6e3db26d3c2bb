"""Ablation page (waiting for `interp.ablation`)."""

import streamlit as st

from apps._common import require_module

st.title("Ablation")
require_module("interp.ablation", "This page")

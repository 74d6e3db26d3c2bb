"""The Streamlit Circuit Explorer (entry point: apps/explorer.py)."""

"""The Streamlit Circuit Explorer (entry point: ``interp/app/explorer.py``, run by ``interp app`` or ``make app``; needs the ``[app]`` extra)."""

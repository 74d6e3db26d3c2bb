"""Moved: the language data lives in ``interp.prompts._language``; the needle training example in
``interp.models.train.needle``. This module re-exports both so that older imports keep working."""

from interp.prompts._language import *


def __getattr__(name: str):
    if name == "needle_example":
        from interp.models.train.needle import needle_example

        return needle_example
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

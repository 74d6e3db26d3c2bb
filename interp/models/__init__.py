"""Models: loading (zoo, local HF directory, Hub id), the zoo registry, and model descriptions.

The zoo registry is light; loading and descriptions pull in torch and transformer-lens on first
use (PEP 562), so ``interp models`` lists the zoo at once.
"""

from __future__ import annotations

import importlib
from typing import Any

from interp.models._zoo import DEFAULT_MODEL, ZOO, ZooEntry, model_card, zoo_path

_LAZY = {
    "ModelInfo": "interp.models._info",
    "describe": "interp.models._info",
    "ModelLoadError": "interp.models._loading",
    "as_model": "interp.models._loading",
    "load_model": "interp.models._loading",
    "resolve_device": "interp.models._loading",
}

__all__ = [
    "DEFAULT_MODEL",
    "ZOO",
    "ModelInfo",
    "ModelLoadError",
    "ZooEntry",
    "as_model",
    "describe",
    "load_model",
    "model_card",
    "resolve_device",
    "zoo_path",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'interp.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

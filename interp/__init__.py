"""interp: a mechanistic-interpretability workbench on transformer-lens 4.x.

The top level is lazy (PEP 562): ``import interp`` costs nothing; torch and transformer-lens
load when a name is first used, so the ``interp`` command answers ``--help`` instantly.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "interp.models",
    "describe": "interp.models",
    "ModelInfo": "interp.models",
    "ModelLoadError": "interp.models",
    "ZOO": "interp.models",
    "DEFAULT_MODEL": "interp.models",
    "PromptSet": "interp.prompts",
    "PromptError": "interp.prompts",
    "PromptSpec": "interp.prompts",
    "HeadScores": "interp.heads",
    "retrieval_scores": "interp.retrieval",
    "activation_patching": "interp.patching",
    "path_patching": "interp.patching",
    "PatchingResult": "interp.patching",
    "attribution_patching": "interp.attribution",
    "edge_attribution": "interp.attribution",
}
_SUBMODULES = {
    "components", "hooks", "models", "prompts", "metrics", "results", "viz", "patching", "attribution",
    "ablation", "lens", "heads", "retrieval", "circuits", "report", "distributed",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"interp.{name}")
    raise AttributeError(f"module 'interp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)

"""interp: a mechanistic-interpretability workbench on transformer-lens 4.x.

The top level stays light: transformer-lens is imported only when a model is loaded.
"""

from interp import hooks
from interp.models import DEFAULT_MODEL, ZOO, ModelInfo, ModelLoadError, describe, load_model
from interp.prompts import PromptError, PromptSet

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "ZOO",
    "ModelInfo",
    "ModelLoadError",
    "PromptError",
    "PromptSet",
    "__version__",
    "describe",
    "hooks",
    "load_model",
]

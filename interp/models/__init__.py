"""Models: loading (zoo, local HF directory, Hub id), the zoo registry, and model descriptions."""

from interp.models._info import ModelInfo, describe
from interp.models._loading import ModelLoadError, as_model, load_model
from interp.models._zoo import DEFAULT_MODEL, ZOO, ZooEntry, model_card, zoo_path

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
    "zoo_path",
]

"""Backbones, their weights, and saved model artifacts.

The names below load on first use: reading what a model is (`models.info`) must not
import torch and timm, which only building the network needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "ModelInfo": ".info",
    "read_info": ".info",
    "load_model": ".artifact",
    "save_model": ".artifact",
    "architecture_preprocess": ".registry",
    "create_model": ".registry",
    "model_preprocess": ".registry",
    "read_state_dict": ".registry",
}

__all__ = ["ModelInfo", "architecture_preprocess", "create_model", "load_model",
           "model_preprocess", "read_info", "read_state_dict", "save_model"]

if TYPE_CHECKING:
    from .artifact import load_model, save_model
    from .info import ModelInfo, read_info
    from .registry import architecture_preprocess, create_model, model_preprocess, read_state_dict

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

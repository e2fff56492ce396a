"""Backbones, their weights, and saved model artifacts."""

from .artifact import ModelInfo, load_model, read_info, save_model
from .registry import architecture_preprocess, create_model, model_preprocess, read_state_dict

__all__ = ["ModelInfo", "architecture_preprocess", "create_model", "load_model",
           "model_preprocess", "read_info", "read_state_dict", "save_model"]

"""Backbones, their weights, and saved model artifacts."""

from .artifact import ModelInfo, load_model, read_info, save_model
from .registry import create_model, model_preprocess, read_state_dict

__all__ = ["ModelInfo", "create_model", "load_model", "model_preprocess", "read_info",
           "read_state_dict", "save_model"]

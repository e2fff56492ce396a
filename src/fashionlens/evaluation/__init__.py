"""Scoring models: metrics, reports and figures."""

from ..metrics import classification_metrics  # defined below the tasks that use it

__all__ = ["classification_metrics"]

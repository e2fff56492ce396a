"""Scoring models: metrics, reports and figures."""

from .metrics import classification_metrics

__all__ = ["classification_metrics"]

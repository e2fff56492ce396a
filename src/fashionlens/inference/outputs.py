"""The names of a runtime's outputs, and the one NumPy step every backend shares.

Kept free of torch so the exported backends, the service and the catalog can name
outputs without importing it.
"""

from __future__ import annotations

import numpy as np

PROBABILITIES = "probabilities"
VECTOR = "vector"
FEATURES = "features"
STAGES = "stages"  # the tapped stages' pooled outputs (models whose embedding taps them)
COLOURS = "colour_statistics"  # the photo's own colour histograms (`models.colour`)
# What linear probes and head refits read: torch only, never part of an export.
PROBE_OUTPUTS = (FEATURES, STAGES, COLOURS)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), as contiguous float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)

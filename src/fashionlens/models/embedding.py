"""An embedding head: pooled backbone features -> a small unit vector for visual search.

The head sits beside the classifier (`model.embedding_head`), so one saved model both
classifies and embeds. A linear projection (or a one-hidden-layer MLP) maps the pooled
features to `dim` numbers, L2-normalised so that cosine similarity is a dot product.
A 256-d vector is 5x smaller than EfficientNet-Lite0's 1280 pooled features, which is
what lets a million-item catalog fit in memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError

HEAD_ATTRIBUTE = "embedding_head"


@dataclass
class EmbeddingSpec:
    """What the head looks like; stored in model.json as `embedding`."""

    dim: int = 256
    hidden: int = 0  # 0: a linear projection
    in_features: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EmbeddingSpec:
        try:
            return cls(dim=int(d["dim"]), hidden=int(d.get("hidden", 0)),
                       in_features=int(d["in_features"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed embedding description {d!r} ({exc})") from exc


class EmbeddingHead(nn.Module):
    def __init__(self, spec: EmbeddingSpec) -> None:
        super().__init__()
        if not 2 <= spec.dim <= 4096:
            raise ModelError(f"embedding dim must be between 2 and 4096, not {spec.dim}")
        if spec.hidden:
            self.project = nn.Sequential(nn.Linear(spec.in_features, spec.hidden), nn.GELU(),
                                         nn.Linear(spec.hidden, spec.dim))
        else:
            self.project = nn.Linear(spec.in_features, spec.dim)
        self.spec = spec

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(features).float(), dim=-1)


def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The backbone's pooled features (what the classifier and the head both read)."""
    return model.forward_head(model.forward_features(images), pre_logits=True).flatten(1)


def attach_embedding_head(model: nn.Module, spec: EmbeddingSpec) -> EmbeddingHead:
    head = EmbeddingHead(spec)
    setattr(model, HEAD_ATTRIBUTE, head)
    return head


def embedding_head(model: nn.Module) -> EmbeddingHead | None:
    return getattr(model, HEAD_ATTRIBUTE, None)

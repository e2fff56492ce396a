"""An embedding head: backbone features -> a small unit vector for visual search.

The head sits beside the classifier (`model.embedding_head`), so one saved model both
classifies and embeds. A linear projection (or a one-hidden-layer MLP) maps the features
to `dim` numbers, L2-normalised so that cosine similarity is a dot product. A 256-d
vector is 5x smaller than EfficientNet-Lite0's 1280 pooled features, which is what lets
a million-item catalog fit in memory.

What the head reads: the pooled features the classifier reads, plus (`taps`) the
average-pooled outputs of the backbone's last stages. A classifier's last layer keeps
"which category" and drops "which item"; the earlier stages still hold the texture,
print and shape details that tell two shirts apart. Each part is L2-normalised before
the projection so that none dominates by scale.

A head trained hard on "same item" forgets some of "same category". When the model is
also a classifier, its class posterior can be appended to the search vector with a small
weight w (`posterior_weight`): the cosine of two such vectors is (item cosine + w x
posterior cosine) / (1 + w), so near-identical photos still come first while the rest
of the top-k prefers the query's category.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

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
    in_features: int = 0  # pooled features + the tapped stages' channels
    posterior_weight: float = 0.0  # > 0: the class posterior is appended (classifiers only)
    classes: int = 0  # length of that posterior
    taps: list[int] = field(default_factory=list)  # backbone stages (timm feature_info)
    tap_channels: list[int] = field(default_factory=list)

    @property
    def output_dim(self) -> int:
        return self.dim + (self.classes if self.posterior_weight > 0 else 0)

    @property
    def pooled_features(self) -> int:
        return self.in_features - sum(self.tap_channels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EmbeddingSpec:
        try:
            spec = cls(dim=int(d["dim"]), hidden=int(d.get("hidden", 0)),
                       in_features=int(d["in_features"]),
                       posterior_weight=float(d.get("posterior_weight", 0.0)),
                       classes=int(d.get("classes", 0)),
                       taps=[int(t) for t in d.get("taps", [])],
                       tap_channels=[int(c) for c in d.get("tap_channels", [])])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed embedding description {d!r} ({exc})") from exc
        if spec.posterior_weight < 0 or (spec.posterior_weight > 0 and spec.classes < 2):
            raise ModelError(f"malformed embedding description {d!r} (a posterior weight "
                             "needs a classifier with at least 2 classes)")
        if len(spec.taps) != len(spec.tap_channels) or spec.pooled_features < 1:
            raise ModelError(f"malformed embedding description {d!r} (taps and their "
                             "channels do not add up)")
        return spec


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

    def prepare(self, features: torch.Tensor) -> torch.Tensor:
        """What the projection reads: with taps, each part scaled to unit length."""
        if not self.spec.taps:
            return features
        parts = features.float().split([self.spec.pooled_features, *self.spec.tap_channels],
                                       dim=-1)
        return torch.cat([F.normalize(p, dim=-1) for p in parts], -1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The item embedding (what metric learning trains), a unit vector."""
        return F.normalize(self.project(self.prepare(features)).float(), dim=-1)

    def search_vector(self, features: torch.Tensor, logits: torch.Tensor | None
                      ) -> torch.Tensor:
        """The item embedding, with the weighted class posterior appended when configured."""
        item = self(features)
        weight = self.spec.posterior_weight
        if weight <= 0:
            return item
        if logits is None:
            raise ModelError("this embedding appends the class posterior: logits needed")
        posterior = F.normalize(logits.float().softmax(-1), dim=-1)
        return torch.cat([item, math.sqrt(weight) * posterior], -1) / math.sqrt(1 + weight)


def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The backbone's pooled features (what the classifier reads)."""
    return model.forward_head(model.forward_features(images), pre_logits=True).flatten(1)


def stage_taps(model: nn.Module, last: int) -> tuple[list[int], list[int]]:
    """The indices and channel counts of the backbone's `last` stages (timm feature_info)."""
    if last <= 0:
        return [], []
    info = getattr(model, "feature_info", None)
    if not info or not hasattr(model, "forward_intermediates"):
        raise ModelError(f"{type(model).__name__} does not expose its stages "
                         "(feature_info / forward_intermediates); use 0 stage taps")
    stages = list(range(len(info)))[-last:]
    return stages, [int(info[i]["num_chs"]) for i in stages]


def backbone_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What the embedding head reads: pooled features, then each tapped stage's
    average-pooled output. Without a head or taps: the pooled features alone."""
    head = embedding_head(model)
    if head is None or not head.spec.taps:
        return pooled_features(model, images)
    final, stages = model.forward_intermediates(images, indices=head.spec.taps)
    pooled = model.forward_head(final, pre_logits=True).flatten(1)
    return torch.cat([pooled, *(s.mean((2, 3)).to(pooled.dtype) for s in stages)], -1)


def pooled_part(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The pooled features within `backbone_features` (without the tapped stages): what
    the classifier and every task head read."""
    head = embedding_head(model)
    return features if head is None else features[:, :head.spec.pooled_features]


def tapped_part(model: nn.Module, features: torch.Tensor) -> torch.Tensor | None:
    """The tapped stages' pooled outputs within `backbone_features` (None without taps):
    what the stage terms of heads declared with `taps` read."""
    head = embedding_head(model)
    if head is None or not head.spec.taps:
        return None
    return features[:, head.spec.pooled_features:]


def tap_channels(model: nn.Module) -> int:
    head = embedding_head(model)
    return sum(head.spec.tap_channels) if head is not None else 0


def classifier_logits(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The classifier's logits from `backbone_features` (it reads the pooled part)."""
    return model.get_classifier()(pooled_part(model, features))


def search_vectors(model: nn.Module, features: torch.Tensor,
                   logits: torch.Tensor | None = None) -> torch.Tensor:
    """Unit search vectors from `backbone_features`: the embedding head's when the model
    has one (plus its class posterior; `logits` saves running the classifier twice),
    else the pooled features themselves."""
    head = embedding_head(model)
    if head is None:
        return F.normalize(features.float().flatten(1), dim=-1)
    if head.spec.posterior_weight > 0 and logits is None:
        logits = classifier_logits(model, features)
    return head.search_vector(features, logits)


def attach_embedding_head(model: nn.Module, spec: EmbeddingSpec) -> EmbeddingHead:
    head = EmbeddingHead(spec)
    setattr(model, HEAD_ATTRIBUTE, head)
    return head


def embedding_head(model: nn.Module) -> EmbeddingHead | None:
    return getattr(model, HEAD_ATTRIBUTE, None)

"""A model declares its heads; each head kind says how its logits become scores.

Head kinds (a registry, like timm's model registry: `HEAD_KINDS[name]`):

- `classification`: one label of `classes` (softmax);
- `multilabel`: any number of `classes` (tags), each scored on its own (sigmoid) and kept
  when at or above its threshold (`thresholds`, tuned on validation when trained);
- `embedding`: the search vector (`models.embedding`; declared by `EmbeddingSpec`).

Where the modules live: the first head is the backbone's own classifier slot (timm's
`get_classifier()`), so a one-head model is a plain timm model and the artifacts of the
first release load unchanged; every further head is a linear layer in
`model.task_heads[name]`. All of them read the same pooled features
(`forward_head(..., pre_logits=True)`), so one pass over the backbone gives every output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ModelError

TASK_HEADS_ATTRIBUTE = "task_heads"
# Output names a head may not take: the runtime's own outputs.
RESERVED_NAMES = ("probabilities", "vector", "features", "embedding")


@dataclass(frozen=True)
class HeadKind:
    name: str
    activate: Callable[[torch.Tensor], torch.Tensor] | None  # logits -> scores
    # (head, one photo's scores, top_k, threshold override) -> the public answer
    describe: Callable[[HeadSpec, Sequence[float], int, float | None], dict] | None = None
    has_classes: bool = True
    description: str = ""


HEAD_KINDS: dict[str, HeadKind] = {}


def register_head_kind(kind: HeadKind) -> HeadKind:
    HEAD_KINDS[kind.name] = kind
    return kind


def describe_label(head: HeadSpec, scores: Sequence[float], top_k: int,
                   threshold: float | None = None) -> dict:
    """`{"label", "probability", "top_k": [{"label", "probability"}, ...]}`."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[: max(1, min(top_k,
                                                                              len(scores)))]
    top = [{"label": head.classes[i], "probability": round(float(scores[i]), 6)}
           for i in order]
    return {"label": top[0]["label"], "probability": top[0]["probability"], "top_k": top}


def describe_tags(head: HeadSpec, scores: Sequence[float], top_k: int,
                  threshold: float | None = None) -> dict:
    """`{"tags": [...at or above threshold, highest first], "scores": {tag: p}}`; one
    `threshold` replaces every tag's own."""
    limits = ([threshold] * len(head.classes) if threshold is not None
              else head.threshold_list())
    kept = sorted((i for i in range(len(scores)) if scores[i] >= limits[i]),
                  key=lambda i: -scores[i])
    return {"tags": [{"label": head.classes[i], "probability": round(float(scores[i]), 6)}
                     for i in kept],
            "scores": {name: round(float(p), 6) for name, p in zip(head.classes, scores,
                                                                   strict=True)}}


register_head_kind(HeadKind("classification", lambda z: z.float().softmax(-1), describe_label,
                            description="one label per photo (softmax)"))
register_head_kind(HeadKind("multilabel", lambda z: z.float().sigmoid(), describe_tags,
                            description="every tag that applies (sigmoid, per-tag thresholds)"))
register_head_kind(HeadKind("embedding", None, has_classes=False,
                            description="the search vector"))


@dataclass
class HeadSpec:
    """One head as `model.json` lists it."""

    name: str
    kind: str = "classification"
    classes: list[str] = field(default_factory=list)
    thresholds: list[float] | None = None  # multilabel: one per class
    column: str | None = None  # the data column it was trained from

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ModelError(f"head '{self.name}': unknown kind '{self.kind}'; known kinds: "
                             f"{', '.join(HEAD_KINDS)}")
        if HEAD_KINDS[self.kind].has_classes and len(self.classes) < 1:
            raise ModelError(f"head '{self.name}' ({self.kind}) names no classes")
        if self.thresholds is not None and len(self.thresholds) != len(self.classes):
            raise ModelError(f"head '{self.name}': {len(self.thresholds)} thresholds for "
                             f"{len(self.classes)} classes")

    @property
    def head_kind(self) -> HeadKind:
        return HEAD_KINDS[self.kind]

    def threshold_list(self) -> list[float]:
        """Per-class decision thresholds (multilabel); 0.5 where none was tuned."""
        return list(self.thresholds) if self.thresholds is not None else [0.5] * len(self.classes)

    def to_dict(self) -> dict:
        out: dict = {"name": self.name, "kind": self.kind}
        if self.classes:
            out["classes"] = list(self.classes)
        if self.thresholds is not None:
            out["thresholds"] = [round(float(t), 4) for t in self.thresholds]
        if self.column:
            out["column"] = self.column
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str = "model.json") -> HeadSpec:
        try:
            thresholds = d.get("thresholds")
            return cls(name=str(d["name"]), kind=str(d.get("kind", "classification")),
                       classes=[str(c) for c in d.get("classes", [])],
                       thresholds=None if thresholds is None else [float(t) for t in thresholds],
                       column=d.get("column"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed head {d!r} ({exc})") from exc
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from exc


def task_heads(heads: list[HeadSpec]) -> list[HeadSpec]:
    """The heads that score classes (everything but the embedding)."""
    return [h for h in heads if h.head_kind.has_classes]


def attach_heads(model: nn.Module, heads: list[HeadSpec]) -> None:
    """Give a backbone built with `len(heads[0].classes)` outputs its further heads."""
    scored = task_heads(heads)
    if not scored:
        return
    if len(scored) > 1:
        features = int(model.num_features)
        setattr(model, TASK_HEADS_ATTRIBUTE, nn.ModuleDict(
            {h.name: nn.Linear(features, len(h.classes)) for h in scored[1:]}))


def head_module(model: nn.Module, heads: list[HeadSpec], name: str) -> nn.Module:
    scored = task_heads(heads)
    if scored and scored[0].name == name:
        return model.get_classifier()
    extra = getattr(model, TASK_HEADS_ATTRIBUTE, None)
    if extra is None or name not in extra:
        raise ModelError(f"the model has no head named '{name}'")
    return extra[name]


def head_logits(model: nn.Module, heads: list[HeadSpec], pooled: torch.Tensor,
                names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Each scored head's logits from the pooled features (one backbone pass for all)."""
    wanted = [h for h in task_heads(heads) if names is None or h.name in names]
    return {h.name: head_module(model, heads, h.name)(pooled) for h in wanted}


def activate(head: HeadSpec, logits: torch.Tensor) -> torch.Tensor:
    return head.head_kind.activate(logits)


def describe(head: HeadSpec, scores: Sequence[float], top_k: int = 3,
             threshold: float | None = None) -> dict:
    """One photo's answer for one head, as `predict --json` and the API give it."""
    return head.head_kind.describe(head, scores, top_k, threshold)

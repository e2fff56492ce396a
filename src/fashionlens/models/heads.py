"""The torch side of a model's heads: the modules and how their logits become scores.

What heads a model has, and their kinds, is declared in `models.info` (no torch). Where
the modules live: the first head is the backbone's own classifier slot (timm's
`get_classifier()`), so a one-head model is a plain timm model and the artifacts of the
first release load unchanged; every further head is a linear layer in
`model.task_heads[name]`. All of them read the same pooled features
(`forward_head(..., pre_logits=True)`), so one pass over the backbone gives every output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ModelError
from .info import (  # noqa: F401  (the declaration half, re-exported for torch callers)
    HEAD_KINDS,
    RESERVED_NAMES,
    HeadKind,
    HeadSpec,
    describe,
    describe_label,
    describe_tags,
    register_head_kind,
    task_heads,
)

TASK_HEADS_ATTRIBUTE = "task_heads"
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": lambda z: z.float().softmax(-1),
    "sigmoid": lambda z: z.float().sigmoid(),
}


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
    return ACTIVATIONS[head.head_kind.activation](logits)

"""The torch side of a model's heads: the modules and how their logits become scores.

What heads a model has, and their kinds, is declared in `models.info` (no torch). Where
the modules live: the first head is the backbone's own classifier slot (timm's
`get_classifier()`), so a one-head model is a plain timm model and the artifacts of the
first release load unchanged; every further head is a linear layer in
`model.task_heads[name]`. All of them read the same pooled features
(`forward_head(..., pre_logits=True)`), so one pass over the backbone gives every output.

A head declared with `taps` also reads the average-pooled outputs of the backbone's
tapped stages (the ones the embedding head taps, computed in that same pass) through a
bias-free linear term of its own, `model.stage_terms[name]`: the pooled features keep
"which category" and lose much of the colour and texture the earlier stages still hold
(`training.refit` fits these terms; its docstring has the measurements). A head declared
with `colour_statistics` as well reads, through that same term, the photo's colour
statistics after the tapped stages (`models.colour`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ModelError
from .colour import COLOUR_FEATURES
from .info import (  # noqa: F401  (the declaration half, re-exported for torch callers)
    HEAD_KINDS,
    RESERVED_NAMES,
    STAGE_TERMS_ATTRIBUTE,
    TASK_HEADS_ATTRIBUTE,
    HeadKind,
    HeadSpec,
    describe,
    describe_label,
    describe_tags,
    register_head_kind,
    task_heads,
)

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": lambda z: z.float().softmax(-1),
    "sigmoid": lambda z: z.float().sigmoid(),
}


class HeadModules(nn.ModuleDict):
    """Modules by head name. A head is named after its data column, and a column may be
    called `type`, `train` or `float`: names a torch module already has as attributes,
    which `nn.ModuleDict` refuses. Such a name (and any name starting with the escape
    itself, so that two names never share a key) is stored under `head_NAME`; every other
    name is its own key, so the weights saved before this load unchanged."""

    ESCAPE = "head_"
    _PLAIN = nn.ModuleDict()  # the attributes (methods and instance ones) a name must avoid

    @classmethod
    def key(cls, name: str) -> str:
        clashes = hasattr(cls._PLAIN, name) or name.startswith(cls.ESCAPE)
        return cls.ESCAPE + name if clashes else name

    @classmethod
    def name_of(cls, key: str) -> str:
        """The head name stored under `key` (`key`'s inverse)."""
        return key[len(cls.ESCAPE):] if key.startswith(cls.ESCAPE) else key

    def __getitem__(self, name: str) -> nn.Module:  # type: ignore[override]
        return super().__getitem__(self.key(name))

    def __setitem__(self, name: str, module: nn.Module) -> None:  # type: ignore[override]
        super().__setitem__(self.key(name), module)

    def __delitem__(self, name: str) -> None:  # type: ignore[override]
        super().__delitem__(self.key(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(self.key(name))


def attach_heads(model: nn.Module, heads: list[HeadSpec], tap_channels: int = 0) -> None:
    """Give a backbone built with `len(heads[0].classes)` outputs its further heads, and
    the heads declared with `taps` their stage terms (`tap_channels` numbers in all)."""
    scored = task_heads(heads)
    if not scored:
        return
    if len(scored) > 1:
        features = int(model.num_features)
        setattr(model, TASK_HEADS_ATTRIBUTE, HeadModules(
            {h.name: nn.Linear(features, len(h.classes)) for h in scored[1:]}))
    tapping = [h for h in scored if h.taps]
    if tapping and tap_channels < 1:
        raise ModelError(f"head '{tapping[0].name}' reads the backbone's tapped stages, but "
                         "the model taps none (its embedding declares no taps)")
    if tapping:
        setattr(model, STAGE_TERMS_ATTRIBUTE, HeadModules(
            {h.name: nn.Linear(term_inputs(h, tap_channels), len(h.classes), bias=False)
             for h in tapping}))


def term_inputs(head: HeadSpec, tap_channels: int) -> int:
    """How many numbers a head's stage term reads: the tapped stages, then its colour
    statistics where it declares them."""
    return tap_channels + (COLOUR_FEATURES if head.colour_statistics else 0)


def term_input(head: HeadSpec, taps: torch.Tensor, colours: torch.Tensor | None
               ) -> torch.Tensor:
    """What a head's stage term reads (`term_inputs` numbers): the tapped stages, then the
    photos' colour statistics for a head declared with `colour_statistics`. The one
    place that order is written: the refit's weights are laid out by it."""
    if not head.colour_statistics:
        return taps
    if colours is None:
        raise ModelError(f"head '{head.name}' reads the photos' colour statistics: they "
                         "are needed")
    return torch.cat([taps, colours.to(taps.dtype)], -1)


def stage_term(model: nn.Module, name: str) -> nn.Linear | None:
    terms = getattr(model, STAGE_TERMS_ATTRIBUTE, None)
    return terms[name] if terms is not None and name in terms else None


def add_stage_term(model: nn.Module, name: str, inputs: int, classes: int) -> nn.Linear:
    """A (zero) stage term for head `name` reading `inputs` numbers for `classes` classes,
    created where the model has none of that shape yet."""
    terms = getattr(model, STAGE_TERMS_ATTRIBUTE, None)
    if terms is None:
        terms = HeadModules()
        setattr(model, STAGE_TERMS_ATTRIBUTE, terms)
    if name not in terms or (terms[name].in_features, terms[name].out_features) \
            != (inputs, classes):
        terms[name] = nn.Linear(inputs, classes, bias=False)
        nn.init.zeros_(terms[name].weight)
    return terms[name]


def resize_head(model: nn.Module, heads: list[HeadSpec], name: str, classes: int
                ) -> nn.Linear:
    """A new (untrained) linear head `name` with `classes` outputs in place of the one
    the model has: a head that gained classes. Not the first head, which is the
    backbone's own classifier."""
    scored = task_heads(heads)
    extra = getattr(model, TASK_HEADS_ATTRIBUTE, None)
    if (scored and scored[0].name == name) or extra is None or name not in extra:
        raise ModelError(f"head '{name}' cannot be resized: not one of the model's further "
                         "heads")
    extra[name] = nn.Linear(extra[name].in_features, classes)
    return extra[name]


def head_module(model: nn.Module, heads: list[HeadSpec], name: str) -> nn.Module:
    scored = task_heads(heads)
    if scored and scored[0].name == name:
        return model.get_classifier()
    extra = getattr(model, TASK_HEADS_ATTRIBUTE, None)
    if extra is None or name not in extra:
        raise ModelError(f"the model has no head named '{name}'")
    return extra[name]


def head_logits(model: nn.Module, heads: list[HeadSpec], pooled: torch.Tensor,
                names: list[str] | None = None, taps: torch.Tensor | None = None,
                colours: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each scored head's logits from the pooled features, plus its stage term of the
    tapped stages' features `taps` (and of the photos' colour statistics `colours`, for
    a head that reads them) where it has one (one backbone pass for all)."""
    wanted = [h for h in task_heads(heads) if names is None or h.name in names]
    logits = {}
    for head in wanted:
        logits[head.name] = head_module(model, heads, head.name)(pooled)
        term = stage_term(model, head.name) if head.taps else None
        if term is not None:
            if taps is None:
                raise ModelError(f"head '{head.name}' reads the tapped stages: their "
                                 "features are needed")
            side = term_input(head, taps, colours)
            logits[head.name] = logits[head.name] + term(side.to(pooled.dtype))
    return logits


def activate(head: HeadSpec, logits: torch.Tensor) -> torch.Tensor:
    return ACTIVATIONS[head.head_kind.activation](logits)

"""A served model's tasks as the API gives them: one entry per scored head.

The answer of a head for one photo comes from `models.heads.describe` (so the API, the
CLI and `predict --json` agree); each head kind adds here only what the HTTP API has
always given on top, and names its public `type`:

- `classification` -> `"single_label"`: `label` (null below `threshold`), `probability`,
  `top_k`, `classes` (the top k at or above `threshold`) and `num_classes`;
- `multilabel` -> `"multi_label"`: `tags` (at or above each tag's threshold, highest
  first), `scores` (every tag's probability) and `thresholds` (the ones used: the
  model's tuned per-tag thresholds, or `threshold` for every tag when it is given);
  for a model that has them, `max_tags` (at most that many tags) and `parents` (tag ->
  parent: a listed child carries its `parent`, which is not listed again).

A head kind with no entry here is still served: its `type` is the kind's name and its
fields are `describe`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..models.info import HeadSpec, ModelInfo, describe


def _single_label(head: HeadSpec, answer: dict, threshold: float | None) -> dict:
    """The first release's fields: the threshold hides classes and the unsure label."""
    sure = threshold is None or answer["probability"] >= threshold
    return {"label": answer["label"] if sure else None,
            "classes": [c for c in answer["top_k"]
                        if threshold is None or c["probability"] >= threshold],
            "num_classes": len(head.classes)}


def _thresholds(head: HeadSpec, threshold: float | None) -> dict[str, float]:
    limits = ([threshold] * len(head.classes) if threshold is not None
              else head.threshold_list())
    return {name: round(float(t), 6) for name, t in zip(head.classes, limits, strict=True)}


def _decision(head: HeadSpec) -> dict:
    """The cap and the tag parents of a head that has them (a client re-deciding the tags
    at another threshold applies them as `models.info.decide_tags` does)."""
    return {**({"max_tags": head.max_tags} if head.max_tags is not None else {}),
            **({"parents": dict(head.parents)} if head.parents else {})}


def _multi_label(head: HeadSpec, answer: dict, threshold: float | None) -> dict:
    return {"thresholds": _thresholds(head, threshold), "num_classes": len(head.classes),
            **_decision(head)}


def _listed_thresholds(head: HeadSpec) -> dict:
    return {"thresholds": _thresholds(head, None), **_decision(head)}


@dataclass(frozen=True)
class TaskType:
    """How the API names a head kind and what it adds to `describe`'s answer."""

    name: str
    # (head, describe's answer, threshold override) -> fields added to the answer
    answer: Callable[[HeadSpec, dict, float | None], dict] = lambda h, a, t: {}
    # head -> fields added to the task's entry in GET /models
    listing: Callable[[HeadSpec], dict] = lambda h: {}


TASK_TYPES: dict[str, TaskType] = {
    "classification": TaskType("single_label", _single_label),
    "multilabel": TaskType("multi_label", _multi_label, _listed_thresholds),
}


def task_type(head: HeadSpec) -> TaskType:
    return TASK_TYPES.get(head.kind) or TaskType(head.kind)


def task_answer(head: HeadSpec, scores: Sequence[float], top_k: int,
                threshold: float | None) -> dict:
    """One head's answer for one photo, as POST /classify lists it."""
    kind = task_type(head)
    answer = describe(head, [float(s) for s in scores], top_k, threshold)
    return {"name": head.name, "type": kind.name, **answer,
            **kind.answer(head, answer, threshold)}


def _scalars(metrics: dict) -> dict:
    """The single figures of a metrics mapping (no tables, names or nested parts)."""
    return {k: v for k, v in metrics.items()
            if v is None or (isinstance(v, int | float) and not isinstance(v, bool))}


def task_metrics(info: ModelInfo, metrics: dict, name: str) -> dict:
    """One task's validation metrics: under `tasks` in a multi-task model's metrics, the
    flat metrics themselves when the model has one task."""
    tasks = metrics.get("tasks")
    if isinstance(tasks, dict):
        found = tasks.get(name)
        return found if isinstance(found, dict) else {}
    return metrics if len(info.scored_heads) == 1 else {}


def task_listing(info: ModelInfo, metrics: dict) -> list[dict]:
    """Every scored head of a model with its classes and its validation figures."""
    out = []
    for head in info.scored_heads:
        kind = task_type(head)
        figures = task_metrics(info, metrics, head.name)
        table = figures.get("per_class") or figures.get("per_tag") or {}
        out.append({"name": head.name, "type": kind.name, "kind": head.kind,
                    "column": head.column, "classes": list(head.classes),
                    "num_classes": len(head.classes), **kind.listing(head),
                    "metrics": _scalars(figures),
                    "per_class": table if isinstance(table, dict) else {}})
    return out

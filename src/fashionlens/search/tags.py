"""Predicted tags: what the catalog's model says about each item's photo.

When a photo enters a catalog, the forward pass that gives its search vector also gives
every head's scores (`inference.runtime`); they are kept as *predicted* values, apart
from what the shop entered, in the `predictions` table (one row per item, task and
label: a classification head's best label, a multilabel head's tags at or above their
own thresholds).

The one rule filters, counts and the web app follow: a field's value is the shop's
value; where the shop gave none, the confident prediction of the task mapped to that
field (`TASK_FIELDS`; one task per field in a model, `FIELD_PRECEDENCE`). So `colour=Red`
matches items whose shop colour is Red, and items without a shop colour whose predicted
colour is Red with a probability at or above `CONFIDENT`. A multilabel (tag) head gives an
item several values at once: where the shop gave none, `extra.tags=floral` matches items
tagged floral at or above that tag's own threshold (`!=` and `not in` exclude them). The
shop's value is never overwritten; accepting or correcting a prediction sets the shop's
value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..models.info import ancestors, decide_tags

# Model task (head name) -> the catalog field its predictions fill: the one place that
# decides it. A task not listed fills `extra.TASK` (season, usage, gender, pattern, a
# multilabel `tags` head...). `label` is the one head of a one-task model (clothing10).
TASK_FIELDS = {"label": "category", "articleType": "category", "category": "category",
               "type": "category", "baseColour": "colour", "colour": "colour",
               "color": "colour"}
# Where one model has several heads for one field (the joint model's unified `type` and
# the finer `articleType`; its coarse `colour` groups and the finer `baseColour`), the one
# listed first here fills the field and the others keep `extra.TASK`: a field holds one
# taxonomy, so `category=Shoes` means the same on every item.
FIELD_PRECEDENCE = ("type", "category", "label", "articleType", "colour", "color",
                    "baseColour")
# A classification head's best label counts (fills its field, is counted, is shown as
# a tag) from this probability; below it, it is stored and shown as a guess only.
CONFIDENT = 0.5
# Kinds of head whose scores are kept (`models.info.HEAD_KINDS`).
CLASSIFICATION = "classification"
MULTILABEL = "multilabel"


def field_of(task: str) -> str:
    """The catalog field a model task fills (see `TASK_FIELDS`), alone in its model."""
    return TASK_FIELDS.get(task, f"extra.{task}")


def fields_for(tasks: Iterable[str]) -> dict[str, str]:
    """The field each of one model's tasks fills: as `field_of`, except that where
    several tasks map to one field only the first by `FIELD_PRECEDENCE` fills it."""
    tasks = list(dict.fromkeys(tasks))
    rank = {task: i for i, task in enumerate(FIELD_PRECEDENCE)}
    taken: set[str] = set()
    fields: dict[str, str] = {}
    for task in sorted(tasks, key=lambda t: rank.get(t, len(rank))):
        field = TASK_FIELDS.get(task)
        if field is None or field in taken:
            field = f"extra.{task}"
        taken.add(field)
        fields[task] = field
    return {task: fields[task] for task in tasks}


@dataclass(frozen=True)
class Prediction:
    task: str
    label: str
    probability: float
    kind: str
    confident: bool
    # The field it fills; empty: `field_of(task)` (the task alone in its model).
    field: str = ""

    def __post_init__(self) -> None:
        if not self.field:
            object.__setattr__(self, "field", field_of(self.task))


def predictions_from_scores(heads: Sequence, scores: Mapping[str, np.ndarray]
                            ) -> list[Prediction]:
    """One photo's predictions from its heads' scores (`heads`: `models.info.HeadSpec`s;
    `scores[head.name]`: that photo's scores)."""
    found: list[Prediction] = []
    fields = fields_for(h.name for h in heads if h.kind in (CLASSIFICATION, MULTILABEL))
    for head in heads:
        values = scores.get(head.name)
        if values is None:
            continue
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        field = fields.get(head.name, "")
        if head.kind == CLASSIFICATION:
            best = int(np.argmax(values))
            p = float(values[best])
            found.append(Prediction(head.name, str(head.classes[best]), p, head.kind,
                                    p >= CONFIDENT, field))
        elif head.kind == MULTILABEL:
            # The tags `predict` lists (`decide_tags`: thresholds, cap, parents), and the
            # parents they imply, so that `extra.tags=shoes` finds the boots too; an
            # implied parent counts at its own score or its child's, whichever is higher.
            parents = head.parent_indices()
            kept = decide_tags(values.tolist(), head.threshold_list(), head.max_tags, parents)
            said: dict[int, float] = {}
            for j in kept:
                found.append(Prediction(head.name, str(head.classes[j]), float(values[j]),
                                        head.kind, True, field))
                for parent in ancestors(parents, j) if parents is not None else ():
                    if parent not in kept:
                        said[parent] = max(said.get(parent, 0.0), float(values[j]),
                                           float(values[parent]))
            found += [Prediction(head.name, str(head.classes[j]), p, head.kind, True, field)
                      for j, p in sorted(said.items(), key=lambda item: -item[1])]
    return found


def rows_for(key: int, predictions: Iterable[Prediction]) -> list[tuple]:
    """`predictions` table rows (key, task, label, probability, kind, field, confident)."""
    return [(int(key), p.task, p.label, round(p.probability, 6), p.kind, p.field,
             int(p.confident)) for p in predictions]


def as_json(rows: Iterable) -> dict:
    """An item's `predicted` object (a public contract): {TASK: {"label", "probability"}}
    for a classification task, {TASK: [{"label", "probability"}, ...]} (highest first) for
    a multilabel (tag) task."""
    out: dict = {}
    for row in sorted(rows, key=lambda r: (r["task"], -r["probability"])):
        entry = {"label": row["label"], "probability": round(float(row["probability"]), 4)}
        if row["kind"] == MULTILABEL:
            out.setdefault(row["task"], []).append(entry)
        else:
            out[row["task"]] = entry
    return out


def effective_sql(field: str, column: str) -> str:
    """The SQL expression of a field's value by the rule above: `column` (the shop's
    value), or where it is NULL the confident predicted label for that field."""
    return (f"coalesce({column}, (SELECT p.label FROM predictions p WHERE p.key = items.key "
            f"AND p.field = '{field}' AND p.confident = 1 AND p.kind = '{CLASSIFICATION}' "
            "ORDER BY p.probability DESC LIMIT 1))")


def tag_sql(field: str, column: str, count: int) -> str:
    """The SQL condition "where the shop gave no value (`column` is NULL), the model gave
    one of `count` tags (bound parameters) for `field` (a multilabel head)": how the rule
    reads a tag head, whose item has several values at once."""
    marks = ", ".join("?" * count)
    return (f"({column} IS NULL AND EXISTS (SELECT 1 FROM predictions p WHERE p.key = "
            f"items.key AND p.field = '{field}' AND p.kind = '{MULTILABEL}' AND p.confident "
            f"= 1 AND p.label COLLATE NOCASE IN ({marks})))")


def predicted_fields(db, kind: str = CLASSIFICATION) -> list[str]:
    """The fields the stored predictions fill (sorted)."""
    return [r[0] for r in db.execute(
        "SELECT DISTINCT field FROM predictions WHERE kind = ? ORDER BY field", (kind,))]


"""Attribute directions in embedding space: "more striped", "less formal".

A direction is learned from labelled vectors, either as the difference between the mean
of the items carrying a label and the mean of the others (`mean`: robust with few
examples), or as the normal of a logistic-regression probe separating them (`probe`:
ignores what the two groups share by accident). Directions are unit vectors, so a weight
of 0.5 moves the query half its own length toward the attribute before searching.

    query' = normalise(query + sum(weight_i * direction_i))

`pattern_of` turns product names ("Striped Polo T-shirt") into weak pattern labels, the
cheapest way to get "striped / checked / printed / solid" directions for a catalog.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import FashionLensError
from .embeddings import normalise

METHODS = ("mean", "probe")
# Fewer labelled items than this on either side of a label gives no direction.
MIN_COUNT = 5

# Keywords in product names, first match wins (so "printed striped" counts as striped).
PATTERN_KEYWORDS: dict[str, tuple[str, ...]] = {
    "striped": ("striped", "stripe", "stripes", "pinstripe"),
    "checked": ("checked", "check", "checks", "plaid", "tartan", "gingham"),
    "floral": ("floral", "flower", "flowers", "flowery"),
    "polka": ("polka", "dotted", "dots"),
    "printed": ("printed", "print", "graphic", "camouflage", "camo", "abstract"),
    "solid": ("solid", "plain"),
}
_WORDS = re.compile(r"[a-z]+")


def pattern_of(text: str | None) -> str | None:
    """The pattern a product name states ('striped', 'checked', ...), or None."""
    words = set(_WORDS.findall((text or "").lower()))
    for pattern, keywords in PATTERN_KEYWORDS.items():
        if words.intersection(keywords):
            return pattern
    return None


def direction_name(value: str) -> str:
    """How a label value is named as a direction: lower case, spaces as underscores."""
    name = re.sub(r"\s+", "_", str(value).strip().lower())
    if not name or not re.fullmatch(r"[\w\-.]+", name):
        raise FashionLensError(f"'{value}' cannot name a steering direction")
    return name


@dataclass
class Direction:
    """A learned attribute direction and where it came from."""

    name: str
    field: str
    value: str
    method: str
    positives: int
    negatives: int
    vector: np.ndarray

    def to_dict(self) -> dict:
        return {"name": self.name, "field": self.field, "value": self.value,
                "method": self.method, "positives": self.positives,
                "negatives": self.negatives}


def learn_directions(vectors: np.ndarray, labels: Sequence[str | None], *, field: str,
                     method: str = "mean", values: Sequence[str] | None = None,
                     min_count: int = MIN_COUNT) -> list[Direction]:
    """One direction per label value with at least `min_count` items on each side.

    Items without a label (None or '') count on neither side: an unlabelled item is
    not known to lack the attribute.
    """
    if method not in METHODS:
        raise FashionLensError(f"unknown direction method '{method}' (use one of: "
                               f"{', '.join(METHODS)})")
    vectors = normalise(vectors)
    labels = np.array(["" if v is None else str(v).strip() for v in labels], dtype=object)
    if len(labels) != len(vectors):
        raise ValueError("one label per vector")
    known = labels != ""
    counts: dict[str, int] = {}
    for value in labels[known]:
        counts[value.lower()] = counts.get(value.lower(), 0) + 1
    lowered = np.array([v.lower() for v in labels], dtype=object)
    wanted = [v.lower() for v in values] if values else sorted(counts)
    directions = []
    for value in wanted:
        positive = lowered == value
        negative = known & ~positive
        n_pos, n_neg = int(positive.sum()), int(negative.sum())
        if n_pos < min_count or n_neg < min_count:
            if values:
                raise FashionLensError(
                    f"{field}={value}: {n_pos} items carry it and {n_neg} others are "
                    f"labelled; a direction needs at least {min_count} of each")
            continue
        if method == "mean":
            vector = vectors[positive].mean(0) - vectors[negative].mean(0)
        else:
            vector = _probe_normal(vectors[positive | negative], positive[positive | negative])
        original = next(v for v in labels if v.lower() == value)
        directions.append(Direction(direction_name(original), field, original, method,
                                    n_pos, n_neg, normalise(vector[None])[0]))
    return directions


def _probe_normal(vectors: np.ndarray, target: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
    probe.fit(vectors, target)
    return probe.coef_[0].astype(np.float32)


_STEER_TERM = re.compile(r"^\s*(?:([+-]?\s*\d*\.?\d+)\s+([\w\-.]+)|([\w\-.]+)\s*[=:]\s*"
                         r"([+-]?\d*\.?\d+))\s*$")


def parse_steering(spec: None | str | Mapping[str, float] | Sequence[str]) -> dict[str, float]:
    """Weights from 'striped=0.5, solid=-0.3', '+0.5 striped, -0.3 solid', or a mapping."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        terms = [spec] if isinstance(spec, str) else list(spec)
        items = []
        for term in (t for chunk in terms for t in str(chunk).split(",")):
            if not term.strip():
                continue
            match = _STEER_TERM.match(term)
            if match is None:
                raise FashionLensError(
                    f"cannot read the steering term '{term.strip()}' (write it as "
                    "'striped=0.5' or '+0.5 striped')")
            if match.group(2):
                items.append((match.group(2), match.group(1).replace(" ", "")))
            else:
                items.append((match.group(3), match.group(4)))
    weights: dict[str, float] = {}
    for name, weight in items:
        try:
            value = float(weight)
        except (TypeError, ValueError):
            raise FashionLensError(f"steering weight for '{name}' is not a number: "
                                   f"{weight!r}") from None
        if not np.isfinite(value) or abs(value) > 10:
            raise FashionLensError(f"steering weight for '{name}' must be between -10 and "
                                   f"10, not {weight}")
        weights[direction_name(name)] = weights.get(direction_name(name), 0.0) + value
    return weights


def steer(query: np.ndarray, directions: Mapping[str, np.ndarray],
          weights: Mapping[str, float]) -> np.ndarray:
    """The query moved along the weighted directions, back on the unit sphere."""
    unknown = sorted(set(weights) - set(directions))
    if unknown:
        known = ", ".join(sorted(directions)) or "none; learn some with "\
            "`fashionlens catalog directions`"
        raise FashionLensError(f"unknown steering direction(s): {', '.join(unknown)} "
                               f"(known: {known})")
    moved = np.asarray(query, dtype=np.float32).copy()
    for name, weight in weights.items():
        moved += np.float32(weight) * directions[name]
    if not np.linalg.norm(moved) > 1e-6:
        raise FashionLensError("the steering weights cancel the query out; use smaller weights")
    return normalise(moved[None])[0]

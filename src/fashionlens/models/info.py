"""What a saved model is, read without torch: its heads, input and how to name its outputs.

`model.json` describes a model: architecture, heads (each with its kind, class or tag
names and thresholds), pre-processing, the resolved training config and the validation
metrics. Everything that only reads that description (predicting through an exported
backend, the service, the catalog, model cards) imports this module and never torch;
`models.artifact` builds the torch network from it and `models.heads` the head modules.

Head kinds (a registry, like timm's model registry: `HEAD_KINDS[name]`):

- `classification`: one label of `classes` (softmax);
- `multilabel`: any number of `classes` (tags), each scored on its own (sigmoid) and kept
  when at or above its threshold (`thresholds`, tuned on validation when trained); at
  most `max_tags` a photo, and a tag's `parents` implied rather than listed twice, when
  model.json gives them (older models have neither and decide as before: `decide_tags`);
- `embedding`: the search vector (`models.embedding`; declared by `EmbeddingSpec`).

Format 1 (the first release, e.g. the bundled `clothing10`) had one `classes` list and no
`heads`; it reads as one classification head named `label`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.preprocess import FITS, RESAMPLING, Preprocess
from ..errors import ModelError, shorten
from .resolve import DEFAULT_NAME, META_FILE, bundled_models

FORMAT_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
# Where a model keeps the heads after its first (`models.heads`): modules that score the
# photo and that the search vector never reads (it reads the backbone, its own classifier
# for the class posterior, and the embedding head).
TASK_HEADS_ATTRIBUTE = "task_heads"
STAGE_TERMS_ATTRIBUTE = "stage_terms"
SCORING_ONLY = (TASK_HEADS_ATTRIBUTE + ".", STAGE_TERMS_ATTRIBUTE + ".")
LEGACY_HEAD = "label"  # the one head of a format-1 model
# Output names a head may not take: the runtime's own outputs.
RESERVED_NAMES = ("probabilities", "vector", "features", "embedding", "stages",
                  "colour_statistics")


@dataclass(frozen=True)
class HeadKind:
    name: str
    activation: str | None  # logits -> scores: "softmax" or "sigmoid" (models.heads)
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


def ancestors(parents: Sequence[int | None], index: int) -> list[int]:
    """The parent, grandparent... of tag `index` (`parents[i]`: tag i's parent or None)."""
    found: list[int] = []
    parent = parents[index]
    while parent is not None and parent not in found and len(found) < len(parents):
        found.append(parent)
        parent = parents[parent]
    return found


def parent_indices(classes: Sequence[str], parents: dict | None) -> list[int | None] | None:
    """Per tag, the index of its parent among `classes` (None: none); None without
    parents."""
    if not parents:
        return None
    index = {c: i for i, c in enumerate(classes)}
    return [index.get(str(parents.get(c, ""))) for c in classes]


def decide_tags(scores: Sequence[float], limits: Sequence[float], max_tags: int | None = None,
                parents: Sequence[int | None] | None = None) -> list[int]:
    """The tags one photo is given, highest score first: those at or above their limit;
    a parent that a kept child already says is not listed again (`boots` says `shoes`);
    then at most `max_tags` of them. The one decision every runtime, the service, the
    catalog and the evaluation share, so a photo gets the same tags everywhere."""
    kept = [i for i in range(len(scores)) if scores[i] >= limits[i]]
    if parents is not None:
        said = {a for i in kept for a in ancestors(parents, i)}
        kept = [i for i in kept if i not in said]
    kept.sort(key=lambda i: -scores[i])
    return kept if max_tags is None else kept[:max_tags]


def decide(scores: np.ndarray, thresholds: np.ndarray, max_tags: int | None = None,
           parents: list[int | None] | None = None) -> list[list[int]]:
    """Each photo's listed tags (`decide_tags`, the runtimes' rule)."""
    limits = [float(t) for t in thresholds]
    return [decide_tags(row.tolist(), limits, max_tags, parents) for row in scores]


def implied(listed: list[list[int]], shape: tuple[int, int], max_tags: int | None = None,
            parents: list[int | None] | None = None) -> np.ndarray:
    """The tags the listed ones say (each with its parents), as a boolean matrix: what is
    scored against the truth, whose rows carry their parents too. `max_tags` cuts each
    photo's list first."""
    out = np.zeros(shape, bool)
    for row, tags in enumerate(listed):
        for i in tags if max_tags is None else tags[:max_tags]:
            out[row, i] = True
            parent = parents[i] if parents is not None else None
            seen = 0
            while parent is not None and seen < shape[1]:
                out[row, parent] = True
                parent, seen = parents[parent], seen + 1
    return out


def predicted_tags(scores: np.ndarray, thresholds: np.ndarray, max_tags: int | None = None,
                   parents: list[int | None] | None = None) -> np.ndarray:
    """Boolean photos x tags: what the model says of each photo, parents included."""
    return implied(decide(scores, thresholds, max_tags, parents), scores.shape, None, parents)


def describe_tags(head: HeadSpec, scores: Sequence[float], top_k: int,
                  threshold: float | None = None) -> dict:
    """`{"tags": [...highest first], "scores": {tag: p}}` (`decide_tags`); one `threshold`
    replaces every tag's own (the cap and the parents still hold). A tag with a parent
    carries it (`{"label": "boots", ..., "parent": "shoes"}`): the parent is implied,
    not listed a second time."""
    limits = ([threshold] * len(head.classes) if threshold is not None
              else head.threshold_list())
    parents = head.parent_indices()
    kept = decide_tags(scores, limits, head.max_tags, parents)
    tags = []
    for i in kept:
        entry: dict = {"label": head.classes[i], "probability": round(float(scores[i]), 6)}
        if parents is not None and parents[i] is not None:
            entry["parent"] = head.classes[parents[i]]
        tags.append(entry)
    return {"tags": tags,
            "scores": {name: round(float(p), 6) for name, p in zip(head.classes, scores,
                                                                   strict=True)}}


register_head_kind(HeadKind("classification", "softmax", describe_label,
                            description="one label per photo (softmax)"))
register_head_kind(HeadKind("multilabel", "sigmoid", describe_tags,
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
    # multilabel: at most this many tags a photo (None: every tag over its threshold)
    max_tags: int | None = None
    # multilabel: tag -> its parent tag (boots -> shoes); both among `classes`
    parents: dict[str, str] | None = None
    # True: the head also reads the backbone's tapped stages (average-pooled, the stages
    # the embedding taps), through a term of its own (`models.heads`, `training.refit`)
    taps: bool = False
    # True: that term also reads the photo's colour statistics (`models.colour`)
    colour_statistics: bool = False

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ModelError(f"head '{self.name}': unknown kind '{self.kind}'; known kinds: "
                             f"{', '.join(HEAD_KINDS)}")
        if HEAD_KINDS[self.kind].has_classes and len(self.classes) < 1:
            raise ModelError(f"head '{self.name}' ({self.kind}) names no classes")
        if self.thresholds is not None and len(self.thresholds) != len(self.classes):
            raise ModelError(f"head '{self.name}': {len(self.thresholds)} thresholds for "
                             f"{len(self.classes)} classes")
        if self.max_tags is not None and self.max_tags < 1:
            raise ModelError(f"head '{self.name}': max_tags must be at least 1, got "
                             f"{self.max_tags}")
        if self.parents:
            known = set(self.classes)
            strange = sorted({t for pair in self.parents.items() for t in pair} - known)
            if strange:
                raise ModelError(f"head '{self.name}': parents name tags it does not have: "
                                 f"{', '.join(strange[:10])}")
            check_parents(self.parents, f"head '{self.name}'", ModelError)

    @property
    def head_kind(self) -> HeadKind:
        return HEAD_KINDS[self.kind]

    def threshold_list(self) -> list[float]:
        """Per-class decision thresholds (multilabel); 0.5 where none was tuned."""
        return list(self.thresholds) if self.thresholds is not None else [0.5] * len(self.classes)

    def parent_indices(self) -> list[int | None] | None:
        return parent_indices(self.classes, self.parents)

    def to_dict(self) -> dict:
        out: dict = {"name": self.name, "kind": self.kind}
        if self.classes:
            out["classes"] = list(self.classes)
        if self.thresholds is not None:
            out["thresholds"] = [round(float(t), 4) for t in self.thresholds]
        if self.column:
            out["column"] = self.column
        if self.max_tags is not None:
            out["max_tags"] = int(self.max_tags)
        if self.parents:
            out["parents"] = dict(sorted(self.parents.items()))
        if self.taps:
            out["taps"] = True
        if self.colour_statistics:
            out["colour_statistics"] = True
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str = "model.json") -> HeadSpec:
        try:
            thresholds = d.get("thresholds")
            parents = d.get("parents")
            return cls(name=str(d["name"]), kind=str(d.get("kind", "classification")),
                       classes=[str(c) for c in d.get("classes", [])],
                       thresholds=None if thresholds is None else [float(t) for t in thresholds],
                       column=d.get("column"),
                       max_tags=None if d.get("max_tags") is None else int(d["max_tags"]),
                       parents=None if not parents else {str(k): str(v)
                                                         for k, v in parents.items()},
                       taps=bool(d.get("taps", False)),
                       colour_statistics=bool(d.get("colour_statistics", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed head {d!r} ({exc})") from exc
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from exc


def check_parents(parents: dict, where: str, error: type[Exception] = ModelError) -> None:
    """Refuse tag parents that loop (a -> b -> a) or make a tag its own parent."""
    for child in parents:
        seen = [str(child)]
        parent = parents.get(child)
        while parent is not None:
            if str(parent) in seen:
                raise error(f"{where}: the tag parents loop: "
                            f"{' -> '.join([*seen, str(parent)])}")
            seen.append(str(parent))
            parent = parents.get(parent)


def chosen_tasks(asked: Sequence[str] | None, names: Sequence[str]) -> list[str] | None:
    """The tasks a caller keeps of a model's answer (`predict --task`, the API's `task=`),
    in the order asked, each once; None when none is asked (every task). A name that is
    not one of `names` raises KeyError(name): each caller says so in its own words."""
    if not asked:
        return None
    for name in asked:
        if name not in names:
            raise KeyError(name)
    return list(dict.fromkeys(asked))


def task_heads(heads: list[HeadSpec]) -> list[HeadSpec]:
    """The heads that score classes (everything but the embedding)."""
    return [h for h in heads if h.head_kind.has_classes]


def describe(head: HeadSpec, scores: Sequence[float], top_k: int = 3,
             threshold: float | None = None) -> dict:
    """One photo's answer for one head, as `predict --json` and the API give it."""
    return head.head_kind.describe(head, scores, top_k, threshold)


@dataclass
class ModelInfo:
    """What a saved model is. `classes` alone (format 1) means one classification head
    named `label`; `heads` lists them all otherwise (the first one's classes are then
    `classes`, when it is a classification head)."""

    architecture: str
    classes: list[str]
    preprocess: Preprocess
    task: str = "classification"
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    name: str = ""
    embedding: dict | None = None  # an EmbeddingSpec when the model has an embedding head
    heads: list[HeadSpec] = field(default_factory=list)
    # "Not a garment" scorer and threshold (`inference.unknown`), None until calibrated.
    unknown: dict | None = None
    # Cosine similarity from which two photos count as one (re-uploads, listings posted
    # twice), measured for this model's search vector by benchmarks/duplicates.py --save;
    # None until measured (the search layer then uses its default line).
    duplicate_threshold: float | None = None
    # Whole-model fingerprints (`fingerprint_of`) of earlier versions of this model that
    # made the same search vectors, {"vectors": vector fingerprint, "fingerprints": [...]}:
    # catalogs and alignments recorded before vectors had their own fingerprint name those
    # and stay valid (`vector_names_of`). Tied to the vectors they were recorded for, so a
    # model derived from this one with other vectors does not inherit them.
    earlier_fingerprints: dict | None = None

    def __post_init__(self) -> None:
        if not self.heads and self.classes:
            self.heads = [HeadSpec(LEGACY_HEAD, "classification", list(self.classes))]
        scored = task_heads(self.heads)
        self.classes = (list(scored[0].classes)
                        if scored and scored[0].kind == "classification" else [])
        if self.embedding and not any(h.kind == "embedding" for h in self.heads):
            self.heads.append(HeadSpec("embedding", "embedding"))

    @property
    def scored_heads(self) -> list[HeadSpec]:
        return task_heads(self.heads)

    def head(self, name: str) -> HeadSpec:
        for head in self.heads:
            if head.name == name:
                return head
        raise ModelError(f"{self.name or 'this model'} has no head '{name}' (heads: "
                         f"{', '.join(h.name for h in self.heads)})")

    @property
    def single_label(self) -> bool:
        """One classification head and nothing else that scores: today's classifiers."""
        scored = self.scored_heads
        return len(scored) == 1 and scored[0].kind == "classification"

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "task": self.task,
            "architecture": self.architecture,
            "classes": self.classes,
            "heads": [h.to_dict() for h in self.heads],
            "preprocess": self.preprocess.to_dict(),
            "config": self.config,
            "metrics": self.metrics,
            **({"embedding": self.embedding} if self.embedding else {}),
            **({"unknown": self.unknown} if self.unknown else {}),
            **({"duplicate_threshold": self.duplicate_threshold}
               if self.duplicate_threshold is not None else {}),
            **({"earlier_fingerprints": self.earlier_fingerprints}
               if self.earlier_fingerprints else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, source: str) -> ModelInfo:
        check_description(d, source)
        try:
            heads = [HeadSpec.from_dict(h, source) for h in d.get("heads") or []]
            return cls(architecture=d["architecture"], classes=list(d.get("classes") or []),
                       preprocess=Preprocess.from_dict(d["preprocess"]),
                       task=d.get("task", "classification"), config=d.get("config", {}),
                       metrics=d.get("metrics", {}), name=d.get("name", ""),
                       embedding=d.get("embedding"), heads=heads, unknown=d.get("unknown"),
                       duplicate_threshold=d.get("duplicate_threshold"),
                       earlier_fingerprints=d.get("earlier_fingerprints"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed model description ({exc})") from exc


# Bounds of what a model.json may say: a corrupt or hostile file is refused before any
# buffer is sized from it (a preprocess size of 100000 once grew a process to 23 GB).
MAX_SIDE = 2048  # input height, width and size in pixels (as the run config's image_size)
MAX_CLASSES = 100_000  # classes or tags of one head
MAX_WIDTH = 65_536  # embedding dimensions, hidden and input features
MAX_NAME = 1000  # characters of a name, class or column


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false",
            type(None): "null"}.get(type(value), "a number")


def _fail(source: str, where: str, reason: str):
    if reason.endswith("got null"):  # absent or null where a value is needed
        reason = "is missing (" + reason.removesuffix(", got null") + ")"
    raise ModelError(f"{source}: field '{where}' {reason}")


def _mapping(value, source: str, where: str, optional: bool = True) -> dict:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        _fail(source, where, f"must be an object, got {_kind(value)}")
    return value


def _text(value, source: str, where: str, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or len(value) > MAX_NAME:
        _fail(source, where, f"must be text (at most {MAX_NAME} characters), got "
                             f"{_kind(value) if not isinstance(value, str) else 'longer text'}")


def _number(value, source: str, where: str, low: float, high: float, *, integer: bool = False,
            above: bool = False, optional: bool = False) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
    if not ok or not math.isfinite(value) or not (low < value if above else low <= value) \
            or value > high:
        bound = f"above {low:g}" if above else f"at least {low:g}"
        what = "a whole number" if integer else "a number"
        _fail(source, where, f"must be {what} {bound} and at most {high:g}, got "
                             + ("null" if value is None else repr(value)[:80]))


def _list(value, source: str, where: str, most: int, optional: bool = True) -> list:
    if value is None and optional:
        return []
    if not isinstance(value, list):
        _fail(source, where, f"must be a list, got {_kind(value)}")
    if len(value) > most:
        _fail(source, where, f"lists {len(value)} entries; at most {most} are allowed")
    return value


def check_preprocess(d, source: str, where: str = "preprocess") -> None:
    """The input description: sizes, mean and std within bounds (a size of 100000 would
    make every photo a 30 GB array)."""
    d = _mapping(d, source, where, optional=False)
    _number(d.get("size"), source, f"{where}.size", 16, MAX_SIDE, integer=True)
    for name in ("height", "width"):
        _number(d.get(name), source, f"{where}.{name}", 16, MAX_SIDE, integer=True,
                optional=True)
    for name, low, high in (("mean", 0.0, 1.0), ("std", 0.0, 10.0)):
        values = _list(d.get(name), source, f"{where}.{name}", 3, optional=False)
        if len(values) != 3:
            _fail(source, f"{where}.{name}", f"must list 3 numbers (red, green, blue), got "
                                             f"{len(values)}")
        for i, value in enumerate(values):
            _number(value, source, f"{where}.{name}[{i}]", low, high, above=name == "std")
    _number(d.get("crop_pct", 0.875), source, f"{where}.crop_pct", 0.0, 1.0, above=True)
    for name, allowed in (("interpolation", tuple(RESAMPLING)), ("fit", FITS)):
        value = d.get(name)
        if value is not None and value not in allowed:
            _fail(source, f"{where}.{name}", f"must be one of {', '.join(allowed)}, got "
                                             f"{value!r}"[:200])


def check_description(d, source: str) -> None:
    """Refuse a model.json whose fields are not what this version writes, naming the file
    and the field: before anything is sized, allocated or built from it."""
    if not isinstance(d, dict):
        raise ModelError(f"{source}: must hold a JSON object describing the model, got "
                         f"{_kind(d)}")
    _number(d.get("format_version", 1), source, "format_version", 1, FORMAT_VERSION,
            integer=True)
    if not isinstance(d.get("architecture"), str) or not d["architecture"].strip():
        _fail(source, "architecture", f"must name the backbone (text), got "
                                      f"{_kind(d.get('architecture'))}")
    for name in ("name", "task"):
        _text(d.get(name), source, name)
    for i, c in enumerate(_list(d.get("classes"), source, "classes", MAX_CLASSES)):
        _text(c, source, f"classes[{i}]", optional=False)
    for i, head in enumerate(_list(d.get("heads"), source, "heads", 64)):
        where = f"heads[{i}]"
        head = _mapping(head, source, where, optional=False)
        _text(head.get("name"), source, f"{where}.name", optional=False)
        _text(head.get("kind"), source, f"{where}.kind")
        _text(head.get("column"), source, f"{where}.column")
        classes = _list(head.get("classes"), source, f"{where}.classes", MAX_CLASSES)
        for j, c in enumerate(classes):
            _text(c, source, f"{where}.classes[{j}]", optional=False)
        for j, t in enumerate(_list(head.get("thresholds"), source, f"{where}.thresholds",
                                    MAX_CLASSES)):
            _number(t, source, f"{where}.thresholds[{j}]", 0.0, 1.0)
        _number(head.get("max_tags"), source, f"{where}.max_tags", 1, MAX_CLASSES,
                integer=True, optional=True)
        parents = _mapping(head.get("parents"), source, f"{where}.parents")
        if len(parents) > MAX_CLASSES:
            _fail(source, f"{where}.parents", f"lists {len(parents)} entries; at most "
                                              f"{MAX_CLASSES} are allowed")
        for child, parent in parents.items():
            _text(child, source, f"{where}.parents (a tag)", optional=False)
            _text(parent, source, f"{where}.parents[{child[:80]!r}]", optional=False)
    check_preprocess(d.get("preprocess"), source)
    for name in ("config", "metrics"):
        _mapping(d.get(name), source, name)
    embedding = d.get("embedding")
    if embedding is not None:
        embedding = _mapping(embedding, source, "embedding", optional=False)
        for name, low in (("dim", 1), ("hidden", 0), ("in_features", 1), ("classes", 0)):
            _number(embedding.get(name, 0 if low == 0 else None), source, f"embedding.{name}",
                    low, MAX_WIDTH if name != "classes" else MAX_CLASSES, integer=True)
        _number(embedding.get("posterior_weight", 0.0), source, "embedding.posterior_weight",
                0.0, 1e6)
        for name in ("taps", "tap_channels"):
            for j, value in enumerate(_list(embedding.get(name), source, f"embedding.{name}",
                                            64)):
                _number(value, source, f"embedding.{name}[{j}]", 0, MAX_WIDTH, integer=True)
    unknown = d.get("unknown")
    if unknown is not None:
        unknown = _mapping(unknown, source, "unknown", optional=False)
        _number(unknown.get("threshold"), source, "unknown.threshold", -1e9, 1e9)
        _text(unknown.get("method"), source, "unknown.method")
        _text(unknown.get("head"), source, "unknown.head")
        _mapping(unknown.get("parameters"), source, "unknown.parameters")
    _number(d.get("duplicate_threshold"), source, "duplicate_threshold", 0.0, 1.0, above=True,
            optional=True)
    earlier = d.get("earlier_fingerprints")
    if earlier is not None:
        earlier = _mapping(earlier, source, "earlier_fingerprints", optional=False)
        _text(earlier.get("vectors"), source, "earlier_fingerprints.vectors", optional=False)
        for j, name in enumerate(_list(earlier.get("fingerprints"), source,
                                       "earlier_fingerprints.fingerprints", 1000,
                                       optional=False)):
            _text(name, source, f"earlier_fingerprints.fingerprints[{j}]", optional=False)


def weights_digest(directory: str | Path) -> str:
    """A short SHA-256 of the model's weights file: which weights a result came from."""
    h = hashlib.sha256()
    with (Path(directory) / WEIGHTS_FILE).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_info(directory: str | Path) -> ModelInfo:
    directory = Path(directory)
    meta = directory / META_FILE
    if not meta.is_file():
        raise ModelError(f"{directory}: not a fashionlens model folder (no {META_FILE})")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelError(f"{meta}: invalid JSON ({shorten(str(exc), 120)})") from None
    except OSError as exc:
        raise ModelError(f"{meta}: cannot be read ({exc.strerror})") from None
    return ModelInfo.from_dict(data, str(meta))


def update_info(directory: str | Path, values: dict) -> Path:
    """Set top-level fields of a model folder's model.json (None removes one) atomically,
    leaving every other field as it was: what a measurement made after training (the
    "not a garment" scorer, the near-duplicate line) writes. The result must still be a
    valid description; the export cache key does not read these fields, so shipped
    exports stay current."""
    from ..atomic import atomic_file

    path = Path(directory) / META_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the model description ({exc})") from exc
    for name, value in values.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    check_description(data, str(path))
    with atomic_file(path, text=True, keep_mode=True) as fh:
        fh.write(json.dumps(data, indent=2))
    return path


def _as_loaded(dtype: str, data: bytes) -> tuple[str, bytes]:
    """A tensor's values as a model loads them: half-precision floats (bundles are stored
    in F16, `save_model(half=True)`) widen exactly to F32, so the same values stored
    either way digest alike."""
    if dtype == "F16":
        return "F32", np.frombuffer(data, "<f2").astype("<f4").tobytes()
    if dtype == "BF16":
        widened = np.frombuffer(data, "<u2").astype("<u4") << 16
        return "F32", widened.tobytes()
    return dtype, data


def vector_weights_digest(directory: str | Path) -> str:
    """A short SHA-256 of the tensors the search vector depends on: every tensor but the
    further heads and stage terms (`SCORING_ONLY`), each by name, shape and values as
    loaded (`_as_loaded`), read from the safetensors file as laid out on disk (no
    framework needed)."""
    path = Path(directory) / WEIGHTS_FILE
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
            start = 8 + size
            for name in sorted(k for k in header if k != "__metadata__"):
                if name.startswith(SCORING_ONLY):
                    continue
                entry = header[name]
                begin, end = entry["data_offsets"]
                fh.seek(start + begin)
                dtype, data = _as_loaded(entry["dtype"], fh.read(end - begin))
                h.update(f"{name}|{dtype}|{entry['shape']}|".encode())
                h.update(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: cannot read the weights ({exc})") from None
    return h.hexdigest()[:16]


def _setting_digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def vector_fingerprint_of(folder: Path, info: ModelInfo) -> str:
    """Names the search vectors a saved model makes, and nothing else: the tensors they
    depend on, the embedding settings and how photos become inputs. A refit of a scoring
    head (`refit-heads`) leaves it as it was, so catalogs, vector shards and the text
    alignment stay valid. `fingerprint_of` names the whole model (its scores too); a
    catalog or alignment recorded before vectors had their own name holds that one."""
    return (f"{info.architecture}:vectors:{vector_weights_digest(folder)}:"
            f"{_setting_digest(info.embedding or {})}:"
            f"{_setting_digest(info.preprocess.to_dict())}")


def same_vectors(recorded: str | None, wanted: str | None, names: Sequence[str] = ()
                 ) -> bool:
    """Whether two recorded fingerprints name the same vectors: equal, or both names of
    one model (`names`: its `vector_names_of`)."""
    if recorded is None or wanted is None:
        return False
    return recorded == wanted or (recorded in names and wanted in names)


def vector_names_of(folder: Path, info: ModelInfo, whole: str | None = None,
                    vectors: str | None = None) -> tuple[str, ...]:
    """Every name a model's vectors may be recorded under (`same_vectors`): its vector
    fingerprint first, then its whole fingerprint and those of earlier versions that made
    the same vectors (records made before vectors had their own name hold one of those).
    `whole` / `vectors`: the model's `fingerprint_of` / `vector_fingerprint_of`, where the
    caller has them (each reads the weights)."""
    vectors = vectors or vector_fingerprint_of(folder, info)
    earlier = info.earlier_fingerprints or {}
    kept = earlier.get("fingerprints", []) if earlier.get("vectors") == vectors else []
    return (vectors, whole or fingerprint_of(folder, info), *kept)


def vector_names(folder: Path) -> tuple[str, ...]:
    """`vector_names_of` a model folder."""
    return vector_names_of(folder, read_info(folder))


def bundled_maker_of(recorded: str | None) -> str | None:
    """The bundled model whose search vectors `recorded` names (`same_vectors`), or None.

    A catalog built with `default` holds the vectors of the model that was the default
    then; when a release bundles another default, this finds the one that made them.
    Remembered per process for the bundles' weight files as they are (hashing them takes
    0.07-0.4 s, and every catalog that records `default` asks)."""
    if not recorded:
        return None
    bundled = bundled_models()
    stamp = []
    for name, folder in sorted(bundled.items()):
        try:
            stat = (folder / WEIGHTS_FILE).stat()
        except OSError:
            continue
        stamp.append((name, str(folder), stat.st_mtime_ns, stat.st_size))
    return _bundled_maker(recorded, tuple(stamp))


@functools.lru_cache(maxsize=64)
def _bundled_maker(recorded: str, stamp: tuple) -> str | None:
    # The default first: it usually is the one, and its vectors' own name settles it
    # without hashing the whole model.
    for name, folder, *_ in sorted(stamp, key=lambda entry: entry[0] != DEFAULT_NAME):
        folder = Path(folder)
        try:
            info = read_info(folder)
            vectors = vector_fingerprint_of(folder, info)
            if recorded == vectors or recorded in vector_names_of(folder, info,
                                                                   vectors=vectors):
                return name
        except (ModelError, OSError):  # a damaged bundle makes no one's vectors
            continue
    return None


def tagger_fingerprint_of(folder: Path, info: ModelInfo, whole: str | None = None) -> str:
    """Names what tags a model gives: the whole model (`fingerprint_of`, or `whole` where
    the caller has it) and its heads' decision settings in model.json (classes,
    thresholds, tag cap, parents), which can change without the weights. What a catalog
    records as the source of its tags."""
    heads = [h.to_dict() for h in info.scored_heads]
    return f"{whole or fingerprint_of(folder, info)}:tags={_setting_digest(heads)}"


def fingerprint_of(folder: Path, info: ModelInfo) -> str:
    """Names a saved model whole: every weight (scoring heads too), its embedding settings
    (a changed posterior weight gives same-size but different vectors) and its canvases.
    What tags, exports and caches of its outputs are keyed on; stored vectors are keyed on
    `vector_fingerprint_of`."""
    fingerprint = f"{info.architecture}:{weights_digest(folder)}"
    if info.embedding:
        fingerprint += f":{_setting_digest(info.embedding)}"
    if info.preprocess.canvases:  # a tall photo's vector depends on the canvas it gets
        fingerprint += ":canvases=" + ",".join(f"{h}x{w}" for h, w in info.preprocess.canvases)
    return fingerprint

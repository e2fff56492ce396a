"""The review queue: what a person should look at, each entry saying why and how sure.

Entries, in the order a person goes through them: unreadable files, duplicates that
straddle train and validation (leakage), other duplicates, off-topic photos (not a
garment, by the model's calibrated `unknown_score`), likely mislabels (cleanlab's
ranking), outliers (photos far from every other photo: odd crops, rare views).
Each entry has one subject photo (what a decision applies to) and the related photos
that explain it (the other copies of a duplicate). A photo is named by its path relative
to the queue's `base` folder, which every listed photo lies under (symlinks followed;
`dataset.confine`), so the web app serves nothing else. The queue is a JSON file; the
photos are only read.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..search.index import VectorIndex
from .dataset import TRAIN, VALIDATION, CurationSet, Photo
from .duplicates import DuplicateGroup, find_duplicates, leaks
from .mislabels import LabelIssues, find_label_issues
from .scan import Scan

log = logging.getLogger(__name__)

FORMAT = "fashionlens-review"
VERSION = 1
REASONS = ("unreadable", "leakage", "duplicate", "off-topic", "mislabel", "outlier")
# Outliers: mean cosine distance to the nearest photos beyond Tukey's far-out fence
# (third quartile + 3 interquartile ranges): data-driven, so a clean set flags none.
NEIGHBOURS = 10
FENCE = 3.0


@dataclass
class Outliers:
    rows: np.ndarray
    distance: np.ndarray  # mean cosine distance to the NEIGHBOURS nearest, per scan row
    fence: float
    median: float


def outlier_scores(vectors: np.ndarray, ok: np.ndarray) -> Outliers | None:
    """Each readable photo's mean cosine distance to its nearest neighbours."""
    rows = np.flatnonzero(ok)
    if len(rows) < NEIGHBOURS + 2:
        return None
    index = VectorIndex.empty(vectors.shape[1], "flat")
    index.add(vectors[rows], rows)
    sims, _ = index.search(vectors[rows], NEIGHBOURS + 1)
    distance = 1.0 - sims[:, 1:].mean(axis=1)  # column 0 is the photo itself
    q1, med, q3 = np.percentile(distance, [25, 50, 75])
    return Outliers(rows=rows, distance=distance, fence=float(q3 + FENCE * (q3 - q1)),
                    median=float(med))


def _photo_json(photo: Photo) -> dict[str, Any]:
    return {"photo": photo.id, "labels": photo.labels, "split": photo.split,
            "group": photo.group}


def _entry(reason: str, photo: Photo, confidence: float, why: str,
           suggested: list[str] | None = None, related: list[Photo] | None = None
           ) -> dict[str, Any]:
    return {"reason": reason, **_photo_json(photo), "confidence": round(float(confidence), 4),
            "why": why, "suggested": suggested,
            "related": [_photo_json(p) for p in related or []]}


def _keeper(group: DuplicateGroup, photos: list[Photo]) -> int:
    """The copy to keep: a training photo if any (its label was learned), then the first."""
    return min(group.members, key=lambda i: (photos[i].split != TRAIN, i))


def duplicate_entries(groups: list[DuplicateGroup], photos: list[Photo]
                      ) -> tuple[list[dict], list[dict]]:
    """(leakage entries, duplicate entries): one per copy other than the one to keep."""
    splits = [p.split for p in photos]
    leak, dup = [], []
    for group in groups:
        keep = _keeper(group, photos)
        spans = leaks(group, splits, {TRAIN}, {VALIDATION})
        for i in group.members:
            if i == keep:
                continue
            pair = group.best_pair(i)
            other = pair.b if pair.a == i else pair.a
            if spans and photos[i].split != photos[keep].split:
                why = (f"the same picture as {photos[keep].split} photo {photos[keep].id} "
                       f"({pair.evidence()}): a {photos[i].split} photo that duplicates a "
                       f"{photos[keep].split} photo inflates validation scores")
                leak.append(_entry("leakage", photos[i], pair.confidence, why,
                                   related=[photos[keep]]))
            else:
                why = f"the same picture as {photos[other].id} ({pair.evidence()})"
                if set(photos[i].labels) != set(photos[other].labels):
                    why += (f"; labelled {', '.join(photos[i].labels) or '(none)'} here and "
                            f"{', '.join(photos[other].labels) or '(none)'} there")
                others = [photos[j] for j in group.members if j != i]
                dup.append(_entry("duplicate", photos[i], pair.confidence, why,
                                  related=others))
    return leak, dup


def mislabel_entries(issues: LabelIssues, photos: list[Photo], multilabel: bool
                     ) -> list[dict]:
    """cleanlab's flagged photos, least likely label first."""
    entries = []
    order = np.argsort(issues.quality, kind="stable")
    for k in order:
        if not issues.flagged[k]:
            continue
        photo = photos[int(issues.rows[k])]
        probs = issues.probabilities[k]
        if multilabel:
            suggested = sorted(c for c, p in zip(issues.classes, probs, strict=True) if p >= 0.5)
            missing = [t for t in suggested if t not in photo.labels]
            unlikely = [t for t in photo.labels if t in issues.classes and t not in suggested]
            why = ("tags " + "; ".join(
                filter(None, [f"probably missing: {', '.join(missing)}" if missing else "",
                              f"probably wrong: {', '.join(unlikely)}" if unlikely else ""]))
                   + f" (label quality {issues.quality[k]:.2f}, out-of-fold probe)")
        else:
            best = int(np.argmax(probs))
            given = issues.classes.index(photo.labels[0])
            suggested = [issues.classes[best]]
            why = (f"labelled {photo.labels[0]} (probability {probs[given]:.2f}), looks like "
                   f"{issues.classes[best]} ({probs[best]:.2f}) to a probe that never saw it")
        entries.append(_entry("mislabel", photo, 1.0 - issues.quality[k], why, suggested))
    return entries


def off_topic_rows(scan: Scan, threshold: float) -> np.ndarray:
    """Rows whose "not a garment" score reaches `threshold`, surest first."""
    if scan.unknown_scores is None:
        return np.zeros(0, np.int64)
    scores = np.nan_to_num(scan.unknown_scores, nan=-1.0)
    rows = np.flatnonzero(scores >= threshold)
    return rows[np.argsort(-scores[rows], kind="stable")]


def off_topic_entries(scan: Scan, photos: list[Photo], threshold: float) -> list[dict]:
    return [_entry("off-topic", photos[int(i)], float(scan.unknown_scores[i]),
                   f"does not look like a garment the model knows: unknown_score "
                   f"{scan.unknown_scores[i]:.3f} (listed from {threshold:.3f}); another "
                   f"kind of item, a scene, or a garment of a kind it was not trained on")
            for i in off_topic_rows(scan, threshold)]


def outlier_entries(outliers: Outliers, photos: list[Photo]) -> list[dict]:
    entries = []
    order = np.argsort(-outliers.distance, kind="stable")
    ranks = np.empty(len(order))
    ranks[order] = 1.0 - np.arange(len(order)) / max(1, len(order))
    for k in order:
        if outliers.distance[k] <= outliers.fence:
            break
        why = (f"far from every other photo: mean distance to its {NEIGHBOURS} nearest "
               f"{outliers.distance[k]:.3f} (typical {outliers.median:.3f}, flagged above "
               f"{outliers.fence:.3f}); off-topic, a wrong crop or a rare view")
        entries.append(_entry("outlier", photos[int(outliers.rows[k])], ranks[k], why))
    return entries


@dataclass
class ReviewResult:
    queue: dict[str, Any]
    scan: Scan
    groups: list[DuplicateGroup]
    issues: LabelIssues | None
    outliers: Outliers | None


def build_queue(data: CurationSet, scan: Scan, *, mislabels: bool = True, seed: int = 0,
                unknown_threshold: float | None = None,
                progress: Callable[[str], None] | None = None) -> ReviewResult:
    """Every check on a measured dataset, as a queue (a JSON-ready dict).

    Off-topic photos are listed from `unknown_threshold`, by default the model's own
    (where it refuses a photo): a person looks at the queue, so a lower line finds more
    (benchmarks/results-review-offtopic.json measures the trade)."""
    photos = data.photos
    if len(photos) != len(scan.paths):
        raise ValueError("the scan and the photos differ")
    say = progress or (lambda _: None)
    ok = scan.readable
    unreadable = [_entry("unreadable", photos[i], 1.0, f"cannot be read: {scan.errors[i]}")
                  for i in np.flatnonzero(~ok)]
    say("duplicates")
    groups = find_duplicates(scan)
    leak, dup = duplicate_entries(groups, photos)
    issues = None
    mis: list[dict] = []
    notes: list[str] = []
    have_vectors = scan.vectors is not None and scan.vectors.size > 0
    if mislabels and have_vectors:
        say("mislabels (out-of-fold linear probe, cleanlab)")
        rows = np.flatnonzero(ok)
        try:
            issues = find_label_issues(scan.vectors[rows], [photos[i].labels for i in rows],
                                       data.classes, data.multilabel, rows, seed)
        except DataError as exc:  # too small a dataset: the other checks still run
            notes.append(f"no mislabel check: {exc}")
        else:
            mis = mislabel_entries(issues, photos, data.multilabel)
    elif mislabels:
        notes.append("no mislabel check: it needs embedding vectors (run without --no-model)")
    if data.outside:
        notes.append(f"{len(data.outside)} photos not reviewed: they lie outside "
                     f"{data.base} (symlinks followed), e.g. {data.outside[0]}; give the "
                     "folder that holds them with --image-root")
    outliers = outlier_scores(scan.vectors, ok) if have_vectors else None
    out = outlier_entries(outliers, photos) if outliers is not None else []
    off_line = unknown_threshold if unknown_threshold is not None else scan.unknown_threshold
    off = off_topic_entries(scan, photos, off_line) if off_line is not None else []
    if scan.unknown_scores is None and have_vectors:
        notes.append(f"no off-topic check: the model ({scan.model}) is not calibrated for "
                     "'not a garment' (fashionlens calibrate-unknown)")
    # An off-topic photo's suggested class or distance says nothing more: one entry.
    off_ids = {e["photo"] for e in off}
    mis = [e for e in mis if e["photo"] not in off_ids]
    out = [e for e in out if e["photo"] not in off_ids]
    entries = unreadable + leak + dup + off + mis + out
    for n, entry in enumerate(entries, start=1):
        entry["id"] = f"e{n:05d}"
    spec = asdict(data.spec)
    spec["path"] = str(Path(data.spec.path).expanduser().resolve())
    queue = {
        "format": FORMAT, "version": VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dataset": spec, "label_column": data.label_column, "multilabel": data.multilabel,
        "separator": data.separator,
        "base": str(data.base.resolve()), "classes": data.classes, "model": scan.model,
        "photos": len(photos), "split_note": data.split_note,
        "counts": {r: sum(e["reason"] == r for e in entries) for r in REASONS},
        "unknown_threshold": off_line if scan.unknown_scores is not None else None,
        "duplicate_threshold": scan.duplicate_threshold,
        "skipped_classes": issues.skipped_classes if issues else [],
        "notes": notes,
        "entries": entries,
    }
    return ReviewResult(queue=queue, scan=scan, groups=groups, issues=issues,
                        outliers=outliers)


def read_queue(path: Path) -> dict[str, Any]:
    """A queue file, checked field by field; DataError naming the file and the field
    when it is not one (a queue is a file a person may edit or a tool may break)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such review queue (write one with fashionlens review DATA)")
    try:
        queue = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError as exc:
        raise DataError(f"{path}: not a review queue (JSON nested too deeply)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable review queue ({exc})") from exc
    if not isinstance(queue, dict) or queue.get("format") != FORMAT:
        raise DataError(f"{path}: not a fashionlens review queue (no \"format\": "
                        f"\"{FORMAT}\")")
    try:
        check_queue(queue)
    except ValueError as exc:
        raise DataError(f"{path}: not a usable review queue: {exc}") from exc
    return queue


def _need(value: Any, kind: type | tuple[type, ...], field: str, optional: bool = False
          ) -> Any:
    if value is None and optional:
        return value
    if value is None:
        raise ValueError(f"field '{field}' is missing")
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__
                                                                          for k in kind)
        raise ValueError(f"field '{field}' is {type(value).__name__}, not {names}")
    return value


def _texts(value: Any, field: str, optional: bool = False) -> None:
    if _need(value, list, field, optional) is not None:
        for n, item in enumerate(value):
            _need(item, str, f"{field}[{n}]")


def _check_photo(photo: Any, field: str) -> None:
    _need(photo, dict, field)
    _need(photo.get("photo"), str, f"{field}.photo")
    if not photo["photo"]:
        raise ValueError(f"field '{field}.photo' is empty")
    _texts(photo.get("labels"), f"{field}.labels")
    _need(photo.get("split"), str, f"{field}.split", optional=True)


def check_queue(queue: dict[str, Any]) -> None:
    """ValueError naming the first field of a queue that `review apply` and the web app
    could not use."""
    spec = _need(queue.get("dataset"), dict, "dataset")
    _need(spec.get("path"), str, "dataset.path")
    for key in ("image_column", "target_column"):
        _need(spec.get(key), str, f"dataset.{key}")
    for key in ("split_column", "group_column", "image_dir", "image_extension"):
        _need(spec.get(key), str, f"dataset.{key}", optional=True)
    _need(queue.get("base"), str, "base")
    _need(queue.get("label_column"), str, "label_column")
    _need(queue.get("multilabel", False), bool, "multilabel")
    if not _need(queue.get("separator", ";"), str, "separator"):
        raise ValueError("field 'separator' is empty")
    _texts(queue.get("classes"), "classes")
    _need(queue.get("counts", {}), dict, "counts")
    for n, entry in enumerate(_need(queue.get("entries"), list, "entries")):
        where = f"entries[{n}]"
        _check_photo(entry, where)
        _need(entry.get("reason"), str, f"{where}.reason")
        _need(entry.get("why", ""), str, f"{where}.why")
        _need(entry.get("id"), str, f"{where}.id", optional=True)
        _need(entry.get("confidence", 0), (int, float), f"{where}.confidence")
        _texts(entry.get("suggested"), f"{where}.suggested", optional=True)
        for k, related in enumerate(_need(entry.get("related", []), list,
                                          f"{where}.related")):
            _check_photo(related, f"{where}.related[{k}]")

"""A person's decisions on a review queue, and the cleaned CSV they make.

Decisions live in their own JSON file beside the queue (`QUEUE.decisions.json`), one per
photo: keep, relabel (with the new class or tags) or drop. The file is rewritten
atomically after every decision, so a closed tab or a crash loses nothing already
decided. `apply` writes a new CSV for training, rows dropped or relabelled as decided;
the original CSV and the photos are never touched.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

from ..atomic import atomic_file, write_json_atomic
from ..data.sources import read_csv_rows, resolve_image_path
from ..errors import DataError
from .dataset import photo_id
from .datasheet import check_output

FORMAT = "fashionlens-review-decisions"
ACTIONS = ("keep", "relabel", "drop")


def decisions_path(queue_path: Path) -> Path:
    queue_path = Path(queue_path)
    return queue_path.with_name(queue_path.stem + ".decisions.json")


class Decisions:
    """The decisions file of one queue; `record` saves at once (thread-safe)."""

    def __init__(self, path: Path, queue: dict[str, Any]) -> None:
        self.path = Path(path)
        self.queue = queue
        self.classes = list(queue.get("classes") or [])
        self.multilabel = bool(queue.get("multilabel"))
        self.photos = {e["photo"] for e in queue["entries"]}
        self._lock = threading.Lock()
        self.items: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except RecursionError as exc:
                raise DataError(f"{self.path}: not a decisions file (JSON nested too "
                                "deeply); move it aside to start over") from exc
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"{self.path}: not a readable decisions file ({exc}); "
                                "move it aside to start over") from exc
            if not isinstance(data, dict) or data.get("format") != FORMAT or \
                    not isinstance(data.get("decisions"), dict):
                raise DataError(f"{self.path}: not a fashionlens decisions file")
            for photo, decision in data["decisions"].items():
                if not _well_formed(decision):
                    raise DataError(f"{self.path}: the decision on '{photo}' is not "
                                    f"{{\"action\": {' | '.join(ACTIONS)}, \"labels\": "
                                    "[...]}; correct it or move the file aside")
            self.items = data["decisions"]

    def check(self, photo: str, action: str, labels: list[str] | None) -> list[str] | None:
        """The decision's labels, or DataError saying which field is wrong."""
        if photo not in self.photos:
            raise DataError(f"photo '{photo}' is not in the review queue")
        if action not in ACTIONS:
            raise DataError(f"action '{action}' is not one of {', '.join(ACTIONS)}")
        if action != "relabel":
            return None
        labels = sorted({str(x).strip() for x in labels or [] if str(x).strip()})
        if not labels and not self.multilabel:
            raise DataError("relabel needs a class ('labels': [\"Shirt\"])")
        if not self.multilabel:
            if len(labels) != 1:
                raise DataError(f"relabel takes one class, not {len(labels)}")
            if labels[0] not in self.classes:
                raise DataError(f"class '{labels[0]}' is not one of the dataset's classes: "
                                f"{', '.join(self.classes)}")
        return labels

    def record(self, photo: str, action: str, labels: list[str] | None = None,
               entry: str | None = None) -> dict[str, Any]:
        labels = self.check(photo, action, labels)
        decision = {"action": action, "labels": labels, "entry": entry,
                    "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        with self._lock:
            self.items[photo] = decision
            self.save()
        return decision

    def undo(self, photo: str) -> None:
        with self._lock:
            if self.items.pop(photo, None) is not None:
                self.save()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The decisions so far, copied while no decision is being recorded."""
        with self._lock:
            return dict(self.items)

    def save(self) -> None:
        write_json_atomic(self.path, {"format": FORMAT, "decisions": self.items})


def _well_formed(decision: Any) -> bool:
    if not isinstance(decision, dict) or decision.get("action") not in ACTIONS:
        return False
    labels = decision.get("labels")
    return labels is None or isinstance(labels, list) and all(isinstance(x, str)
                                                             for x in labels)


def read_decisions(path: Path, queue: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The decisions saved beside a queue ({} when none were taken yet)."""
    if not Path(path).is_file():
        return {}
    return Decisions(path, queue).items


def apply_decisions(queue: dict[str, Any], decisions: dict[str, dict[str, Any]],
                    output: Path) -> dict[str, int]:
    """Write the dataset's rows, as decided, to a new CSV at `output`; returns counts.

    A CSV source keeps all its columns; its image column holds absolute paths unless the
    new CSV sits beside the old one, so it trains from anywhere with the same flags. A
    folder source becomes `image,label` rows."""
    spec = queue["dataset"]
    source = Path(spec["path"])
    base = Path(queue["base"])
    label_column = queue["label_column"]
    separator = queue.get("separator") or ";"
    output = Path(output).expanduser()
    if output.resolve() == source.resolve():
        raise DataError(f"{output}: is the original dataset; write the cleaned CSV to "
                        "another file")
    check_output(output, "the cleaned CSV")
    counts = {"rows": 0, "kept": 0, "dropped": 0, "relabelled": 0}
    if source.is_dir():
        from ..data.sources import load_folder

        columns = ["image", "label"]
        rows = [{"image": str(s.path.resolve()), "label": s.label}
                for s in load_folder(source).samples]
        paths = [Path(r["image"]) for r in rows]
        image_column = "image"
        label_column = "label"
        verbatim = False
    else:
        columns, rows = read_csv_rows(source)
        image_column = spec["image_column"]
        if label_column not in columns:
            raise DataError(f"{source}: no column '{label_column}' any more; the queue was "
                            "made from another version of this file")
        image_base = source.parent / spec["image_dir"] if spec.get("image_dir") else source.parent
        paths = [resolve_image_path((r.get(image_column) or "").strip(), image_base,
                                    spec.get("image_extension")) for r in rows]
        verbatim = output.parent.resolve() == source.parent.resolve()
    written = []
    for row, path in zip(rows, paths, strict=True):
        counts["rows"] += 1
        decision = decisions.get(photo_id(path, base)) if (row.get(image_column) or "").strip() \
            else None
        action = (decision or {}).get("action")
        if action == "drop":
            counts["dropped"] += 1
            continue
        row = dict(row)
        if action == "relabel":
            row[label_column] = separator.join(decision.get("labels") or [])
            counts["relabelled"] += 1
        if not verbatim and (row.get(image_column) or "").strip():
            row[image_column] = str(path.resolve())
        written.append(row)
        counts["kept"] += 1
    with atomic_file(output, text=True, newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(written)
    return counts

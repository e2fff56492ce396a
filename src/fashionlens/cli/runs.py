"""`fashionlens runs [FOLDER]`: the trained runs in a folder, side by side.

Reads only small files (model.json, metrics.json, the safetensors header): no torch, no
weights, so it answers at once even for many large runs. A run whose files cannot be read
is still listed, with what is wrong with it.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import ConfigError, DataError
from .common import out

META_FILE = "model.json"  # models.resolve.META_FILE; not imported: models/ imports torch
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
# State-dict entries that are statistics, not learned parameters (batch norm).
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
# Per head kind: the figures shown for a one-task run, and the one a multi-task summary
# averages (mirrors tasks/*.py `headline` and `monitor`, which import torch).
HEADLINE = {"classification": ("accuracy", "macro_f1"), "multilabel": ("micro_f1", "map")}
MONITOR = {"multilabel": "map"}  # classification: the run's train.monitor
SHORT = {"accuracy": "acc", "macro_f1": "F1", "micro_f1": "µF1", "map": "mAP", "score": "score"}
# --sort KEY -> (record field, highest first)
SORT_KEYS = {
    "name": ("name", False), "date": ("date", True), "score": ("score", True),
    "accuracy": ("accuracy", True), "macro_f1": ("macro_f1", True),
    "params": ("parameters", False), "time": ("train_minutes", False),
    "memory": ("peak_memory_mb", False),
}


def runs(
    folder: Annotated[
        Path, typer.Argument(metavar="FOLDER",
                             help="A folder of run folders (or one run folder)."),
    ] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as one JSON list.")]
    = False,
    sort: Annotated[
        str, typer.Option(metavar="KEY", help="Order by: " + ", ".join(SORT_KEYS) + " (date, "
                          "score and metrics highest first; params, time, memory lowest "
                          "first)."),
    ] = "name",
) -> None:
    """Compare trained runs: tasks, backbone, size, validation figures, time and memory."""
    key = sort.strip().lower().replace("-", "_")
    if key not in SORT_KEYS:
        raise ConfigError(f"--sort {sort}: unknown key; choose one of {', '.join(SORT_KEYS)}")
    records = sort_records(list_runs(folder), key)
    if as_json:
        print(json.dumps(records, indent=2))
        return
    if not records:
        out.print(f"no trained runs in {folder} (a run folder holds model/{META_FILE})",
                  highlight=False)
        return
    # A line of its own: as the table's title it would wrap at the table's width.
    out.print(f"{_plural(len(records), 'run')} in {folder}", highlight=False)
    out.print(runs_table(records))
    for record in records:
        for problem in record["problems"]:
            out.print(f"[yellow]note:[/] {record['name']}/{problem}", highlight=False)


def list_runs(folder: Path) -> list[dict]:
    """One record per run folder under `folder` (or `folder` itself when it is a run)."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    if (folder / "model" / META_FILE).is_file():
        return [read_run(folder)]
    return [read_run(child) for child in sorted(folder.iterdir())
            if child.is_dir() and (child / "model" / META_FILE).is_file()]


def read_run(run_dir: Path) -> dict:
    """What one run is and how it did; unreadable parts become `problems` (file names
    relative to the run folder), never errors."""
    problems: list[str] = []
    record: dict[str, Any] = {
        "name": run_dir.name, "path": str(run_dir), "tasks": [], "backbone": None,
        "parameters": None, "input_size": None, "fit": None, "score": None,
        "accuracy": None, "macro_f1": None, "train_minutes": None, "peak_memory_mb": None,
        "precision": None, "date": None, "problems": problems,
    }
    meta = _read_json(run_dir / "model" / META_FILE, problems)
    summary = _read_json(run_dir / METRICS_FILE, problems)
    if isinstance(meta, dict):
        try:
            _describe_model(meta, record, problems)
        except (TypeError, ValueError, AttributeError) as exc:
            problems.append(f"model/{META_FILE}: unexpected content ({exc})")
    elif meta is not None:
        problems.append(f"model/{META_FILE}: not a JSON object")
    record["parameters"] = count_parameters(run_dir / "model" / WEIGHTS_FILE, problems)
    stamp = run_dir / METRICS_FILE if (run_dir / METRICS_FILE).is_file() \
        else run_dir / "model" / META_FILE
    record["date"] = datetime.fromtimestamp(stamp.stat().st_mtime).isoformat(timespec="seconds")
    if summary is not None and not isinstance(summary, dict):
        problems.append(f"{METRICS_FILE}: not a JSON object")
    if isinstance(summary, dict):
        monitor = str(_get(meta, "config", "train", "monitor") or "accuracy")
        try:
            _describe_results(summary, record, monitor)
        except (TypeError, ValueError, AttributeError) as exc:
            problems.append(f"{METRICS_FILE}: unexpected content ({exc})")
    return record


def count_parameters(weights: Path, problems: list[str]) -> int | None:
    """Learned parameters from the safetensors header alone (no weights are read)."""
    if not weights.is_file():
        problems.append(f"model/{weights.name}: missing")
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="numpy") as fh:
            return sum(math.prod(fh.get_slice(name).get_shape()) for name in fh.keys()  # noqa: SIM118
                       if not name.endswith(BUFFER_SUFFIXES))
    except Exception as exc:  # noqa: BLE001 - any unreadable header is a note, not a crash
        problems.append(f"model/{weights.name}: unreadable safetensors header ({exc})")
        return None


def sort_records(records: list[dict], key: str) -> list[dict]:
    """Order by a --sort key; runs without that figure go last, in name order."""
    field, descending = SORT_KEYS[key]
    known = [r for r in records if r.get(field) is not None]
    unknown = sorted((r for r in records if r.get(field) is None), key=lambda r: r["name"])
    known.sort(key=lambda r: r["name"])  # ties stay in name order
    known.sort(key=lambda r: r[field], reverse=descending)
    return known + unknown


def runs_table(records: list[dict]) -> Table:
    """Runs side by side, several short lines per cell so that it fits 80 columns."""
    table = Table(title_justify="left")
    table.add_column("run", overflow="fold", min_width=6)
    table.add_column("tasks", overflow="fold", min_width=5)
    table.add_column("model", overflow="fold", min_width=8)
    table.add_column("validation", overflow="fold", min_width=10)
    table.add_column("training", overflow="fold", min_width=8, no_wrap=False)
    table.add_column("date", overflow="fold", min_width=10, no_wrap=False)
    for r in records:
        model = [r["backbone"] or "?"]
        if r["parameters"] is not None:
            model.append(f"{_count(r['parameters'])} params")
        if r["input_size"]:
            height, width = r["input_size"]
            model.append(f"{height}x{width}" + (f" {r['fit']}" if r["fit"] not in (None, "crop")
                                                 else ""))
        training = []
        if r["train_minutes"] is not None:
            training.append(f"{r['train_minutes']:.1f} min")
        if r["peak_memory_mb"] is not None:
            training.append(_memory(r["peak_memory_mb"]))
        if r["precision"]:
            training.append(str(r["precision"]))
        date, _, clock = (r["date"] or "").partition("T")
        table.add_row(r["name"], "\n".join(t["name"] for t in r["tasks"]) or "?",
                      "\n".join(model), _validation_cell(r), "\n".join(training) or "–",
                      f"{date}\n{clock[:5]}".strip())
    return table


# --- reading a run ------------------------------------------------------------------------

def _read_json(path: Path, problems: list[str]) -> Any:
    name = path.name if path.parent.name != "model" else f"model/{path.name}"
    if not path.is_file():
        problems.append(f"{name}: missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{name}: unreadable ({exc})")
        return None


def _describe_model(meta: dict, record: dict, problems: list[str]) -> None:
    record["backbone"] = meta.get("architecture")
    heads = meta.get("heads")
    if not heads and meta.get("classes"):  # format 1: one classification head 'label'
        heads = [{"name": "label", "kind": "classification", "classes": meta["classes"]}]
    for head in heads or []:
        if isinstance(head, dict) and head.get("kind", "classification") != "embedding":
            record["tasks"].append({"name": str(head.get("name")),
                                    "kind": str(head.get("kind", "classification")),
                                    "classes": len(head.get("classes") or []),
                                    "metrics": {}})
    pre = meta.get("preprocess")
    if isinstance(pre, dict) and "size" in pre:
        try:
            fit = str(pre.get("fit") or "crop")
            size = int(pre["size"])
            record["fit"] = fit
            record["input_size"] = ([size, size] if fit == "crop" else
                                    [int(pre.get("height") or size), int(pre.get("width") or size)])
        except (TypeError, ValueError) as exc:
            problems.append(f"model/{META_FILE}: unreadable preprocess ({exc})")


def _describe_results(summary: dict, record: dict, monitor: str) -> None:
    seconds = _number(summary.get("train_seconds"))
    record["train_minutes"] = None if seconds is None else round(seconds / 60, 2)
    record["peak_memory_mb"] = _number(summary.get("peak_rss_mb"))
    precision = summary.get("precision")
    record["precision"] = precision if isinstance(precision, str) else None
    metrics = summary.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ValueError("'metrics' is not an object")
    tasks = record["tasks"]
    if not tasks:  # model.json unreadable: the task names metrics.json knows
        names = list(metrics["tasks"]) if isinstance(metrics.get("tasks"), dict) else []
        tasks += [{"name": n, "kind": None, "classes": None, "metrics": {}} for n in names]
    if not metrics:
        return
    if isinstance(metrics.get("tasks"), dict):
        record["score"] = _number(_get(metrics, "summary", "score"))
        for task in tasks:
            figures = metrics["tasks"].get(task["name"])
            figures = figures if isinstance(figures, dict) else {}
            key = MONITOR.get(task["kind"] or "", monitor)
            if figures.get(key) is None:  # kind unknown: the first headline figure it has
                key = next((k for ks in HEADLINE.values() for k in ks
                            if figures.get(k) is not None), key)
            task["metrics"] = {key: _number(figures.get(key))}
        return
    kind = tasks[0]["kind"] if tasks else None
    if kind not in HEADLINE:
        kind = "multilabel" if "micro_f1" in metrics else "classification"
    keys = HEADLINE[kind]
    if tasks:
        tasks[0]["metrics"] = {k: _number(metrics.get(k)) for k in keys}
    record["accuracy"] = _number(metrics.get("accuracy"))
    record["macro_f1"] = _number(metrics.get("macro_f1"))
    record["score"] = _number(metrics.get(MONITOR.get(kind, monitor)))


def _validation_cell(r: dict) -> str:
    tasks = r["tasks"]
    if r["problems"] and r["score"] is None and not any(t["metrics"] for t in tasks):
        return "[yellow]see note[/]"
    if len(tasks) == 1:
        figures = tasks[0]["metrics"]
        lines = [f"{SHORT.get(k, k)} {v:.3f}" for k, v in figures.items() if v is not None]
        return "\n".join(lines) or "no validation"
    lines = [f"score {r['score']:.3f}"] if r["score"] is not None else []
    for task in tasks:
        for key, value in task["metrics"].items():
            if value is not None:
                lines.append(f"{task['name']} {SHORT.get(key, key)} {value:.3f}")
    return "\n".join(lines) or "no validation"


def _number(value: Any) -> float | None:
    """A figure from a JSON file, or None for anything that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}k"
    return str(n)


def _memory(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")

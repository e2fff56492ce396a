"""A model card (`README.md`) next to the weights: what a model is, what it was trained on,
how well it did on validation and where it should not be trusted.

Everything in it comes from the model's own description (`ModelInfo`: architecture, heads,
pre-processing, resolved config, validation metrics) and the run's `metrics.json`
(`summary`: photo counts, time, precision, memory; kept beside the card as `training.json`);
nothing is estimated or filled in, so a field the run did not record is left out rather
than guessed. No torch import: cards are cheap to write and to read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_file, write_json_atomic
from ..errors import ModelError
from .resolve import BUNDLED_DIR

if TYPE_CHECKING:
    from .artifact import ModelInfo
    from .heads import HeadSpec

CARD_FILE = "README.md"
# The part of the run's summary the card was written from, kept beside it: a model made
# from this one without retraining (a new search vector, refit heads, a bundle) has no
# run of its own to read photo counts, time and memory from, and its card keeps them.
SUMMARY_FILE = "training.json"
SUMMARY_KEYS = ("num_train_images", "num_val_images", "skipped_images", "missing_images",
                "tasks", "train_seconds", "total_seconds", "precision", "peak_rss_mb",
                "kept", "stopped_early", "note", "picked", "metrics")
MAX_NAMES = 24  # class or tag names listed in full; longer lists are abbreviated
MAX_ROWS = 30  # per-class / per-tag rows in a metrics table

# Readable names of the metric keys the task kinds report (tasks/*.py), in display order.
CLASSIFICATION_METRICS = {
    "accuracy": "accuracy",
    "top3_accuracy": "top-3 accuracy",
    "macro_f1": "macro-F1",
    "macro_precision": "macro precision",
    "macro_recall": "macro recall",
}
MULTILABEL_METRICS = {
    "micro_f1": "micro-F1 (thresholds tuned on these photos)",
    "micro_f1_crossfit": "micro-F1, cross-fitted thresholds",
    "micro_f1_at_0.5": "micro-F1 at threshold 0.5",
    "micro_precision": "micro precision",
    "micro_recall": "micro recall",
    "macro_f1": "macro-F1 (tags present in validation)",
    "macro_f1_30": "macro-F1 (tags with 30+ validation photos)",
    "map": "mean average precision (mAP)",
    "exact_match": "exact match (every tag right)",
}
FITS = {
    "letterbox": "the whole photo fitted inside and padded with the mean colour",
    "stretch": "the whole photo resized to exactly this shape",
}


def write_model_card(model_dir: Path, info: ModelInfo, summary: dict | None = None) -> Path:
    """Write `model_dir/README.md` atomically, and beside it (`SUMMARY_FILE`) the part of
    `summary` it read; returns the card's path."""
    model_dir = Path(model_dir)
    target = model_dir / CARD_FILE
    with atomic_file(target, text=True, encoding="utf-8") as fh:
        fh.write(card_text(info, summary))
    # the summary's metrics only where the card read them: a trained model carries its
    # own in model.json, and a second copy would only grow every model folder
    read = [key for key in SUMMARY_KEYS if key != "metrics" or not info.metrics]
    kept = {key: summary[key] for key in read if key in (summary or {})}
    if kept:
        write_json_atomic(model_dir / SUMMARY_FILE, kept)
    return target


def carry_summary(source_dir: Path | None, model_dir: Path) -> None:
    """Give a model made from another without training (a new search vector, refit heads)
    the run summary its source's card was written from, if the source kept one."""
    summary = stored_summary(source_dir) if source_dir is not None else None
    if summary is not None:
        write_json_atomic(Path(model_dir) / SUMMARY_FILE, summary)


def stored_summary(model_dir: Path) -> dict | None:
    """The run summary a model folder's card was written from (`SUMMARY_FILE`), if kept."""
    path = Path(model_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable run summary ({exc})") from exc
    if not isinstance(summary, dict):
        raise ModelError(f"{path}: not a readable run summary (a JSON object is expected)")
    return summary


def card_text(info: ModelInfo, summary: dict | None = None) -> str:
    """The card as Markdown, from `info` (model.json) and `summary` (metrics.json)."""
    summary = summary or {}
    config = info.config or {}
    metrics = info.metrics or summary.get("metrics") or {}
    scored = [h for h in info.heads if h.head_kind.has_classes]
    sections = [
        _title(info, scored),
        _what_it_is(info, config),
        _tasks(info, scored),
        _data(config, summary, scored),
        _validation(scored, metrics, summary, config),
        _training(config, summary, metrics.get("refit"),
                  [h.name for h in scored if h.colour_statistics]),
        _limits(info, config, scored, metrics),
    ]
    return "\n\n".join(s.strip("\n") for s in sections if s) + "\n"


# --- sections -----------------------------------------------------------------------------

def _title(info: ModelInfo, scored: list[HeadSpec]) -> str:
    name = info.name or info.architecture
    tasks = ", ".join(f"`{h.name}` ({h.kind})" for h in scored) or "no scored task"
    return (f"# {name}\n\n"
            f"A fashionlens model on the `{info.architecture}` image backbone, with "
            f"{_plural(len(scored), 'task')}: {tasks}. This card was written from the "
            f"model's `model.json` and its training run's records.")


def _named_weights(pretrained: str) -> str:
    """Starting weights as the card names them: a bundled model's by its name, a
    checkpoint in the working folder (a run's) from there, so that a bundled model's card
    carries neither this machine's nor the builder's home folder; anything else as given."""
    path, here = Path(pretrained).resolve(), Path.cwd()
    if path.is_relative_to(BUNDLED_DIR):
        return f"bundled `{path.relative_to(BUNDLED_DIR).as_posix()}`"
    if path.is_relative_to(here):
        return f"`{path.relative_to(here).as_posix()}`"
    return f"`{pretrained}`"


def _what_it_is(info: ModelInfo, config: dict) -> str:
    pre = info.preprocess
    height, width = pre.shape
    lines = ["## What it is", "",
             f"- Architecture: `{info.architecture}`"]
    pretrained = _get(config, "model", "pretrained")
    if pretrained:
        lines[-1] += f" (starting weights: {_named_weights(str(pretrained))})"
    input_line = f"- Input: {height}×{width} RGB (height × width), fit `{pre.fit}`: "
    if pre.fit == "crop":
        input_line += (f"short side resized to {pre.resize_size} px, then a centre crop "
                       f"(crop fraction {pre.crop_pct:g})")
    else:
        input_line += FITS.get(pre.fit, pre.fit)
    if pre.canvases:
        others = ", ".join(f"{h}×{w}" for h, w in pre.canvases)
        input_line += (f"; a photo whose aspect ratio is nearer that of {others} goes into "
                       "that canvas instead")
    lines.append(input_line + ".")
    lines.append(f"- Normalisation: mean {_numbers(pre.mean)}, std {_numbers(pre.std)}; "
                 f"{pre.interpolation} resizing.")
    lines.append(f"- Heads: {', '.join(f'`{h.name}` ({h.kind})' for h in info.heads)}.")
    return "\n".join(lines)


def _tasks(info: ModelInfo, scored: list[HeadSpec]) -> str:
    lines = ["## Tasks"]
    for head in info.heads:
        lines += ["", f"### `{head.name}` ({head.kind})", ""]
        description = head.head_kind.description
        if head.kind == "embedding":
            dim = (info.embedding or {}).get("dim")
            lines.append(f"{description.capitalize()}" + (f": {dim} numbers per photo."
                                                          if dim else "."))
            continue
        noun = "tags" if head.kind == "multilabel" else "classes"
        column = f" from the data column `{head.column}`" if head.column else ""
        lines.append(f"{description.capitalize()}; {len(head.classes)} {noun}{column}: "
                     f"{_names(head.classes)}.")
        if head.kind == "multilabel":
            if head.thresholds is not None:
                low, high = min(head.thresholds), max(head.thresholds)
                lines.append("")
                tuned_on = _thresholds_tuned_on(info.metrics or {}, head.name)
                lines.append(
                    f"A tag is kept when its score is at or above its own threshold (tuned "
                    f"on the validation photos; from {low:.3f} to {high:.3f})." if not tuned_on
                    else f"A tag is kept when its score is at or above its own threshold "
                         f"(from {low:.3f} to {high:.3f}), tuned on {tuned_on}.")
            else:
                lines.append("")
                lines.append("A tag is kept when its score is at least 0.5 (no thresholds "
                             "were tuned).")
            if head.max_tags is not None:
                lines.append(f"A photo gets at most {head.max_tags} tags (the highest "
                             "scores).")
            if head.parents:
                pairs = ", ".join(f"{child} → {parent}"
                                  for child, parent in sorted(head.parents.items()))
                lines.append(f"Tags with a parent say it too, and the parent is not listed "
                             f"again: {pairs}.")
    if len(lines) == 1:
        lines += ["", "This model declares no heads."]
    return "\n".join(lines)


def _data(config: dict, summary: dict, scored: list[HeadSpec]) -> str:
    data = config.get("data") or {}
    lines = ["## Training data", ""]
    if config.get("sources"):  # a joint run: its `data` section is unused
        lines += [_source_line(source, config.get("seed")) for source in config["sources"]]
        data = {}
    teacher = config.get("teacher") or {}
    if teacher.get("model"):
        lines.append(_teacher_line(teacher))
    if not data and not summary:
        return "\n".join(lines + ["The training data was not recorded with this model."])
    path = data.get("path")
    if path:
        lines.append(f"- Source: `{path}`")
    if str(path or "").lower().endswith((".csv", ".tsv", ".txt")):
        detail = [f"images in column `{data.get('image_column', 'image')}`"]
        if data.get("image_dir"):
            detail.append(f"under `{data['image_dir']}`")
        if data.get("image_extension"):
            detail.append(f"extension `{data['image_extension']}`")
        lines.append(f"- Layout: CSV file, {', '.join(detail)}")
        single = len(scored) == 1 and not scored[0].column
        columns = ([f"`{data['target_column']}` → `{scored[0].name}`"]
                   if single and data.get("target_column")
                   else [f"`{h.column}` → `{h.name}`" for h in scored if h.column])
        if columns:
            lines.append(f"- Label columns: {', '.join(columns)}")
    elif path:
        lines.append("- Layout: a folder per class (the class is the sub-folder's name)")
    split = _split(data, config.get("seed"))
    if split:
        lines.append(f"- Split: {split}")
    if data.get("exclude_labels"):
        lines.append(f"- Left out labels: {', '.join(map(str, data['exclude_labels']))}")
    counts = [f"{summary[key]} {what}" for key, what in
              (("num_train_images", "training photos"),
               ("num_val_images", "validation photos")) if key in summary]
    if counts:
        lines.append(f"- Photos: {', '.join(counts)}")
    unread = len(summary.get("skipped_images") or {}) + len(summary.get("missing_images") or [])
    if unread:
        lines.append(f"- Listed but not used (unreadable or missing): {unread} photos")
    for name, report in (summary.get("tasks") or {}).items():
        if not isinstance(report, dict):
            continue
        folded = {k: v for k, v in report.items() if k.startswith("folded_into_")}
        for key, values in folded.items():
            lines.append(f"- `{name}`: rare values folded into `{key[len('folded_into_'):]}`: "
                         f"{_names(_keys(values))}")
        if report.get("tags_not_learned"):
            lines.append(f"- `{name}`: tags too rare to learn (not predicted): "
                         f"{_names(_keys(report['tags_not_learned']))}")
    return "\n".join(lines)


def _validation(scored: list[HeadSpec], metrics: dict, summary: dict, config: dict) -> str:
    lines = ["## Validation metrics", ""]
    if not metrics:
        return "\n".join(lines + ["No validation metrics were recorded (the run had no "
                                  "validation photos)."])
    per_task = metrics.get("tasks") if isinstance(metrics.get("tasks"), dict) else None
    if per_task is None:
        per_task = {scored[0].name if scored else "label": metrics}
    kinds = {h.name: h.kind for h in scored}
    where = (f"on the {summary['num_val_images']} validation photos"
             if "num_val_images" in summary else "on the validation photos")
    tta = " with test-time augmentation" if _get(config, "train", "tta") else ""
    lines.append(f"Measured {where}{tta}; the model did not train on them.")
    overall = metrics.get("summary") if isinstance(metrics.get("summary"), dict) else {}
    if "score" in overall:
        lines += ["", f"Overall score: {_fmt(overall['score'])} (the mean of each task's "
                      f"monitored figure: {_monitors(per_task, kinds, config)})."]
    for name, figures in per_task.items():
        if not isinstance(figures, dict):
            continue
        kind = kinds.get(name) or ("multilabel" if "micro_f1" in figures else "classification")
        lines += ["", f"### `{name}` ({kind})", ""]
        names = MULTILABEL_METRICS if kind == "multilabel" else CLASSIFICATION_METRICS
        tuned_on = _thresholds_tuned_on(metrics, name) if kind == "multilabel" else None
        if tuned_on:
            names = {**names, "micro_f1": f"micro-F1 (thresholds tuned on {tuned_on})"}
        rows = [(label, _fmt(figures[key])) for key, label in names.items()
                if figures.get(key) is not None]
        if "num_images" in figures:
            rows.append(("photos scored", str(figures["num_images"])))
        lines += _table(("metric", "value"), rows)
        if kind == "multilabel" and tuned_on:
            lines += ["", "`micro_f1` uses the shipped thresholds, tuned by `refit-heads` on "
                          "scores of the training photos from heads fitted without them, so "
                          "these validation photos are held out; `micro_f1_crossfit` uses "
                          "thresholds tuned on the other half of the validation photos (two "
                          "halves, each scored with the other's thresholds)."]
        elif kind == "multilabel":
            lines += ["", "`micro_f1` uses thresholds tuned on these same validation photos, "
                          "which flatters it; `micro_f1_crossfit` uses thresholds tuned on the "
                          "other half of the validation photos (two halves, each scored with "
                          "the other's thresholds) and is the fairer figure."]
        if kind == "multilabel":
            lines += _per_tag(figures.get("per_tag") or {})
        else:
            lines += _per_class(figures.get("per_class") or {})
    return "\n".join(lines)


def _thresholds_tuned_on(metrics: dict, head: str) -> str | None:
    """Where a refit head's thresholds were tuned (`refit.json`'s `decisions`), if it was
    refit and kept; None: on the validation photos, by training."""
    refit = (metrics.get("refit") or {}).get(head)
    if not isinstance(refit, dict) or not refit.get("kept"):
        return None
    decisions = refit.get("decisions")
    return decisions.get("thresholds_from") if isinstance(decisions, dict) else None


def _training(config: dict, summary: dict, refit: dict | None = None,
              colour_readers: list[str] | None = None) -> str:
    lines = ["## Training", ""]
    if "train_seconds" in summary:
        line = f"- Training time: {summary['train_seconds'] / 60:.1f} min"
        if "total_seconds" in summary:
            line += f" ({summary['total_seconds'] / 60:.1f} min for the whole run)"
        lines.append(line)
    if summary.get("precision"):
        lines.append(f"- Precision: {summary['precision']}")
    if "peak_rss_mb" in summary:
        lines.append(f"- Peak memory: {summary['peak_rss_mb']:.0f} MB (resident set size "
                     f"of the training process)")
    epochs = _get(config, "train", "epochs")
    if epochs is not None:
        line = f"- Epochs: {epochs}"
        if summary.get("kept"):
            line += f"; weights kept from {summary['kept']}"
        if summary.get("stopped_early"):
            line += " (stopped early)"
        lines.append(line)
    if config.get("seed") is not None:
        lines.append(f"- Seed: {config['seed']}")
    if summary.get("note"):
        lines.append(f"- Note: {summary['note']}")
    picked = summary.get("picked")
    if isinstance(picked, dict) and picked.get("heads_from_second"):
        heads = ", ".join(f"`{h}`" for h in picked["heads_from_second"])
        lines.append(f"- Heads {heads} come from another run on the same backbone and "
                     f"validation photos ({Path(str(picked.get('second', ''))).name}; "
                     "tools/pick_heads.py), with their validation figures; the rest are "
                     "this run's")
    if isinstance(refit, dict) and refit:
        figures = "; ".join(
            f"`{name}` {r.get('monitor', 'score')} {_fmt(r.get('before'))} -> "
            f"{_fmt(r.get('after'))}{'' if r.get('kept') else ' (not kept)'}"
            for name, r in refit.items() if isinstance(r, dict))
        lines.append("- Heads refit on frozen features, each also reading the backbone's "
                     "tapped stages (`fashionlens refit-heads`; kept only where validation "
                     f"improved): {figures}")
    if colour_readers:
        heads = ", ".join(f"`{h}`" for h in colour_readers)
        lines.append(f"- {heads} also read the photo's colour statistics (soft RGB "
                     "histograms computed in the same forward pass; `--colour-statistics`)")
    if len(lines) == 2:
        lines.append("Not recorded with this model.")
    return "\n".join(lines)


def _limits(info: ModelInfo, config: dict, scored: list[HeadSpec], metrics: dict) -> str:
    path = (config.get("data") or {}).get("path")
    source = f"the photos in `{path}`" if path else "its training photos"
    lines = ["## Intended use and limits", "",
             f"- Intended use: describing garment photos like {source} "
             f"({', '.join(f'`{h.name}`' for h in scored) or 'no scored task'}); for "
             f"example to pre-fill listings for a person to check.",
             f"- It learned only from {source}. Photos unlike them (other photography styles, "
             "lighting or backgrounds, garment types that are not among its classes) still "
             "get answers, often confident and wrong."]
    if any(h.kind == "classification" for h in scored):
        lines.append("- A classification head always picks one of its classes; it cannot "
                     "say \"none of these\".")
    if any(h.kind == "multilabel" for h in scored):
        lines.append("- Tag thresholds were tuned on the validation photos, so figures "
                     "measured with them on those photos are optimistic; on new photos "
                     "expect results nearer `micro_f1_crossfit`.")
    if metrics:
        lines.append("- The validation figures come from the same source as the training "
                     "photos; on other sources expect them to be lower.")
    lines.append("- Not for decisions about people: it describes garments, not the people "
                 "who wear or sell them.")
    return "\n".join(lines)


# --- helpers ------------------------------------------------------------------------------

def _per_class(per_class: dict) -> list[str]:
    rows = [(name, _fmt(row.get("precision")), _fmt(row.get("recall")), _fmt(row.get("f1")),
             str(row.get("support", "")))
            for name, row in per_class.items() if isinstance(row, dict)]
    return _long_table("Per class:", ("class", "precision", "recall", "F1", "support"), rows)


def _per_tag(per_tag: dict) -> list[str]:
    rows = [(name, _fmt(row.get("f1")), _fmt(row.get("ap")), _fmt(row.get("threshold")),
             str(row.get("support", "")))
            for name, row in per_tag.items() if isinstance(row, dict)]
    return _long_table("Per tag:", ("tag", "F1", "AP", "threshold", "support"), rows)


def _long_table(caption: str, header: Sequence[str], rows: list[tuple]) -> list[str]:
    if not rows:
        return []
    lines = ["", caption, ""] + _table(header, rows[:MAX_ROWS])
    if len(rows) > MAX_ROWS:
        lines += ["", f"… and {len(rows) - MAX_ROWS} more (see the run's `metrics.json`)."]
    return lines


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [row(header), "|" + "|".join("---" for _ in header) + "|"] + [row(r) for r in rows]


def _monitors(per_task: dict, kinds: dict, config: dict) -> str:
    """Which figure each task's share of the score is (mirrors Task.monitor)."""
    monitor = _get(config, "train", "monitor") or "accuracy"
    return ", ".join(f"`{name}` {'map' if kinds.get(name) == 'multilabel' else monitor}"
                     for name in per_task)


def _teacher_line(teacher: dict) -> str:
    """Which model's answers a task learned beside its labels (`teacher:`)."""
    head = f" (head `{teacher['head']}`)" if teacher.get("head") else ""
    task = f"`{teacher['task']}`" if teacher.get("task") else "the first task"
    rows = (f" on the photos of {_names(teacher['sources'])}" if teacher.get("sources")
            else " on every training photo")
    return (f"- Teacher: `{teacher['model']}`{head} taught {task}{rows} (knowledge "
            f"distillation, weight {teacher.get('weight')}, temperature "
            f"{teacher.get('temperature')})")


def _source_line(source: dict, seed: Any) -> str:
    """One source of a joint run: where its photos are, which columns feed which task,
    how it is split and drawn."""
    data = source.get("data") or {}
    parts = [f"- Source `{source.get('name')}`: `{data.get('path')}`"]
    columns = source.get("columns") or {}
    if columns:
        parts.append("columns " + ", ".join(f"`{c}` → `{t}`" for t, c in columns.items()))
    split = _split(data, seed)
    if split:
        parts.append(f"split {split}")
    for column, values in (source.get("exclude") or {}).items():
        parts.append(f"rows whose `{column}` is {_names(values)} left out")
    if source.get("draws"):
        parts.append(f"{source['draws']} photos drawn per epoch")
    return "; ".join(parts)


def _split(data: dict, seed: Any) -> str:
    if data.get("split_column"):
        return (f"by the column `{data['split_column']}`: rows marked "
                f"{_names(data.get('train_splits') or [])} for training, "
                f"{_names(data.get('val_splits') or [])} for validation")
    fraction = data.get("val_fraction")
    if fraction is None:
        return ""
    text = f"a random {fraction:.0%} of the photos held out for validation"
    if data.get("group_column"):
        text += f", whole groups of `{data['group_column']}` on one side"
    if seed is not None:
        text += f" (seed {seed})"
    return text


def _names(names: Sequence[str], limit: int = MAX_NAMES) -> str:
    shown = ", ".join(str(n) for n in names[:limit])
    if len(names) > limit:
        shown += f", … ({len(names) - limit} more)"
    return shown or "none"


def _keys(values: Any) -> list[str]:
    if isinstance(values, dict):
        return [str(k) for k in values]
    if isinstance(values, list | tuple):
        return [str(v) for v in values]
    return [str(values)]


def _numbers(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _get(config: dict, section: str, key: str) -> Any:
    part = config.get(section)
    return part.get(key) if isinstance(part, dict) else None

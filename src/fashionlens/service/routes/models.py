"""The served models: their tasks (one per scored head, with classes, tag thresholds and
validation metrics per task, the words a person reads for them and the task's confusion
matrix), the data they were trained and measured on, the training curves of their run,
and the choice of the default.

A model's top-level `metrics`, `per_class` and `classes` keep the first release's
meaning: a one-task model's overall figures and per-class table; for a multi-task model
`metrics` holds the summary's figures (`summary` the whole summary) and `per_class` the
first task's table.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from ...models.names import class_titles, task_title
from ..engine import PLOTS, Engine, ServedModel
from ..errors import ApiError, error_responses
from ..security import require_write
from ..tasks import task_listing
from .common import API_PREFIX, get_engine

router = APIRouter(tags=["models"])

# The model-wide figures: a one-task model's own, a multi-task summary's mean monitored
# `score` and photo count.
OVERALL = ("accuracy", "top3_accuracy", "macro_f1", "macro_precision", "macro_recall",
           "num_images", "score")


# A task's own confusion matrix is `confusion-<task>.png` beside the model (a multi-task
# run writes one per task); a one-task model's may be the model's `confusion.png`.
TASK_PLOT = "confusion-{task}"
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .-]*")


def _plot_url(served: ServedModel, which: str) -> str | None:
    return f"{API_PREFIX}/models/{served.name}/plots/{which}" if served.plot(which) else None


def _task_plot(served: ServedModel, task: str) -> str | None:
    """The plot name of a task's confusion matrix, None when there is none."""
    if SAFE_NAME.fullmatch(task) and served.plot(TASK_PLOT.format(task=task)):
        return TASK_PLOT.format(task=task)
    if len(served.info.scored_heads) == 1 and served.plot("confusion"):
        return "confusion"
    return None


def _data(served: ServedModel, tasks: list[dict]) -> dict:
    """What the model learned from and was measured on: the data set's name (the last
    parts of its path only: the server's folders are not published) and photo counts
    where they were recorded (the run's metrics.json; validation from the metrics)."""
    config = served.info.config or {}
    source = (config.get("data") or {}).get("path") if isinstance(config, dict) else None
    name = None
    if source:
        parts = PurePath(str(source)).parts
        name = "/".join(parts[-2:]) if PurePath(str(source)).suffix else parts[-1]
    record: dict = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((served.model_dir.parent / "metrics.json").read_text())
        record = loaded if isinstance(loaded, dict) else {}
    counts = [t["metrics"].get("num_images") for t in tasks]
    measured = max((c for c in counts if isinstance(c, int | float)), default=None)
    train = record.get("num_train_images")
    val = record.get("num_val_images", measured)
    return {"name": name,
            "train_images": train if isinstance(train, int) else None,
            "val_images": int(val) if isinstance(val, int | float) else None}


def model_summary(engine: Engine, served: ServedModel) -> dict:
    """One served model as GET /models lists it."""
    metrics = served.metrics()
    info = served.info
    tasks = task_listing(info, metrics)
    for task in tasks:
        plot = _task_plot(served, task["name"])
        task.update(title=task_title(task["name"]), class_titles=class_titles(task["classes"]),
                    confusion=_plot_url(served, plot) if plot else None)
    summary = metrics.get("summary") if isinstance(metrics.get("tasks"), dict) else None
    overall = summary if isinstance(summary, dict) else metrics
    return {
        "name": served.name,
        "default": served.name == engine.default_model,
        "architecture": info.architecture,
        "task": info.task,
        "tasks": tasks,
        "classes": info.classes,
        "input_size": info.preprocess.size,
        "input_shape": list(info.preprocess.shape),  # [height, width]
        "input_shapes": [list(s) for s in info.preprocess.shapes],  # canvases included
        "metrics": {k: v for k, v in overall.items() if k in OVERALL},
        "summary": summary,
        "per_class": tasks[0]["per_class"] if tasks else {},
        "confusion_matrix": metrics.get("confusion_matrix"),
        "plots": {which: _plot_url(served, which) for which in PLOTS},
        "data": _data(served, tasks),
        "unknown_threshold": served.predictor.unknown_line(),  # None: no "not a garment" check
        "catalog_queries": bool(engine.query and engine.query.model is served),
    }


@router.get("/models", summary="The served models with their metrics")
async def list_models(request: Request) -> dict:
    engine = get_engine(request)
    return {"default": engine.default_model,
            "models": [model_summary(engine, m) for m in engine.models.values()]}


class DefaultChoice(BaseModel):
    """The body of PUT /models/default."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200, description="A served model's name.",
                       examples=["clothing10"])


@router.put("/models/default", summary="Choose the default model",
            dependencies=[Depends(require_write)],
            responses=error_responses(400, 401, 403, 404, 408, 413, 422))
async def set_default(request: Request, body: Annotated[DefaultChoice, Body()]) -> dict:
    engine = get_engine(request)
    engine.default_model = engine.model(body.model).name
    return {"default": engine.default_model}


def _lookup(engine: Engine, name: str) -> ServedModel:
    # "default" names the current default unless a model is really called so.
    return engine.model(engine.default_model if name == "default" and
                        name not in engine.models else name)


@router.get("/models/{name}", summary="One served model", responses=error_responses(404))
async def get_model(request: Request, name: str) -> dict:
    engine = get_engine(request)
    return model_summary(engine, _lookup(engine, name))


@router.get("/models/{name}/plots/{which}",
            summary="Confusion matrix (of the model or of one task: confusion-TASK) or "
                    "training curves",
            response_class=FileResponse, responses={
                200: {"content": {"image/png": {"schema": {"type": "string",
                                                           "format": "binary"}}},
                      "description": "The PNG image"}, **error_responses(404)})
async def model_plot(request: Request, name: str, which: str) -> FileResponse:
    served = _lookup(get_engine(request), name)
    known = [*PLOTS, *(TASK_PLOT.format(task=h.name) for h in served.info.scored_heads
                       if SAFE_NAME.fullmatch(h.name))]
    if which not in known:
        raise ApiError(404, "unknown_plot", f"unknown plot '{which}'; plots: {', '.join(known)}")
    path = served.plot(which)
    if path is None:
        raise ApiError(404, "no_plot", f"model '{served.name}' has no {which} image")
    return FileResponse(path, media_type="image/png")

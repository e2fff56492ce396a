"""The served models: their tasks (one per scored head, with classes, tag thresholds and
validation metrics per task), the confusion matrix and training curves of their run, and
the choice of the default.

A model's top-level `metrics`, `per_class` and `classes` keep the first release's
meaning: a one-task model's overall figures and per-class table; for a multi-task model
`metrics` holds the summary's figures (`summary` the whole summary) and `per_class` the
first task's table.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

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


def model_summary(engine: Engine, served: ServedModel) -> dict:
    """One served model as GET /models lists it."""
    metrics = served.metrics()
    info = served.info
    tasks = task_listing(info, metrics)
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
        "metrics": {k: v for k, v in overall.items() if k in OVERALL},
        "summary": summary,
        "per_class": tasks[0]["per_class"] if tasks else {},
        "confusion_matrix": metrics.get("confusion_matrix"),
        "plots": {which: (f"{API_PREFIX}/models/{served.name}/plots/{which}"
                          if served.plot(which) else None) for which in PLOTS},
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


@router.get("/models/{name}/plots/{which}", summary="Confusion matrix or training curves",
            response_class=FileResponse, responses={
                200: {"content": {"image/png": {"schema": {"type": "string",
                                                           "format": "binary"}}},
                      "description": "The PNG image"}, **error_responses(404)})
async def model_plot(request: Request, name: str, which: str) -> FileResponse:
    served = _lookup(get_engine(request), name)
    if which not in PLOTS:
        raise ApiError(404, "unknown_plot", f"unknown plot '{which}'; plots: {', '.join(PLOTS)}")
    path = served.plot(which)
    if path is None:
        raise ApiError(404, "no_plot", f"model '{served.name}' has no {which} image")
    return FileResponse(path, media_type="image/png")

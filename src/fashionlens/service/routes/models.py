"""The served models: their classes, validation metrics (overall and per class), the
confusion matrix and training curves of their run, and the choice of the default."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from ..engine import PLOTS, Engine, ServedModel
from ..errors import ApiError, error_responses
from ..security import require_write
from .common import API_PREFIX, get_engine

router = APIRouter(tags=["models"])

OVERALL = ("accuracy", "top3_accuracy", "macro_f1", "macro_precision", "macro_recall",
           "num_images")


def describe(engine: Engine, served: ServedModel) -> dict:
    metrics = served.metrics()
    info = served.info
    return {
        "name": served.name,
        "default": served.name == engine.default_model,
        "architecture": info.architecture,
        "task": info.task,
        "tasks": [{"name": info.task, "type": "single_label", "classes": info.classes}],
        "classes": info.classes,
        "input_size": info.preprocess.size,
        "metrics": {k: metrics[k] for k in OVERALL if k in metrics},
        "per_class": metrics.get("per_class", {}),
        "confusion_matrix": metrics.get("confusion_matrix"),
        "plots": {which: (f"{API_PREFIX}/models/{served.name}/plots/{which}"
                          if served.plot(which) else None) for which in PLOTS},
        "catalog_queries": bool(engine.query and engine.query.model is served),
    }


@router.get("/models", summary="The served models with their metrics")
async def list_models(request: Request) -> dict:
    engine = get_engine(request)
    return {"default": engine.default_model,
            "models": [describe(engine, m) for m in engine.models.values()]}


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
    return describe(engine, _lookup(engine, name))


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

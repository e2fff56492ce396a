"""Classify (or, for tag models, tag) one photo.

The response lists tasks, one per scored head of the model, so a model with several
tasks (garment type, colour, pattern) or with tags and thresholds fits the same shape:
`{"model": ..., "tasks": [{"name", "type", ...}, ...]}`. Each entry is the head's answer
from `models.heads.describe` plus what the API adds (`service.tasks`):

- `"type": "single_label"` (a classification head): `label` (null when below
  `threshold`), `probability`, `top_k`, `classes` (the top k, leaving out those below
  `threshold`) and `num_classes`;
- `"type": "multi_label"` (a multilabel head): `tags` (every tag at or above its
  threshold, highest first), `scores` (each tag's probability) and `thresholds` (each
  tag's threshold used: the model's own, or `threshold` for every tag when given); a
  model with a cap and tag parents also gives `max_tags` and `parents`, and its `tags`
  hold at most `max_tags`, a child carrying its `parent` instead of both being listed.
"""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Query, Request

from ...data.preprocess import tta_arrays
from ...errors import shorten
from ...inference.outputs import VECTOR
from ...models.info import chosen_tasks
from ..engine import ServedModel
from ..errors import ApiError, error_responses
from ..tasks import task_answer
from ..uploads import IMAGE_BODY_OPENAPI, read_image, read_image_bytes
from .common import get_engine

router = APIRouter(tags=["classify"])
# A list parameter's Query is built once (ruff B008), as similar.py's LIKE is.
TASKS = Query(None, max_length=100, description="Only this task's answer (repeatable: "
                                                "task=type&task=colour); default: every task "
                                                "of the model.")


def tasks_of(served: ServedModel, scores: dict[str, np.ndarray], top_k: int,
             threshold: float | None, wanted: list[str] | None = None) -> list[dict]:
    """Each scored head's answer for one photo (`wanted`: those tasks, in that order)."""
    heads = {head.name: head for head in served.heads}
    return [task_answer(heads[name], scores[name].tolist(), top_k, threshold)
            for name in wanted or heads]


def checked_tasks(served: ServedModel, asked: list[str] | None) -> list[str] | None:
    """The tasks `task=` keeps (None: all); a name the model has no task of is a 400
    naming those it has."""
    names = [head.name for head in served.heads]
    try:
        return chosen_tasks(asked, names)
    except KeyError as missing:
        raise ApiError(400, "unknown_task", f"task '{shorten(missing.args[0], 80)}': model "
                       f"'{served.name}' has no such task (its tasks: {', '.join(names)})"
                       ) from None


def _tta_scores(served: ServedModel, img) -> dict[str, np.ndarray]:
    """Each head's scores averaged over the test-time views (one run for all heads)."""
    views = tta_arrays(img, served.info.preprocess)
    return {name: values.mean(0) for name, values in served.predictor.scores(views).items()}


@router.post("/classify", summary="Classify a photo (multipart upload or raw image body)",
             openapi_extra=IMAGE_BODY_OPENAPI,
             responses=error_responses(400, 404, 408, 413, 415, 422))
async def classify(
    request: Request,
    model: str | None = Query(None, description="A served model's name (default: the "
                                                "service's default model)."),
    top_k: int = Query(5, ge=1, le=1000, description="How many classes to return "
                                                     "(single-label tasks)."),
    threshold: float | None = Query(None, ge=0.0, le=1.0,
                                    description="Single-label tasks: leave out classes "
                                                "below this probability (the label is "
                                                "null if none reaches it). Multi-label "
                                                "tasks: the threshold of every tag, in "
                                                "place of the model's own."),
    tta: bool = Query(False, description="Average over test-time views (slower, "
                                         "slightly more accurate)."),
    unknown_threshold: float | None = Query(None, ge=0.0, le=1.0,
                                            description="Call the photo unknown (not a "
                                                        "garment the model knows) when "
                                                        "its unknown_score is at least "
                                                        "this, in place of the model's "
                                                        "calibrated threshold."),
    task: list[str] | None = TASKS,
) -> dict:
    engine = get_engine(request)
    served = engine.model(model)  # an unknown model fails before the upload is read
    wanted = checked_tasks(served, task)
    if tta:
        img = await read_image(request, engine.settings.max_image_side, None)
        size = {"width": img.width, "height": img.height}
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(engine.inference, _tta_scores, served, img)
    else:
        data, name = await read_image_bytes(request)
        result = await served.photos.output(data, name)
        size = {"width": result.width, "height": result.height}
        scores = dict(result.output.scores)
        if result.output.vector is not None:
            scores[VECTOR] = result.output.vector
    used = served.predictor.unknown_line(unknown_threshold)
    return {"model": served.name, "image": size, "top_k": top_k, "threshold": threshold,
            "tta": tta, **served.predictor.unknown_fields(scores, used),
            "unknown_threshold": used,
            "tasks": tasks_of(served, scores, top_k, threshold, wanted)}

"""Classify (or, for tag models, tag) one photo.

The response lists tasks, each with its classes and probabilities, so a model with
several tasks (garment type, colour, pattern) or with tags and thresholds fits the same
shape: `{"model": ..., "tasks": [{"name", "type", "label", "classes": [...]}, ...]}`.
"""

from __future__ import annotations

import asyncio

import numpy as np
import torch
from fastapi import APIRouter, Query, Request

from ...data.transforms import tta_views
from ...inference.runtime import PROBABILITIES
from ..engine import ServedModel
from ..errors import error_responses
from ..uploads import IMAGE_BODY_OPENAPI, read_image, read_image_bytes
from .common import get_engine

router = APIRouter(tags=["classify"])


def classification_task(served: ServedModel, probs: np.ndarray, top_k: int,
                        threshold: float | None) -> dict:
    """One single-label task: the best class (None below the threshold) and the top k."""
    order = np.argsort(-probs)
    best = int(order[0])
    sure = threshold is None or probs[best] >= threshold
    classes = [{"label": served.classes[i], "probability": round(float(probs[i]), 6)}
               for i in order[:top_k] if threshold is None or probs[i] >= threshold]
    return {"name": served.info.task, "type": "single_label",
            "label": served.classes[best] if sure else None,
            "probability": round(float(probs[best]), 6), "classes": classes,
            "num_classes": len(served.classes)}


def _tta_probabilities(served: ServedModel, img) -> np.ndarray:
    views = torch.stack(tta_views(img, served.info.preprocess))
    return served.runtime.run(views, (PROBABILITIES,))[PROBABILITIES].mean(0)


@router.post("/classify", summary="Classify a photo (multipart upload or raw image body)",
             openapi_extra=IMAGE_BODY_OPENAPI,
             responses=error_responses(400, 404, 408, 413, 415, 422))
async def classify(
    request: Request,
    model: str | None = Query(None, description="A served model's name (default: the "
                                                "service's default model)."),
    top_k: int = Query(5, ge=1, le=1000, description="How many classes to return."),
    threshold: float | None = Query(None, ge=0.0, le=1.0,
                                    description="Leave out classes below this probability; "
                                                "the label is null if none reaches it."),
    tta: bool = Query(False, description="Average over test-time views (slower, "
                                         "slightly more accurate)."),
) -> dict:
    engine = get_engine(request)
    served = engine.model(model)  # an unknown model fails before the upload is read
    if tta:
        img = await read_image(request, engine.settings.max_image_side, None)
        size = {"width": img.width, "height": img.height}
        loop = asyncio.get_running_loop()
        probs = await loop.run_in_executor(engine.inference, _tta_probabilities, served, img)
    else:
        data, name = await read_image_bytes(request)
        result = await engine.photo_output(data, name, served.name, served.draft_size,
                                           served.transform, served.batcher.submit)
        size = {"width": result.width, "height": result.height}
        probs = result.output.probabilities
    return {"model": served.name, "image": size, "top_k": top_k, "threshold": threshold,
            "tta": tta, "tasks": [classification_task(served, probs, top_k, threshold)]}

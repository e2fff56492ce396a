"""Liveness and readiness, for a process supervisor or a load balancer."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .common import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: models loaded and the catalog answering")
async def readyz(request: Request) -> JSONResponse:
    engine = get_engine(request)
    body: dict = {"status": "ready", "models": list(engine.models),
                  "default_model": engine.default_model, "catalog": None,
                  "batching": engine.batching_stats()}
    if engine.catalog is not None:
        try:
            items = await asyncio.wait_for(engine.catalog.call(len, engine.catalog.catalog), 5)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            body.update(status="not ready", reason=f"catalog not answering ({exc!r})")
            return JSONResponse(body, status_code=503)
        body["catalog"] = {"items": items}
    return JSONResponse(body)

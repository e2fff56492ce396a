"""Helpers shared by the route modules: the engine of the app, items as JSON, steering."""

from __future__ import annotations

import math
from urllib.parse import quote

from fastapi import Request

from ...search.catalog import Item
from ..engine import CatalogService, Engine
from ..errors import ApiError

API_PREFIX = "/api/v1"


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def photo_url(item_id: str) -> str:
    return f"{API_PREFIX}/items/{quote(item_id, safe='')}/photo"


def item_json(item: Item) -> dict:
    """An item for clients: its metadata and a URL for its photo (no server paths)."""
    data = item.to_dict()
    data.pop("image", None)
    data.pop("source", None)
    data["photo_url"] = photo_url(item.id)
    return data


def parse_steer(values: list[str], catalog: CatalogService) -> dict[str, float]:
    """`name:weight` (or `name=weight`) pairs, checked against the catalog's directions."""
    if not values:
        return {}
    if not catalog.supports_steering:
        raise ApiError(400, "steering_unavailable",
                       "steering is not available in this version of the catalog")
    known = catalog.directions()
    steer: dict[str, float] = {}
    for value in values:
        name, sep, weight = value.replace("=", ":").rpartition(":")
        name = name.strip()
        if not sep or not name:
            raise ApiError(400, "bad_steer", f"steer '{value}': expected NAME:WEIGHT, "
                                             "e.g. striped:0.5")
        try:
            number = float(weight)
        except ValueError:
            raise ApiError(400, "bad_steer",
                           f"steer '{value}': the weight '{weight}' is not a number") from None
        if not math.isfinite(number):
            raise ApiError(400, "bad_steer", f"steer '{value}': the weight must be finite")
        if name not in known:
            listed = ", ".join(known) if known else "none: this catalog has no learned directions"
            raise ApiError(400, "unknown_direction",
                           f"steer '{value}': unknown direction '{name}'; directions: {listed}")
        steer[name] = number
    return steer

"""Helpers shared by the route modules: the engine of the app, items as JSON, steering."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request

from ...search.catalog import Item
from ...search.steering import parse_steering
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
    data["photo_url"] = photo_url(item.id) if item.image is not None else None
    return data


async def parse_steer(values: list[str], catalog: CatalogService) -> dict[str, float]:
    """Steering weights (`striped=0.5`, `striped:0.5` or `+0.5 striped`, repeatable),
    checked against the catalog's learned directions before any photo is processed."""
    if not values:
        return {}
    if not catalog.supports_steering:
        raise ApiError(400, "steering_unavailable",
                       "steering is not available in this version of the catalog")
    weights = parse_steering(values)  # syntax errors: FashionLensError, reported as 400
    known = await catalog.call(catalog.directions)
    unknown = sorted(set(weights) - set(known))
    if unknown:
        listed = ", ".join(known) if known else "none (this catalog has no learned directions)"
        raise ApiError(400, "unknown_direction", f"unknown steering direction(s) "
                                                 f"{', '.join(unknown)}; directions: {listed}")
    return weights

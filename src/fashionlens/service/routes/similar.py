"""Similar items: for an uploaded photo or for an item of the catalog.

Filters (`filter=price<30`, repeatable) select candidates before the vector search;
steering weights (`steer=striped:0.5`, repeatable) move the query along the catalog's
learned attribute directions where the catalog has them.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from ..errors import error_responses
from ..uploads import IMAGE_BODY_OPENAPI, read_image_bytes
from .common import check_filters, filter_query, get_engine, item_json, parse_steer, steer_query

router = APIRouter(tags=["similar items"])

K = Query(10, ge=1, le=200, description="How many items to return.")
FILTERS = filter_query()
STEER = steer_query()


def _options(k: int, filters: list[str], steer: dict[str, float]) -> dict:
    """`Catalog.search`'s options for the query parameters."""
    return {"k": k, "filters": filters or None, **({"steer": steer} if steer else {})}


def _answer(query: dict, k: int, filters: list[str], steer: dict[str, float],
            matches: list) -> dict:
    results = [{**item_json(m.item), "distance": round(m.distance, 6),
                "similarity": round(m.similarity, 6)} for m in matches]
    return {"query": query, "k": k, "filters": filters, "steer": steer, "matches": results}


@router.post("/similar", summary="Items similar to an uploaded photo",
             openapi_extra=IMAGE_BODY_OPENAPI,
             responses=error_responses(400, 404, 408, 409, 413, 415, 422))
async def similar_to_photo(request: Request, k: int = K, filters: list[str] = FILTERS,
                           steer: list[str] = STEER) -> dict:
    engine = get_engine(request)
    catalog = engine.require_catalog()
    check_filters(filters)  # a bad filter is reported before the upload is processed
    weights = await parse_steer(steer, catalog)
    search = await engine.photo_search()
    data, name = await read_image_bytes(request)
    photo, matches = await search.similar(data, name, **_options(k, filters, weights))
    return _answer({"image": {"width": photo.width, "height": photo.height}}, k, filters,
                   weights, matches)


@router.get("/similar", summary="Items similar to an item of the catalog",
            responses=error_responses(400, 404, 422))
async def similar_to_item(request: Request,
                          item: str = Query(..., min_length=1, description="The item's id."),
                          k: int = K, filters: list[str] = FILTERS,
                          steer: list[str] = STEER) -> dict:
    catalog = get_engine(request).require_catalog()
    check_filters(filters)
    weights = await parse_steer(steer, catalog)
    matches = await catalog.search(item=item, **_options(k, filters, weights))
    return _answer({"item": item}, k, filters, weights, matches)

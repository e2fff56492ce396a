"""Similar items: for an uploaded photo or for an item of the catalog.

Filters (`filter=price<30`, repeatable) select candidates before the vector search;
steering weights (`steer=striped:0.5`, repeatable) move the query along the catalog's
learned attribute directions where the catalog has them. `GET /more-like-these?like=ID`
(repeatable, with `unlike=ID`) asks for more like the items a shopper liked. Every match
says whether it is `weak` (below the catalog's relevance floor, `weak_below`);
`min_similarity` drops the matches below it.
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
LIKE = Query(..., min_length=1, max_length=100,
             description="An item a shopper liked (repeatable, 1 to 100).")
UNLIKE = Query([], max_length=100, description="An item to move away from (repeatable, up "
                                               "to 100; an item also liked counts as liked).")
MIN_SIMILARITY = Query(None, ge=-1.0, le=1.0,
                       description="Leave out matches less similar than this.")


def _options(k: int, filters: list[str], steer: dict[str, float],
             min_similarity: float | None = None) -> dict:
    """`Catalog.search`'s options for the query parameters."""
    return {"k": k, "filters": filters or None, **({"steer": steer} if steer else {}),
            **({"min_similarity": min_similarity} if min_similarity is not None else {})}


def _answer(query: dict, k: int, filters: list[str], steer: dict[str, float],
            matches: list, floor: float | None = None) -> dict:
    results = [{**item_json(m.item), "distance": round(m.distance, 6),
                "similarity": round(m.similarity, 6), "weak": m.weak} for m in matches]
    return {"query": query, "k": k, "filters": filters, "steer": steer,
            "weak_below": floor, "matches": results}


@router.post("/similar", summary="Items similar to an uploaded photo",
             openapi_extra=IMAGE_BODY_OPENAPI,
             responses=error_responses(400, 404, 408, 409, 413, 415, 422))
async def similar_to_photo(request: Request, k: int = K, filters: list[str] = FILTERS,
                           steer: list[str] = STEER,
                           min_similarity: float | None = MIN_SIMILARITY) -> dict:
    engine = get_engine(request)
    catalog = engine.require_catalog()
    check_filters(filters)  # a bad filter is reported before the upload is processed
    weights = await parse_steer(steer, catalog)
    search = await engine.photo_search()
    data, name = await read_image_bytes(request)
    photo, matches = await search.similar(data, name, **_options(k, filters, weights,
                                                                 min_similarity))
    floor = await catalog.call(catalog.catalog.relevance_floor)
    return _answer({"image": {"width": photo.width, "height": photo.height}}, k, filters,
                   weights, matches, floor)


@router.get("/similar", summary="Items similar to an item of the catalog",
            responses=error_responses(400, 404, 422))
async def similar_to_item(request: Request,
                          item: str = Query(..., min_length=1, description="The item's id."),
                          k: int = K, filters: list[str] = FILTERS,
                          steer: list[str] = STEER,
                          min_similarity: float | None = MIN_SIMILARITY) -> dict:
    catalog = get_engine(request).require_catalog()
    check_filters(filters)
    weights = await parse_steer(steer, catalog)
    matches = await catalog.search(item=item, **_options(k, filters, weights, min_similarity))
    floor = await catalog.call(catalog.catalog.relevance_floor)
    return _answer({"item": item}, k, filters, weights, matches, floor)


@router.get("/more-like-these", summary="More like the items a shopper liked (and less like "
                                        "those they did not)",
            responses=error_responses(400, 404, 422))
async def more_like_these(request: Request, like: list[str] = LIKE,
                          unlike: list[str] = UNLIKE, k: int = K,
                          filters: list[str] = FILTERS, steer: list[str] = STEER,
                          min_similarity: float | None = MIN_SIMILARITY) -> dict:
    """The query is the liked items' mean vector minus a quarter of the unliked ones'
    (`Catalog.search(like=..., unlike=...)`); the items named are left out."""
    catalog = get_engine(request).require_catalog()
    check_filters(filters)
    weights = await parse_steer(steer, catalog)
    matches = await catalog.search(like=like, unlike=unlike,
                                   **_options(k, filters, weights, min_similarity))
    floor = await catalog.call(catalog.catalog.relevance_floor)
    return _answer({"like": like, "unlike": unlike}, k, filters, weights, matches, floor)

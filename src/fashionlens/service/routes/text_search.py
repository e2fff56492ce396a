"""Search by words: `GET /api/v1/search?q=red striped summer shirt`.

The words naming values the catalog holds become conditions, the whole text ranks by
meaning (`search.text_query`); filters, steering and `min_similarity` work as for similar
items, and reads follow the same key rule. The answer has the similar-items shape, its
`query` saying how each word was used.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from ...search.text_encoder import TextSearchUnavailable
from ...search.text_query import MAX_TEXT, text_search
from ..errors import ApiError, error_responses
from .common import check_filters, get_engine, parse_steer
from .similar import FILTERS, MIN_SIMILARITY, STEER, K, _answer, _options

router = APIRouter(tags=["similar items"])


@router.get("/search", summary="Items matching words (search by words)",
            responses=error_responses(400, 404, 409, 422))
async def search_by_words(request: Request,
                          q: str = Query(..., min_length=1, max_length=MAX_TEXT,
                                         description="Words, e.g. 'red striped summer "
                                                     "shirt'."),
                          k: int = K, filters: list[str] = FILTERS,
                          steer: list[str] = STEER,
                          min_similarity: float | None = MIN_SIMILARITY) -> dict:
    catalog = get_engine(request).require_catalog()
    check_filters(filters)
    weights = await parse_steer(steer, catalog)
    options = _options(k, filters, weights, min_similarity)
    try:
        matches, query = await catalog.call(text_search, catalog.catalog, q, **options)
    except TextSearchUnavailable:  # the message names server paths: the operator's to read
        raise ApiError(409, "no_text_search", "search by words is not available on this "
                       "server: the catalog's model has no text alignment or the text "
                       "extra is not installed (`fashionlens search --text` there says "
                       "which)") from None
    return _answer(query.to_dict(), k, filters, weights, matches, query.weak_below)

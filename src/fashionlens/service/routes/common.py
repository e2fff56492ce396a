"""Helpers shared by the route modules: the engine of the app, items as JSON, steering."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from fastapi import Query, Request

from ...errors import shorten
from ...search.catalog import Item
from ...search.filters import parse_filters
from ...search.steering import parse_steering
from ..engine import CatalogService, Engine
from ..errors import ApiError

API_PREFIX = "/api/v1"


def _anycase(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


# The filter grammar the API accepts, as one regular expression that both Python and the
# OpenAPI schema (ECMAScript) read alike; everything it matches is a filter the catalog
# can run, so the schema allows exactly what the server does.
_SP = " *"
_TEXT_FIELD = "(?:" + "|".join(_anycase(f) for f in ("id", "category", "colour", "color",
                                                      "size")) + ")"
_EXTRA_FIELD = _anycase("extra") + r"\.[A-Za-z0-9_-]{1,64}"
_STATUS = "(?:" + "|".join(_anycase(s) for s in ("available", "reserved", "sold")) + ")"
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
# A value starts with a visible character (Python strips any Unicode space around it).
_SPACES = r"\x00-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# `;` separates filters outside quotes and parentheses (search.filters.split_filters),
# so no value holds a `;` or a quote, and a value has at most one pair of parentheses
# ("T-shirt (long)"; bounded repeats only: a schema validator compiles each one out).
_PLAIN = r"[^\x00-\x1f;\"'()]"
_VALUE = ("[^" + _SPACES + "\"'=;()]" + f"{_PLAIN}{{0,999}}"
          + f"(?:\\({_PLAIN}{{0,200}}\\){_PLAIN}{{0,200}})?")
_ITEM = "[^" + _SPACES + ",()\"';]" + r"[^\x00-\x1f,();\"']{0,199}"
_IN = f" +(?:not +)?in{_SP}\\({_SP}"
_ONE_FILTER = _SP + "(?:" + "|".join([
    f"(?:{_TEXT_FIELD}|{_EXTRA_FIELD}){_SP}(?:==?|!=){_SP}{_VALUE}",
    f"(?:{_anycase('price')}|{_EXTRA_FIELD}){_SP}(?:<=?|>=?|==?|!=){_SP}{_NUMBER}{_SP}",
    f"{_anycase('status')}{_SP}(?:==?|!=){_SP}{_STATUS}{_SP}",
    f"(?:{_TEXT_FIELD}|{_EXTRA_FIELD}){_IN}{_ITEM}(?:{_SP},{_SP}{_ITEM})*{_SP}\\){_SP}",
    f"{_anycase('status')}{_IN}{_STATUS}{_SP}(?:,{_SP}{_STATUS}{_SP})*\\){_SP}",
]) + ")"
# One filter, or several separated by `;` (as the CLI's --filter and the web app's box).
FILTER_PATTERN = f"^{_ONE_FILTER}(?:;{_ONE_FILTER})*(?:;{_SP})?$"
_FILTER_RE = re.compile(FILTER_PATTERN)
FILTER_HELP = ("FIELD=VALUE or FIELD!=VALUE (category, colour, size, id, status, "
               "extra.NAME), price<NUMBER (also <=, >, >=, =, !=; extra.NAME too), or "
               "FIELD in (A, B) / FIELD not in (A, B); no quotes; several separated by "
               "';' (repeatable)")
MAX_FILTERS = 20

# Steering terms: NAME=WEIGHT or NAME:WEIGHT, the weight between -10 and 10.
STEER_PATTERN = (r"^[A-Za-z0-9_.-]{1,64} *[=:] *[+-]?(?:10(?:\.0+)?|[0-9](?:\.[0-9]+)?"
                 r"|\.[0-9]+)$")
_STEER_RE = re.compile(STEER_PATTERN)


def filter_query() -> Any:
    """The repeatable `filter` query parameter, its grammar in the schema."""
    return Query([], alias="filter", max_length=MAX_FILTERS,
                 description=f"{FILTER_HELP}; at most {MAX_FILTERS}",
                 json_schema_extra={"items": {"type": "string", "pattern": FILTER_PATTERN}})


def steer_query() -> Any:
    """The repeatable `steer` query parameter."""
    return Query([], max_length=MAX_FILTERS,
                 description="NAME=WEIGHT (or NAME:WEIGHT) along a learned direction, e.g. "
                             "striped=0.5, the weight from -10 to 10 (repeatable; GET "
                             "/api/v1/catalog lists the names; an unknown name is 404)",
                 json_schema_extra={"items": {"type": "string", "pattern": STEER_PATTERN}})


def check_filters(filters: list[str]) -> list[str]:
    """Filters in the API's grammar (400 naming the first one that is not), checked
    against the catalog's fields before any photo is processed."""
    for text in filters:
        if not _FILTER_RE.fullmatch(text):
            raise ApiError(400, "bad_filter",
                           f"filter '{shorten(text, 80)}': expected {FILTER_HELP}")
    parse_filters(filters)  # FilterError: 400 bad_filter
    return filters


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
    for text in values:
        if not _STEER_RE.fullmatch(text):
            raise ApiError(400, "bad_steer", f"steering term '{shorten(text, 80)}': expected "
                                             "NAME=WEIGHT or NAME:WEIGHT with a weight from "
                                             "-10 to 10")
    if not catalog.supports_steering:
        raise ApiError(400, "steering_unavailable",
                       "steering is not available in this version of the catalog")
    weights = parse_steering(values)  # syntax errors: FashionLensError, reported as 400
    known = await catalog.call(catalog.directions)
    unknown = sorted(set(weights) - set(known))
    if unknown:
        listed = ", ".join(known) if known else "none (this catalog has no learned directions)"
        # 404 like an unknown model or item: the name is well formed, the catalog has none.
        raise ApiError(404, "unknown_direction", f"unknown steering direction(s) "
                                                 f"{', '.join(unknown)}; directions: {listed}")
    return weights

"""The catalog over HTTP: browse and filter items, add one with its photo, change,
mark sold, delete, and fetch an item's photo from the catalog's own store."""

from __future__ import annotations

import itertools
import json
import mimetypes
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...search.catalog import (
    MAX_EXTRA_FIELDS,
    MAX_FIELD_NAME_CHARS,
    MAX_VALUE_CHARS,
    Catalog,
    ItemRecord,
    check_extra,
)
from ..engine import decode_upload
from ..errors import ApiError, error_responses
from ..security import require_write
from ..uploads import IMAGE_PART_ENCODING, check_upload_type
from .common import check_filters, filter_query, get_engine, item_json

router = APIRouter(tags=["catalog"])

# Far past any catalog's size, and small enough for every integer type it meets.
MAX_OFFSET = 1_000_000_000
FILTERS = filter_query()


@router.get("/catalog", summary="Catalog summary: items, categories, steering directions",
            responses=error_responses(404))
async def catalog_info(request: Request) -> dict:
    engine = get_engine(request)
    catalog = engine.require_catalog()
    info = await catalog.call(catalog.catalog.info)
    directions = await catalog.call(catalog.directions)
    query = engine.query
    return {"items": info["items"], "statuses": info["statuses"],
            "categories": info["categories"], "values": info["values"],
            "tags": info["tags"], "weak_below": info["weak_below"],
            "dimension": info["dimension"],
            "index": info["index"], "created_at": info["created_at"],
            "steering": catalog.supports_steering, "directions": directions,
            "query_model": query.model.name if query and query.model else None,
            "currency": request.app.state.settings.currency}


def _page(cat: Catalog, filters: list[str], limit: int, offset: int) -> tuple[list, bool]:
    found = list(itertools.islice(cat.items(filters or None), offset, offset + limit + 1))
    return found[:limit], len(found) > limit


@router.get("/items", summary="List items, filtered and paginated",
            responses=error_responses(400, 404, 422))
async def list_items(
    request: Request,
    filters: list[str] = FILTERS,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict:
    catalog = get_engine(request).require_catalog()
    check_filters(filters)
    items, more = await catalog.call(_page, catalog.catalog, filters, limit, offset)
    return {"items": [item_json(i) for i in items], "limit": limit, "offset": offset,
            "next_offset": offset + limit if more else None, "filters": filters}


@router.get("/items/{item_id:path}/photo", summary="An item's photo",
            response_class=FileResponse, responses={
                200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                                  "application/octet-stream": {
                                      "schema": {"type": "string", "format": "binary"}}},
                      "description": "The photo as stored"}, **error_responses(404)})
async def item_photo(request: Request, item_id: str) -> FileResponse:
    catalog = get_engine(request).require_catalog()
    item = await catalog.call(catalog.catalog.get, item_id)
    path = item.image.resolve() if item.image is not None else None
    # Only files inside the catalog's own images/ folder are ever served.
    if path is None or not path.is_relative_to(catalog.images_dir) or not path.is_file():
        raise ApiError(404, "no_photo", f"item '{item_id}' has no stored photo")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if not media_type.startswith("image/"):
        media_type = "application/octet-stream"
    return FileResponse(path, media_type=media_type,
                        headers={"Cache-Control": "private, max-age=300"})


# An item's sub-resources and the methods they take. No item id ends in one of them
# (the catalog refuses such ids), so `PATCH /items/ID/sold` is the sale of item ID.
_SUB_RESOURCES = {"/photo": {"GET", "HEAD"}, "/sold": {"POST"}}


def not_a_sub_resource(request: Request, item_id: str) -> None:
    """405 with the sub-resource's Allow header for `PATCH /items/ID/sold` and the like
    (the `{item_id:path}` routes took them for an item 'ID/sold': 404, or 422 for a
    PATCH without a body)."""
    for suffix, methods in _SUB_RESOURCES.items():
        if item_id.endswith(suffix) and request.method not in methods:
            allow = ", ".join(sorted(methods))
            raise StarletteHTTPException(
                405, f"{request.method} is not allowed on an item's {suffix[1:]}; "
                     f"allowed: {allow}", headers={"Allow": allow})


SUB_RESOURCE = Depends(not_a_sub_resource)


@router.get("/items/{item_id:path}", summary="One item", dependencies=[SUB_RESOURCE],
            responses=error_responses(404, 405))
async def get_item(request: Request, item_id: str) -> dict:
    catalog = get_engine(request).require_catalog()
    return item_json(await catalog.call(catalog.catalog.get, item_id))


_TEXT = {"type": ["string", "null"], "maxLength": MAX_VALUE_CHARS}
# What PATCH accepts, as a schema: the item's fields and extra.NAME, scalars only (the
# values the catalog checks: a price of 0 or more, a known status, short text).
UPDATE_BODY_OPENAPI = {"requestBody": {"content": {"application/json": {"schema": {
    "type": "object", "minProperties": 1, "maxProperties": MAX_EXTRA_FIELDS,
    "properties": {"category": _TEXT, "colour": _TEXT, "color": _TEXT, "size": _TEXT,
                   "price": {"type": ["number", "null"], "minimum": 0},
                   "status": {"enum": ["available", "reserved", "sold", "", None]}},
    "patternProperties": {
        rf"^extra\.[A-Za-z0-9_-]{{1,{MAX_FIELD_NAME_CHARS}}}$": {
            "anyOf": [_TEXT, {"type": "number"}]}},
    "additionalProperties": False,
}}}}}


_EXTRA_NAME = re.compile(rf"^extra\.[A-Za-z0-9_-]{{1,{MAX_FIELD_NAME_CHARS}}}$")
_STATUSES = ("available", "reserved", "sold")


def check_update(values: dict[str, Any]) -> None:
    """A PATCH body holds exactly what UPDATE_BODY_OPENAPI says, or gets a 400 naming the
    field: JSON numbers for prices (text such as "12,50" is for CSV imports), known
    statuses, short text."""
    if not values:
        raise ApiError(400, "nothing_to_update", "nothing to update: send a JSON object of "
                                                 "fields, e.g. {\"price\": 12}")
    if len(values) > MAX_EXTRA_FIELDS:
        raise ApiError(400, "bad_value", f"{len(values)} fields; at most {MAX_EXTRA_FIELDS} "
                                         "in one change")
    for name, value in values.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if name == "price":
            ok = value is None or (number and value >= 0)
            expected = "a number of 0 or more, or null"
        elif name == "status":
            ok = value is None or value in (*_STATUSES, "")
            expected = f"one of {', '.join(_STATUSES)}, or null"
        elif name in ("category", "colour", "color", "size") or _EXTRA_NAME.match(name):
            ok = value is None or (isinstance(value, str) and len(value) <= MAX_VALUE_CHARS)
            ok = ok or (number and name.startswith("extra."))
            expected = f"text of at most {MAX_VALUE_CHARS} characters, or null"
        else:
            raise ApiError(400, "unknown_field",
                           f"unknown field '{name[:80]}'; fields are category, colour, size, "
                           "price, status and extra.NAME (NAME: letters, digits, _ or -)")
        if not ok:
            raise ApiError(400, "bad_value", f"{name}: expected {expected}")


def _extra(value: str | None) -> dict:
    """The `extra` form field: a JSON object of fields, checked as the catalog checks
    them (400 naming the field), nesting bounded (a value 1,000 levels deep was a 500)."""
    if not value:
        return {}
    try:
        extra = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_extra", f"extra: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ApiError(400, "bad_extra", "extra: nested too deeply") from None
    if not isinstance(extra, dict):
        raise ApiError(400, "bad_extra", "extra: expected a JSON object")
    try:
        check_extra(extra)
    except RecursionError:
        raise ApiError(400, "bad_extra", "extra: nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "bad_extra", str(exc)) from None
    return extra




@router.post("/items", status_code=201, summary="Add an item with its photo",
             dependencies=[Depends(require_write)],
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {
                 "encoding": IMAGE_PART_ENCODING}}}},
             responses=error_responses(400, 401, 403, 404, 408, 409, 413, 415, 422, 503))
async def add_item(
    request: Request,
    image: Annotated[UploadFile, File(description="The item's photo.")],
    id: Annotated[str, Form(min_length=1, max_length=200, description="The item's id.")],
    category: Annotated[str | None, Form()] = None,
    colour: Annotated[str | None, Form()] = None,
    size: Annotated[str | None, Form()] = None,
    price: Annotated[str | None, Form(description="A number, e.g. 12.50")] = None,
    status: Annotated[str | None, Form(description="available, reserved or sold")] = None,
    extra: Annotated[str | None, Form(description="Other fields as a JSON object")] = None,
) -> JSONResponse:
    engine = get_engine(request)
    catalog = engine.require_catalog()
    engine.require_query()  # items are added with their photo's vector
    check_upload_type(image, "image")
    data = await image.read()
    name = image.filename or "image"
    # Refuse unusable photos (empty, corrupt, bombs, absurd sizes) before touching the store.
    await run_in_threadpool(decode_upload, data, name, engine.settings.max_image_side, 512)
    record = ItemRecord(id=id.strip(), image=data, category=category or None,
                        colour=colour or None, size=size or None, price=price or None,
                        status=status or "available", extra=_extra(extra), label=name)
    report = await catalog.call(catalog.catalog.add, [record])
    if report.existing:
        raise ApiError(409, "item_exists", f"an item with id '{record.id}' already exists")
    if report.failed:
        raise ApiError(422, "item_not_added", f"item '{record.id}' was not added: "
                                              f"{report.failed[0].error}")
    item = await catalog.call(catalog.catalog.get, record.id)
    return JSONResponse(item_json(item), status_code=201)


@router.patch("/items/{item_id:path}", summary="Change an item's metadata",
              dependencies=[SUB_RESOURCE, Depends(require_write)],
              responses=error_responses(400, 401, 403, 404, 405, 408, 413, 422, 503),
              openapi_extra=UPDATE_BODY_OPENAPI)
async def update_item(request: Request, item_id: str,
                      values: Annotated[dict[str, Any],
                                        Body(examples=[{"price": 12, "colour": "red"}])]
                      ) -> dict:
    catalog = get_engine(request).require_catalog()
    check_update(values)
    return item_json(await catalog.call(catalog.catalog.update, item_id, values))


@router.post("/items/{item_id:path}/sold", summary="Mark an item as sold",
             dependencies=[Depends(require_write)],
             responses=error_responses(401, 403, 404, 503))
async def mark_sold(request: Request, item_id: str) -> dict:
    catalog = get_engine(request).require_catalog()
    return item_json(await catalog.call(catalog.catalog.mark_sold, item_id))


@router.delete("/items/{item_id:path}", summary="Delete an item, its vector and its photo",
               dependencies=[SUB_RESOURCE, Depends(require_write)],
               responses=error_responses(401, 403, 404, 405, 503))
async def delete_item(request: Request, item_id: str) -> dict:
    catalog = get_engine(request).require_catalog()
    removed = await catalog.call(catalog.catalog.remove, [item_id])
    left = await catalog.call(len, catalog.catalog)
    return {"removed": removed, "items": left}

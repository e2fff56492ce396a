"""Every failure as a small JSON body with a status code, never a bare 500.

Clients (and the web app) read `{"error": {"status", "code", "message"}}`: a stable
machine-readable code plus a sentence a person can act on. Library errors are mapped
here: an unreadable photo is 422, an unknown item 404, a bad filter 400, and so on.

A bug (any other exception) is logged once with its traceback and answered 500 by
`InternalErrors`, which keeps the connection usable (Starlette's own last-resort handler
re-raised it: a second traceback from uvicorn and the keep-alive connection reset). A
client that hangs up mid-upload is logged as one INFO line, not as an error.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    CatalogBusyError,
    FashionLensError,
    ImageError,
    ItemExistsError,
    ModelError,
    UnknownItemError,
)
from ..search.filters import FilterError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API reports as-is: HTTP status, short code, readable message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ErrorDetail(BaseModel):
    status: int = Field(description="The HTTP status, repeated.")
    code: str = Field(description="A stable machine-readable code, e.g. unreadable_image.")
    message: str = Field(description="What went wrong, in a sentence a person can act on.")


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


_MEANING = {
    400: "Bad request: a bad filter, steering weight or field value, or no photo sent",
    401: "The API key is missing or wrong",
    403: "Writes are disabled: the service runs without an API key",
    404: "No such item, model, plot or catalog",
    405: "This method is not allowed on this path (the Allow header lists those that are)",
    408: "The request body arrived too slowly",
    409: "Conflict: the item exists already, or this catalog cannot embed photos",
    413: "The request body is over the size limit",
    415: "The body is not a photo (wrong Content-Type)",
    422: "Invalid parameter, or the photo cannot be read",
    503: "The catalog is busy with another writing process; try again",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for the error statuses an endpoint can answer with."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]}
            for status in statuses}


def error_body(status: int, code: str, message: str) -> dict:
    return {"error": {"status": status, "code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict | None = None
                   ) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


def from_library(exc: FashionLensError) -> ApiError:
    """Map a library error to an API error; messages keep no server paths."""
    if isinstance(exc, ImageError):
        return ApiError(422, "unreadable_image", f"{exc.path}: {exc.reason}")
    if isinstance(exc, FilterError):
        return ApiError(400, "bad_filter", str(exc))
    if isinstance(exc, UnknownItemError):  # the message without the server's folder
        return ApiError(404, "unknown_item", f"no item with id '{exc.item_id}'")
    if isinstance(exc, ItemExistsError):  # another writer added it first
        ids = ", ".join(f"'{i}'" for i in exc.item_ids[:5])
        return ApiError(409, "item_exists", f"an item with id {ids} already exists")
    if isinstance(exc, CatalogBusyError):  # another process holds the write lock
        return ApiError(503, "catalog_busy", "the catalog is busy with another writer; try "
                                             "again in a few seconds")
    message = str(exc)
    if isinstance(exc, ModelError):
        return ApiError(500, "model_error", message)
    return ApiError(400, "bad_request", message)


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 408: "request_timeout", 413: "too_large",
                 415: "unsupported_media_type", 431: "headers_too_large"}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    return "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on an app."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(FashionLensError)
    async def _library_error(_: Request, exc: FashionLensError) -> JSONResponse:
        api = from_library(exc)
        return error_response(api.status, api.code, api.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_parameter", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405 and not any(k.lower() == "allow" for k in headers):
            headers["Allow"] = "GET, HEAD"  # the web app's files (the API's: MethodRules)
        return error_response(exc.status_code, code, detail, headers or None)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # Not an error of the server: nobody is left to read an answer.
        log.info("client %s hung up during %s %s", _client(request), request.method,
                 request.url.path)
        return error_response(400, "client_disconnected", "the client hung up")


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


class TrackingSend:
    """A `send` that remembers whether the response has started: after that an error can
    no longer be answered, only the connection closed."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class InternalErrors:
    """ASGI middleware (inside the other middleware): an exception no handler took is a
    bug: its traceback is logged once and the client gets a 500 JSON answer; the
    exception goes no further, so the server keeps the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracking = TrackingSend(send)
        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:  # noqa: BLE001 - the last place an exception can be answered
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if tracking.started:
                raise  # half an answer is out: only closing the connection is left
            response = error_response(500, "internal_error", f"internal error "
                                      f"({type(exc).__name__}); see the server log")
            await response(scope, receive, send)

"""API keys, the request size limit and browser security headers.

- Write endpoints (catalog changes, model selection) need the API key; with no key
  configured they are refused altogether, so a forgotten key never means "open".
  Reads need it too when `protect_reads` is set. The key comes in `X-API-Key` or as
  `Authorization: Bearer KEY` and is compared in constant time.
- Bodies over the limit get 413 before they are read when Content-Length says so, or as
  soon as the streamed body passes the limit; only the photo uploads may be large, any
  other body (JSON) is held to a small limit.
- A body that trickles in slower than the read deadline gets 408 and a closed
  connection (headers that trickle in are cut off in `server.py`).
- The web app's pages may load nothing but this server's own files (Content-Security-
  Policy), which also enforces the "works offline, no CDN" rule in the browser.
"""

from __future__ import annotations

import asyncio
import hmac
import json

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError, TrackingSend, error_body

API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                               description="The service's API key (needed for writes).")


def _supplied_key(request: Request, header_value: str | None) -> str | None:
    if header_value:
        return header_value
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _check_key(request: Request, supplied: str | None, what: str) -> None:
    expected = request.app.state.settings.api_key
    if not expected:
        raise ApiError(403, "writes_disabled",
                       f"{what} are disabled: this service has no API key; start it with "
                       "--api-key or FASHIONLENS_API_KEY")
    if not supplied:
        raise ApiError(401, "missing_api_key",
                       f"{what} need an API key in the {API_KEY_HEADER} header")
    if not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise ApiError(401, "invalid_api_key", "the API key is not valid")


async def require_write(request: Request,
                        key: str | None = Security(_api_key_header)) -> None:
    """Dependency of every endpoint that changes something."""
    _check_key(request, _supplied_key(request, key), "changes")


async def require_read(request: Request,
                       key: str | None = Security(_api_key_header)) -> None:
    """Dependency of every API endpoint; a no-op unless reads are protected."""
    if request.app.state.settings.protect_reads:
        _check_key(request, _supplied_key(request, key), "requests")


class BodyTooLarge(HTTPException):
    """Raised from inside `receive`; an HTTPException so FastAPI's body parsing passes it on."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {_size(limit)}")


class ReadTimeout(HTTPException):
    """Raised from inside `receive` when a client sends its body too slowly."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s",
                         headers={"Connection": "close"})


def _size(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:g} KB"
    return f"{size / (1024 * 1024):g} MB"


async def send_json(send: Send, status: int, body: dict,
                    headers: list[tuple[bytes, bytes]] | None = None, close: bool = True
                    ) -> None:
    """Answer with a JSON body straight from a middleware (by default closing the
    connection: the request's body, if any, is left unread)."""
    payload = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()), *(headers or [])]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload})


async def _run_answering(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                         error: type[HTTPException], code: str) -> None:
    """Run `app` with a `receive` that may raise `error`; answer it as JSON unless the
    response has already started (then the connection just ends)."""
    tracking = TrackingSend(send)
    try:
        await app(scope, receive, tracking)
    except error as exc:
        if tracking.started:
            raise
        await send_json(send, exc.status_code, error_body(exc.status_code, code,
                                                           str(exc.detail)))


# The requests that carry a photo; every other body (JSON, a form without a file) is
# held to the small limit.
UPLOAD_ROUTES = frozenset({("POST", "/api/v1/classify"), ("POST", "/api/v1/similar"),
                           ("POST", "/api/v1/items")})


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over `max_bytes` on the photo uploads,
    over `max_other_bytes` on any other request."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_other_bytes: int | None = None
                 ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_other_bytes = max_bytes if max_other_bytes is None else max_other_bytes

    def limit_for(self, scope: Scope) -> int:
        path = scope["path"].rstrip("/") or "/"
        upload = (scope["method"], path) in UPLOAD_ROUTES
        return self.max_bytes if upload else min(self.max_bytes, self.max_other_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_json(send, 400, error_body(400, "bad_request",
                                                           "invalid Content-Length header"))
                    return
                if declared > limit:
                    await send_json(send, 413, error_body(
                        413, "too_large", f"request body is {_size(declared)}, above the "
                                          f"limit of {_size(limit)} for this request"))
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await _run_answering(self.app, scope, limited_receive, send, BodyTooLarge, "too_large")


class ReadDeadline:
    """ASGI middleware: a request whose body takes more than `seconds` of waiting to
    arrive gets 408 and its connection is closed (a client trickling a byte a second
    would otherwise hold a connection and a request slot for ever). Only time spent
    waiting on the client counts, not time the server spends before reading."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        waited = 0.0
        body_done = False

        async def deadline_receive() -> Message:
            nonlocal waited, body_done
            if body_done:  # after the body only a disconnect can come: no deadline
                return await receive()
            left = self.seconds - waited
            if left <= 0:
                raise ReadTimeout(self.seconds)
            loop = asyncio.get_running_loop()
            began = loop.time()
            try:
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                raise ReadTimeout(self.seconds) from None
            finally:
                waited += loop.time() - began
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await _run_answering(self.app, scope, deadline_receive, send, ReadTimeout,
                             "request_timeout")


CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
       "script-src 'self'; style-src 'self'; connect-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class SecurityHeaders:
    """ASGI middleware adding nosniff, no-referrer and (outside /docs) a strict CSP."""

    def __init__(self, app: ASGIApp, docs_paths: tuple[str, ...] = ("/docs",)) -> None:
        self.app = app
        self.docs_paths = docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"].startswith(self.docs_paths)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                if not docs:
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)

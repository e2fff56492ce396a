"""HTTP methods as HTTP says: HEAD like GET without a body, 405 with a true `Allow`.

FastAPI's routes answer GET only (a HEAD fell through to the web app's files: 404), and
for a method a path does not take, Starlette's router answered with the `Allow` header
of whichever route it tried first, here the web app's file server ("GET, HEAD" for
`OPTIONS /api/v1/items`, which also takes POST). `MethodRules` works out, for every path
an API or health route matches, the methods all those routes take together, answers any
other method with 405 and that list, and runs HEAD as GET with the body left out.
"""

from __future__ import annotations

from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body
from .security import send_json

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def routed(routes: list, scope: Scope, method: str) -> bool:
    """Whether a route (not a mounted file server) takes `method` on the scope's path."""
    probe = {**scope, "method": method}
    return any(not isinstance(route, Mount) and route.matches(probe)[0] is Match.FULL
               for route in routes)


def allowed_methods(routes: list, scope: Scope) -> set[str]:
    """The methods the routes of the scope's path take (HEAD wherever GET is)."""
    methods = {method for method in METHODS if routed(routes, scope, method)}
    return methods | {"HEAD"} if "GET" in methods else methods


def allow_header(methods: set[str]) -> str:
    return ", ".join(sorted(methods))


class MethodRules:
    """ASGI middleware (next to the router): 405 with the right `Allow` for a method no
    route of the path takes, HEAD answered by the GET route without its body."""

    def __init__(self, app: ASGIApp, routes: list) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "HEAD" and routed(self.routes, scope, "GET"):
            async def without_body(message: Message) -> None:
                if message["type"] == "http.response.body":
                    message = {**message, "body": b""}
                await send(message)

            await self.app({**scope, "method": "GET"}, receive, without_body)
            return
        if method == "HEAD" or routed(self.routes, scope, method):
            await self.app(scope, receive, send)
            return
        allowed = allowed_methods(self.routes, scope)
        if not allowed:  # not an API path: the web app's files (or their 404)
            await self.app(scope, receive, send)
            return
        allow = allow_header(allowed)
        await send_json(send, 405, error_body(
            405, "method_not_allowed", f"{method} is not allowed here; allowed: {allow}"),
            headers=[(b"allow", allow.encode())], close=False)

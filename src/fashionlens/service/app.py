"""The FastAPI application: API under /api/v1, health checks, offline docs, the web app.

`create_app(settings)` loads the models (and opens the catalog) once; every request
shares them. Run it with `fashionlens serve`, or with any ASGI server:

    from fashionlens.service import ServiceSettings, create_app
    app = create_app(ServiceSettings(catalog="shop/", api_key="..."))
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..data.images import DECODE_BUDGET
from .engine import Engine
from .errors import InternalErrors, error_responses, install_handlers
from .memory import IdleTrimmer
from .methods import MethodRules
from .routes import classify, health, items, models, review, similar, text_search
from .routes.common import API_PREFIX
from .security import BodySizeLimit, ReadDeadline, SecurityHeaders, require_read
from .settings import ServiceSettings

WEB_DIR = Path(str(files("fashionlens.service") / "web"))
DESCRIPTION = """Garment classification and visual search for a shop's catalog.

Photos are sent as `multipart/form-data` (field `image`) or as the raw request body
with an `image/*` Content-Type. Endpoints that change something need the API key in the
`X-API-Key` header (`fashionlens serve` prints the key it made up with `--demo`; otherwise
it is the one given with `--api-key` or `FASHIONLENS_API_KEY`). Errors are JSON:
`{"error": {"status", "code", "message"}}`.
"""


def _swagger_assets() -> Path | None:
    """Swagger UI's files from the `swagger-ui-bundle-v2` package, so /docs works offline."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def create_app(settings: ServiceSettings | None = None, *, engine: Engine | None = None
               ) -> FastAPI:
    """Build the app; loads the models and the catalog unless an `engine` is given (a
    given engine stays open when the app shuts down: whoever made it closes it)."""
    settings = (settings or ServiceSettings()).check()
    # Photos decoded at once (on the request threads) hold at most this much memory.
    DECODE_BUDGET.resize(settings.decode_memory_bytes)
    owned = engine is None
    engine = engine or Engine(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        trimmer = IdleTrimmer(engine.activity, settings.trim_idle_s)
        trimmer.start()
        app.state.memory_trimmer = trimmer
        yield
        await trimmer.stop()
        if owned:  # bounded: a stuck catalog job must not keep the process alive
            engine.close(settings.shutdown_timeout_s)

    app = FastAPI(title="fashionlens", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.engine = engine
    app.state.settings = settings
    # Read now, so a queue that is not one stops `serve` with its file named.
    app.state.review = review.ReviewState(settings.review) if settings.review else None
    install_handlers(app)

    swagger = _swagger_assets()
    if swagger is not None:
        app.mount("/docs/assets", StaticFiles(directory=swagger), name="swagger-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if swagger is None:  # fall back to FastAPI's default (loads Swagger UI from a CDN)
            return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                       title="fashionlens API")
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                   title="fashionlens API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png")

    app.include_router(health.router)
    # Reads carry the key requirement (and its 401) only when they are protected, so the
    # OpenAPI schema says what this server does.
    guarded = settings.protect_reads
    api = APIRouter(prefix=API_PREFIX,
                    dependencies=[Depends(require_read)] if guarded else [],
                    responses=error_responses(401) if guarded else None)
    for module in (classify, similar, text_search, items, models, review):
        api.include_router(module.router)
    app.include_router(api)
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")

    # Innermost first: methods next to the router, a bug's 500 inside the size limits.
    app.add_middleware(MethodRules, routes=app.routes)
    app.add_middleware(InternalErrors)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes,
                       max_other_bytes=settings.max_json_bytes)
    app.add_middleware(ReadDeadline, seconds=settings.body_timeout_s)
    app.add_middleware(SecurityHeaders)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Content-Type", "X-API-Key", "Authorization"])
    return app

"""`fashionlens serve`: the web service and web app, with uvicorn."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import FashionLensError
from .common import MODEL_HELP, RuntimeName, err, out

if TYPE_CHECKING:
    from ..service.settings import ServiceSettings


# uvicorn's log levels.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class _Terminated(Exception):
    """SIGTERM arrived (uvicorn re-raises it once it has shut down gracefully)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Make SIGTERM unwind the stack like Ctrl-C does, so `finally` blocks (removing the
    demo's temporary catalog) run; without it the default action kills the process."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    except _Terminated:
        err.print("stopped (SIGTERM)")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _typed(ctx: typer.Context, parameter: str) -> bool:
    """Whether the command's `parameter` was given on the command line (or by its
    environment variable) rather than left at its default. Compared by name: typer may
    bring its own copy of click, whose ParameterSource is another enum."""
    source = ctx.get_parameter_source(parameter)
    return getattr(source, "name", "DEFAULT") in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def serve(
    ctx: typer.Context,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", metavar="NAME_OR_PATH",
                     help=MODEL_HELP + ", to serve (repeatable; the first is the default). "
                                       "Without it: every bundled model, the bundled "
                                       "default model answering requests that name none."),
    ] = None,
    catalog: Annotated[
        Path | None,
        typer.Option(help="Catalog folder for similar items and the catalog page."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes the service "
                                           "to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(help="Key for the write endpoints (or env FASHIONLENS_API_KEY). Without "
                          "one, catalog changes and model selection are refused."),
    ] = None,
    protect_reads: Annotated[
        bool, typer.Option(help="Require the API key for read endpoints too.")] = False,
    max_upload_mb: Annotated[
        float | None, typer.Option(min=0.01, help="Largest request body accepted (default 10).")
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="Allow browser calls from this origin (repeatable; default: none)."),
    ] = None,
    cache_entries: Annotated[
        int | None,
        typer.Option(min=0, help="Recent photos whose model output is kept, so classify and "
                                 "then similar of one photo run the model once (default "
                                 "256; 0 turns it off)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML file of service settings; options given here win."),
    ] = None,
    currency: Annotated[
        str | None,
        typer.Option(help="ISO 4217 code of the catalog's prices (EUR, USD, GBP, ...), shown "
                          "in the web app and given by GET /api/v1/catalog."),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(help="Build a catalog from the bundled sample photos (in --catalog if "
                          "that folder is new or empty; without --catalog in a temporary "
                          "folder) and make up an API key if none is given."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: " + ", ".join(LOG_LEVELS)
                                                 + ".")] = "info",
    runtime: RuntimeName = "auto",
    review: Annotated[
        Path | None,
        typer.Option(metavar="QUEUE.json",
                     help="A review queue (fashionlens review DATA) to go through on the "
                          "Review page; decisions are saved beside it."),
    ] = None,
    public_review: Annotated[
        bool, typer.Option(help="Show the review queue and its photos to anyone who reaches "
                                "the service, without the API key (decisions still need "
                                "it).")] = False,
) -> None:
    """Run the HTTP API (docs at /docs) and the web app (at /) on one port."""
    from ..service import ServiceSettings, create_app
    from ..service import server as service_server
    from ..service.demo import build_demo_catalog

    overrides = {"models": model or None, "catalog": str(catalog) if catalog else None,
                 "api_key": api_key, "max_upload_mb": max_upload_mb,
                 "cors_origins": cors_origin or None, "cache_entries": cache_entries,
                 "currency": currency, "review": str(review) if review else None,
                 "public_review": public_review or None,
                 # Only when typed: the default must not override the config file's.
                 "runtime": runtime if _typed(ctx, "runtime") else None}
    if config is not None:
        settings = ServiceSettings.from_yaml(config, **overrides)
    else:
        settings = ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    # Options on the command line win over the config file; host/port defaults do not.
    settings = dataclasses.replace(settings, protect_reads=protect_reads or settings.protect_reads)
    if config is None or host != "127.0.0.1":
        settings = dataclasses.replace(settings, host=host)
    if config is None or port != 8000:
        settings = dataclasses.replace(settings, port=port)
    settings = settings.with_environment()
    settings = _review_key(settings)

    if log_level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"'{log_level}' is not a log level; choose one of "
                                 f"{', '.join(LOG_LEVELS)}", param_hint="--log-level")
    log_level = log_level.lower()
    settings.check()  # before the demo catalog is built or a model loaded
    # Take the port before loading anything: a port in use is said at once, with what
    # to do, not after the models have loaded and uvicorn has reported its startup.
    listening = _listen(settings)

    temporary: Path | None = None
    with _sigterm_unwinds(), contextlib.closing(listening):
        try:
            if demo:
                if settings.catalog is None:
                    temporary = Path(tempfile.mkdtemp(prefix="fashionlens-demo-"))
                    settings = dataclasses.replace(settings,
                                                   catalog=str(temporary / "catalog"))
                settings = _prepare_demo(settings, build_demo_catalog)
            settings.check()
            app = create_app(settings)
            if settings.host not in ("127.0.0.1", "localhost", "::1"):
                err.print(f"[yellow]listening on {settings.host}: reachable from other "
                          "machines[/]")
            out.print(f"fashionlens at http://{settings.host}:{settings.port}/  "
                      f"(API docs at /docs)", highlight=False)
            service_server.serve(app, settings, log_level=log_level,
                                 access_log=log_level in ("debug", "trace"),
                                 sockets=[listening])
        finally:
            if temporary is not None:  # also after Ctrl-C and SIGTERM
                shutil.rmtree(temporary, ignore_errors=True)


def _listen(settings: ServiceSettings) -> socket.socket:
    """The listening socket for host:port, or a FashionLensError saying what to do."""
    from ..service.server import bind_socket

    where = f"{settings.host}:{settings.port}"
    try:
        return bind_socket(settings.host, settings.port)
    except socket.gaierror as exc:
        raise FashionLensError(f"cannot listen on {where}: no such address "
                               f"({exc.strerror or exc}); check --host") from exc
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise FashionLensError(
                f"cannot listen on {where}: the port is already in use (another "
                f"fashionlens serve?); stop that server or choose a free port with --port, "
                f"e.g. --port {settings.port + 1 if settings.port < 65535 else 8000}"
            ) from exc
        if exc.errno == errno.EACCES:
            raise FashionLensError(f"cannot listen on {where}: permission denied (ports "
                                   "below 1024 need privileges); choose one with --port, "
                                   "e.g. --port 8000") from exc
        raise FashionLensError(f"cannot listen on {where} ({exc.strerror or exc}); check "
                               "--host and --port") from exc


def _review_key(settings: ServiceSettings) -> ServiceSettings:
    """A review queue without an API key gets a made-up one, printed (as `--demo` does):
    the queue is read and decided on with the key, so the Review page works as started."""
    if not settings.review or settings.api_key:
        return settings
    settings = dataclasses.replace(settings, api_key=secrets.token_urlsafe(18))
    out.print(f"review API key (the Review page asks for it once per tab): "
              f"{settings.api_key}", highlight=False, soft_wrap=True)
    return settings


def _prepare_demo(settings: ServiceSettings,
                  build_demo_catalog: Callable[[Path], Path]) -> ServiceSettings:
    """Build the demo catalog into a new or empty folder and make up an API key."""
    folder = Path(settings.catalog).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        # Never add the sample photos to a shop's real catalog.
        err.print(f"using the existing catalog in {folder} as it is (--demo builds "
                  "only into a new or empty folder)")
    else:
        err.print(f"building the demo catalog in {folder} ...")
        build_demo_catalog(folder)
    if not settings.api_key:
        settings = dataclasses.replace(settings, api_key=secrets.token_urlsafe(18))
        out.print(f"demo API key (for adding and changing items; the web app asks for "
                  f"it): {settings.api_key}", highlight=False)
    return settings

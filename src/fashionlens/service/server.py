"""Running the app with uvicorn, with limits for slow clients and a bounded shutdown.

- Headers: uvicorn waits for a request's headers for ever once a connection has sent a
  byte (its keep-alive timer stops at the first byte), so a client trickling a header
  line a second holds a connection indefinitely. `DeadlineH11Protocol` closes a
  connection whose request line and headers are not complete `header_timeout_s` after
  it opened (or after the previous response on it).
- Bodies: `security.ReadDeadline` answers 408 to a body that trickles in.
- Idle keep-alive connections close after `keep_alive_s`; header blocks are capped by
  h11 (`h11_max_incomplete_event_size`).
- Shutdown: on SIGTERM or Ctrl-C, requests still running after `shutdown_timeout_s` are
  cancelled, and the engine's threads never keep the process alive (see `threads`).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import ServiceSettings

MAX_HEADER_BYTES = 32 * 1024


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving a request's headers."""

    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.debug("closing a connection whose request headers took over %s s",
                              self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in; the body has its own deadline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_for(settings: ServiceSettings) -> type[DeadlineH11Protocol]:
    """The protocol class with this service's header deadline."""
    return type("ServiceH11Protocol", (DeadlineH11Protocol,),
                {"header_timeout": settings.header_timeout_s})


def server_config(app: Any, settings: ServiceSettings, *, log_level: str = "info",
                  access_log: bool = False) -> uvicorn.Config:
    """The uvicorn configuration `fashionlens serve` (and the tests) run the app with."""
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level,
        access_log=access_log, http=protocol_for(settings),
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES)


def serve(app: Any, settings: ServiceSettings, *, log_level: str = "info",
          access_log: bool = False, sockets: list[socket.socket] | None = None) -> None:
    """Run the app until SIGTERM/Ctrl-C (or `should_exit`); returns after shutdown."""
    server = uvicorn.Server(server_config(app, settings, log_level=log_level,
                                          access_log=access_log))
    server.run(sockets=sockets)

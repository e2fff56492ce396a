"""Running the app with uvicorn, with limits for slow clients and a bounded shutdown.

- Headers: uvicorn waits for a request's headers for ever once a connection has sent a
  byte (its keep-alive timer stops at the first byte), so a client trickling a header
  line a second holds a connection indefinitely. `DeadlineH11Protocol` closes a
  connection whose request line and headers are not complete `header_timeout_s` after
  it opened (or after the previous response on it, or after the end of the previous
  request's body when that came after the response).
- Header size: a header block over `MAX_HEADER_BYTES` gets 431 and a closed connection
  (h11's own cap only counts an incomplete block: a 100 KB header arriving in one
  piece went through).
- Bodies: `security.ReadDeadline` answers 408 to a body a route reads that trickles in.
  A body no route reads (a GET with a Content-Length, a body after an early answer such
  as 401) has `body_timeout_s` from the answer to arrive, or the connection is closed:
  uvicorn reads and drops it, and each byte restarted its keep-alive timer.
- Idle keep-alive connections close after `keep_alive_s`.
- Shutdown: on SIGTERM or Ctrl-C, requests still running after `shutdown_timeout_s` are
  cancelled, and the engine's threads never keep the process alive (see `threads`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import ServiceSettings

MAX_HEADER_BYTES = 32 * 1024


def _header_block_size(buffered: bytes) -> int:
    """The bytes of the request line and headers at the start of `buffered` (all of it
    while the blank line ending them has not arrived)."""
    start = len(buffered) - len(buffered.lstrip(b"\r\n"))  # h11 skips blank lines first
    end = buffered.find(b"\r\n\r\n", start)
    return len(buffered) - start if end < 0 else end + 4 - start


def _too_large_answer() -> bytes:
    body = json.dumps({"error": {"status": 431, "code": "headers_too_large",
                                 "message": f"the request line and headers are larger "
                                            f"than {MAX_HEADER_BYTES // 1024} KB"}}).encode()
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: "
            b"application/json\r\ncontent-length: " + str(len(body)).encode() +
            b"\r\nconnection: close\r\n\r\n" + body)


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines for a request's headers and for a body no
    route reads, and a hard cap on the header block."""

    header_timeout = 10.0
    body_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.debug("closing a connection whose request headers took over %s s",
                              self.header_timeout)
            self.transport.close()

    def _body_late(self) -> None:
        self._body_timer = None
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.logger.debug("closing a connection whose unread request body took over "
                              "%s s after the response", self.body_timeout)
            self.transport.close()

    def _waiting_for_headers(self) -> bool:
        """Whether the connection waits for a request (none is being answered)."""
        return self.conn.their_state is h11.IDLE and (
            self.cycle is None or self.cycle.response_complete)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state in (h11.IDLE, h11.DONE):  # the next bytes are headers
            buffered = self.conn.trailing_data[0] + data
            if _header_block_size(buffered) > MAX_HEADER_BYTES:
                self._refuse_headers()
                return
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in; the body has its own deadline
        elif self._header_timer is None and self._waiting_for_headers():
            # An unread body ended after the response: the next request's deadline.
            self._arm()
        if self.conn.their_state is not h11.SEND_BODY:
            self._disarm_body()

    def _refuse_headers(self) -> None:
        self.logger.info("refused a request whose headers are over %d bytes",
                         MAX_HEADER_BYTES)
        self._disarm()
        if self.conn.our_state in (h11.IDLE, h11.ERROR):  # no answer under way
            self.transport.write(_too_large_answer())
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on this connection gets the same deadline
        elif self.conn.their_state is h11.SEND_BODY and self._body_timer is None:
            # Answered before its body was read (or without reading it): the rest of the
            # body gets body_timeout_s, however slowly it trickles.
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_body()
        super().connection_lost(exc)


def protocol_for(settings: ServiceSettings) -> type[DeadlineH11Protocol]:
    """The protocol class with this service's deadlines."""
    return type("ServiceH11Protocol", (DeadlineH11Protocol,),
                {"header_timeout": settings.header_timeout_s,
                 "body_timeout": settings.body_timeout_s})


def log_config(log_level: str) -> dict:
    """uvicorn's logging, with the service's own lines (`fashionlens.*` loggers: a
    client hanging up, a bug's traceback) printed the same way at the same level."""
    config = copy.deepcopy(LOGGING_CONFIG)
    level = "DEBUG" if log_level.lower() == "trace" else log_level.upper()
    config["loggers"]["fashionlens"] = {"handlers": ["default"], "level": level,
                                        "propagate": False}
    return config


def server_config(app: Any, settings: ServiceSettings, *, log_level: str = "info",
                  access_log: bool = False) -> uvicorn.Config:
    """The uvicorn configuration `fashionlens serve` (and the tests) run the app with."""
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level,
        log_config=log_config(log_level), access_log=access_log,
        http=protocol_for(settings),
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES)


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (as uvicorn binds one), for `serve(sockets=...)`:
    OSError (EADDRINUSE for a port in use) before anything else has started."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(app: Any, settings: ServiceSettings, *, log_level: str = "info",
          access_log: bool = False, sockets: list[socket.socket] | None = None) -> None:
    """Run the app until SIGTERM/Ctrl-C (or `should_exit`); returns after shutdown."""
    server = uvicorn.Server(server_config(app, settings, log_level=log_level,
                                          access_log=access_log))
    server.run(sockets=sockets)

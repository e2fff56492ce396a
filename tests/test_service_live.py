"""`fashionlens serve --demo` as a real process on a loopback port: slow clients are cut
off within the configured bounds, and SIGTERM stops the server promptly and removes the
demo's temporary catalog (issue 9, items 9, 14 and 19).

One server process (the bundled model, the 40-photo demo catalog) serves every check, with
timeouts of about a second from a YAML config so the test stays short.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .helpers import closed_after, free_port, wait_until_ready

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
SLACK = 1.5  # scheduling noise on a busy 2-core machine


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("live")
    tmp = home / "tmp"
    tmp.mkdir()
    config = home / "service.yaml"
    config.write_text(f"header_timeout_s: {HEADER_TIMEOUT}\nbody_timeout_s: {BODY_TIMEOUT}\n"
                      "keep_alive_s: 1\nshutdown_timeout_s: 2\n")
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "FASHIONLENS_PROGRESS": "0"}
    env.pop("FASHIONLENS_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fashionlens.cli.main", "serve", "--demo", "--port", str(port),
         "--config", str(config), "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(proc, url, proc.stdout.read)
    yield {"proc": proc, "port": port, "url": url, "tmp": tmp}
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_trickled_headers_are_cut_off(live):
    with socket.create_connection(("127.0.0.1", live["port"])) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        took, _ = closed_after(sock, b"X-Slow: 1\r\n", 0.2, 20)
    assert took < HEADER_TIMEOUT + SLACK, took


def test_an_idle_connection_is_closed(live):
    with socket.create_connection(("127.0.0.1", live["port"])) as sock:
        took, _ = closed_after(sock, b"", 0.2, 20)
    assert took < HEADER_TIMEOUT + SLACK, took


def test_a_trickled_body_gets_408_and_a_closed_connection(live):
    with socket.create_connection(("127.0.0.1", live["port"])) as sock:
        sock.sendall(b"POST /api/v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 100000\r\n\r\n\xff\xd8")
        took, answer = closed_after(sock, b"\x00", 0.2, 20)
    assert took < BODY_TIMEOUT + SLACK, took
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer


def test_keep_alive_requests_still_work(live):
    with httpx.Client(base_url=live["url"]) as client:
        for _ in range(3):
            assert client.get("/healthz").json() == {"status": "ok"}


def test_sigterm_stops_the_server_and_removes_the_demo_folder(live):
    """Last in this module: it stops the server."""
    proc, tmp = live["proc"], live["tmp"]
    assert [p.name for p in tmp.iterdir() if p.name.startswith("fashionlens-demo-")]
    # A client in the middle of a slow upload must not hold the shutdown up.
    with socket.create_connection(("127.0.0.1", live["port"])) as sock:
        sock.sendall(b"POST /api/v1/similar HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg"
                     b"\r\nContent-Length: 100000\r\n\r\n\xff")
        time.sleep(0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert time.monotonic() - started < 10
    output = proc.stdout.read()
    assert code == 0, output
    assert "demo API key" in output
    assert not [p for p in Path(tmp).iterdir() if p.name.startswith("fashionlens-demo-")]

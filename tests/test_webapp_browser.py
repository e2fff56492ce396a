"""The web app in a real browser: headless Debian Chromium driven by Playwright against a
live uvicorn server on a free loopback port.

It uploads a photo, takes one with a (synthetic) camera, sees the prediction and similar
items, moves the threshold and a steering slider, opens an item with the keyboard, reads
an error message, and saves screenshots in the test's tmp folder (their paths are
printed). Every request the pages
make must go to the server itself: anything else is blocked and fails the test.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from fashionlens.inference import SAMPLE_PHOTOS
from fashionlens.service import ServiceSettings, create_app
from fashionlens.service.demo import build_demo_catalog

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync",
        # A synthetic camera, granted without a prompt, for the getUserMedia test.
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
KEY = "browser-test-key-123"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("chromium") is None,
                                reason="Debian chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    import uvicorn

    catalog = build_demo_catalog(tmp_path_factory.mktemp("browser") / "catalog", limit=2)
    app = create_app(ServiceSettings(catalog=str(catalog), api_key=KEY))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    outside: list[str] = []
    problems: list[str] = []

    def only_local(route) -> None:
        if route.request.url.startswith(live_server):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(30_000)
    yield page
    context.close()
    assert outside == [], f"the page tried to load from outside the server: {outside}"
    # 4xx answers the test provoked on purpose show up as console errors; nothing else may.
    unexpected = [p for p in problems if "status of 4" not in p]
    assert unexpected == [], unexpected


def test_try_it_page(page, live_server, tmp_path):
    page.goto(live_server + "/")
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#model").input_value() == "clothing10"
    page.set_input_files("#photo", str(SAMPLE_PHOTOS / "Dress" / "dress-1.jpg"))

    page.wait_for_selector("#prediction .bar")
    assert "Dress" in page.locator("#prediction .verdict").inner_text()
    assert page.locator("#prediction .bar").count() == 10
    page.wait_for_selector("#similar .item")
    first = page.locator("#similar .item").first
    assert first.locator(".id").inner_text() == "Dress/dress-1"
    page.wait_for_function("() => { const img = document.querySelector('#similar .item img');"
                           " return img && img.complete && img.naturalWidth > 0; }")
    assert page.locator("#similar .item").count() == 8

    # The threshold slider dims classes below it, with the keyboard as well as by value.
    assert page.locator("#prediction .bar.below").count() == 0
    page.locator("#threshold").focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    assert page.locator("#threshold-value").inner_text() == "5%"
    page.locator("#threshold").fill("50")
    assert page.locator("#threshold-value").inner_text() == "50%"
    assert page.locator("#prediction .bar.below").count() == 9
    assert page.locator("#prediction .bar:not(.below)").get_attribute("data-label") == "Dress"

    shot = tmp_path / "webapp-try-it.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000

    # A file that is not a photo gives a readable message, not a broken page.
    page.set_input_files("#photo", files=[{"name": "notes.jpg", "mimeType": "image/jpeg",
                                           "buffer": b"these are not pixels"}])
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.locator("#error").inner_text()


def test_take_a_photo_with_the_camera(page, live_server):
    page.goto(live_server + "/")
    page.click("#camera-start")
    page.wait_for_function("() => { const v = document.getElementById('camera');"
                           " return !v.hidden && v.videoWidth > 0; }")
    assert page.locator("#camera-shoot").is_visible()
    page.click("#camera-shoot")
    page.wait_for_selector("#prediction .bar")
    page.wait_for_selector("#similar .item")
    assert page.locator("#camera").is_hidden() and page.locator("#preview").is_visible()
    assert page.locator("#prediction .bar").count() == 10


def test_catalog_page_with_steering(page, live_server, tmp_path):
    page.goto(live_server + "/catalog.html")
    page.wait_for_selector("#items .item")
    assert page.locator("#items .item").count() == 20
    # Filter to one category, then open an item with the keyboard.
    page.select_option("#f-category", "Dress")
    page.click("#filters button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#items .item').length === 2")
    page.locator("#items .item").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail[open] #neighbours .item")
    assert page.locator("#detail-title").inner_text() == "Dress/dress-1"
    before = page.locator("#neighbours .item .id").all_inner_texts()

    slider = page.locator('#sliders input[data-direction="hat"]')
    with page.expect_response(lambda r: "steer=hat" in r.url and r.status == 200) as info:
        slider.fill("1")
    matches = [m["id"] for m in info.value.json()["matches"]]
    page.wait_for_function("(first) => document.querySelector('#neighbours .item .id')"
                           ".textContent === first", arg=matches[0])
    after = page.locator("#neighbours .item .id").all_inner_texts()
    assert after == matches and after != before
    assert sum(i.startswith("Hat/") for i in after[:3]) > sum(i.startswith("Hat/")
                                                             for i in before[:3])

    shot = tmp_path / "webapp-catalog.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    # Without the key a change is refused with a readable message.
    page.click("#detail-sold")
    page.wait_for_selector("#detail-error:not([hidden])")
    assert "API key" in page.locator("#detail-error").inner_text()


def test_models_page(page, live_server):
    page.goto(live_server + "/models.html")
    page.wait_for_selector(".models section")
    text = page.locator(".models").inner_text()
    assert "clothing10" in text and "0.941" in text and "Per class" in text
    page.wait_for_function("() => [...document.querySelectorAll('.plots img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    assert page.locator(".plots img").count() == 2
    assert page.locator("#compare table").count() == 1

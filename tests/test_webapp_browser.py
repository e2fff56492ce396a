"""The web app in a real browser: headless Debian Chromium driven by Playwright against a
live uvicorn server on a free loopback port.

It uploads a photo, takes one with a (synthetic) camera, sees the prediction and similar
items, moves the threshold and the steering control, opens an item with the keyboard,
reads the messages a person gets for a file that is not a photo, types the API key where
a change asks for it, and checks the pages at a phone's width (390 px) as well as on a
desktop. Screenshots go to the test's tmp folder and to /tmp/fashionlens-webapp (their
paths are printed). Every request the pages make must go to the server itself: anything
else is blocked and fails the test.
"""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from fashionlens.inference import SAMPLE_PHOTOS
from fashionlens.service import ServiceSettings, create_app
from fashionlens.service.demo import build_demo_catalog

from .helpers import default_model_name, solid_photo

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync",
        # A synthetic camera, granted without a prompt, for the getUserMedia test.
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
KEY = "browser-test-key-123"
SHOTS = Path("/tmp/fashionlens-webapp")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
# The model the pages choose until a person picks another (the bundled default), and the
# small one-head classifier whose ten classes the sample photos are folders of.
DEFAULT = default_model_name()
C10 = "clothing10"


def shoot(page, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("chromium") is None,
                                reason="Debian chromium is not installed (.ci/run installs it)")


def _serve(app):
    """Run `app` with uvicorn on a free loopback port; yields its URL."""
    import uvicorn

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
def live_server(tmp_path_factory):
    catalog = build_demo_catalog(tmp_path_factory.mktemp("browser") / "catalog", limit=2)
    yield from _serve(create_app(ServiceSettings(catalog=str(catalog), api_key=KEY,
                                                 currency="EUR")))


@pytest.fixture(scope="module")
def tasks_server(tmp_path_factory):
    """A multi-task model (a garment class and tags) beside the bundled one, no catalog."""
    from .test_service_tasks import save_multitask_model

    multi = save_multitask_model(tmp_path_factory.mktemp("browser-tasks"))
    yield from _serve(create_app(ServiceSettings(models=["default", str(multi)],
                                                 api_key=KEY)))


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


def _open(browser, live_server, **context_options):
    """A page whose every request must go to the server; yields it, then checks that."""
    context = browser.new_context(**context_options)
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


@pytest.fixture
def page(browser, live_server):
    yield from _open(browser, live_server, viewport=DESKTOP)


@pytest.fixture
def phone(browser, live_server):
    yield from _open(browser, live_server, viewport=PHONE, device_scale_factor=2,
                     is_mobile=True, has_touch=True)


def _default_answers_every_head(page) -> None:
    """The default model's answer to a photo: one part per head it scores."""
    from fashionlens.models import read_info
    from fashionlens.models.resolve import DEFAULT_MODEL

    heads = [h.name for h in read_info(DEFAULT_MODEL).scored_heads]
    page.set_input_files("#photo", str(SAMPLE_PHOTOS / "Dress" / "dress-1.jpg"))
    page.wait_for_function("() => document.getElementById('status').textContent"
                           ".startsWith('Done')")
    assert page.locator("#prediction").inner_text().startswith("Model: " + DEFAULT)
    if len(heads) > 1:
        tasks = page.locator("#prediction .task")
        assert [tasks.nth(i).get_attribute("data-task") for i in range(tasks.count())] == heads
        assert page.locator("#prediction h3").count() == len(heads)
    if len(heads) >= 3:  # each class task shows its first three bars, the rest folded
        first = page.locator("#prediction .task").first
        assert first.locator(".bar").count() == 10
        assert first.locator(".bar:visible").count() == 3
        first.locator(".more-classes summary").click()
        assert first.locator(".bar:visible").count() == 10
        first.locator(".more-classes summary").click()


def test_try_it_page(page, live_server):
    page.goto(live_server + "/")
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#model").input_value() == DEFAULT
    _default_answers_every_head(page)
    # The rest is about a one-head classifier's bars: clothing10's ten classes.
    page.select_option("#model", C10)
    page.set_input_files("#photo", str(SAMPLE_PHOTOS / "Dress" / "dress-1.jpg"))

    page.wait_for_function("(model) => document.getElementById('prediction').textContent"
                           ".startsWith('Model: ' + model) && document.getElementById("
                           "'status').textContent.startsWith('Done')", arg=C10)
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

    assert "€" in page.locator("#similar .item .meta").first.inner_text()  # --currency EUR
    # Similarity as a match strength from 0 to 100 % (a cosine can be negative).
    matches = page.locator("#similar .item .match").all_inner_texts()
    assert len(matches) == 8 and matches[0] == "match 100%", matches
    assert all(0 <= int(m.removeprefix("match ").removesuffix("%")) <= 100 for m in matches)
    assert _row_lengths(page) == [4, 4]  # not 7 and 1 alone
    assert shoot(page, "try-it-desktop").stat().st_size > 10_000

    # A file that is not a photo: one plain message, no broken preview, no stale status.
    for name, mime, data in (("notes.txt", "text/plain", b"these are not pixels"),
                             ("notes.jpg", "image/jpeg", b"these are not pixels"),
                             ("cut.jpg", "image/jpeg",
                              (SAMPLE_PHOTOS / "Dress" / "dress-2.jpg").read_bytes()[:4000])):
        page.set_input_files("#photo", files=[{"name": name, "mimeType": mime, "buffer": data}])
        page.wait_for_selector("#error:not([hidden])")
        assert page.locator("#error").inner_text().startswith(
            "This file is not a photo we can read"), name
        assert page.locator("#preview").is_hidden(), name
        assert page.locator("#similar-error").is_hidden(), name  # said once, not twice
        assert page.locator("#similar .item").count() == 0, name
        assert "Done" not in page.locator("#status").inner_text(), name
        assert "Content-Type" not in page.locator("main").inner_text(), name
    shoot(page, "try-it-not-a-photo")
    # A good photo afterwards clears the message.
    page.set_input_files("#photo", str(SAMPLE_PHOTOS / "Hat" / "hat-1.jpg"))
    page.wait_for_selector("#error[hidden]", state="attached")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Done')")
    assert page.locator("#preview").is_visible()


def _row_lengths(page) -> list[int]:
    """How many similar items each row of the grid holds."""
    tops = page.evaluate("() => [...document.querySelectorAll('#similar .item')]"
                         ".map(e => Math.round(e.getBoundingClientRect().top))")
    return [tops.count(top) for top in sorted(set(tops))]


def test_try_it_in_plain_words(browser, live_server):
    """A 60×80 catalog shot with the five-task `products` model: headings and classes in
    words (not the data's `articleType`, `NA`), its "not a garment" check at work (a plain
    red card is refused, its guesses tucked away), the photo scaled up sharp rather than
    shown tiny, similar items in even rows; desktop and phone."""
    from playwright.sync_api import expect

    shot = solid_photo((200, 40, 60), size=(60, 80), seed=3)
    buffer = io.BytesIO()
    shot.save(buffer, "JPEG")
    for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        for page in _open(browser, live_server, viewport=viewport):
            page.goto(live_server + "/")
            page.wait_for_selector("#model option", state="attached")
            page.select_option("#model", "products")
            expect(page.locator("#model-tasks")).to_contain_text("Product type (82 classes)")
            page.set_input_files("#photo", files=[{"name": "shot.jpg", "mimeType": "image/jpeg",
                                                   "buffer": buffer.getvalue()}])
            page.wait_for_function("() => document.getElementById('status').textContent"
                                   ".startsWith('Done')")
            headings = [h.strip() for h in page.locator("#prediction h3").all_text_contents()]
            assert headings == ["Product type", "Colour", "Season", "Occasion", "Gender"]
            prediction = page.locator("#prediction").inner_text()
            assert "articleType" not in prediction and "baseColour" not in prediction
            occasion = page.locator('#prediction .task[data-task="usage"] .bar > span:first-child')
            labels = [label.strip() for label in occasion.all_text_contents()]
            assert "not given" in labels and "NA" not in labels, labels
            assert page.locator('#prediction .bar[data-label="NA"]').count() == 1
            assert page.locator(".no-unknown-check").count() == 0  # products has a check
            # Scaled by a whole factor (4) to 240×320 px, pixels kept sharp.
            size = page.evaluate("() => { const r = document.getElementById('preview')"
                                 ".getBoundingClientRect(); return [r.width, r.height]; }")
            assert size == [240, 320], size
            assert page.evaluate("() => getComputedStyle(document.getElementById('preview'))"
                                 ".imageRendering") == "pixelated"
            page.wait_for_selector("#similar .item")
            rows = _row_lengths(page)
            assert sum(rows) == 8 and len(set(rows)) == 1, rows
            assert _overflow(page) <= 0
            shoot(page, f"try-it-products-{name}")


def test_try_it_says_when_a_photo_is_not_a_garment(page, live_server):
    """A colour gradient (unknown_score 0.9995 with clothing10, on every runtime)
    gets the plain message, the class guesses tucked away; a garment photo does not."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:1:240j, 0:1:240j]
    buffer = io.BytesIO()
    Image.fromarray((np.stack([x, y, 1 - x], -1) * 255).astype(np.uint8)).save(buffer, "PNG")
    page.goto(live_server + "/")
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", C10)
    page.set_input_files("#photo", files=[{"name": "gradient.png", "mimeType": "image/png",
                                           "buffer": buffer.getvalue()}])
    page.wait_for_selector("#prediction .unknown-photo")
    assert page.locator("#prediction .unknown-photo").inner_text().startswith(
        "This does not look like a garment we know.")
    # Said plainly: no "unknown score 99.9 %" beside it.
    assert "%" not in page.locator("#prediction .unknown-photo").inner_text()
    assert page.locator(".no-unknown-check").count() == 0  # clothing10 has the check
    assert page.locator("#prediction .bar").first.is_hidden()  # guesses folded away
    shoot(page, "try-it-not-a-garment")
    page.set_input_files("#photo", str(SAMPLE_PHOTOS / "Dress" / "dress-1.jpg"))
    page.wait_for_selector("#prediction .bar")
    assert page.locator("#prediction .unknown-photo").count() == 0
    assert "Dress" in page.locator("#prediction .verdict").inner_text()


def test_take_a_photo_with_the_camera(page, live_server):
    page.goto(live_server + "/")
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", C10)  # ten bars, and a "not a garment" check
    page.click("#camera-start")
    page.wait_for_function("() => { const v = document.getElementById('camera');"
                           " return !v.hidden && v.videoWidth > 0; }")
    assert page.locator("#camera-shoot").is_visible()
    page.click("#camera-shoot")
    # Chromium's fake camera films a moving test pattern, not a garment: depending on the
    # frame caught, the bars are shown or folded under the "not a garment" notice.
    page.wait_for_selector("#prediction .bar", state="attached")
    page.wait_for_selector("#similar .item")
    assert page.locator("#camera").is_hidden() and page.locator("#preview").is_visible()
    assert page.locator("#prediction .bar").count() == 10
    refused = page.locator("#prediction .unknown-photo").count() == 1
    assert page.locator("#prediction .bar").first.is_visible() != refused


def test_catalog_page_says_when_tags_come_from_heads_refit_since(browser, tmp_path):
    """A catalog whose items were tagged by two versions of the model's heads (the same
    search vectors: a head refit) says so, and names `catalog retag`."""
    from fashionlens.search import Catalog

    path = build_demo_catalog(tmp_path / "catalog", limit=1)
    with Catalog(path) as cat:
        cat.store.set_meta({"tags_model": "mixed"})
    for url in _serve(create_app(ServiceSettings(catalog=str(path), api_key=KEY))):
        for page in _open(browser, url, viewport=DESKTOP):
            page.goto(url + "/catalog.html")
            page.wait_for_selector("#tags-notice:not([hidden])")
            assert "catalog retag" in page.locator("#tags-notice").inner_text()


def test_catalog_page_with_steering(page, live_server):
    def settled(status: str) -> None:
        """Wait on the page's state, not the clock: the dialog shows `status` and no change
        is on its way (`data-busy`), or an error is shown (then fail with its text). The
        time-out only bounds a wait on a loaded machine."""
        page.wait_for_function(
            "(status) => { const d = document.getElementById('detail');"
            " return (d.dataset.status === status && !d.dataset.busy)"
            " || !document.getElementById('detail-error').hidden; }", arg=status,
            timeout=120_000)
        assert page.locator("#detail-error").is_hidden(), page.locator("#detail-error").inner_text()

    page.goto(live_server + "/catalog.html")
    page.wait_for_selector("#items .item")
    assert page.locator("#items .item").count() == 20
    assert "of 20 items in the catalog" in page.locator("#summary").inner_text()
    assert page.locator("#tags-notice").is_hidden()  # tagged by the model it has now
    # Filter to one category, then open an item with the keyboard.
    page.select_option("#f-category", "Dress")
    page.click("#filters button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#items .item').length === 2")
    assert "Items 1–2 of 2 matching category=Dress (20 items in the catalog)" in \
        page.locator("#summary").inner_text()
    page.locator("#items .item").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail[open] #neighbours .item")
    assert page.locator("#detail-title").inner_text() == "Dress/dress-1"
    before = page.locator("#neighbours .item .id").all_inner_texts()

    page.select_option("#steer-direction", "hat")
    with page.expect_response(lambda r: "steer=hat" in r.url and r.status == 200) as info:
        page.locator("#steer-weight").fill("1")
    matches = [m["id"] for m in info.value.json()["matches"]]
    page.wait_for_function("(first) => document.querySelector('#neighbours .item .id')"
                           ".textContent === first", arg=matches[0])
    after = page.locator("#neighbours .item .id").all_inner_texts()
    assert after == matches and after != before
    assert sum(i.startswith("Hat/") for i in after[:3]) > sum(i.startswith("Hat/")
                                                             for i in before[:3])

    assert page.locator('#steering .chip[data-direction="hat"]').inner_text().startswith("hat +1.0")
    shoot(page, "catalog-desktop")

    # Without the key the dialog asks for it, says where it comes from, then retries.
    page.click("#detail-sold")
    page.wait_for_selector("#detail-key:not([hidden]) input[type=password]")
    prompt = page.locator("#detail-key").inner_text()
    assert "needs the API key" in prompt and "fashionlens serve --demo" in prompt
    assert "--api-key" in prompt and page.locator("#detail-error").is_hidden()
    shoot(page, "catalog-key-prompt")
    page.fill("#detail-key input[type=password]", KEY)
    page.click("#detail-key button[type=submit]")
    settled("sold")  # the sale, and the item list it refreshes, are done
    assert page.locator("#detail-sold").inner_text() == "Mark as available again"
    assert page.locator("#detail-key").is_hidden()
    assert "sold" in page.locator("#detail-meta").inner_text()
    # ... and "sold" can be undone.
    page.click("#detail-sold")
    settled("available")
    assert page.locator("#detail-sold").inner_text() == "Mark as sold"
    assert "available" in page.locator("#detail-meta").inner_text()

    # An item with a name (e.g. a shop export's `name` column) is shown by its name.
    url = live_server + "/api/v1/items/Dress/dress-2"
    named = page.request.patch(url, headers={"X-API-Key": KEY},
                               data={"extra.name": "Blue summer dress"})
    assert named.ok, named.text()
    try:
        page.click("#detail-close")
        page.click("#filters button[type=submit]")
        card = page.locator('#items .item[data-id="Dress/dress-2"]')
        card.locator(".name").wait_for()
        assert card.locator(".name").inner_text() == "Blue summer dress"
        assert card.locator(".id").inner_text() == "Dress/dress-2"
        card.click()
        page.wait_for_function("() => document.getElementById('detail-title').textContent"
                               " === 'Blue summer dress'")
        assert "Dress/dress-2" in page.locator("#detail-meta").inner_text()
    finally:
        page.request.patch(url, headers={"X-API-Key": KEY}, data={"extra.name": None})


def _height(page) -> int:
    return page.evaluate("() => document.documentElement.scrollHeight")


def _wait_images(page, locator) -> None:
    """Every image `locator` matches has loaded (lazy ones once scrolled to)."""
    for i in range(locator.count()):
        locator.nth(i).scroll_into_view_if_needed()
        loaded = locator.nth(i).evaluate(
            "img => img.complete && img.src ? img.naturalWidth > 0 : new Promise((ok) => {"
            " img.addEventListener('load', () => ok(img.naturalWidth > 0));"
            " img.addEventListener('error', () => ok(false)); })")
        assert loaded, locator.nth(i).get_attribute("src")


def _unfold(details) -> None:
    """Open a Models page <details> and wait until its content is built."""
    from playwright.sync_api import expect

    details.locator(":scope > summary").click()
    expect(details).to_have_attribute("data-built", "1")


def _served(page) -> int:
    """How many models the Models page lists (every bundled one is served)."""
    return page.locator(".models section[data-model]").count()


def test_models_page(page, live_server):
    """One screen: each model, what it answers (in words, not column names), how often it
    was right on how many photos of what data; per-class figures and plots folded under
    Details; no table merging the classes of different models."""
    page.goto(live_server + "/models.html")
    page.wait_for_selector('.models section[data-model="products"]')
    # was 15,656 px with three models
    assert _height(page) < 1000 * _served(page), _height(page)
    text = page.locator(".models").inner_text()
    assert page.locator("#compare").count() == 0 and "F1 " not in text
    assert "Per class" not in text  # folded
    first = page.locator(".models section").first
    assert first.get_attribute("data-model") == DEFAULT  # the default comes first
    assert "answers every request that names no model" in first.inner_text()
    c10 = page.locator(f'.models section[data-model="{C10}"]')
    assert "94.1% right" in c10.inner_text() and "341 photos" in c10.inner_text()
    assert page.locator(".models button:disabled").count() == 0
    products = page.locator('.models section[data-model="products"]')
    tasks = products.locator(".model-task .task-title").all_inner_texts()
    assert tasks == ["Product type", "Colour", "Season", "Occasion", "Gender"], tasks
    assert "not given" in products.inner_text() and "NA," not in products.inner_text()
    assert "articleType" not in products.inner_text()
    assert '"not a garment" check' in products.inner_text()  # calibrated for issue 19
    assert 'no "not a garment" check' not in products.inner_text()
    shoot(page, "models-desktop")

    # clothing10's details: every class, rates with three decimals (no "1" beside
    # "0.960"), counts as whole numbers, its confusion matrix and training curves.
    _unfold(c10.locator(".model-details"))
    hat = c10.locator("tr", has_text="Hat").first.locator("td").all_inner_texts()
    assert hat[:3] == ["1.000", "1.000", "1.000"] and hat[3] == "14", hat
    _wait_images(page, c10.locator(".plots img"))
    assert c10.locator(".plots img").count() == 2

    # products keeps a confusion matrix per task (confusion-<task>.png): each is shown.
    _unfold(products.locator(".model-details"))
    for task in ("articleType", "baseColour", "season", "usage", "gender"):
        _unfold(products.locator(f'.task-details[data-task="{task}"]'))
    images = products.locator(".plots img")
    _wait_images(page, images)
    sources = [images.nth(i).get_attribute("src") for i in range(images.count())]
    assert sum("/plots/confusion-" in s for s in sources) == 5, sources
    assert "not recorded" not in products.inner_text()
    usage = products.locator('.task-details[data-task="usage"]').inner_text()
    assert "not given" in usage and "other (rarer values)" in usage
    shoot(page, "models-details-desktop")


def _overflow(page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


def test_phone_try_it_brings_the_prediction_into_view(phone, live_server):
    phone.goto(live_server + "/")
    phone.wait_for_selector("#model option", state="attached")
    assert _overflow(phone) <= 0
    phone.set_input_files("#photo", str(SAMPLE_PHOTOS / "Dress" / "dress-1.jpg"))
    phone.wait_for_selector("#prediction .bar")
    # Scrolled so the prediction starts near the top of the screen, the verdict visible.
    phone.wait_for_function("() => { const r = document.querySelector('#prediction .verdict')"
                            ".getBoundingClientRect(); return r.top >= 0 && r.bottom <= "
                            "window.innerHeight * 0.6; }")
    phone.wait_for_selector("#similar .item")
    assert _overflow(phone) <= 0
    phone.screenshot(path=str(SHOTS / "try-it-phone-viewport.png"))
    shoot(phone, "try-it-phone")


def test_phone_models_page_fits(phone, live_server):
    """On a phone every column is in view (no table wider than the screen) and the page
    stays short until details are opened."""
    phone.goto(live_server + "/models.html")
    phone.wait_for_selector('.models section[data-model="products"]')
    assert _overflow(phone) <= 0, _overflow(phone)
    # was 19,041 px with three models
    assert _height(phone) < 1000 * _served(phone), _height(phone)
    shoot(phone, "models-phone")
    products = phone.locator('.models section[data-model="products"]')
    _unfold(products.locator(".model-details"))
    _unfold(products.locator('.task-details[data-task="usage"]'))
    _wait_images(phone, products.locator('.task-details[data-task="usage"] .plots img'))
    assert _overflow(phone) <= 0, _overflow(phone)
    shoot(phone, "models-details-phone")


def test_phone_item_dialog_shows_steering_and_neighbours_together(phone, live_server):
    phone.goto(live_server + "/catalog.html")
    phone.wait_for_selector("#items .item")
    assert _overflow(phone) <= 0
    phone.locator("#items .item").first.click()
    phone.wait_for_selector("#detail[open] #neighbours .item")
    phone.select_option("#steer-direction", "striped")
    with phone.expect_response(lambda r: "steer=striped" in r.url and r.status == 200):
        phone.locator("#steer-weight").fill("1")
    # The control and the neighbours it moves are on screen at the same time.
    in_view = ("(sel) => { const r = document.querySelector(sel).getBoundingClientRect();"
               " return r.top >= 0 && r.top < window.innerHeight - 40; }")
    assert phone.evaluate(in_view, "#steer-weight")
    assert phone.evaluate(in_view, "#neighbours .item")
    phone.screenshot(path=str(SHOTS / "catalog-dialog-phone-viewport.png"))


def test_tasks_of_a_multi_task_model(browser, tasks_server):
    """Each task of the chosen model: the garment as bars, the tags as a list whose own
    slider re-filters the scores already sent (no new request); at a phone's width."""
    for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        for page in _open(browser, tasks_server, viewport=viewport):
            classify_calls: list[str] = []
            page.on("request", lambda r, calls=classify_calls:
                    calls.append(r.url) if "/api/v1/classify" in r.url else None)
            page.goto(tasks_server + "/")
            page.wait_for_selector("#model option", state="attached")
            page.select_option("#model", "multi")
            assert "Garment (3 classes)" in page.locator("#model-tasks").inner_text()
            assert "Tags (4 tags)" in page.locator("#model-tasks").inner_text()
            page.set_input_files("#photo", str(SAMPLE_PHOTOS / "Hat" / "hat-1.jpg"))
            page.wait_for_selector('#prediction .task[data-task="tags"] .tag-scores')
            garment = page.locator('#prediction .task[data-task="garment"]')
            assert garment.locator(".bar").count() == 3
            assert [h.strip() for h in page.locator("#prediction h3").all_text_contents()] == [
                "Garment", "Tags"]
            tags = page.locator('#prediction .task[data-task="tags"]')
            # Each tag's own threshold: said so, and no slider showing a value not in use.
            own = tags.locator("input.own-thresholds")
            slider = tags.locator("input[type=range]")
            assert own.is_checked() and slider.is_hidden()
            assert len(classify_calls) == 1
            own.uncheck()  # one threshold for every tag: the slider, at the value it shows
            assert slider.is_visible() and tags.locator("output").inner_text() == "50%"
            slider.fill("0")
            assert tags.locator(".tags .tag").count() == 4
            assert tags.locator("output").inner_text() == "0%"
            slider.fill("100")
            assert tags.locator(".tags .tag").count() == 0
            assert "no tag reaches" in tags.locator(".verdict").inner_text()
            own.check()
            assert slider.is_hidden() and tags.locator(".tags .tag").count() > 0
            assert len(classify_calls) == 1  # all of it client-side
            assert page.locator("#threshold-field").is_visible()  # for the garment
            assert _overflow(page) <= 0
            shoot(page, f"try-it-tasks-{name}")

            page.goto(tasks_server + "/models.html")
            multi = page.locator('.models section[data-model="multi"]')
            multi.wait_for()
            assert "64×80 px input" in multi.inner_text()
            assert "any of 4 tags" in multi.inner_text()
            _unfold(multi.locator(".model-details"))
            for task in ("garment", "tags"):
                _unfold(multi.locator(f'.task-details[data-task="{task}"]'))
            text = multi.inner_text()
            assert "Per tag" in text and "mAP" in text and "mean task score" in text
            wool = multi.locator("tr", has_text="wool").first
            assert wool.locator("td").all_inner_texts()[-1] == "0.800"
            assert _overflow(page) <= 0
            shoot(page, f"models-tasks-{name}")

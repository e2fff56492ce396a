"""The Review page in a real browser (headless Debian Chromium, Playwright): a person goes
through a review queue with the keyboard (keep, relabel, drop, next), each decision is
saved to the decisions file beside the queue at once, and reopening the page continues
at the first undecided photo. Nothing is loaded from outside the server, and the
photos are never touched.
"""

from __future__ import annotations

import json
import re

import pytest

from fashionlens.atomic import write_json_atomic
from fashionlens.curation.decisions import decisions_path
from fashionlens.curation.review import build_queue
from fashionlens.service import ServiceSettings, create_app

from .test_curation import FLIPS, PER_CLASS, measured, noisy  # noqa: F401 (a fixture)
from .test_webapp_browser import (  # noqa: F401 (fixtures)
    CHROMIUM,
    DESKTOP,
    KEY,
    _open,
    _serve,
    browser,
    pytestmark,
    shoot,
)


@pytest.fixture
def review_server(noisy, tmp_path):  # noqa: F811
    data, scan = measured(noisy, tmp_path)
    queue = build_queue(data, scan).queue
    path = tmp_path / "queue.json"
    write_json_atomic(path, queue)
    app = create_app(ServiceSettings(models=["default"], api_key=KEY, review=str(path)))
    for url in _serve(app):
        yield {"url": url, "queue": queue, "path": path, "root": noisy["root"]}


def test_review_with_the_keyboard_saves_and_resumes(browser, review_server):  # noqa: F811
    expect = pytest.importorskip("playwright.sync_api").expect
    url, queue = review_server["url"], review_server["queue"]
    entries = queue["entries"]
    photos_before = sorted(p.name for p in (review_server["root"] / "images").iterdir())
    for page in _open(browser, url, viewport=DESKTOP):
        page.goto(url + "/review.html")
        page.evaluate(f"sessionStorage.setItem('fashionlens.apiKey', '{KEY}')")
        page.reload()
        page.wait_for_selector("#review:not([hidden])")
        assert page.text_content("#review-position") == f"1 of {len(entries)}"
        assert page.text_content("#review-reason") == "unreadable file"
        assert page.locator("nav a[aria-current=page]").text_content() == "Review"
        page.keyboard.press("d")  # drop the broken file
        expect(page.locator("#review-position")).to_have_text(re.compile(r"^2 of"))
        assert "duplicate across train and validation" in page.text_content("#review-reason")
        assert page.locator("#review-related img").count() == 1
        page.keyboard.press("d")  # the validation copy of a train photo
        expect(page.locator("#review-position")).to_have_text(re.compile(r"^3 of"))
        page.keyboard.press("k")  # keep the resized copy (a person may)
        expect(page.locator("#review-position")).to_have_text(re.compile(r"^4 of"))
        assert page.text_content("#review-reason") == "likely mislabel"
        photo = entries[3]["photo"]
        suggested = entries[3]["suggested"][0]
        assert page.text_content("#review-suggested") == suggested
        assert page.text_content("#review-labels") == FLIPS[photo.split("/")[1][:-4]]
        img = page.locator("#review-photo img")
        img.wait_for()
        # loaded (an image without its fetched source yet is "complete" too), then drawn
        # large: the 48 px photo fills the photo column, not its own size
        for _ in range(100):  # (wait_for_function's eval is refused by the page's CSP)
            if img.evaluate("i => i.naturalWidth") > 0:
                break
            page.wait_for_timeout(50)
        assert img.bounding_box()["width"] >= 400
        page.keyboard.press("r")
        assert page.evaluate("document.activeElement.id") == "relabel-class"
        page.select_option("#relabel-class", suggested)
        page.keyboard.press("Enter")
        expect(page.locator("#review-position")).to_have_text(re.compile(r"^5 of"))
        assert page.text_content("#review-progress").startswith(f"4 of {len(entries)} decided")
        shoot(page, "review-desktop")
        # Saved already: the file beside the queue has the four decisions.
        saved = json.loads(decisions_path(review_server["path"]).read_text())["decisions"]
        assert saved[photo]["action"] == "relabel" and saved[photo]["labels"] == [suggested]
        assert saved["images/broken.jpg"]["action"] == "drop"
        assert saved["images/red02-copy.jpg"]["action"] == "keep"
        page.keyboard.press("ArrowLeft")  # back to the relabelled photo, then undo
        expect(page.locator("#review-position")).to_have_text(re.compile(r"^4 of"))
        assert "relabel as" in page.text_content("#review-decision")
        page.keyboard.press("u")
        expect(page.locator("#review-decision")).to_have_text("not yet")
        # Reopening continues at the first undecided photo (the one just undone).
        page.reload()
        page.wait_for_selector("#review:not([hidden])")
        assert page.text_content("#review-position") == f"4 of {len(entries)}"
        assert page.text_content("#review-progress").startswith(f"3 of {len(entries)} decided")
    saved = json.loads(decisions_path(review_server["path"]).read_text())["decisions"]
    assert len(saved) == 3 and photo not in saved
    assert sorted(p.name for p in (review_server["root"] / "images").iterdir()) == photos_before
    assert len(entries) > PER_CLASS // 10


def test_review_page_without_a_queue_says_how_to_make_one(browser, tmp_path):  # noqa: F811
    for url in _serve(create_app(ServiceSettings(models=["default"], api_key=KEY))):
        for page in _open(browser, url, viewport=DESKTOP):
            page.goto(url + "/review.html")
            page.wait_for_selector("#review-empty:not([hidden])")
            assert "fashionlens serve --review" in page.text_content("#review-empty")

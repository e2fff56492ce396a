"""The Review page in a real browser (headless Debian Chromium, Playwright), along the
README's review flow: `fashionlens serve --review queue.json` started without a key makes
one up and prints it; the page asks for it once, then a person goes through the queue
with the keyboard (keep, relabel, drop, next, U to undo the last decision), each
decision is saved to the decisions file beside the queue at once, reopening the page
continues at the first undecided photo, and `fashionlens review apply queue.json --out
cleaned.csv` writes the cleaned CSV. Nothing is loaded from outside the server, the
photos are never touched, and every wait is on the page's state.
"""

from __future__ import annotations

import csv
import json
import re

import pytest
from typer.testing import CliRunner

from fashionlens.atomic import write_json_atomic
from fashionlens.cli.common import out
from fashionlens.cli.main import app as cli
from fashionlens.cli.serve import _review_key
from fashionlens.curation.dataset import confine
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


def _queue(noisy, tmp_path):  # noqa: F811
    data, scan = measured(noisy, tmp_path)
    queue = build_queue(confine(data), scan).queue
    path = tmp_path / "queue.json"
    write_json_atomic(path, queue)
    return path, queue


@pytest.fixture
def review_server(noisy, tmp_path):  # noqa: F811
    """`fashionlens serve --review queue.json`, no --api-key: the key it prints."""
    path, queue = _queue(noisy, tmp_path)
    with out.capture() as printed:  # what the terminal shows
        settings = _review_key(ServiceSettings(models=["default"], review=str(path)))
    printed = printed.get()
    key = re.search(r"review API key \(.*\): (\S+)", printed).group(1)
    assert key == settings.api_key
    for url in _serve(create_app(settings)):
        yield {"url": url, "queue": queue, "path": path, "root": noisy["root"], "key": key}


def _decision(page, text: str) -> None:
    pytest.importorskip("playwright.sync_api").expect(
        page.locator("#review-decision")).to_have_text(text)


def _at(page, position: int) -> None:
    pytest.importorskip("playwright.sync_api").expect(
        page.locator("#review-position")).to_have_text(re.compile(rf"^{position} of"))


def test_review_flow_as_the_readme_says(browser, review_server, tmp_path):  # noqa: F811
    expect = pytest.importorskip("playwright.sync_api").expect
    url, queue = review_server["url"], review_server["queue"]
    entries = queue["entries"]
    photos_before = sorted(p.name for p in (review_server["root"] / "images").iterdir())
    for page in _open(browser, url, viewport=DESKTOP):
        page.goto(url + "/review.html")  # a new tab: no key yet; the page asks for it
        prompt = page.locator("#load-key")
        expect(prompt).to_be_visible()
        assert "review API key" in prompt.text_content()
        page.fill("#load-key-input", review_server["key"])
        prompt.get_by_role("button", name="Save key and retry").click()
        expect(page.locator("#review")).to_be_visible()
        expect(prompt).to_be_hidden()
        assert page.text_content("#review-position") == f"1 of {len(entries)}"
        assert page.text_content("#review-reason") == "unreadable file"
        assert page.locator("nav a[aria-current=page]").text_content() == "Review"
        page.keyboard.press("d")  # drop the broken file
        _at(page, 2)
        assert "duplicate across train and validation" in page.text_content("#review-reason")
        assert page.locator("#review-related img").count() == 1
        page.keyboard.press("d")  # the validation copy of a train photo
        _at(page, 3)
        page.keyboard.press("k")  # keep the resized copy (a person may)
        _at(page, 4)
        assert page.text_content("#review-reason") == "likely mislabel"
        photo = entries[3]["photo"]
        suggested = entries[3]["suggested"][0]
        assert page.text_content("#review-suggested") == suggested
        assert page.text_content("#review-labels") == FLIPS[photo.split("/")[1][:-4]]
        img = page.locator("#review-photo img")
        # fetched with the key and drawn large: the small photo fills the photo column
        expect(img).not_to_have_js_property("naturalWidth", 0)
        assert img.bounding_box()["width"] >= 400
        page.keyboard.press("r")
        assert page.evaluate("document.activeElement.id") == "relabel-class"
        page.select_option("#relabel-class", suggested)
        page.keyboard.press("Enter")
        _at(page, 5)
        expect(page.locator("#review-progress")).to_have_text(
            re.compile(rf"^4 of {len(entries)} decided"))
        shoot(page, "review-desktop")
        # Saved already: the file beside the queue has the four decisions.
        saved = json.loads(decisions_path(review_server["path"]).read_text())["decisions"]
        assert saved[photo]["action"] == "relabel" and saved[photo]["labels"] == [suggested]
        assert saved["images/broken.jpg"]["action"] == "drop"
        assert saved["images/red02-copy.jpg"]["action"] == "keep"
        # Back two photos (to the kept copy); U undoes the LAST decision (the relabel of
        # photo 4), not the photo shown, and shows the photo it undid.
        page.keyboard.press("ArrowLeft")
        _at(page, 4)
        page.keyboard.press("ArrowLeft")
        _at(page, 3)
        _decision(page, "keep")
        page.keyboard.press("u")
        _at(page, 4)
        _decision(page, "not yet")
        expect(page.locator("#review-progress")).to_have_text(
            re.compile(rf"^3 of {len(entries)} decided"))
        saved = json.loads(decisions_path(review_server["path"]).read_text())["decisions"]
        assert photo not in saved and saved["images/red02-copy.jpg"]["action"] == "keep"
        # Reopening (the key is kept for the tab) continues at the first undecided photo.
        page.reload()
        expect(page.locator("#review")).to_be_visible()
        assert page.locator("#load-key").is_hidden()
        assert page.text_content("#review-position") == f"4 of {len(entries)}"
        assert page.text_content("#review-progress").startswith(f"3 of {len(entries)} decided")
    saved = json.loads(decisions_path(review_server["path"]).read_text())["decisions"]
    assert len(saved) == 3 and photo not in saved
    assert sorted(p.name for p in (review_server["root"] / "images").iterdir()) == photos_before
    assert len(entries) > PER_CLASS // 10
    # fashionlens review apply queue.json --out cleaned.csv
    cleaned = tmp_path / "cleaned.csv"
    result = CliRunner().invoke(cli, ["review", "apply", str(review_server["path"]),
                                      "--out", str(cleaned)])
    assert result.exit_code == 0, result.output
    with cleaned.open() as fh:
        images = [r["image"] for r in csv.DictReader(fh)]
    assert len(images) == 3 * PER_CLASS + 3 - 2  # two dropped
    assert not any(i.endswith(("broken.jpg", "leak.png")) for i in images)


def test_save_key_and_retry_stores_the_decision_and_moves_on(browser, noisy, tmp_path):  # noqa: F811
    """Reads open to anyone (--public-review), the first decision asks for the key: once
    typed, the decision is saved, shown, and the page moves to the next photo."""
    expect = pytest.importorskip("playwright.sync_api").expect
    path, queue = _queue(noisy, tmp_path)
    settings = ServiceSettings(models=["default"], review=str(path), api_key=KEY,
                               public_review=True)
    for url in _serve(create_app(settings)):
        for page in _open(browser, url, viewport=DESKTOP):
            page.goto(url + "/review.html")
            expect(page.locator("#review")).to_be_visible()
            _at(page, 1)
            page.keyboard.press("k")
            box = page.locator("#review-key")
            expect(box).to_be_visible()
            page.fill("#review-key-input", KEY)
            box.get_by_role("button", name="Save key and retry").click()
            _at(page, 2)
            expect(box).to_be_hidden()
            expect(page.locator("#review-progress")).to_have_text(
                re.compile(rf"^1 of {len(queue['entries'])} decided"))
            page.keyboard.press("ArrowLeft")
            _at(page, 1)
            _decision(page, "keep")
    saved = json.loads(decisions_path(path).read_text())["decisions"]
    assert saved[queue["entries"][0]["photo"]]["action"] == "keep"


def test_review_page_without_a_queue_says_how_to_make_one(browser, tmp_path):  # noqa: F811
    for url in _serve(create_app(ServiceSettings(models=["default"], api_key=KEY))):
        for page in _open(browser, url, viewport=DESKTOP):
            page.goto(url + "/review.html")
            page.wait_for_selector("#review-empty:not([hidden])")
            assert "fashionlens serve --review" in page.text_content("#review-empty")

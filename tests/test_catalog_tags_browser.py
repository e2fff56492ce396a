"""Issue 20 on the catalog page, in a real browser: the item dialog's predicted tags with
Accept and Correct, hearts on cards and the "More like these" row, and the line where
good matches end. Uses the browser fixtures of test_webapp_browser (skipped without
Debian's chromium)."""

from __future__ import annotations

import pytest

from .test_webapp_browser import CHROMIUM, KEY, browser, live_server, page, shoot  # noqa: F401

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")


def test_predicted_tags_hearts_and_weak_matches(page, live_server):  # noqa: F811
    page.goto(live_server + "/catalog.html")
    page.wait_for_selector("#items .card-wrap .item")
    # Category counts follow the filter rule (shop's value, else a confident prediction).
    assert "Dress (2)" in page.locator("#f-category").inner_text()

    # Two hearts: the "More like these" row appears, without the liked items.
    hearts = page.locator("#items button.heart")
    hearts.nth(0).click()
    hearts.nth(1).click()
    liked = [page.locator("#items .card-wrap").nth(i).get_attribute("data-id") for i in (0, 1)]
    page.wait_for_function("(ids) => document.getElementById('liked-section').dataset.liked"
                           " === ids", arg="\n".join(liked))
    shown = page.locator("#liked-items .card-wrap").evaluate_all(
        "nodes => nodes.map(n => n.dataset.id)")
    assert shown and not set(liked) & set(shown)
    assert page.locator("#items button.heart").nth(0).get_attribute("aria-pressed") == "true"
    # Where good matches end: a line before the first weak match, if any is weak.
    weak = page.locator("#liked-items .card-wrap.weak").count()
    assert page.locator("#liked-items .weak-line").count() == (1 if weak else 0)
    shoot(page, "catalog-more-like-these")

    # The dialog shows the model's predicted tags; Accept makes one the shop's value.
    page.locator("#items .item").first.click()
    page.wait_for_selector("#detail[open] #detail-tags .tag-row")
    row = page.locator("#detail-tags .tag-row").first
    assert "%" in row.inner_text() and "shop:" in row.inner_text()
    page.locator("#detail-tags .tag-row button", has_text="Correct").first.click()
    box = page.locator("#detail-tags .tag-correct input").first
    box.fill("Gown")
    page.locator("#detail-tags .tag-correct button[type=submit]").first.click()
    page.wait_for_selector("#detail-key input")  # a change asks for the key
    page.locator("#detail-key input").fill(KEY)
    page.locator("#detail-key button").first.click()
    page.wait_for_function("() => [...document.querySelectorAll('#detail-meta dd')]"
                           ".some(d => d.textContent === 'Gown')")
    assert "shop: Gown" in page.locator("#detail-tags .tag-row").first.inner_text()
    shoot(page, "catalog-predicted-tags")

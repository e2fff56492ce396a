"""`fashionlens catalog ...` and `fashionlens search` end to end through typer."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from fashionlens.cli.main import app, main
from fashionlens.errors import FashionLensError
from fashionlens.search import Catalog, FilterError

from .helpers import write_corrupt_jpeg, write_pattern_photo
from .test_catalog import write_shop

runner = CliRunner()
CSV_FLAGS = ["--id-column", "sku", "--image-column", "photo", "--image-dir", "photos",
             "--image-ext", ".png"]


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture
def built(tmp_path, embedding_model_dir):
    """A catalog of 12 items built by the CLI from a CSV with one corrupt photo."""
    shop = write_shop(tmp_path / "shop")
    write_corrupt_jpeg(tmp_path / "shop" / "photos" / "item11.png")
    catalog = tmp_path / "catalog"
    result = _ok(_invoke("catalog", "build", shop, "--catalog", catalog,
                         "--model", embedding_model_dir, *CSV_FLAGS))
    assert "added 11, already in the catalog 0, not added 1" in result.stdout
    assert "item11" in result.stderr and "truncated" in result.stderr
    return catalog, shop


def test_build_resumes_and_reports(built, embedding_model_dir):
    catalog, shop = built
    result = _ok(_invoke("catalog", "build", shop, "--catalog", catalog, *CSV_FLAGS))
    assert "added 0, already in the catalog 11, not added 1" in result.stdout
    info = json.loads(_ok(_invoke("catalog", "info", "--catalog", catalog, "--json")).stdout)
    assert info["items"] == 11 and info["index"] == "flat" and info["index_vectors"] == 11
    assert info["model"] == str(embedding_model_dir.resolve())
    assert info["duplicate_threshold"] == 0.93  # the test model measured no line of its own
    table = _ok(_invoke("catalog", "info", "--catalog", catalog)).stdout
    assert "11 available" in table and "flat, 11 vectors" in table
    assert "near-duplicates from 0.93" in table


def test_search_by_photo_with_filters_and_json(built):
    catalog, shop = built
    photo = shop.parent / "photos" / "item04.png"
    result = _ok(_invoke("search", photo, "--catalog", catalog, "-k", "3", "--json"))
    data = json.loads(result.stdout)
    assert data["query"] == {"image": str(photo)} and len(data["results"]) == 3
    first = data["results"][0]
    assert first["rank"] == 1 and first["id"] == "item04"
    assert first["distance"] < 1e-3  # the CLI embeds in bf16 where the CPU has it
    filtered = json.loads(_ok(_invoke(
        "search", photo, "--catalog", catalog, "-k", "3", "--json",
        "--filter", "category=Dress", "--filter", "price<50")).stdout)
    assert [r["category"] for r in filtered["results"]] == ["Dress"] * 3
    assert all(r["price"] < 50 for r in filtered["results"])
    table = _ok(_invoke("search", photo, "--catalog", catalog, "-k", "2")).stdout
    assert "item04" in table and "similarity" in table and "distance" not in table


def test_search_by_item_excludes_it(built):
    catalog, _ = built
    data = json.loads(_ok(_invoke("search", "--item", "item02", "--catalog", catalog,
                                  "-k", "20", "--json")).stdout)
    ids = [r["id"] for r in data["results"]]
    assert len(ids) == 10 and "item02" not in ids


def test_update_sold_remove_rebuild_duplicates(built, tmp_path):
    catalog, shop = built
    result = _ok(_invoke("catalog", "update", "item01", "--catalog", catalog,
                         "--set", "price=25", "--set", "colour=black"))
    assert "item01" in result.stdout and "25.00" in result.stdout
    _ok(_invoke("catalog", "sold", "item02", "item03", "--catalog", catalog))
    _ok(_invoke("catalog", "remove", "item04", "--catalog", catalog))
    copy = write_pattern_photo(tmp_path / "upload.png", seed=5, fmt="PNG")
    added = _ok(_invoke("catalog", "add", copy, "--catalog", catalog, "--id", "dup",
                        "--set", "category=Hat", "--set", "price=9"))
    assert "added 1" in added.stdout
    with Catalog(catalog) as cat:
        assert cat.get("item01").price == 25.0 and cat.get("item01").colour == "black"
        assert cat.get("item02").status == "sold" and "item04" not in cat
        assert cat.get("dup").category == "Hat" and cat.index.ntotal == 11
    available = json.loads(_ok(_invoke("search", "--item", "item00", "--catalog", catalog,
                                       "-k", "20", "--filter", "status=available",
                                       "--json")).stdout)
    assert {"item02", "item03", "item04"}.isdisjoint(r["id"] for r in available["results"])
    pairs = json.loads(_ok(_invoke("catalog", "duplicates", "--catalog", catalog,
                                   "--threshold", "0.999", "--json")).stdout)["pairs"]
    assert [(p["a"], p["b"]) for p in pairs] == [("dup", "item05")]
    assert "dup" in _ok(_invoke("catalog", "duplicates", "--catalog", catalog)).stdout
    rebuilt = _ok(_invoke("catalog", "rebuild", "--catalog", catalog)).stdout
    assert "11 items" in rebuilt


def test_cli_errors_are_readable(built, tmp_path, monkeypatch, capsys):
    catalog, _ = built
    result = _invoke("search", "--item", "item00", "--catalog", catalog, "--filter", "prize<3")
    assert isinstance(result.exception, FilterError) and "prize" in str(result.exception)
    result = _invoke("search", "--catalog", catalog)
    assert isinstance(result.exception, FashionLensError)
    result = _invoke("catalog", "update", "item00", "--catalog", catalog, "--set", "price")
    assert "expected NAME=VALUE" in str(result.exception)
    result = _invoke("catalog", "info", "--catalog", tmp_path / "none")
    assert "not a catalog" in str(result.exception)
    monkeypatch.setattr(sys, "argv", ["fashionlens", "search", "--item", "item00",
                                      "--catalog", str(catalog), "--filter", "size<3"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    assert "compares numbers" in capsys.readouterr().err


def test_directions_learned_listed_used_and_removed(built):
    catalog, _ = built
    result = _ok(_invoke("catalog", "directions", "--catalog", catalog, "--learn", "category",
                         "--min-count", "3"))
    assert "learned 3 directions from category (mean)" in result.stderr
    assert "dress" in result.stdout and "shirt" in result.stdout
    data = json.loads(_ok(_invoke("search", "--item", "item00", "--catalog", catalog,
                                  "-k", "3", "--steer", "hat=0.5", "--steer", "+0.2 shirt",
                                  "--json")).stdout)
    assert data["steer"] == {"hat": 0.5, "shirt": 0.2} and len(data["results"]) == 3
    table = _ok(_invoke("search", "--item", "item00", "--catalog", catalog, "--steer",
                        "hat=1")).stdout
    assert "steered +1 hat" in table
    bad = _invoke("search", "--item", "item00", "--catalog", catalog, "--steer", "floral=1")
    assert isinstance(bad.exception, FashionLensError)
    assert "unknown steering direction(s): floral" in str(bad.exception)
    listed = json.loads(_ok(_invoke("catalog", "directions", "--catalog", catalog,
                                    "--remove", "hat", "--json")).stdout)
    assert [d["name"] for d in listed["directions"]] == ["dress", "shirt"]
    assert "probe" in _ok(_invoke("catalog", "directions", "--catalog", catalog, "--learn",
                                  "category", "--method", "probe", "--min-count", "3")).stdout


def test_reembed_command_switches_the_catalog_to_another_model(built, model_dir):
    catalog, shop = built
    result = _ok(_invoke("catalog", "reembed", "--catalog", catalog, "--model", model_dir))
    assert "re-embedded 11 items with" in result.stdout and "index: flat" in result.stdout
    info = json.loads(_ok(_invoke("catalog", "info", "--catalog", catalog, "--json")).stdout)
    assert info["model"] == str(model_dir.resolve()) and info["index_vectors"] == 11
    photo = shop.parent / "photos" / "item04.png"
    found = json.loads(_ok(_invoke("search", photo, "--catalog", catalog, "-k", "1",
                                   "--json")).stdout)
    assert found["results"][0]["id"] == "item04"


def test_item_table_leaves_out_columns_no_item_fills():
    from rich.console import Console

    from fashionlens.cli.search import item_table
    from fashionlens.search.catalog import Item

    def header(items):
        console = Console(width=200, record=True)
        console.print(item_table("t", items))
        return console.export_text().splitlines()[2]

    bare = [Item(id="a", image=None, category="Hat"), Item(id="b", image=None)]
    assert "category" in header(bare) and "status" in header(bare)
    assert not any(name in header(bare) for name in ("colour", "size", "price", "photo"))
    priced = [*bare, Item(id="c", image=None, price=12.5, colour="red")]
    assert "price" in header(priced) and "colour" in header(priced)


def test_search_table_at_80_columns_keeps_whole_headers_and_the_category(built, monkeypatch):
    from fashionlens.cli import common

    catalog, shop = built
    monkeypatch.setattr(common.out, "_width", None)  # measure the terminal from COLUMNS
    photo = shop.parent / "photos" / "item04.png"
    result = _ok(runner.invoke(app, ["search", str(photo), "--catalog", str(catalog), "-k", "3"],
                               env={"COLUMNS": "80"}))
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    header = next(line for line in lines if "similarity" in line)
    cells = [c.strip() for c in header.strip("┃ ").split("┃")]
    assert cells[:4] == ["#", "similarity", "id", "category"] and "status" in cells
    assert "…" not in header and "distance" not in result.stdout
    found = json.loads(_ok(_invoke("search", photo, "--catalog", catalog, "-k", "3",
                                   "--json")).stdout)["results"]
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == 3
    for row, match in zip(rows, found, strict=True):
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[:4] == [str(match['rank']), f"{match['similarity']:.4f}", match["id"],
                             match["category"]]


def test_item_table_gives_way_photo_first():
    from rich.console import Console

    from fashionlens.cli.search import item_table
    from fashionlens.search.catalog import Item, Match

    items = [Item(id=f"Longsleeve/longsleeve-{i}", image=f"/store/Longsleeve_long-{i}-abc.jpg",
                  category="Longsleeve", colour="red", price=12.5) for i in range(3)]
    matches = [Match(item=item, similarity=0.9 - i / 10) for i, item in enumerate(items)]
    for width, expect_photo in ((200, True), (80, False)):
        console = Console(width=width, record=True)
        console.print(item_table(None, items, matches, width=width))
        text = console.export_text()
        assert ("photo" in text) is expect_photo
        assert "category" in text and "Longsleeve" in text and "0.9000" in text
        assert all(len(line) <= width for line in text.splitlines())

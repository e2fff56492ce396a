"""The visual-search catalog: building, incremental changes, atomicity, repair, search."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashionlens.errors import DataError, FashionLensError, ImageError, UnknownItemError
from fashionlens.search import Catalog, Embedder, FilterError, ItemRecord, parse_filters
from fashionlens.search import catalog as catalog_module
from fashionlens.search import index as index_module
from fashionlens.search import query as query_module
from fashionlens.search.index import VectorIndex
from fashionlens.search.indexing import IndexKeeper
from fashionlens.search.ingest import Ingestor
from fashionlens.search.store import CatalogStore

from .helpers import pattern_photo, write_corrupt_jpeg, write_pattern_photo

CATEGORIES = ["Dress", "Shirt", "Hat"]
COLOUR_NAMES = ["red", "blue", "green"]
CSV_OPTIONS = {"id_column": "sku", "image_column": "photo", "image_dir": "photos",
               "image_extension": ".png"}


def write_shop(root: Path, n: int = 12, start: int = 0, name: str = "export.csv") -> Path:
    """root/photos/itemNN.png plus a CSV with sku, photo, category, Color, size, price,
    brand: item i is CATEGORIES[i % 3], COLOUR_NAMES[(i // 3) % 3] and costs 5 + 5 i."""
    rows = []
    for i in range(start, start + n):
        item_id = f"item{i:02d}"
        write_pattern_photo(root / "photos" / f"{item_id}.png", seed=i, fmt="PNG")
        rows.append({"sku": item_id, "photo": item_id, "category": CATEGORIES[i % 3],
                     "Color": COLOUR_NAMES[(i // 3) % 3], "size": "SML"[i % 3],
                     "price": f"{5 + 5 * i}", "brand": f"brand{i % 2}"})
    path = root / name
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def embedder(embedding_model_dir) -> Embedder:
    return Embedder(embedding_model_dir, precision="fp32")


@pytest.fixture
def shop(tmp_path) -> Path:
    return write_shop(tmp_path / "shop")


@pytest.fixture
def catalog(tmp_path, embedder, shop):
    cat = Catalog(tmp_path / "catalog", create=True, embedder=embedder)
    report = cat.add_source(shop, **CSV_OPTIONS)
    assert len(report.added) == 12 and not report.failed
    yield cat
    cat.close()


def _snapshot(cat: Catalog) -> dict:
    return {"items": [item.to_dict() for item in cat.items()],
            "photos": sorted(p.name for p in (cat.path / "images").iterdir()),
            "index": cat.index_path.read_bytes() if cat.index_path.exists() else None}


# --- the embedder -------------------------------------------------------------------


def test_embedder_gives_unit_vectors_and_reports_bad_photos(embedder, tmp_path):
    good = write_pattern_photo(tmp_path / "a.png", seed=1)
    broken = write_corrupt_jpeg(tmp_path / "broken.jpg")
    buffer = io.BytesIO()
    pattern_photo(2).save(buffer, format="JPEG")
    sources = [good, broken, buffer.getvalue(), pattern_photo(3), tmp_path / "missing.jpg"]
    results = list(embedder.embed(sources, batch_size=2))
    assert [r.ok for r in results] == [True, False, True, True, False]
    assert "truncated" in results[1].error and "not found" in results[4].error
    for r in results:
        if r.ok:
            assert r.vector.dtype == np.float32 and r.vector.shape == (embedder.dim,)
            assert abs(float(np.linalg.norm(r.vector)) - 1.0) < 1e-5
    np.testing.assert_allclose(embedder.embed_one(good), results[0].vector, atol=1e-5)
    with pytest.raises(ImageError, match="truncated"):
        embedder.embed_one(broken)


# --- building ----------------------------------------------------------------------


def test_build_from_csv_maps_columns_and_copies_photos(catalog, shop):
    assert len(catalog) == 12
    item = catalog.get("item04")
    assert (item.category, item.colour, item.size, item.price, item.status) == (
        "Shirt", "blue", "M", 25.0, "available")
    assert item.extra == {"brand": "brand0"}
    source = shop.parent / "photos" / "item04.png"
    assert item.image.parent == catalog.path / "images"
    assert item.image.read_bytes() == source.read_bytes() and item.source == str(source)
    info = catalog.info()
    assert info["items"] == 12 and info["index"] == "flat" and info["index_vectors"] == 12
    assert info["categories"] == {"Dress": 4, "Hat": 4, "Shirt": 4}
    assert info["dimension"] == catalog.dim and info["model_fingerprint"].startswith("test_eff")


def test_build_from_folder_uses_subfolders_as_categories(tmp_path, embedder):
    photos = tmp_path / "photos"
    for i, category in enumerate(["Dress", "Dress", "Hat"]):
        write_pattern_photo(photos / category / f"p{i}.jpg", seed=i)
    write_pattern_photo(photos / "loose.png", seed=9)
    before = {p: p.stat().st_mtime_ns for p in photos.rglob("*") if p.is_file()}
    with Catalog(tmp_path / "cat", create=True, embedder=embedder) as cat:
        report = cat.add_source(photos)
        assert sorted(report.added) == ["Dress/p0", "Dress/p1", "Hat/p2", "loose"]
        assert cat.get("Hat/p2").category == "Hat" and cat.get("loose").category is None
    assert before == {p: p.stat().st_mtime_ns for p in photos.rglob("*") if p.is_file()}


def test_unreadable_and_missing_photos_are_reported_and_skipped(tmp_path, embedder):
    shop = write_shop(tmp_path / "shop", n=4)
    write_corrupt_jpeg(tmp_path / "shop" / "photos" / "item01.png")
    with shop.open("a", newline="") as fh:
        fh.write("ghost,ghost,Dress,red,M,10,b\n")
        fh.write(",item02,Dress,red,M,10,b\n")
        fh.write("cheap,item03,Dress,red,M,ten euros,b\n")
    with Catalog(tmp_path / "cat", create=True, embedder=embedder) as cat:
        report = cat.add_source(shop, **CSV_OPTIONS)
        assert sorted(report.added) == ["item00", "item02", "item03"]
        reasons = {f.id: f.error for f in report.failed}
        assert set(reasons) == {"item01", "ghost", "line 7", "cheap"}
        assert "truncated" in reasons["item01"] and "not found" in reasons["ghost"]
        assert "empty value in column 'sku'" in reasons["line 7"]
        assert "not a number" in reasons["cheap"]
        assert len(cat) == 3 and cat.index.ntotal == 3
        assert len(list((cat.path / "images").iterdir())) == 3


def test_bad_sources_and_folders_are_refused(tmp_path, embedder, shop):
    with pytest.raises(FashionLensError, match="not a catalog"):
        Catalog(tmp_path / "nowhere")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FashionLensError, match="not an empty folder"):
        Catalog(tmp_path / "busy", create=True, embedder=embedder)
    with pytest.raises(FashionLensError, match="no such model folder"):
        Catalog(tmp_path / "new", create=True, model=tmp_path / "no-model")
    assert not (tmp_path / "new").exists()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "catalog.sqlite").write_bytes(b"x" * 4096)
    with pytest.raises(FashionLensError, match="not a readable catalog database"):
        Catalog(tmp_path / "broken")
    with Catalog(tmp_path / "cat", create=True, embedder=embedder) as cat:
        with pytest.raises(DataError, match="no column 'id'"):
            cat.add_source(shop)
        with pytest.raises(DataError, match="no column 'kind'"):
            cat.add_source(shop, **CSV_OPTIONS, columns={"category": "kind"})


def test_model_of_another_catalog_is_refused(catalog, tmp_path):
    import torch

    from fashionlens.data.transforms import Preprocess
    from fashionlens.models import ModelInfo, create_model, save_model

    torch.manual_seed(1)
    other = save_model(create_model("test_efficientnet", num_classes=3, pretrained="none"),
                       ModelInfo("test_efficientnet", ["a", "b", "c"], Preprocess(size=64)),
                       tmp_path / "other")
    with pytest.raises(FashionLensError, match="built with model") as refused:
        Catalog(catalog.path, embedder=Embedder(other, precision="fp32"))
    assert "fashionlens catalog reembed --catalog" in str(refused.value)  # the way out


# --- incremental changes ------------------------------------------------------------


def test_add_update_sold_remove_are_incremental(catalog, tmp_path, monkeypatch):
    index = catalog.index
    monkeypatch.setattr(IndexKeeper, "rebuild", lambda *a, **k: pytest.fail("re-indexed"))
    more = write_shop(tmp_path / "more", n=3, start=20)
    report = catalog.add_source(more, **CSV_OPTIONS)
    assert sorted(report.added) == ["item20", "item21", "item22"]
    assert catalog.index is index and index.ntotal == 15

    photo = io.BytesIO()
    pattern_photo(77).save(photo, format="PNG")
    catalog.add([ItemRecord("upload", photo.getvalue(), category="Hat", price="12,50")])
    assert catalog.index is index and index.ntotal == 16
    assert catalog.get("upload").price == 12.5 and catalog.get("upload").image.suffix == ".png"

    item = catalog.update("item03", {"price": "25", "colour": "black", "extra.brand": ""})
    assert (item.price, item.colour, item.extra) == (25.0, "black", {})
    assert catalog.mark_sold("item05").status == "sold"
    assert catalog.index is index and index.ntotal == 16

    photo_file = catalog.get("item07").image
    catalog.remove("item07")
    assert catalog.index is index and index.ntotal == 15 and len(catalog) == 15
    assert not photo_file.exists() and "item07" not in catalog
    assert "item07" not in [m.item.id for m in catalog.search(item="item06", k=20)]

    with pytest.raises(UnknownItemError, match="no item with id 'nope'"):
        catalog.remove(["item08", "nope"])
    assert "item08" in catalog  # nothing removed when one id is unknown
    for bad, message in (({"prize": 3}, "unknown field 'prize'"),
                         ({"price": "cheap"}, "not a number"),
                         ({"status": "gone"}, "unknown status"),
                         ({"id": "x"}, "cannot be changed")):
        with pytest.raises(FashionLensError, match=message):
            catalog.update("item03", bad)


def test_catalog_persists_across_reopen(catalog, embedder):
    catalog.mark_sold("item02")
    before = [m.item.id for m in catalog.search(item="item00", k=5)]
    catalog.close()
    with Catalog(catalog.path, embedder=embedder) as again:
        assert not again.repaired and len(again) == 12 and again.index.ntotal == 12
        assert again.get("item02").status == "sold"
        assert [m.item.id for m in again.search(item="item00", k=5)] == before
        assert again.model == str(embedder.spec)


# --- atomicity and repair ----------------------------------------------------------


def _failing_insert(monkeypatch, fail_at: int) -> None:
    """The `fail_at`-th batch insert dies after its rows went in, before the commit."""
    calls = {"n": 0}
    original = CatalogStore.insert_items

    def insert(self, *args):
        calls["n"] += 1
        keys = original(self, *args)
        if calls["n"] == fail_at:
            assert len(keys)  # the rows were inserted: the rollback must undo them
            raise RuntimeError("power cut")
        return keys

    monkeypatch.setattr(CatalogStore, "insert_items", insert)


def test_crash_mid_batch_leaves_catalog_unchanged_and_rerun_resumes(catalog, tmp_path,
                                                                    monkeypatch, embedder):
    before = _snapshot(catalog)
    more = write_shop(tmp_path / "more", n=4, start=30)
    _failing_insert(monkeypatch, fail_at=1)
    with pytest.raises(RuntimeError, match="power cut"):
        catalog.add_source(more, **CSV_OPTIONS)
    assert _snapshot(catalog) == before
    catalog.close()
    monkeypatch.undo()
    with Catalog(catalog.path, embedder=embedder) as again:
        assert not again.repaired and _snapshot(again) == before
        report = again.add_source(more, **CSV_OPTIONS)
        assert sorted(report.added) == ["item30", "item31", "item32", "item33"]
        assert len(again) == 16 and again.index.ntotal == 16


def test_interrupted_multi_batch_build_keeps_whole_batches_and_resumes(tmp_path, embedder,
                                                                       shop, monkeypatch):
    _failing_insert(monkeypatch, fail_at=2)  # the second batch of four
    with Catalog(tmp_path / "cat", create=True, embedder=embedder) as cat, \
            pytest.raises(RuntimeError):
        cat.add_source(shop, batch_size=4, **CSV_OPTIONS)
    monkeypatch.undo()
    with Catalog(tmp_path / "cat", embedder=embedder) as cat:
        assert not cat.repaired
        assert [item.id for item in cat.items()] == ["item00", "item01", "item02", "item03"]
        assert cat.index.ntotal == 4 and len(list((cat.path / "images").iterdir())) == 4
        report = cat.add_source(shop, batch_size=4, **CSV_OPTIONS)
        assert len(report.existing) == 4 and len(report.added) == 8 and len(cat) == 12


def test_index_behind_the_database_is_rebuilt_on_open(catalog, tmp_path, embedder,
                                                      monkeypatch):
    old_index = tmp_path / "old.faiss"
    shutil.copy(catalog.index_path, old_index)
    more = write_shop(tmp_path / "more", n=2, start=40)
    # A crash after the database committed but before the index file was replaced.
    def write(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(VectorIndex, "write", write)
    with pytest.raises(OSError, match="disk full"):
        catalog.add_source(more, **CSV_OPTIONS)
    monkeypatch.undo()
    assert catalog.index_path.read_bytes() == old_index.read_bytes()
    catalog.close()
    with Catalog(catalog.path, embedder=embedder) as again:
        assert again.repaired and len(again) == 14 and again.index.ntotal == 14
        assert VectorIndex.read(again.index_path).ntotal == 14  # the repair was saved
        top = again.search(again.get("item41").image, k=1)
        assert top[0].item.id == "item41" and top[0].distance < 1e-4
    with Catalog(catalog.path, embedder=embedder) as third:
        assert not third.repaired


@pytest.mark.parametrize("damage", ["delete", "garbage", "stale-removal"])
def test_missing_or_damaged_index_is_rebuilt(catalog, embedder, damage):
    path = catalog.index_path
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"not a faiss index")
    else:  # the database lost an item but the (flat) index still holds its vector
        stale = path.read_bytes()
        catalog.remove("item05")
        path.write_bytes(stale)
    catalog.close()
    with Catalog(catalog.path, embedder=embedder) as again:
        assert again.repaired
        assert again.index.ntotal == len(again) == (11 if damage == "stale-removal" else 12)
        assert len(again.search(item="item00", k=50)) == len(again) - 1


# --- searching ---------------------------------------------------------------------


@pytest.fixture(params=["exact", "faiss-selector"])
def search_path(request, monkeypatch):
    if request.param == "faiss-selector":
        monkeypatch.setattr(query_module, "EXACT_LIMIT", 0)
    return request.param


def test_search_by_photo_and_by_item(catalog, shop):
    photo = shop.parent / "photos" / "item07.png"
    for query in (photo, photo.read_bytes(), Image.open(photo).convert("RGB")):
        top = catalog.search(query, k=3)
        assert len(top) == 3 and top[0].item.id == "item07" and top[0].distance < 1e-4
        assert [m.similarity for m in top] == sorted((m.similarity for m in top), reverse=True)
    by_item = catalog.search(item="item07", k=20)
    assert len(by_item) == 11 and "item07" not in [m.item.id for m in by_item]
    d = by_item[0].to_dict()
    assert {"id", "distance", "similarity", "category", "price", "image"} <= set(d)
    assert abs(d["distance"] + d["similarity"] - 1.0) < 1e-5
    with pytest.raises(FashionLensError, match="exactly one"):
        catalog.search(photo, item="item07")
    with pytest.raises(FashionLensError, match="no item with id"):
        catalog.search(item="nope")


@pytest.mark.parametrize(("filters", "expected"), [
    ("category=Dress", {"item00", "item03", "item06", "item09"}),
    ("category=dress", {"item00", "item03", "item06", "item09"}),
    ("colour in (blue, green)", {f"item{i:02d}" for i in range(3, 9)}),
    ({"colour": ["blue", "green"]}, {f"item{i:02d}" for i in range(3, 9)}),
    ("color!=red", {f"item{i:02d}" for i in range(3, 9)}),
    ("price<30", {f"item{i:02d}" for i in range(5)}),
    (["price>=10", "price<30"], {f"item{i:02d}" for i in range(1, 5)}),
    ({"price<=": 25, "category": "Shirt"}, {"item01", "item04"}),
    ("extra.brand=brand1", {f"item{i:02d}" for i in range(1, 12, 2)}),
])
def test_filters_return_k_matching_items(catalog, search_path, filters, expected):
    for k in (1, 3, 50):
        results = catalog.search(item="item11", k=k, filters=filters)
        ids = {m.item.id for m in results}
        assert ids <= expected - {"item11"}
        assert len(results) == min(k, len(expected - {"item11"}))


def test_status_filter(catalog, search_path):
    for item_id in ("item01", "item02", "item03"):
        catalog.mark_sold(item_id)
    available = catalog.search(item="item00", k=8, filters="status=available")
    assert len(available) == 8
    assert all(m.item.status == "available" for m in available)
    sold = catalog.search(item="item00", k=8, filters=["status=sold"])
    assert sorted(m.item.id for m in sold) == ["item01", "item02", "item03"]


@pytest.mark.parametrize(("text", "message"), [
    ("prize<30", "unknown field 'prize'"),
    ("price<cheap", "price takes a number"),
    ("category", "expected FIELD=VALUE"),
    ("size<M", "compares numbers"),
    ("status=gone", "unknown status 'gone'"),
    ("colour in ()", "empty list"),
    ("category=", "no value"),
])
def test_bad_filters_are_explained(text, message):
    with pytest.raises(FilterError, match=message) as caught:
        parse_filters([text])
    assert isinstance(caught.value, FashionLensError)
    assert text in str(caught.value)


def test_near_duplicates_finds_a_copy(catalog):
    photo = catalog.get("item03").image.read_bytes()
    catalog.add([ItemRecord("item03-again", photo, category="Dress")])
    pairs = catalog.near_duplicates(0.999)
    assert [(p.a.id, p.b.id) for p in pairs] == [("item03", "item03-again")]
    assert pairs[0].similarity > 0.9999
    assert catalog.near_duplicates(0.3)[0].b.id == "item03-again"
    with pytest.raises(FashionLensError, match="threshold"):
        catalog.near_duplicates(1.5)


# --- the IVF index for big catalogs -------------------------------------------------


@pytest.fixture
def small_switch(monkeypatch):
    """Make catalogs switch to IVF from 6 items (and back to flat below 3)."""
    monkeypatch.setattr(index_module, "IVF_MIN_ITEMS", 6)
    monkeypatch.setattr(index_module, "EXACT_SCAN_VALUES", 0)


def test_ivf_index_takes_incremental_changes(tmp_path, embedder, shop, small_switch,
                                             search_path, monkeypatch):
    with Catalog(tmp_path / "cat", create=True, embedder=embedder) as cat:
        cat.add_source(shop, batch_size=4, **CSV_OPTIONS)
        index = cat.index
        assert index.kind == "ivf" and index.ntotal == 12 and cat.info()["index"] == "ivf"
        photo = shop.parent / "photos" / "item05.png"
        top = cat.search(photo, k=1)[0]
        assert top.item.id == "item05" and top.distance < 1e-4  # re-ranked: exact similarity
        rebuilds = []
        rebuild = IndexKeeper.rebuild
        monkeypatch.setattr(IndexKeeper, "rebuild", lambda *a, **k: rebuilds.append(1))
        cat.remove("item05")
        assert cat.index is index and index.ntotal == 11 and 6 not in set(index.ids())
        assert "item05" not in [m.item.id for m in cat.search(photo, k=11)]
        assert len(cat.search(photo, k=11)) == 11
        dresses = cat.search(item="item00", k=3, filters="category=Dress")
        assert sorted(m.item.id for m in dresses) == ["item03", "item06", "item09"]
        cat.update("item06", category="Hat")
        assert "item06" not in [m.item.id for m in cat.search(item="item00", k=3,
                                                              filters="category=Dress")]
        assert not rebuilds
        monkeypatch.setattr(IndexKeeper, "rebuild", rebuild)

    with Catalog(tmp_path / "cat", embedder=embedder) as cat:
        assert not cat.repaired and cat.index.kind == "ivf" and len(cat) == 11
        index = cat.index
        cat.add([ItemRecord("copy", cat.get("item01").image.read_bytes())])
        assert cat.index is index and index.ntotal == 12
        assert [(p.a.id, p.b.id) for p in cat.near_duplicates(0.99)] == [("copy", "item01")]
        cat.remove([f"item{i:02d}" for i in (0, 1, 2, 3, 4, 6, 7, 8, 9)])  # 3 left: still IVF
        assert cat.index is index and index.kind == "ivf"
        cat.remove("item10")  # 2 left, below half the switch size: back to exact search
        assert cat.index.kind == "flat" and cat.index.ntotal == 2
        result = cat.rebuild()
        assert result == {"items": 2, "index": "flat", "orphan_photos_removed": 0}


def test_index_misses_are_completed_exactly(tmp_path, embedder, shop, small_switch,
                                            monkeypatch):
    monkeypatch.setattr(query_module, "EXACT_LIMIT", 0)
    with Catalog(tmp_path / "cat", create=True, embedder=embedder) as cat:
        cat.add_source(shop, **CSV_OPTIONS)
        assert cat.index.kind == "ivf"
        expected = [(m.item.id, round(m.similarity, 5))
                    for m in cat.search(item="item00", k=4, filters="colour=red")]
        calls = []

        def blind(self, queries, k, **options):  # an index that finds nothing
            calls.append(options.get("exhaustive", False))
            return (np.full((1, k), -np.inf, dtype=np.float32),
                    np.full((1, k), -1, dtype=np.int64))

        monkeypatch.setattr(VectorIndex, "search", blind)
        again = [(m.item.id, round(m.similarity, 5))
                 for m in cat.search(item="item00", k=4, filters="colour=red")]
        assert again == expected and len(expected) == 4
        assert calls == [False, True]  # probed lists, then all lists, then exact
        assert len(cat.search(item="item00", k=20)) == 11  # unfiltered too


# --- bulk loading precomputed vectors -----------------------------------------------


def clustered_vectors(n: int, dim: int, seed: int = 0, clusters: int = 8) -> np.ndarray:
    """Unit vectors around a few centres, so nearest neighbours mean something."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.4 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def vector_records(n: int, start: int = 0) -> list[ItemRecord]:
    return [ItemRecord(f"v{i:04d}", None, category=CATEGORIES[i % 3],
                       colour=[None, "Red", "red", "BLUE"][i % 4], size="SML"[i % 3],
                       price=None if i % 7 == 0 else float(i % 50),
                       status=["available", "sold", "reserved", "available"][i % 4],
                       extra={"brand": f"b{i % 5}"})
            for i in range(start, start + n)]


def test_add_vectors_bulk_loads_without_photos(tmp_path, monkeypatch, search_path):
    monkeypatch.setattr(index_module, "IVF_MIN_ITEMS", 200)
    monkeypatch.setattr(index_module, "EXACT_SCAN_VALUES", 0)
    vectors = clustered_vectors(600, 16)
    records = vector_records(600)
    with Catalog(tmp_path / "cat", create=True, dim=16) as cat:
        seen = []
        report = cat.add_vectors(records[:150], vectors[:150] * 3.0, batch_rows=64,
                                 progress=seen.append)
        assert len(report.added) == 150 and seen == [64, 64, 22]
        assert cat.index.kind == "flat" and cat.index.ntotal == 150
        report = cat.add_vectors(records, vectors, batch_rows=100)  # grows past the switch
        assert len(report.existing) == 150 and len(report.added) == 450
        assert cat.index.kind == "ivf" and cat.index.ntotal == 600 and cat.index.nlist > 1
        assert cat.last_rebuild["train_s"] >= 0 and cat.index_path.is_file()
        top = cat.search(vector=vectors[42], k=3)
        assert top[0].item.id == "v0042" and top[0].similarity == pytest.approx(1.0, abs=1e-5)
        assert top[0].item.image is None and top[0].to_dict()["image"] is None
        exact = np.argsort(-(vectors @ vectors[42]))[:10]
        found = [int(m.item.id[1:]) for m in cat.search(vector=vectors[42], k=10)]
        assert len(set(found) & set(exact.tolist())) >= 9
        red = cat.search(vector=vectors[0], k=500, filters=["colour=red", "price<20"])
        expected = {r.id for r in records if (r.colour or "").lower() == "red"
                    and r.price is not None and r.price < 20}
        assert {m.item.id for m in red} == expected
        for k in (1, 5, 40):
            got = cat.search(item="v0001", k=k, filters="extra.brand=b2")
            assert len(got) == k and all(m.item.extra["brand"] == "b2" for m in got)

        bad = [ItemRecord("", None), ItemRecord("p", None, price="lots"),
               ItemRecord("z", None), ItemRecord("q", None), ItemRecord("q", None)]
        rows = np.ones((5, 16), dtype=np.float32)
        rows[2] = 0
        report = cat.add_vectors(bad, rows)
        assert report.added == ["q"] and len(report.failed) == 4
        assert {f.id: f.error for f in report.failed}["z"] == "the vector is zero or not finite"
        with pytest.raises(FashionLensError, match="dimension 16"):
            cat.add_vectors([ItemRecord("w", None)], np.ones((1, 8)))
        with pytest.raises(FashionLensError, match="16-d vectors"):
            cat.search(vector=np.ones(8))
    with pytest.raises(FashionLensError, match="holds 16-d vectors"):
        Catalog(tmp_path / "cat", dim=32)


def test_interrupted_bulk_load_keeps_whole_batches_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "IVF_MIN_ITEMS", 100)
    monkeypatch.setattr(index_module, "EXACT_SCAN_VALUES", 0)
    vectors = clustered_vectors(400, 8, seed=1)
    records = vector_records(400)
    calls = {"n": 0}
    original = Ingestor.commit

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("power cut")
        return original(self, *args)

    with Catalog(tmp_path / "cat", create=True, dim=8) as cat:
        monkeypatch.setattr(Ingestor, "commit", failing)
        with pytest.raises(RuntimeError, match="power cut"):
            cat.add_vectors(records, vectors, batch_rows=100)
        monkeypatch.setattr(Ingestor, "commit", original)
        assert len(cat) == 200
    with Catalog(tmp_path / "cat") as cat:  # the index never took those 200: repaired
        assert cat.repaired and cat.index.ntotal == 200 and cat.index.kind == "ivf"
        report = cat.add_vectors(records, vectors, batch_rows=100)
        assert len(report.existing) == 200 and len(report.added) == 200
        assert len(cat) == cat.index.ntotal == 400
        assert cat.search(vector=vectors[399], k=1)[0].item.id == "v0399"


def test_filter_columns_agree_with_sql(tmp_path):
    from fashionlens.search.filters import to_sql

    rng = np.random.default_rng(3)
    n = 300
    records = [ItemRecord(f"x{i}", None,
                          category=[None, "Dress", "dress", "DRESS", "Hat", "Été"][i % 6],
                          colour=rng.choice(["red", "Red", "blue", "été", "ÉTÉ"]).item()
                          if i % 5 else None,
                          size=[None, "M", "m", "XL"][i % 4],
                          price=None if i % 9 == 0 else float(rng.integers(0, 100)),
                          status=STATUS_CYCLE[i % 3])
               for i in range(n)]
    filters = ["category=dress", "category!=DRESS", "category in (hat, Été)",
               "category not in (Dress)", "colour=ÉTÉ", "colour!=red", "size=m",
               "size in (xl, nope)", "size not in (nope)", "category=nope", "colour!=nope",
               "price<30", "price<=30", "price>70", "price>=70", "price=50", "price!=50",
               "price in (10, 20)", "price not in (10, 20)", "status=sold",
               "status in (available, reserved)", "status!=available"]
    with Catalog(tmp_path / "cat", create=True, dim=4) as cat:
        cat.add_vectors(records, clustered_vectors(n, 4))
        other = Catalog(tmp_path / "cat")  # a second connection, as another process

        def check() -> None:
            for text in [*filters, ["category=dress", "price<50", "status!=sold"]]:
                conditions = parse_filters(text)
                where, params = to_sql(conditions)
                expected = sorted(r[0] for r in cat.store.db.execute(
                    f"SELECT key FROM items WHERE {where}", params))
                assert np.flatnonzero(cat.filter_mask(text)).tolist() == expected, text

        check()
        cat.update("x1", category="Hat", price=None)
        cat.remove(["x2", "x3"])
        cat.add_vectors([ItemRecord("late", None, category="dress", price=5.0)],
                        np.ones((1, 4)))
        check()
        other.update("x4", colour="red", status="sold")  # seen through data_version
        other.remove("x5")
        check()
        other.close()


STATUS_CYCLE = ["available", "sold", "reserved"]


def test_catalog_finds_its_model_or_is_told_where_it_moved(tmp_path, embedding_model_dir):
    model = shutil.copytree(embedding_model_dir, tmp_path / "model")
    photo = write_pattern_photo(tmp_path / "p.png", seed=3)
    with Catalog(tmp_path / "cat", create=True, model=model) as cat:
        cat.add([ItemRecord("p", photo)])
    with Catalog(tmp_path / "cat") as cat:  # the recorded model is loaded on demand
        assert cat.search(photo, k=1)[0].item.id == "p"
    moved = model.rename(tmp_path / "moved")
    with Catalog(tmp_path / "cat") as cat:
        assert cat.search(item="p") == []  # searching by item needs no model
        with pytest.raises(FashionLensError, match="pass its new location with --model"):
            cat.search(photo)
    with Catalog(tmp_path / "cat", model=moved) as cat:
        assert cat.search(photo, k=1)[0].item.id == "p"


def test_import_vectors_command(tmp_path, embedder):
    from typer.testing import CliRunner

    from fashionlens.cli.main import app

    vectors = clustered_vectors(30, embedder.dim, seed=4)
    np.save(tmp_path / "vectors.npy", vectors)
    lines = ["sku,category,price,brand"] + [
        f"s{i},{CATEGORIES[i % 3]},{'cheap' if i == 7 else i},b{i % 2}" for i in range(30)]
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n")
    catalog = tmp_path / "cat"
    args = ["catalog", "import-vectors", tmp_path / "vectors.npy", tmp_path / "meta.csv",
            "--catalog", catalog, "--id-column", "sku"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "added 29, already in the catalog 0, not added 1" in result.output
    with Catalog(catalog) as cat:
        top = cat.search(vector=vectors[8], k=2, filters="category=Hat")
        assert top[0].item.id == "s8" and top[0].item.extra == {"brand": "b0"}
        assert cat.get("s9").price == 9.0 and "s7" not in cat
        with pytest.raises(FashionLensError, match="no model is recorded"):
            cat.search(write_pattern_photo(tmp_path / "q.png", seed=1))
    with Catalog(catalog, model=embedder.spec) as cat:  # the model the vectors came from
        assert len(cat.search(write_pattern_photo(tmp_path / "q.png", seed=1), k=3)) == 3
    result = CliRunner().invoke(app, [str(a) for a in args])  # again: all there already
    assert "added 0, already in the catalog 29" in result.output
    np.save(tmp_path / "short.npy", vectors[:5])
    args[2] = tmp_path / "short.npy"
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code != 0 and "must match row for row" in str(result.exception)


def test_reembed_swaps_in_another_models_vectors_and_directions(catalog, model_dir):
    catalog.learn_directions("category", min_count=3)
    before_dirs = catalog.directions()
    old_vector = catalog.vector("item03")
    result = catalog.reembed(model_dir)
    assert result["items"] == 12 and result["resumed"] == 0
    assert result["directions"] == before_dirs and catalog.directions() == before_dirs
    assert catalog.model == str(Path(model_dir).resolve()) and result["index"] == "flat"
    new_vector = catalog.vector("item03")
    assert not np.allclose(old_vector, new_vector)
    assert np.allclose(new_vector, Embedder(model_dir, runtime=catalog.runtime).embed_one(
        catalog.path / catalog.get("item03").image), atol=1e-3)
    # The photo search now uses the new model, and the item finds itself first.
    photo = catalog.path / catalog.get("item03").image
    assert catalog.search(photo, k=1)[0].item.id == "item03"
    assert catalog.store.meta("reembed_target") is None  # the staging is gone
    assert not catalog.store.db.execute(
        "SELECT name FROM sqlite_master WHERE name = 'reembed'").fetchall()
    reopened = Catalog(catalog.path)
    assert reopened.model == catalog.model and not reopened.repaired
    reopened.close()


def test_interrupted_reembed_leaves_the_catalog_as_it_was_and_resumes(catalog, model_dir):
    old_model = catalog.model
    calls = []

    def stop_after_first_chunk(n):
        calls.append(n)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        catalog.reembed(model_dir, chunk=5, progress=stop_after_first_chunk)
    assert catalog.model == old_model and calls == [5]
    photo = catalog.path / catalog.get("item04").image
    assert catalog.search(photo, k=1)[0].item.id == "item04"  # old vectors, old index
    result = catalog.reembed(model_dir, chunk=5)
    assert result["resumed"] == 5 and result["items"] == 12
    assert catalog.model != old_model


def test_reembed_refuses_unreadable_photos_and_vector_only_items(catalog, model_dir, tmp_path):
    old_model = catalog.model
    (catalog.path / catalog.get("item07").image).write_bytes(b"not a photo")
    with pytest.raises(FashionLensError, match="item07"):
        catalog.reembed(model_dir)
    assert catalog.model == old_model and len(catalog) == 12

    vectors_only = Catalog(tmp_path / "vectors", create=True, dim=4)
    vectors_only.add_vectors([ItemRecord(id="v1", image=None)],
                             np.ones((1, 4), dtype=np.float32))
    with pytest.raises(FashionLensError, match="without a photo"):
        vectors_only.reembed(model_dir)
    vectors_only.close()


def test_a_reader_follows_a_reembedding_elsewhere(catalog, model_dir):
    """A second Catalog on the folder (the server) notices the new model and vectors."""
    server = Catalog(catalog.path)
    photo = catalog.path / catalog.get("item03").image
    assert server.search(item="item03", k=1)
    catalog.reembed(model_dir)
    assert server.embedder().fingerprint == Embedder(model_dir).fingerprint
    top = server.search(photo, k=1)[0]
    assert top.item.id == "item03" and top.distance < 1e-3
    assert server.index.dim == catalog.dim and server.index.ntotal == 12
    server.close()


def test_reembed_takes_items_another_process_added_meanwhile(catalog, model_dir, tmp_path):
    other = Catalog(catalog.path)
    photo = write_pattern_photo(tmp_path / "late.png", seed=40, fmt="PNG")

    def add_once(_n):
        if "late" not in other:
            assert other.add([ItemRecord("late", photo)]).added == ["late"]

    result = catalog.reembed(model_dir, chunk=5, progress=add_once)
    assert result["items"] == 13 and len(catalog) == 13 and catalog.index.ntotal == 13
    top = catalog.search(photo, k=1)[0]
    assert top.item.id == "late" and top.distance < 1e-3
    other.close()


# --- bounds and validation (issue 9) --------------------------------------------------


def test_update_is_linear_and_bounded(tmp_path, monkeypatch):
    import json
    import time

    with Catalog(tmp_path / "cat", create=True, dim=4) as cat:
        cat.add_vectors([ItemRecord("x", None, extra={"brand": "b"})], np.ones((1, 4)))
        dumps = []
        real_dumps = json.dumps
        monkeypatch.setattr(catalog_module.json, "dumps",
                            lambda *a, **k: dumps.append(1) or real_dumps(*a, **k))
        fields = {f"extra.f{i}": f"v{i}" for i in range(60)}
        item = cat.update("x", fields)
        assert len(item.extra) == 61 and len(dumps) == 1  # serialised once, not per field
        monkeypatch.undo()
        limit = catalog_module.MAX_EXTRA_FIELDS
        with pytest.raises(FashionLensError, match=f"at most {limit} extra fields"):
            cat.update("x", {f"extra.g{i}": "v" for i in range(4)})
        start = time.perf_counter()
        with pytest.raises(FashionLensError, match="8000 fields in one update"):
            cat.update("x", {f"extra.k{i}": "v" for i in range(8000)})
        assert time.perf_counter() - start < 1.0
        long_name = "n" * (catalog_module.MAX_FIELD_NAME_CHARS + 1)
        with pytest.raises(FashionLensError, match="name is too long"):
            cat.update("x", {f"extra.{long_name}": "v"})
        with pytest.raises(FashionLensError, match="extra.notes: the value has 1001 characters"):
            cat.update("x", {"extra.notes": "y" * 1001})
        with pytest.raises(FashionLensError, match="colour: the value has 5000 characters"):
            cat.update("x", colour="r" * 5000)
        assert cat.update("x", {"extra.f0": None, "extra.h": "ok"}).extra["h"] == "ok"
        assert len(cat.get("x").extra) == 61


@pytest.mark.parametrize("price", [-1, -0.5, "-5", float("inf"), float("-inf"), float("nan"),
                                   "1e400", "-Infinity",
                                   pytest.param(10 ** 400, id="huge-int"), True])
def test_negative_and_non_finite_prices_are_refused(tmp_path, price):
    with pytest.raises(ValueError, match="price"):
        catalog_module.parse_price(price)
    with Catalog(tmp_path / "cat", create=True, dim=4) as cat:
        cat.add_vectors([ItemRecord("x", None, price=3)], np.ones((1, 4)))
        with pytest.raises(FashionLensError, match="'price=.*': price"):
            cat.update("x", price=price)
        assert cat.get("x").price == 3.0
        report = cat.add_vectors([ItemRecord("y", None, price=price)], np.ones((1, 4)))
        assert not report.added and "price" in report.failed[0].error
    assert catalog_module.parse_price("0") == 0.0 and catalog_module.parse_price("€ 12,50") == 12.5


def test_ids_no_client_could_send_back_are_refused(tmp_path, embedder):
    bad = ["..", ".", "", "   ", "a\nb", "a\rb", "tab\there", "nul\x00", "line\u2028sep",
           "x" * 201, "a/../b", "a/./b", "/lead", "trail/", "a//b", "Hat/photo", "a/b/sold"]
    good = ["Hat/hat-1", "sku 12", "été-01", "a.b", "..a", "x" * 200, "emoji-👗", "photo",
            "sold/1", "Hat/photos"]
    with Catalog(tmp_path / "cat", create=True, dim=4) as cat:
        report = cat.add_vectors([ItemRecord(i, None) for i in bad + good],
                                 np.ones((len(bad) + len(good), 4)))
        assert sorted(report.added) == sorted(good)
        assert len(report.failed) == len(bad)
        reasons = {f.id: f.error for f in report.failed}
        assert "control characters" in reasons["a\nb"] and "too long" in reasons["x" * 201]
        assert "'..'" in reasons[".."] and reasons[""] == "empty id"
        assert "action on item 'Hat'" in reasons["Hat/photo"]
    photo = write_pattern_photo(tmp_path / "p.png", seed=1)
    with Catalog(tmp_path / "photos", create=True, embedder=embedder) as cat:
        report = cat.add([ItemRecord("..", photo), ItemRecord("ok\r\n", photo)])
        assert not report.added and len(report.failed) == 2
        assert not list((cat.path / "images").iterdir())


def test_metadata_of_new_items_is_bounded(tmp_path):
    limit = catalog_module.MAX_EXTRA_FIELDS
    records = [ItemRecord("many", None, extra={f"f{i}": "v" for i in range(limit + 1)}),
               ItemRecord("long", None, category="c" * 1001),
               ItemRecord("name", None, extra={"n" * 65: "v"}),
               ItemRecord("nested", None, extra={"tags": ["t" * 600, "u" * 600]}),
               ItemRecord("number", None, extra={3: "v"}),
               ItemRecord("fine", None, extra={f"f{i}": "v" * 1000 for i in range(limit)})]
    with Catalog(tmp_path / "cat", create=True, dim=4) as cat:
        report = cat.add_vectors(records, np.ones((len(records), 4)))
        assert report.added == ["fine"]
        reasons = {f.id: f.error for f in report.failed}
        assert reasons["many"] == f"extra: {limit + 1} fields; an item has at most {limit} " \
                                  "extra fields"
        assert reasons["long"].startswith("category: the value has 1001 characters")
        assert "field name is too long" in reasons["name"]
        assert reasons["nested"].startswith("extra.tags: the value has")
        assert reasons["number"] == "extra: field names are text, not int"


def test_image_root_keeps_csv_photos_inside_it(tmp_path, embedder):
    shop = write_shop(tmp_path / "shop", n=3)
    secret = write_pattern_photo(tmp_path / "secret" / "key.png", seed=9, fmt="PNG")
    (tmp_path / "shop" / "photos" / "link.png").symlink_to(secret)
    with shop.open("a", newline="") as fh:
        fh.write("up,../../secret/key,Hat,red,M,5,b\n")       # line 5: ../ out of the root
        fh.write(f"abs,{secret.with_suffix('')},Hat,red,M,5,b\n")  # line 6: absolute path
        fh.write("sym,link,Hat,red,M,5,b\n")                 # line 7: a symlink pointing out
    root = tmp_path / "shop" / "photos"
    with Catalog(tmp_path / "cat", create=True, embedder=embedder) as cat:
        report = cat.add_source(shop, image_root=root, **CSV_OPTIONS)
        assert sorted(report.added) == ["item00", "item01", "item02"]
        reasons = {f.id: f.error for f in report.failed}
        assert set(reasons) == {"up", "abs", "sym"}
        assert reasons["up"].startswith("export.csv, line 5: photo ")
        assert "outside the image root" in reasons["up"] and "line 6" in reasons["abs"]
        assert "line 7" in reasons["sym"]
        with pytest.raises(DataError, match="not a folder"):
            cat.add_source(shop, image_root=tmp_path / "nope", **CSV_OPTIONS)
        report = cat.add([ItemRecord("direct", secret)], image_root=root)
        assert "outside the image root" in report.failed[0].error
        report = cat.add_source(shop, **CSV_OPTIONS)  # no root: as before, any path
        assert sorted(report.added) == ["abs", "sym", "up"]


def test_image_root_cli_flag(tmp_path):
    from typer.testing import CliRunner

    from fashionlens.cli.main import app

    inside = write_pattern_photo(tmp_path / "photos" / "a.png", seed=1, fmt="PNG")
    outside = write_pattern_photo(tmp_path / "elsewhere" / "b.png", seed=2, fmt="PNG")
    (tmp_path / "meta.csv").write_text(f"id,photo\na,{inside}\nb,{outside}\n")
    np.save(tmp_path / "vectors.npy", clustered_vectors(2, 4))
    args = ["catalog", "import-vectors", tmp_path / "vectors.npy", tmp_path / "meta.csv",
            "--catalog", tmp_path / "cat", "--image-column", "photo",
            "--image-root", tmp_path / "photos"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "added 1" in result.output and "outside the image root" in result.output
    with Catalog(tmp_path / "cat") as cat:
        assert [item.id for item in cat.items()] == ["a"]

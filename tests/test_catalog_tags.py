"""Issue 20, item 1: the catalog's model tags every item in the forward pass that gives its
vector; predicted values are kept apart from the shop's, fill filters by one rule, are
counted, listed for review, and shown in item JSON (CLI and API)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fashionlens.cli.main import app as cli_app
from fashionlens.inference import SAMPLE_PHOTOS
from fashionlens.search import tags
from fashionlens.search.catalog import Catalog, ItemRecord
from fashionlens.search.store import SCHEMA_VERSION
from fashionlens.service import Engine, ServiceSettings, create_app

KEY = "test-key"
PHOTOS = sorted(Path(SAMPLE_PHOTOS).glob("*/*-1.jpg"))  # one photo of each category


def records(shop_category: dict[str, str] | None = None) -> list[ItemRecord]:
    """One item per sample photo, ids like hat-1, without a category unless given."""
    shop_category = shop_category or {}
    return [ItemRecord(id=p.stem, image=p, category=shop_category.get(p.stem))
            for p in PHOTOS]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A catalog of the ten sample photos, no shop category, tagged by clothing10 (whose
    one head, `label`, names the sample photos' folders)."""
    path = tmp_path_factory.mktemp("tags") / "shop"
    with Catalog(path, create=True, model="clothing10") as cat:
        cat.add(records({"hat-1": "Bag"}))  # the shop says Bag: it always wins
    return path


def copy_of(built: Path, tmp_path: Path) -> Catalog:
    import shutil

    shutil.copytree(built, tmp_path / "shop")
    return Catalog(tmp_path / "shop")


def test_build_tags_every_item_in_the_same_pass_and_keeps_the_shops_value(built):
    with Catalog(built) as cat:
        items = {i.id: i for i in cat.items()}
        assert len(items) == len(PHOTOS)
        for item in items.values():
            predicted = item.predicted["label"]  # clothing10's one head
            assert set(predicted) == {"label", "probability"}
            assert 0.0 < predicted["probability"] <= 1.0
            assert item.to_dict()["predicted"] == item.predicted
        # clothing10 knows its own sample photos.
        assert items["dress-1"].predicted["label"]["label"] == "Dress"
        assert items["hat-1"].category == "Bag"  # the shop's value is never overwritten
        assert items["hat-1"].predicted["label"]["label"] == "Hat"
        assert items["dress-1"].category is None


def test_filter_rule_shop_value_else_a_confident_prediction(built, tmp_path):
    with copy_of(built, tmp_path) as cat:
        # Controlled predictions: a confident Dress, an unsure one, and the shop's Bag.
        with cat.store.transaction() as db:
            db.execute("DELETE FROM predictions")
            rows = [("dress-1", "Dress", 0.9), ("skirt-1", "Dress", tags.CONFIDENT - 0.01),
                    ("hat-1", "Dress", 0.99), ("shirt-1", "Shirt", 0.8)]
            for item_id, label, p in rows:
                key = cat.store.row(item_id)["key"]
                cat.store.store_predictions(db, tags.rows_for(key, [tags.Prediction(
                    "label", label, p, tags.CLASSIFICATION, p >= tags.CONFIDENT)]))
        cat.planner.invalidate()
        sql = sorted(i.id for i in cat.items("category=Dress"))
        assert sql == ["dress-1"]  # not skirt-1 (unsure), not hat-1 (the shop says Bag)
        assert sorted(i.id for i in cat.items("category=bag")) == ["hat-1"]
        assert sorted(i.id for i in cat.items("category in (Dress, Shirt)")) == \
            ["dress-1", "shirt-1"]
        # The in-memory filter columns follow the same rule as SQL.
        found = cat.search(item="shirt-1", k=10, filters="category=Dress")
        assert [m.item.id for m in found] == ["dress-1"]
        assert int(cat.filter_mask("category!=Dress").sum()) == len(PHOTOS) - 1
        counts = cat.info()["values"]["category"]
        assert counts["Dress"] == {"items": 1, "predicted": 1}
        assert counts["Bag"] == {"items": 1, "predicted": 0}
        # A correction becomes the shop's value; the prediction stays beside it.
        item = cat.update("dress-1", category="Skirt")
        assert item.category == "Skirt" and item.predicted["label"]["label"] == "Dress"
        assert [i.id for i in cat.items("category=Dress")] == []


def test_a_tag_head_filters_by_the_same_rule(built, tmp_path):
    with copy_of(built, tmp_path) as cat:
        tagged = {"dress-1": ["floral", "midi"], "skirt-1": ["floral"], "hat-1": ["denim"]}
        with cat.store.transaction() as db:
            for item_id, labels in tagged.items():
                cat.store.store_predictions(db, tags.rows_for(cat.store.row(item_id)["key"], [
                    tags.Prediction("tags", label, 0.7, tags.MULTILABEL, True)
                    for label in labels]))
        cat.update("skirt-1", {"extra.tags": "plain"})  # the shop's value wins
        assert [i.id for i in cat.items("extra.tags=Floral")] == ["dress-1"]
        assert sorted(i.id for i in cat.items("extra.tags in (floral, denim)")) == \
            ["dress-1", "hat-1"]
        assert "dress-1" not in {i.id for i in cat.items("extra.tags!=floral")}
        assert "skirt-1" in {i.id for i in cat.items("extra.tags not in (floral)")}
        assert cat.get("dress-1").predicted["tags"][0]["label"] in ("floral", "midi")
        counts = cat.info()["values"]["extra.tags"]
        assert counts["floral"] == {"items": 1, "predicted": 1}
        assert counts["plain"] == {"items": 1, "predicted": 0}


def test_review_lists_shop_values_a_confident_prediction_disputes(built):
    with Catalog(built) as cat:
        found = cat.review_tags(0.5)
    assert [(r["id"], r["shop"], r["predicted"]) for r in found] == [("hat-1", "Bag", "Hat")]


def test_an_old_catalog_is_upgraded_in_one_step_and_retag_resumes(built, tmp_path):
    with copy_of(built, tmp_path) as cat:
        before = {i.id: i.predicted for i in cat.items()}
    db = sqlite3.connect(tmp_path / "shop" / "catalog.sqlite")
    db.execute("DROP TABLE predictions")
    db.execute("UPDATE meta SET value = '1' WHERE name = 'schema_version'")
    db.commit()
    db.close()
    with Catalog(tmp_path / "shop") as cat:
        assert cat.store.meta("schema_version") == str(SCHEMA_VERSION)
        assert all(i.predicted == {} for i in cat.items())
        assert cat.tag_summary()["tagged_items"] == 0

        def stop(done):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            cat.retag(chunk=4, progress=stop)
        assert cat.tag_summary()["tagged_items"] == 0  # nothing swapped in yet
        result = cat.retag(chunk=4)
        assert result["resumed"] == 4 and result["items"] == len(PHOTOS)
        after = {i.id: i.predicted for i in cat.items()}
    assert after.keys() == before.keys()
    for item_id, predicted in after.items():
        assert predicted["label"]["label"] == before[item_id]["label"]["label"]


def test_reembed_tags_in_the_same_pass(built, tmp_path):
    with copy_of(built, tmp_path) as cat:
        before = {i.id: i.predicted for i in cat.items()}
        with cat.store.transaction() as db:
            db.execute("DELETE FROM predictions")
        cat.reembed("clothing10")  # its model again: vectors and tags staged, then swapped
        assert {i.id: i.predicted for i in cat.items()} == before
        # the tags come from the whole model and its heads' settings, the vectors from the
        # part they depend on
        embedder = cat.embedder()
        assert cat.store.meta("tags_model") == embedder.tagger_fingerprint
        assert cat.store.meta("model_fingerprint") == embedder.vector_fingerprint


def test_a_multilabel_head_gives_a_list_of_tags():
    from fashionlens.models.info import HeadSpec

    head = HeadSpec("tags", "multilabel", ["floral", "striped", "denim"], [0.5, 0.3, 0.9])
    found = tags.predictions_from_scores([head], {"tags": [0.6, 0.35, 0.95 - 0.1]})
    rows = [{"task": p.task, "label": p.label, "probability": p.probability, "kind": p.kind}
            for p in found]
    assert tags.as_json(rows) == {"tags": [{"label": "floral", "probability": 0.6},
                                           {"label": "striped", "probability": 0.35}]}
    assert tags.field_of("tags") == "extra.tags" and tags.field_of("baseColour") == "colour"


def test_one_model_fills_a_field_from_one_head():
    """The joint model has a unified and a finer head for type and colour: the unified one
    fills the field, the finer one keeps its own extra field (one taxonomy per field)."""
    from fashionlens.models.info import HeadSpec

    names = ["articleType", "type", "baseColour", "colour", "season", "tags"]
    assert tags.fields_for(names) == {
        "articleType": "extra.articleType", "type": "category",
        "baseColour": "extra.baseColour", "colour": "colour", "season": "extra.season",
        "tags": "extra.tags"}
    # Alone in its model, a finer head still fills the field (the products tagger).
    assert tags.fields_for(["articleType", "baseColour"]) == {
        "articleType": "category", "baseColour": "colour"}
    heads = [HeadSpec("type", "classification", ["Dress", "Shoes"]),
             HeadSpec("articleType", "classification", ["Dresses", "Heels"]),
             HeadSpec("colour", "classification", ["red", "blue"]),
             HeadSpec("baseColour", "classification", ["Maroon", "Navy Blue"]),
             HeadSpec("tags", "multilabel", ["floral", "denim"], [0.5, 0.5])]
    found = tags.predictions_from_scores(heads, {
        "type": [0.9, 0.1], "articleType": [0.8, 0.2], "colour": [0.7, 0.3],
        "baseColour": [0.6, 0.4], "tags": [0.9, 0.1]})
    assert {(p.task, p.field) for p in found} == {
        ("type", "category"), ("articleType", "extra.articleType"), ("colour", "colour"),
        ("baseColour", "extra.baseColour"), ("tags", "extra.tags")}
    assert {row[5] for row in tags.rows_for(1, found)} == {
        "category", "extra.articleType", "colour", "extra.baseColour", "extra.tags"}


def test_cli_json_info_and_review(built):
    runner = CliRunner()
    result = runner.invoke(cli_app, ["search", "--item", "dress-1", "--catalog", str(built),
                                     "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    first = json.loads(result.output)["results"][0]
    assert set(first["predicted"]["label"]) == {"label", "probability"}
    result = runner.invoke(cli_app, ["catalog", "info", "--catalog", str(built)])
    assert result.exit_code == 0 and "predicted tags" in result.output
    assert "Dress 1 (1 predicted)" in result.output
    result = runner.invoke(cli_app, ["catalog", "review", "--catalog", str(built),
                                     "--min-probability", "0.5", "--json"])
    assert json.loads(result.output)["items"][0]["id"] == "hat-1"


def test_api_item_upload_is_tagged_and_the_summary_counts_values(built, tmp_path):
    import shutil

    shutil.copytree(built, tmp_path / "shop")
    engine = Engine(ServiceSettings(catalog=str(tmp_path / "shop"), api_key=KEY))
    try:
        with TestClient(create_app(ServiceSettings(catalog=str(tmp_path / "shop"),
                                                   api_key=KEY), engine=engine)) as client:
            photo = PHOTOS[0]
            response = client.post("/api/v1/items", headers={"X-API-Key": KEY},
                                   data={"id": "new-1"},
                                   files={"image": (photo.name, photo.read_bytes(),
                                                    "image/jpeg")})
            assert response.status_code == 201, response.text
            assert response.json()["predicted"]["label"]["label"] == \
                photo.parent.name
            summary = client.get("/api/v1/catalog").json()
            assert summary["values"]["category"][photo.parent.name]["predicted"] >= 1
            assert summary["tags"]["tagged_items"] == len(PHOTOS) + 1
    finally:
        engine.close()

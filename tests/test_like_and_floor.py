"""Issue 20, items 3 and 4: "more like these" (--like/--unlike, Rocchio-style) and the
relevance floor measured on the catalog itself (weak matches, --min-similarity)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fashionlens.cli.main import app as cli_app
from fashionlens.cli.main import main
from fashionlens.errors import FashionLensError
from fashionlens.search import indexing
from fashionlens.search.catalog import UNLIKE_WEIGHT, Catalog, ItemRecord
from fashionlens.search.embeddings import normalise
from fashionlens.service import Engine, ServiceSettings, create_app

DIM = 16


@pytest.fixture(scope="module")
def vectors_catalog(tmp_path_factory):
    """60 items of random 16-d vectors in three clusters (no model needed)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, DIM))
    vectors = np.concatenate([c + 0.6 * rng.normal(size=(20, DIM)) for c in centres])
    path = tmp_path_factory.mktemp("like") / "shop"
    with Catalog(path, create=True, dim=DIM) as cat:
        cat.add_vectors([ItemRecord(id=f"c{i // 20}-{i % 20}", category=f"c{i // 20}")
                         for i in range(60)], vectors)
    return path, normalise(vectors)


def test_like_is_the_normalised_mean_and_leaves_the_liked_items_out(vectors_catalog):
    path, vectors = vectors_catalog
    with Catalog(path) as cat:
        liked = ["c0-1", "c0-2", "c0-3"]
        found = cat.search(like=liked, k=10)
        query = normalise(vectors[[1, 2, 3]].mean(0))
        expected = [m.item.id for m in cat.search(vector=query, k=13)
                    if m.item.id not in liked][:10]
        assert [m.item.id for m in found] == expected
        assert all(m.item.id.startswith("c0-") for m in found)
        # Unliked: the query moves away from their mean, weighted by UNLIKE_WEIGHT.
        moved = normalise(normalise(vectors[[1, 2, 3]].mean(0))
                          - UNLIKE_WEIGHT * normalise(vectors[[21, 22]].mean(0)))
        found = cat.search(like=liked, unlike=["c1-1", "c1-2"], k=5)
        expected = [m.item.id for m in cat.search(vector=moved, k=10)
                    if m.item.id not in {*liked, "c1-1", "c1-2"}][:5]
        assert [m.item.id for m in found] == expected
        assert found[0].similarity == pytest.approx(float(
            vectors[int(found[0].item.id.split("-")[1])] @ moved), abs=1e-5)


def test_like_bad_input(vectors_catalog):
    path, _ = vectors_catalog
    with Catalog(path) as cat:
        with pytest.raises(FashionLensError, match="needs at least one"):
            cat.search(unlike=["c0-1"])
        # An id both liked and unliked counts as liked (hearts are the latest word).
        assert [m.item.id for m in cat.search(like=["c0-1"], unlike=["c0-1"], k=5)] == \
            [m.item.id for m in cat.search(like=["c0-1"], k=5)]
        with pytest.raises(FashionLensError, match="exactly one"):
            cat.search(item="c0-1", like=["c0-2"])
        with pytest.raises(FashionLensError, match="no item"):
            cat.search(like=["nosuch"])


def test_floor_is_measured_on_the_catalog_and_marks_weak_matches(vectors_catalog):
    path, vectors = vectors_catalog
    with Catalog(path) as cat:
        floor = cat.relevance_floor()
        # The definition, by brute force: every item (60 < FLOOR_SAMPLE), its 10th
        # nearest other item, the 5th percentile.
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -np.inf)
        tenth = np.sort(sims, axis=1)[:, -indexing.FLOOR_NEIGHBOUR]
        assert floor == pytest.approx(np.percentile(tenth, indexing.FLOOR_PERCENTILE),
                                      abs=1e-5)
        found = cat.search(item="c0-1", k=60)
        assert any(m.weak for m in found) and not found[0].weak
        assert all(m.weak == (m.similarity < floor) for m in found)
        kept = cat.search(item="c0-1", k=60, min_similarity=floor)
        assert [m.item.id for m in kept] == [m.item.id for m in found if not m.weak]
        assert cat.info()["weak_below"] == floor
        assert found[0].to_dict()["weak"] is False


def test_floor_is_measured_again_when_the_catalog_grows(tmp_path):
    rng = np.random.default_rng(1)
    with Catalog(tmp_path / "c", create=True, dim=DIM) as cat:
        assert cat.relevance_floor() is None
        cat.add_vectors([ItemRecord(id=f"a{i}") for i in range(2)], rng.normal(size=(2, DIM)))
        assert cat.relevance_floor() is None  # too few items to measure
        cat.add_vectors([ItemRecord(id=f"b{i}") for i in range(20)],
                        rng.normal(size=(20, DIM)))
        first = cat.relevance_floor()
        assert first is not None and cat.store.meta("floor_items") == "22"
        cat.add_vectors([ItemRecord(id="c0")], rng.normal(size=(1, DIM)))
        assert cat.store.meta("floor_items") == "22"  # within FLOOR_REMEASURE: kept
        cat.add_vectors([ItemRecord(id=f"d{i}") for i in range(5)], rng.normal(size=(5, DIM)))
        assert cat.store.meta("floor_items") == "28"


@pytest.mark.parametrize("args, says", [
    (["search", "--unlike", "c0-1"], "--unlike needs at least one --like"),
    (["search", "--like", "c0-1", "--item", "c0-2"], "one of them"),
    (["search", "--like", "nosuch"], "nosuch"),
    (["search", "--like", "c0-1", "--min-similarity", "2"], "--min-similarity"),
    (["search", *[a for i in range(101) for a in ("--like", f"c0-{i % 20}")]], "at most 100"),
    (["catalog", "review", "--min-probability", "1.5"], "--min-probability"),
    (["catalog", "retag"], "imported vectors"),  # no model recorded: nothing to tag with
])
def test_cli_like_bad_input_is_a_clear_message(vectors_catalog, args, says, monkeypatch,
                                               capsys):
    path, _ = vectors_catalog
    monkeypatch.setattr(sys, "argv", ["fashionlens", *args, "--catalog", str(path)])
    with pytest.raises(SystemExit) as stop:
        main()  # as a user runs it: the error handling included
    captured = capsys.readouterr()
    output = " ".join((captured.out + captured.err).split())
    assert stop.value.code == 2, output
    assert says in output and "Traceback" not in output


def test_cli_like_json_and_table(vectors_catalog):
    path, _ = vectors_catalog
    runner = CliRunner()
    result = runner.invoke(cli_app, ["search", "--catalog", str(path), "--like", "c0-1",
                                     "--like", "c0-2", "--unlike", "c1-1", "-k", "60",
                                     "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["query"] == {"like": ["c0-1", "c0-2"], "unlike": ["c1-1"]}
    assert {"c0-1", "c0-2", "c1-1"}.isdisjoint(r["id"] for r in data["results"])
    assert any(r["weak"] for r in data["results"]) and data["weak_below"] is not None
    result = runner.invoke(cli_app, ["search", "--catalog", str(path), "--like", "c0-1",
                                     "-k", "60"])
    assert "weak match" in result.output and "below the line" in result.output
    result = runner.invoke(cli_app, ["search", "--catalog", str(path), "--like", "c0-1",
                                     "-k", "60", "--min-similarity", "0.99", "--json"])
    assert json.loads(result.output)["results"] == []


def test_api_like_unlike_and_min_similarity(vectors_catalog):
    path, _ = vectors_catalog
    engine = Engine(ServiceSettings(catalog=str(path)))
    try:
        with TestClient(create_app(ServiceSettings(catalog=str(path)), engine=engine)) as client:
            response = client.get("/api/v1/more-like-these", params={
                "like": ["c0-1", "c0-2"], "unlike": "c1-1", "k": 60})
            assert response.status_code == 200, response.text
            data = response.json()
            assert data["query"] == {"like": ["c0-1", "c0-2"], "unlike": ["c1-1"]}
            assert data["weak_below"] is not None
            assert any(m["weak"] for m in data["matches"])
            cut = client.get("/api/v1/more-like-these", params={
                "like": "c0-1", "k": 60, "min_similarity": data["weak_below"]}).json()
            assert not any(m["weak"] for m in cut["matches"])
            item = client.get("/api/v1/similar", params={"item": "c0-1", "k": 60}).json()
            assert item["weak_below"] == data["weak_below"]
            assert any(m["weak"] for m in item["matches"])
            for params in ({"unlike": "c0-1"}, {}, {"like": ["c0-1"] * 101},
                           {"like": "c0-1", "min_similarity": 3}):
                response = client.get("/api/v1/more-like-these", params=params)
                assert response.status_code == 422, (params, response.text)
            response = client.get("/api/v1/more-like-these", params={"like": "nosuch"})
            assert response.status_code == 404 and "nosuch" in response.text
    finally:
        engine.close()

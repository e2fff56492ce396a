"""The web service over FastAPI's test client: every endpoint, every bad input, the API key
on every write endpoint, the size limit, CORS, the web app's files and micro-batching.

One tiny catalog (one bundled sample photo per category) and one loaded engine are
shared by the whole module; apps with other settings reuse that engine.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sqlite3
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from fashionlens.cli.main import app as cli_app
from fashionlens.errors import ConfigError
from fashionlens.inference import SAMPLE_PHOTOS
from fashionlens.service import Engine, ServiceSettings, create_app
from fashionlens.service.batching import MicroBatcher
from fashionlens.service.demo import build_demo_catalog

from .helpers import default_model_name

KEY = "test-key-0123456789"
# What the service answers with when a request names no model (the bundled default).
DEFAULT = default_model_name()
# The small one-head classifier whose ten classes the sample photos are folders of.
C10 = "clothing10"
HAT = SAMPLE_PHOTOS / "Hat" / "hat-1.jpg"
DRESS = SAMPLE_PHOTOS / "Dress" / "dress-1.jpg"


# --- shared fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory) -> Path:
    """Ten items: the first sample photo of each category (ids like Hat/hat-1)."""
    return build_demo_catalog(tmp_path_factory.mktemp("service") / "catalog", limit=1)


@pytest.fixture(scope="module")
def engine(catalog_dir):
    engine = Engine(ServiceSettings(catalog=str(catalog_dir), api_key=KEY))
    yield engine
    engine.close()


def _client(engine, **settings) -> TestClient:
    options = {"catalog": engine.settings.catalog, "api_key": KEY, **settings}
    return TestClient(create_app(ServiceSettings(**options), engine=engine))


@pytest.fixture(scope="module")
def client(engine):
    with _client(engine) as client:
        yield client


WRITE = {"X-API-Key": KEY}


def jpeg_bytes(path: Path = HAT) -> bytes:
    return path.read_bytes()


def post_image(client, path: str, data: bytes, ctype: str = "image/jpeg", **params):
    return client.post(path, content=data, headers={"Content-Type": ctype}, params=params)


def error_of(response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["status"] == status and body["message"]
    if code is not None:
        assert body["code"] == code, body
    return body["message"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size; no pixel data (like a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(DRESS)
    return data[: len(data) // 3]


# --- health, web app, docs ---------------------------------------------------------------


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["catalog"] == {"items": 10}
    assert body["default_model"] == DEFAULT
    stats = body["batching"][f"model {DEFAULT}"]
    assert set(stats) == {"requests", "batches", "mean_batch"}


def test_web_app_pages_and_assets_are_served_locally(client):
    for page, marker in (("/", "Try it"), ("/catalog.html", "Browse and filter"),
                         ("/models.html", "what it answers")):
        response = client.get(page)
        assert response.status_code == 200 and marker in response.text
        assert "http://" not in response.text and "https://" not in response.text
        assert "default-src 'self'" in response.headers["content-security-policy"]
    for asset in ("/app.css", "/common.js", "/try.js", "/catalog.js", "/models.js"):
        assert client.get(asset).status_code == 200, asset


def test_docs_work_offline(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/classify", "/api/v1/similar", "/api/v1/items",
                 "/api/v1/items/{item_id}", "/api/v1/models", "/api/v1/models/default"):
        assert path in paths, path
    assert "multipart/form-data" in paths["/api/v1/classify"]["post"]["requestBody"]["content"]


def test_unknown_api_path_is_a_json_404(client):
    error_of(client.get("/api/v1/nothing-here"), 404, "not_found")


# --- classify ------------------------------------------------------------------------------


def test_classify_multipart_and_raw_body_agree(client):
    multipart = client.post("/api/v1/classify", params={"model": C10},
                            files={"image": ("hat.jpg", jpeg_bytes(), "image/jpeg")})
    raw = post_image(client, "/api/v1/classify", jpeg_bytes(), model=C10)
    assert multipart.status_code == raw.status_code == 200
    body = multipart.json()
    assert body["model"] == C10 and body["image"] == {"width": 256, "height": 455}
    (task,) = body["tasks"]
    assert task["type"] == "single_label" and task["label"] == "Hat"
    assert task["num_classes"] == 10 and len(task["classes"]) == 5
    probs = [c["probability"] for c in task["classes"]]
    assert probs == sorted(probs, reverse=True) and probs[0] > 0.9
    assert raw.json()["tasks"] == body["tasks"]
    # Any file field name among image/file/photo, and octet-stream bodies, are accepted.
    other = client.post("/api/v1/classify", params={"model": C10},
                        files={"file": ("x", jpeg_bytes(), "application/octet-stream")})
    assert other.json()["tasks"][0]["label"] == "Hat"


def test_classify_top_k_threshold_model_and_tta(client):
    # Dress at 0.68 in fp32, 0.58 in int8 (which `auto` picks for clothing10 where it is
    # not the catalog's embedder), where four other classes reach 0.07-0.08.
    photo = jpeg_bytes(SAMPLE_PHOTOS / "Dress" / "dress-2.jpg")
    top2 = post_image(client, "/api/v1/classify", photo, top_k=2,
                      model=C10).json()["tasks"][0]
    assert [c["label"] for c in top2["classes"]][:1] == ["Dress"] and len(top2["classes"]) == 2
    every = post_image(client, "/api/v1/classify", photo, top_k=1000,
                       model=C10).json()["tasks"][0]
    assert len(every["classes"]) == 10
    assert abs(sum(c["probability"] for c in every["classes"]) - 1.0) < 1e-3
    sure = post_image(client, "/api/v1/classify", photo, threshold=0.05,
                      model=C10).json()["tasks"][0]
    assert sure["label"] == "Dress"
    assert all(c["probability"] >= 0.05 for c in sure["classes"])
    assert len(sure["classes"]) < len(every["classes"])
    unsure = post_image(client, "/api/v1/classify", photo, threshold=0.9,
                        model=C10).json()["tasks"][0]
    assert unsure["label"] is None and unsure["classes"] == []
    named = post_image(client, "/api/v1/classify", photo, model="clothing10")
    assert named.status_code == 200
    tta = post_image(client, "/api/v1/classify", photo, tta="true", model=C10).json()
    assert tta["tta"] is True and tta["tasks"][0]["label"] == "Dress"


def test_classify_keeps_the_tasks_asked_for(client):
    """task= keeps those tasks, in the order asked; a task the model lacks is a 400 that
    names the model's tasks, before the upload is read."""
    photo = jpeg_bytes(SAMPLE_PHOTOS / "Dress" / "dress-1.jpg")
    every = [t["name"] for t in post_image(client, "/api/v1/classify", photo).json()["tasks"]]
    asked = every[::-1][:2]
    kept = post_image(client, "/api/v1/classify", photo, task=asked).json()["tasks"]
    assert [t["name"] for t in kept] == asked
    message = error_of(post_image(client, "/api/v1/classify", b"not read", task="sleeve"),
                       400, "unknown_task")
    assert "has no such task" in message and every[0] in message


@pytest.mark.parametrize(("data", "ctype", "status", "code", "says"), [
    (b"", "image/jpeg", 400, "empty_body", "empty"),
    (b"", None, 400, "empty_body", "empty"),
    (b"this is not a photo", "image/jpeg", 422, "unreadable_image", "not an image"),
    (truncated_jpeg(), "image/jpeg", 422, "unreadable_image", "truncated"),
    (png_header_only(15000, 15000), "image/png", 422, "unreadable_image", "decompression bomb"),
    (png_header_only(60000, 20), "image/png", 422, "unreadable_image", "longest side"),
    (b"{\"image\": 1}", "application/json", 415, "unsupported_media_type", "application/json"),
    (b"hello", "text/plain", 415, "unsupported_media_type", "text/plain"),
    (b"\xff\xd8\xff", None, 415, "unsupported_media_type", "no Content-Type"),
], ids=["empty", "empty-no-type", "not-an-image", "corrupt-jpeg", "bomb", "huge-side", "json",
        "text", "no-type"])
def test_classify_bad_bodies(client, data, ctype, status, code, says):
    headers = {"Content-Type": ctype} if ctype else {}
    response = client.post("/api/v1/classify", content=data, headers=headers)
    assert says in error_of(response, status, code)


def test_classify_bad_multipart(client):
    error_of(client.post("/api/v1/classify", files={"other": ("x.jpg", jpeg_bytes(),
                                                              "image/jpeg")}),
             400, "missing_image")
    error_of(client.post("/api/v1/classify", files={"image": ("x.jpg", b"", "image/jpeg")}),
             400, "empty_body")
    error_of(client.post("/api/v1/classify", files={"image": ("x.txt", b"hello",
                                                              "text/plain")}),
             415, "unsupported_media_type")
    error_of(client.post("/api/v1/classify", files={"image": ("bad.jpg", truncated_jpeg(),
                                                              "image/jpeg")}),
             422, "unreadable_image")


@pytest.mark.parametrize("params", [{"top_k": 0}, {"top_k": -3}, {"top_k": "many"},
                                    {"threshold": 1.5}, {"threshold": -0.1}])
def test_classify_bad_parameters(client, params):
    message = error_of(post_image(client, "/api/v1/classify", jpeg_bytes(), **params),
                       422, "invalid_parameter")
    assert next(iter(params)) in message


def test_classify_unknown_model(client):
    message = error_of(post_image(client, "/api/v1/classify", jpeg_bytes(), model="nope"),
                       404, "unknown_model")
    assert "clothing10" in message


def test_service_survives_bad_input(client):
    """A burst of bad uploads leaves the workers serving good ones."""
    for data in (b"", b"junk", truncated_jpeg(), png_header_only(15000, 15000)):
        assert post_image(client, "/api/v1/classify", data).status_code in (400, 422)
    assert post_image(client, "/api/v1/classify", jpeg_bytes()).status_code == 200


# --- micro-batching --------------------------------------------------------------------------


def test_micro_batcher_groups_requests_and_reports_errors():
    seen: list[int] = []

    def double(items: list[int]) -> list[int]:
        seen.append(len(items))
        if -1 in items:
            raise ValueError("bad item")
        return [2 * i for i in items]

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(double, pool, max_batch=4, max_wait_ms=50)
            results = await asyncio.gather(*(batcher.submit(i) for i in range(6)))
            assert results == [0, 2, 4, 6, 8, 10]
            assert seen[:2] == [4, 2]  # capped at max_batch, the rest in one more batch
            outcome = await asyncio.gather(batcher.submit(1), batcher.submit(-1),
                                           return_exceptions=True)
            assert all(isinstance(r, ValueError) for r in outcome)
            assert await batcher.submit(5) == 10  # the worker lives on after a failure
            assert batcher.items == 7 and batcher.mean_batch > 1

    asyncio.run(scenario())


def test_concurrent_requests_are_batched_and_keep_their_own_results(client, engine,
                                                                   monkeypatch):
    monkeypatch.setattr(engine.cache, "capacity", 0)  # every request runs the model
    photos = {"Hat": jpeg_bytes(HAT), "Dress": jpeg_bytes(DRESS),
              "Shoes": jpeg_bytes(SAMPLE_PHOTOS / "Shoes" / "shoes-1.jpg")}
    alone = {name: post_image(client, "/api/v1/classify", data).json()["tasks"][0]
             for name, data in photos.items()}
    batcher = engine.model(None).batcher
    before_items, before_batches = batcher.items, batcher.batches
    jobs = [name for _ in range(4) for name in photos]
    barrier = threading.Barrier(len(jobs))

    def call(name: str) -> tuple[str, dict]:
        barrier.wait()
        return name, post_image(client, "/api/v1/classify", photos[name]).json()["tasks"][0]

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(call, jobs))
    for name, task in results:
        assert task["label"] == alone[name]["label"]
        for got, ref in zip(task["classes"], alone[name]["classes"], strict=True):
            assert got["label"] == ref["label"]
            assert abs(got["probability"] - ref["probability"]) < 0.02  # bf16 batch noise
    assert batcher.items - before_items == len(jobs)
    assert batcher.batches - before_batches < len(jobs)  # some requests shared a pass


def test_classify_then_similar_of_one_photo_runs_the_model_once(client, engine):
    photo = jpeg_bytes(SAMPLE_PHOTOS / "Shirt" / "shirt-2.jpg")
    batcher = engine.model(None).batcher
    hits, items = engine.cache.hits, batcher.items
    first = post_image(client, "/api/v1/classify", photo).json()
    similar = post_image(client, "/api/v1/similar", photo, k=3).json()
    again = post_image(client, "/api/v1/classify", photo, top_k=2).json()
    assert batcher.items - items == 1 and engine.cache.hits - hits == 2
    assert again["tasks"][0]["classes"] == first["tasks"][0]["classes"][:2]
    assert similar["query"]["image"] == first["image"]
    # The cached answer is the one the model gives without the cache.
    engine.cache.capacity, capacity = 0, engine.cache.capacity
    try:
        fresh = post_image(client, "/api/v1/similar", photo, k=3).json()
    finally:
        engine.cache.capacity = capacity
    assert [m["id"] for m in fresh["matches"]] == [m["id"] for m in similar["matches"]]
    assert client.get("/readyz").json()["batching"]["output cache"]["hits"] >= 2


# --- similar items ---------------------------------------------------------------------------


def test_the_model_making_the_catalogs_vectors_runs_like_its_embedder(engine):
    """One pass answers classify and similar, with vectors like the stored ones (under
    auto the model alone may run int8 where that is faster; embedders never do)."""
    served = engine.models[DEFAULT]
    assert served.runtime.precision == engine.catalog.embedder.precision
    assert engine.query.model is served


def test_similar_to_a_photo(client):
    response = post_image(client, "/api/v1/similar", jpeg_bytes(HAT), k=3)
    assert response.status_code == 200
    matches = response.json()["matches"]
    assert len(matches) == 3
    assert matches[0]["id"] == "Hat/hat-1" and matches[0]["similarity"] > 0.99
    assert matches[0]["photo_url"] == "/api/v1/items/Hat%2Fhat-1/photo"
    assert "image" not in matches[0] and "source" not in matches[0]
    sims = [m["similarity"] for m in matches]
    assert sims == sorted(sims, reverse=True)
    multipart = client.post("/api/v1/similar", params={"k": 3},
                            files={"image": ("h.jpg", jpeg_bytes(HAT), "image/jpeg")})
    assert [m["id"] for m in multipart.json()["matches"]] == [m["id"] for m in matches]


def test_photo_search_follows_a_reembedding_by_another_process(tmp_path, model_dir):
    """`catalog reembed` from the CLI while the server runs: photo queries must switch to
    the catalog's new model, not compare vectors of two models."""
    from fashionlens.search.catalog import Catalog

    folder = build_demo_catalog(tmp_path / "catalog", limit=1)
    engine = Engine(ServiceSettings(catalog=str(folder), api_key=KEY, cache_entries=0))
    try:
        with TestClient(create_app(engine.settings, engine=engine)) as client:
            photo = jpeg_bytes(DRESS)
            assert post_image(client, "/api/v1/similar", photo, k=3).status_code == 200
            with Catalog(folder) as elsewhere:  # another process moves it to another model
                elsewhere.reembed(model_dir)
                expected = [m.item.id for m in elsewhere.search(photo, k=3)]
            response = post_image(client, "/api/v1/similar", photo, k=3)
            assert response.status_code == 200, response.text
            assert [m["id"] for m in response.json()["matches"]] == expected
            assert engine.query.embedder.fingerprint == engine.catalog.embedder.fingerprint
    finally:
        engine.close()


def test_similar_with_filters(client):
    response = post_image(client, "/api/v1/similar", jpeg_bytes(HAT), k=20,
                          filter=["category!=Hat", "price<100"])
    matches = response.json()["matches"]
    assert len(matches) == 9 and all(m["category"] != "Hat" for m in matches)
    cheap = client.get("/api/v1/similar", params={"item": "Hat/hat-1", "filter": "price<20"})
    assert all(m["price"] < 20 for m in cheap.json()["matches"])


def test_similar_to_an_item_leaves_it_out(client):
    response = client.get("/api/v1/similar", params={"item": "Dress/dress-1", "k": 4})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == {"item": "Dress/dress-1"}
    ids = [m["id"] for m in body["matches"]]
    assert len(ids) == 4 and "Dress/dress-1" not in ids


def test_similar_bad_input(client):
    error_of(client.get("/api/v1/similar", params={"item": "No/such-item"}), 404,
             "unknown_item")
    error_of(client.get("/api/v1/similar"), 422, "invalid_parameter")
    error_of(client.get("/api/v1/similar", params={"item": "Hat/hat-1", "k": 0}), 422)
    error_of(client.get("/api/v1/similar", params={"item": "Hat/hat-1", "k": -1}), 422)
    for bad in ("price<cheap", "colour<3", "nonsense", "flavour=sweet", "status=lost"):
        message = error_of(post_image(client, "/api/v1/similar", jpeg_bytes(), filter=bad),
                           400, "bad_filter")
        assert bad.split("<")[0].split("=")[0] in message
    error_of(post_image(client, "/api/v1/similar", b"not an image"), 422, "unreadable_image")
    error_of(post_image(client, "/api/v1/similar", b""), 400, "empty_body")
    error_of(post_image(client, "/api/v1/similar", b"x", "text/csv"), 415)


def test_steering_moves_results_toward_a_direction(client):
    directions = client.get("/api/v1/catalog").json()["directions"]
    assert "hat" in directions and "shoes" in directions
    plain = client.get("/api/v1/similar", params={"item": "Dress/dress-1", "k": 9})
    steered = client.get("/api/v1/similar", params={"item": "Dress/dress-1", "k": 9,
                                                    "steer": "hat=1.5"})
    assert steered.status_code == 200 and steered.json()["steer"] == {"hat": 1.5}
    plain_ids = [m["id"] for m in plain.json()["matches"]]
    steered_ids = [m["id"] for m in steered.json()["matches"]]
    assert steered_ids[0] == "Hat/hat-1"
    assert plain_ids.index("Hat/hat-1") > 0  # steering changed the ranking, not the data
    photo = post_image(client, "/api/v1/similar", jpeg_bytes(DRESS), k=3, steer="shoes:1.5")
    assert photo.json()["matches"][0]["id"] == "Shoes/shoes-1"


def test_steering_bad_input(client):
    # A well-formed name the catalog has no direction for is "not found", like a model.
    message = error_of(client.get("/api/v1/similar", params={"item": "Hat/hat-1",
                                                             "steer": "sparkly=0.5"}),
                       404, "unknown_direction")
    assert "hat" in message and "striped" in message
    for bad in ("hat=lots", "hat=99", "hat=", "", "hat=0.5,shoes=1", "hat=7."):
        error_of(client.get("/api/v1/similar", params={"item": "Hat/hat-1", "steer": bad}),
                 400, "bad_steer")


# --- the catalog: reads ----------------------------------------------------------------------


def test_catalog_summary(client, engine):
    info = client.get("/api/v1/catalog").json()
    assert info["items"] == 10 and info["categories"]["Hat"] == 1
    assert info["query_model"] == DEFAULT and info["steering"] is True
    assert "path" not in info and info["currency"] is None
    with _client(engine, currency="eur") as shop:
        assert shop.get("/api/v1/catalog").json()["currency"] == "EUR"


def test_demo_catalog_has_patterns_to_steer_by(client):
    """Issue 9.9: "more striped" can be tried in the demo catalog."""
    directions = client.get("/api/v1/catalog").json()["directions"]
    assert {"striped", "solid", "printed", "checked"} <= set(directions)
    assert client.get("/api/v1/items/Skirt/skirt-1").json()["extra"] == {"pattern": "checked"}
    striped = client.get("/api/v1/items", params={"filter": "extra.pattern=striped"}).json()
    assert [i["id"] for i in striped["items"]] == ["Shoes/shoes-1"]
    steered = client.get("/api/v1/similar", params={"item": "Dress/dress-1", "k": 3,
                                                    "steer": "striped=1.5"}).json()
    assert steered["matches"][0]["id"] == "Shoes/shoes-1"


def test_list_items_filters_and_pages(client):
    first = client.get("/api/v1/items", params={"limit": 4}).json()
    assert len(first["items"]) == 4 and first["next_offset"] == 4
    last = client.get("/api/v1/items", params={"limit": 4, "offset": 8}).json()
    assert len(last["items"]) == 2 and last["next_offset"] is None
    ids = [i["id"] for i in first["items"]] + [i["id"] for i in last["items"]]
    assert len(set(ids)) == 6
    hats = client.get("/api/v1/items", params={"filter": "category=hat"}).json()["items"]
    assert [i["id"] for i in hats] == ["Hat/hat-1"]
    priced = client.get("/api/v1/items", params=[("filter", "price>=20"),
                                                 ("filter", "price<=30")]).json()["items"]
    assert all(20 <= i["price"] <= 30 for i in priced)
    error_of(client.get("/api/v1/items", params={"filter": "price<<3"}), 400, "bad_filter")
    error_of(client.get("/api/v1/items", params={"limit": 0}), 422)
    error_of(client.get("/api/v1/items", params={"offset": -1}), 422)


@pytest.mark.parametrize("params", [
    {"limit": 1, "offset": 9223372036854775807}, {"limit": 1, "offset": 10**30},
    {"limit": 10**30}, {"limit": 501},
])
def test_list_items_huge_numbers_are_refused_not_500(client, params):
    """Issue 9.15: an offset past the 64-bit range was a 500."""
    message = error_of(client.get("/api/v1/items", params=params), 422, "invalid_parameter")
    assert next(iter(params)) in message or "offset" in message
    assert client.get("/api/v1/items", params={"limit": 1, "offset": 1_000_000_000}
                      ).json()["items"] == []


@pytest.mark.parametrize(("path", "params"), [
    ("/api/v1/similar", {"item": "Hat/hat-1", "k": 10**20}),
    ("/api/v1/similar", {"item": "Hat/hat-1", "k": 201}),
])
def test_numeric_query_parameters_are_bounded(client, path, params):
    error_of(client.get(path, params=params), 422, "invalid_parameter")
    error_of(post_image(client, "/api/v1/classify", jpeg_bytes(), top_k=10**20), 422)


def test_get_item_and_its_photo(client):
    item = client.get("/api/v1/items/Hat/hat-1").json()
    assert item["id"] == "Hat/hat-1" and item["category"] == "Hat" and item["price"] > 0
    assert "image" not in item and "source" not in item
    encoded = client.get("/api/v1/items/Hat%2Fhat-1")
    assert encoded.json()["id"] == "Hat/hat-1"
    photo = client.get(item["photo_url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content == HAT.read_bytes()
    error_of(client.get("/api/v1/items/No/such"), 404, "unknown_item")
    error_of(client.get("/api/v1/items/No/such/photo"), 404, "unknown_item")


def test_photos_only_come_from_the_catalog_store(client, catalog_dir):
    for path in ("/api/v1/items/..%2F..%2Fetc%2Fpasswd/photo",
                 "/api/v1/items/../../catalog.sqlite/photo",
                 "/api/v1/items/%2E%2E/photo"):
        assert client.get(path).status_code == 404, path
    # Even a database row pointing outside images/ is not followed.
    db = sqlite3.connect(catalog_dir / "catalog.sqlite")
    try:
        (original,) = db.execute("SELECT image FROM items WHERE id = 'Shoes/shoes-1'").fetchone()
        with db:
            db.execute("UPDATE items SET image = '../../../etc/hostname' "
                       "WHERE id = 'Shoes/shoes-1'")
        error_of(client.get("/api/v1/items/Shoes/shoes-1/photo"), 404, "no_photo")
        with db:
            db.execute("UPDATE items SET image = 'catalog.sqlite' WHERE id = 'Shoes/shoes-1'")
        error_of(client.get("/api/v1/items/Shoes/shoes-1/photo"), 404, "no_photo")
    finally:
        with db:
            db.execute("UPDATE items SET image = ? WHERE id = 'Shoes/shoes-1'", (original,))
        db.close()
    assert client.get("/api/v1/items/Shoes/shoes-1/photo").status_code == 200


# --- the catalog: writes ---------------------------------------------------------------------


def _add(client, item_id: str, photo: bytes | None = None, headers=WRITE, **fields):
    data = {"id": item_id, **{k: str(v) for k, v in fields.items()}}
    files = {"image": ("new.jpg", photo if photo is not None else jpeg_bytes(DRESS),
                       "image/jpeg")}
    return client.post("/api/v1/items", data=data, files=files, headers=headers)


def test_add_update_sell_delete_an_item(client):
    added = _add(client, "new/red-dress", category="Dress", colour="red", price="12.50",
                 extra=json.dumps({"brand": "Zara"}))
    assert added.status_code == 201, added.text
    item = added.json()
    assert item["price"] == 12.5 and item["extra"] == {"brand": "Zara"}
    assert client.get(item["photo_url"]).content == DRESS.read_bytes()
    similar = post_image(client, "/api/v1/similar", jpeg_bytes(DRESS), k=2).json()["matches"]
    assert {m["id"] for m in similar} == {"new/red-dress", "Dress/dress-1"}
    error_of(_add(client, "new/red-dress"), 409, "item_exists")

    patched = client.patch("/api/v1/items/new/red-dress", json={"price": 9, "size": "M",
                                                                "extra.brand": None},
                           headers=WRITE)
    assert patched.status_code == 200, patched.text
    assert patched.json()["price"] == 9 and patched.json()["size"] == "M"
    assert patched.json()["extra"] == {}

    sold = client.post("/api/v1/items/new/red-dress/sold", headers=WRITE)
    assert sold.json()["status"] == "sold"
    listed = client.get("/api/v1/items", params={"filter": "status=sold"}).json()["items"]
    assert [i["id"] for i in listed] == ["new/red-dress"]

    deleted = client.delete("/api/v1/items/new/red-dress", headers=WRITE)
    assert deleted.json() == {"removed": ["new/red-dress"], "items": 10}
    error_of(client.get("/api/v1/items/new/red-dress"), 404, "unknown_item")
    error_of(client.get(item["photo_url"]), 404)


def test_add_item_bad_input(client):
    error_of(_add(client, "bad/1", photo=truncated_jpeg()), 422, "unreadable_image")
    error_of(_add(client, "bad/2", photo=b""), 422, "unreadable_image")
    error_of(_add(client, "bad/3", photo=png_header_only(15000, 15000)), 422)
    error_of(_add(client, "bad/4", price="cheap"), 422, "item_not_added")
    error_of(_add(client, "bad/5", status="stolen"), 422, "item_not_added")
    error_of(_add(client, "bad/6", extra="{not json"), 400, "bad_extra")
    error_of(_add(client, "bad/7", extra="[1, 2]"), 400, "bad_extra")
    text = client.post("/api/v1/items", data={"id": "bad/8"},
                       files={"image": ("a.txt", b"hello", "text/plain")}, headers=WRITE)
    error_of(text, 415, "unsupported_media_type")
    error_of(client.post("/api/v1/items", data={"id": "bad/9"}, headers=WRITE), 422)
    assert client.get("/api/v1/catalog").json()["items"] == 10  # nothing half-added


def test_update_bad_input(client):
    error_of(client.patch("/api/v1/items/Hat/hat-1", json={"flavour": "sweet"},
                          headers=WRITE), 400)
    error_of(client.patch("/api/v1/items/Hat/hat-1", json={"price": "lots"}, headers=WRITE),
             400)
    error_of(client.patch("/api/v1/items/Hat/hat-1", json={}, headers=WRITE), 400,
             "nothing_to_update")
    error_of(client.patch("/api/v1/items/Hat/hat-1", json={"price": [1]}, headers=WRITE), 400)
    error_of(client.patch("/api/v1/items/Hat/hat-1", content=b"{oops",
                          headers={**WRITE, "Content-Type": "application/json"}), 422)
    error_of(client.patch("/api/v1/items/No/such", json={"price": 1}, headers=WRITE), 404,
             "unknown_item")
    error_of(client.post("/api/v1/items/No/such/sold", headers=WRITE), 404, "unknown_item")
    error_of(client.delete("/api/v1/items/No/such", headers=WRITE), 404, "unknown_item")
    for body in ({"price": "12"}, {"price": -1}, {"status": "stolen"}, {"size": "x" * 1001},
                 {"extra.": "x"}, {"extra.a b": "x"}, {"size": True}):
        error_of(client.patch("/api/v1/items/Hat/hat-1", json=body, headers=WRITE), 400)
    many = {f"extra.f{i}": i for i in range(65)}
    error_of(client.patch("/api/v1/items/Hat/hat-1", json=many, headers=WRITE), 400)


def test_catalog_writer_errors_map_to_409_and_503_without_server_paths():
    from fashionlens.errors import CatalogBusyError, ItemExistsError
    from fashionlens.service.errors import from_library

    exists = from_library(ItemExistsError("/srv/shop", ["Hat/hat-1"]))
    assert (exists.status, exists.code) == (409, "item_exists")
    busy = from_library(CatalogBusyError("/srv/shop", 30))
    assert (busy.status, busy.code) == (503, "catalog_busy")
    assert "/srv" not in exists.message + busy.message


def test_sold_can_be_undone(client):
    """Issue 9.7: an item marked sold by mistake can be made available again."""
    sold = client.post("/api/v1/items/Shirt/shirt-1/sold", headers=WRITE).json()
    assert sold["status"] == "sold"
    again = client.patch("/api/v1/items/Shirt/shirt-1", json={"status": "available"},
                         headers=WRITE)
    assert again.status_code == 200 and again.json()["status"] == "available"


def test_json_bodies_have_a_small_limit(client, engine):
    """Issue 9.14: one huge PATCH froze the catalog; JSON bodies stop at 64 KB."""
    huge = json.dumps({"extra.notes": "x" * 200_000}).encode()
    response = client.patch("/api/v1/items/Hat/hat-1", content=huge,
                            headers={**WRITE, "Content-Type": "application/json"})
    assert "64 KB" in error_of(response, 413, "too_large")

    def chunks():  # no Content-Length: counted as it streams
        yield huge[:40_000]
        yield huge[40_000:]

    streamed = client.patch("/api/v1/items/Hat/hat-1", content=chunks(),
                            headers={**WRITE, "Content-Type": "application/json"})
    error_of(streamed, 413, "too_large")
    # A photo may still be large; a body sent to a photo endpoint as JSON may not.
    assert post_image(client, "/api/v1/classify", jpeg_bytes()).status_code == 200
    with _client(engine, max_json_kb=1) as strict:
        error_of(strict.put("/api/v1/models/default", json={"model": "x" * 2000},
                            headers=WRITE), 413)
        assert post_image(strict, "/api/v1/classify", jpeg_bytes()).status_code == 200


WRITES = [
    ("post", "/api/v1/items", {"data": {"id": "auth/1"},
                               "files": {"image": ("a.jpg", HAT.read_bytes(), "image/jpeg")}}),
    ("patch", "/api/v1/items/Hat/hat-1", {"json": {"price": 1}}),
    ("post", "/api/v1/items/Hat/hat-1/sold", {}),
    ("delete", "/api/v1/items/Hat/hat-1", {}),
    ("put", "/api/v1/models/default", {"json": {"model": "clothing10"}}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES,
                         ids=["add", "update", "sold", "delete", "default-model"])
def test_write_endpoints_need_the_api_key(client, engine, method, path, body):
    call = getattr(client, method)
    error_of(call(path, **body), 401, "missing_api_key")
    error_of(call(path, headers={"X-API-Key": "wrong-key-123456"}, **body), 401,
             "invalid_api_key")
    error_of(call(path, headers={"Authorization": "Bearer nope-nope-nope"}, **body), 401)
    with _client(engine, api_key=None) as no_key:  # no key configured: writes are off
        error_of(getattr(no_key, method)(path, headers=WRITE, **body), 403, "writes_disabled")
    item = client.get("/api/v1/items/Hat/hat-1").json()
    assert item["price"] != 1 and item["status"] == "available"
    assert "auth/1" not in [i["id"] for i in client.get("/api/v1/items").json()["items"]]


def test_bearer_token_is_accepted(client):
    response = client.patch("/api/v1/items/Pants/pants-1", json={"colour": "blue"},
                            headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200 and response.json()["colour"] == "blue"


def test_protected_reads(engine):
    with _client(engine, protect_reads=True) as locked:
        error_of(locked.get("/api/v1/models"), 401, "missing_api_key")
        error_of(post_image(locked, "/api/v1/classify", jpeg_bytes()), 401)
        error_of(locked.get("/api/v1/items/Hat/hat-1/photo"), 401)
        assert locked.get("/api/v1/models", headers=WRITE).status_code == 200
        assert locked.get("/healthz").status_code == 200
        assert locked.get("/").status_code == 200  # the page itself; it asks for the key


# --- models ----------------------------------------------------------------------------------


def test_models_list_detail_and_plots(client):
    listing = client.get("/api/v1/models").json()
    assert listing["default"] == DEFAULT
    # Every bundled model is served, the default first; it also makes the catalog's vectors.
    first = listing["models"][0]
    assert first["name"] == DEFAULT and first["default"] and first["catalog_queries"] is True
    assert client.get("/api/v1/models/default").json() == first
    assert [m["name"] for m in listing["models"]].count(C10) == 1
    model = next(m for m in listing["models"] if m["name"] == C10)
    assert model["default"] is (DEFAULT == C10)
    assert len(model["classes"]) == 10 and model["input_shape"] == [224, 224]
    assert model["input_size"] == 224
    assert model["metrics"]["accuracy"] > 0.9 and model["metrics"]["num_images"] == 341
    assert set(model["per_class"]["Hat"]) >= {"precision", "recall", "f1", "support"}
    (task,) = model["tasks"]
    assert task["type"] == "single_label" and model["catalog_queries"] is (DEFAULT == C10)
    assert task["classes"] == model["classes"] and task["per_class"] == model["per_class"]
    assert task["metrics"]["accuracy"] == model["metrics"]["accuracy"]
    assert client.get("/api/v1/models/clothing10").json() == model
    for which in ("confusion", "curves"):
        plot = client.get(model["plots"][which])
        assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    error_of(client.get("/api/v1/models/clothing10/plots/../../model.json"), 404)
    error_of(client.get("/api/v1/models/clothing10/plots/weights"), 404, "unknown_plot")
    error_of(client.get("/api/v1/models/nope"), 404, "unknown_model")


def test_choose_the_default_model(client):
    ok = client.put("/api/v1/models/default", json={"model": C10}, headers=WRITE)
    assert ok.status_code == 200 and ok.json() == {"default": C10}
    assert post_image(client, "/api/v1/classify", jpeg_bytes()).json()["model"] == C10
    # Back to the bundled default: the engine is shared by the tests after this one.
    back = client.put("/api/v1/models/default", json={"model": DEFAULT}, headers=WRITE)
    assert back.json() == {"default": DEFAULT}
    error_of(client.put("/api/v1/models/default", json={"model": "nope"}, headers=WRITE),
             404, "unknown_model")
    error_of(client.put("/api/v1/models/default", json={"name": 3}, headers=WRITE), 422)
    error_of(client.put("/api/v1/models/default", json={"model": ""}, headers=WRITE), 422)


def test_several_models_are_served(catalog_dir, engine, model_dir):
    """A second model (the tiny trained test model) alongside the bundled one."""
    multi = Engine(ServiceSettings(models=["default", str(model_dir)]))
    try:
        with TestClient(create_app(ServiceSettings(api_key=KEY), engine=multi)) as c:
            names = [m["name"] for m in c.get("/api/v1/models").json()["models"]]
            assert names == [DEFAULT, "base"]
            other = post_image(c, "/api/v1/classify", jpeg_bytes(), model="base").json()
            assert other["model"] == "base" and other["tasks"][0]["num_classes"] == 3
            assert c.put("/api/v1/models/default", json={"model": "base"},
                         headers=WRITE).status_code == 200
            assert post_image(c, "/api/v1/classify", jpeg_bytes()).json()["model"] == "base"
            base = c.get("/api/v1/models/base").json()
            assert base["plots"]["confusion"] is not None and base["metrics"]
            error_of(c.get("/api/v1/items"), 404, "no_catalog")  # no catalog served here
            error_of(post_image(c, "/api/v1/similar", jpeg_bytes()), 404, "no_catalog")
            assert c.get("/readyz").json()["catalog"] is None
    finally:
        multi.close()


# --- limits, CORS, settings, CLI -------------------------------------------------------------


def test_catalog_of_another_model_uses_its_own_embedder(tmp_path, embedding_model_dir):
    """Query photos are embedded with the catalog's model, not with the served classifier."""
    from fashionlens.search import Catalog

    folder = tmp_path / "other-model-catalog"
    with Catalog(folder, create=True, model=embedding_model_dir) as catalog:
        catalog.add_source(SAMPLE_PHOTOS / "Hat")
    other = Engine(ServiceSettings(catalog=str(folder)))
    try:
        assert other.query is not None and other.query.model is None
        with TestClient(create_app(ServiceSettings(api_key=KEY), engine=other)) as c:
            assert c.get("/api/v1/catalog").json()["query_model"] is None
            photo = SAMPLE_PHOTOS / "Hat" / "hat-3.jpg"
            matches = post_image(c, "/api/v1/similar", jpeg_bytes(photo), k=2).json()["matches"]
            assert matches[0]["id"] == "hat-3" and matches[0]["similarity"] > 0.99
            assert c.get("/readyz").json()["batching"]["catalog embedder"]["requests"] >= 1
    finally:
        other.close()


def test_catalog_of_imported_vectors_is_searchable_by_item(tmp_path):
    """Vectors without their model or photos: item search works, photo search says why not."""
    import numpy as np

    from fashionlens.search import Catalog, ItemRecord

    folder = tmp_path / "vectors-only"
    vectors = np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32)
    with Catalog(folder, create=True, dim=16) as catalog:
        catalog.add_vectors([ItemRecord(id=f"v{i}", image=None, category="Shirt")
                             for i in range(6)], vectors)
    only = Engine(ServiceSettings(catalog=str(folder)))
    try:
        assert only.query is None
        with TestClient(create_app(ServiceSettings(api_key=KEY), engine=only)) as c:
            found = c.get("/api/v1/similar", params={"item": "v0", "k": 3}).json()["matches"]
            assert len(found) == 3 and "v0" not in [m["id"] for m in found]
            assert found[0]["photo_url"] is None
            error_of(c.get("/api/v1/items/v1/photo"), 404, "no_photo")
            error_of(post_image(c, "/api/v1/similar", jpeg_bytes()), 409, "no_photo_search")
            error_of(_add(c, "v9"), 409, "no_photo_search")
            assert post_image(c, "/api/v1/classify", jpeg_bytes()).status_code == 200
    finally:
        only.close()


def test_request_size_limit(engine):
    big = jpeg_bytes(HAT)  # about 19 KB
    assert len(big) > 10 * 1024
    with _client(engine, max_upload_mb=0.01) as small:
        error_of(post_image(small, "/api/v1/classify", big), 413, "too_large")

        def chunks():
            yield big[:8000]
            yield big[8000:]

        streamed = small.post("/api/v1/classify", content=chunks(),
                              headers={"Content-Type": "image/jpeg"})
        error_of(streamed, 413, "too_large")
        form = small.post("/api/v1/items", data={"id": "big"},
                          files={"image": ("a.jpg", big, "image/jpeg")}, headers=WRITE)
        error_of(form, 413, "too_large")
        tiny = Image.new("RGB", (32, 32), (200, 30, 30))
        buffer = io.BytesIO()
        tiny.save(buffer, "JPEG")
        assert post_image(small, "/api/v1/classify", buffer.getvalue()).status_code == 200


def test_cors_is_off_unless_configured(client, engine):
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    response = client.options("/api/v1/classify", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    got = client.get("/api/v1/models", headers={"Origin": "https://shop.example"})
    assert "access-control-allow-origin" not in got.headers
    with _client(engine, cors_origins=["https://shop.example"]) as open_client:
        allowed = open_client.options("/api/v1/classify", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        other = open_client.get("/api/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_closing_does_not_wait_for_a_stuck_catalog_job(catalog_dir):
    """Issue 9.14: SIGTERM did not stop the server while a catalog job ran; closing now
    waits a bounded time, and the worker threads never hold up the process's exit."""
    import time

    from fashionlens.service.engine import CatalogService

    service = CatalogService(catalog_dir)
    release = threading.Event()
    service.executor.submit(release.wait, 30)  # a job that does not finish by itself
    started = time.monotonic()
    assert service.close(timeout=0.3) is False
    assert time.monotonic() - started < 3
    assert service.executor._thread.daemon  # the interpreter does not join it at exit
    release.set()


def test_memory_is_trimmed_once_after_a_burst_of_requests():
    """The load test found RSS 16 % above its start after the load; freed memory is now
    handed back once the service goes idle (once per idle period, not before any work)."""
    from fashionlens.service.memory import IdleTrimmer

    async def scenario() -> list[int]:
        counter = {"n": 0}
        calls: list[int] = []
        trimmer = IdleTrimmer(lambda: counter["n"], idle_s=0.02,
                              trim=lambda: calls.append(counter["n"]))
        trimmer.start()
        await asyncio.sleep(0.1)  # idle from the start: nothing to give back
        assert calls == []
        counter["n"] = 5  # a burst of requests
        await asyncio.sleep(0.2)  # then idle: one trim
        counter["n"] += 1
        await asyncio.sleep(0.2)  # another burst, another trim
        await trimmer.stop()
        return calls

    calls = asyncio.run(scenario())
    assert calls == [5, 6]


def test_settings_checks_and_sources(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="at least 8"):
        ServiceSettings(api_key="short").check()
    with pytest.raises(ConfigError, match="protect_reads"):
        ServiceSettings(protect_reads=True).check()
    with pytest.raises(ConfigError, match="max_upload_mb"):
        ServiceSettings(max_upload_mb=0).check()
    with pytest.raises(ConfigError, match="currency"):
        ServiceSettings(currency="euros").check()
    with pytest.raises(ConfigError, match="header_timeout_s"):
        ServiceSettings(header_timeout_s=0).check()
    assert ServiceSettings(currency=" usd").check().currency == "USD"
    monkeypatch.setenv("FASHIONLENS_API_KEY", "from-the-environment")
    assert ServiceSettings().with_environment().api_key == "from-the-environment"
    assert ServiceSettings(api_key="given-explicitly").with_environment().api_key == \
        "given-explicitly"
    config = tmp_path / "service.yaml"
    config.write_text("port: 9001\nmodels: default\ncors_origins: [https://a.example]\n")
    settings = ServiceSettings.from_yaml(config, port=None, max_upload_mb=2)
    assert settings.port == 9001 and settings.models == ["default"]
    assert settings.max_upload_mb == 2 and settings.cors_origins == ["https://a.example"]
    config.write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="unknown service setting"):
        ServiceSettings.from_yaml(config)


def test_serve_command_wiring(monkeypatch, catalog_dir, tmp_path):
    """`fashionlens serve` builds the app and hands it to uvicorn on 127.0.0.1."""
    import fashionlens.service.demo as demo
    import fashionlens.service.server as server

    calls: list[dict] = []

    def fake_serve(app, settings, **kw):
        calls.append({"app": app, "host": settings.host, "port": settings.port,
                      "config": server.server_config(app, settings), **kw})

    monkeypatch.setattr(server, "serve", fake_serve)
    monkeypatch.delenv("FASHIONLENS_API_KEY", raising=False)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["serve", "--catalog", str(catalog_dir), "--port", "8123",
                                     "--api-key", KEY, "--max-upload-mb", "3",
                                     "--currency", "gbp"])
    assert result.exit_code == 0, (result.output, result.exception)
    (call,) = calls
    assert call["host"] == "127.0.0.1" and call["port"] == 8123
    settings = call["app"].state.settings
    assert settings.api_key == KEY and settings.max_upload_mb == 3
    assert settings.catalog == str(catalog_dir) and settings.currency == "GBP"
    config = call["config"]  # slow clients and shutdown are bounded
    assert config.timeout_keep_alive == 5 and config.timeout_graceful_shutdown == 10
    assert issubclass(config.http, server.DeadlineH11Protocol)
    assert config.http.header_timeout == 10
    call["app"].state.engine.close()

    # --demo never adds the sample photos to an existing catalog, only to a new folder.
    built: list[Path] = []

    def fake_build(folder):
        built.append(Path(folder))
        shutil.copytree(catalog_dir, folder)
        return Path(folder)

    monkeypatch.setattr(demo, "build_demo_catalog", fake_build)
    result = runner.invoke(cli_app, ["serve", "--demo", "--catalog", str(catalog_dir)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert built == [] and "demo API key" in result.output
    assert len(calls[1]["app"].state.settings.api_key) >= 16
    calls[1]["app"].state.engine.close()
    fresh = tmp_path / "demo-catalog"
    result = runner.invoke(cli_app, ["serve", "--demo", "--catalog", str(fresh),
                                     "--api-key", KEY])
    assert result.exit_code == 0, (result.output, result.exception)
    assert built == [fresh] and calls[2]["app"].state.settings.api_key == KEY
    calls[2]["app"].state.engine.close()

    bad = runner.invoke(cli_app, ["serve", "--port", "0"])
    assert bad.exit_code == 2
    bad = runner.invoke(cli_app, ["serve", "--currency", "euro"])  # main() makes it exit 2
    assert isinstance(bad.exception, ConfigError) and "currency" in str(bad.exception)

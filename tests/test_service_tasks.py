"""Multi-task and multi-label models in the web service: a tiny untrained model with a
classification head and a multilabel head (and one with a multilabel head only, which
gives no "probabilities"), built and saved without training, served through the app.

The answer contract of POST /classify per task type, the threshold override, the model
listing with tasks, thresholds and per-task metrics, and the unknown-model 404.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from fashionlens.data.transforms import Preprocess
from fashionlens.inference import SAMPLE_PHOTOS
from fashionlens.models import ModelInfo, create_model, save_model
from fashionlens.models.heads import HeadSpec, attach_heads
from fashionlens.service import Engine, ServiceSettings, create_app

from .helpers import default_model_name

KEY = "tasks-test-key-0123"
ARCH = "test_efficientnet"
PHOTO = (SAMPLE_PHOTOS / "Hat" / "hat-1.jpg").read_bytes()
GARMENTS = ["coat", "dress", "hat"]
TAGS = ["denim", "floral", "striped", "wool"]
THRESHOLDS = [0.2, 0.4, 0.6, 0.8]
METRICS = {
    "tasks": {
        "garment": {"kind": "classification", "accuracy": 0.75, "macro_f1": 0.7,
                    "num_images": 12,
                    "per_class": {c: {"precision": 0.5, "recall": 0.5, "f1": 0.5,
                                      "support": 4} for c in GARMENTS}},
        "tags": {"kind": "multilabel", "micro_f1": 0.6, "map": 0.65, "num_images": 12,
                 "tags": TAGS,
                 "per_tag": {t: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "ap": 0.6,
                                 "threshold": th, "support": 3}
                             for t, th in zip(TAGS, THRESHOLDS, strict=True)}},
    },
    "summary": {"garment": {"accuracy": 0.75, "macro_f1": 0.7},
                "tags": {"micro_f1": 0.6, "map": 0.65}, "score": 0.7, "num_images": 12},
}


def _save(folder: Path, name: str, heads: list[HeadSpec], metrics: dict,
          preprocess: Preprocess) -> Path:
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=len(heads[0].classes), pretrained="none")
    attach_heads(model, heads)
    info = ModelInfo(architecture=ARCH, classes=[], preprocess=preprocess, heads=heads,
                     metrics=metrics, name=name)
    return save_model(model.eval(), info, folder / name)


def save_multitask_model(folder: Path) -> Path:
    """A model named `multi`: a `garment` classification head and a `tags` multilabel
    head with tuned thresholds, and multi-task metrics (also used by the browser test)."""
    return _save(folder, "multi", [HeadSpec("garment", "classification", GARMENTS),
                                   HeadSpec("tags", "multilabel", TAGS, THRESHOLDS)],
                 METRICS, Preprocess(size=64, fit="letterbox", height=80, width=64))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tasks")
    multi = save_multitask_model(folder)
    tagger = _save(folder, "tagger", [HeadSpec("tags", "multilabel", TAGS)],
                   METRICS["tasks"]["tags"], Preprocess(size=64))
    return {"multi": multi, "tagger": tagger}


@pytest.fixture(scope="module")
def client(model_dirs):
    engine = Engine(ServiceSettings(models=[str(model_dirs["multi"]),
                                            str(model_dirs["tagger"])]))
    try:
        with TestClient(create_app(ServiceSettings(api_key=KEY), engine=engine)) as client:
            yield client
    finally:
        engine.close()


def classify(client, **params) -> dict:
    response = client.post("/api/v1/classify", content=PHOTO,
                           headers={"Content-Type": "image/jpeg"}, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_classify_answers_every_task(client):
    body = classify(client)
    assert body["model"] == "multi" and body["threshold"] is None
    garment, tags = body["tasks"]
    assert garment["name"] == "garment" and garment["type"] == "single_label"
    assert garment["label"] in GARMENTS and garment["num_classes"] == 3
    assert [c["label"] for c in garment["classes"]][0] == garment["label"]
    assert len(garment["classes"]) == 3 and garment["top_k"] == garment["classes"]
    assert abs(sum(c["probability"] for c in garment["classes"]) - 1) < 1e-3
    assert tags["name"] == "tags" and tags["type"] == "multi_label"
    assert set(tags["scores"]) == set(TAGS)
    assert all(0 <= p <= 1 for p in tags["scores"].values())
    assert tags["thresholds"] == dict(zip(TAGS, THRESHOLDS, strict=True))
    # The tags are those at or above their own threshold, highest first.
    expected = [t for t in TAGS if tags["scores"][t] >= tags["thresholds"][t]]
    assert sorted(t["label"] for t in tags["tags"]) == sorted(expected)
    probs = [t["probability"] for t in tags["tags"]]
    assert probs == sorted(probs, reverse=True)
    assert all(t["probability"] == tags["scores"][t["label"]] for t in tags["tags"])
    # The same photo with test-time views gives the same shape.
    tta = classify(client, tta="true")
    assert [(t["name"], t["type"]) for t in tta["tasks"]] == [("garment", "single_label"),
                                                            ("tags", "multi_label")]
    assert set(tta["tasks"][1]["scores"]) == set(TAGS)


def test_threshold_overrides_every_tag_and_hides_unsure_classes(client):
    scores = classify(client)["tasks"][1]["scores"]
    for threshold in (0.0, 0.5, 1.0):
        garment, tags = classify(client, threshold=threshold)["tasks"]
        assert tags["thresholds"] == {t: threshold for t in TAGS}
        assert sorted(t["label"] for t in tags["tags"]) == \
            sorted(t for t in TAGS if scores[t] >= threshold)
        assert all(c["probability"] >= threshold for c in garment["classes"])
        assert (garment["label"] is None) == (garment["probability"] < threshold)
    everything = classify(client, threshold=0.0)["tasks"][1]
    assert len(everything["tags"]) == len(TAGS)


def test_a_tagger_without_probabilities_is_served(client):
    body = classify(client, model="tagger", top_k=1)
    (tags,) = body["tasks"]
    assert tags["type"] == "multi_label" and set(tags["scores"]) == set(TAGS)
    assert tags["thresholds"] == {t: 0.5 for t in TAGS}  # none tuned: 0.5
    assert classify(client, model="tagger", tta="true")["tasks"][0]["name"] == "tags"


def test_models_list_tasks_thresholds_and_metrics(client):
    listing = client.get("/api/v1/models").json()
    assert listing["default"] == "multi"
    multi, tagger = listing["models"]
    assert multi["name"] == "multi" and multi["input_shape"] == [80, 64]
    assert multi["input_size"] == 64 and multi["classes"] == GARMENTS
    garment, tags = multi["tasks"]
    assert garment == {"name": "garment", "type": "single_label", "kind": "classification",
                       "column": None, "classes": GARMENTS, "num_classes": 3,
                       "metrics": {"accuracy": 0.75, "macro_f1": 0.7, "num_images": 12},
                       "per_class": METRICS["tasks"]["garment"]["per_class"],
                       "title": "Garment", "class_titles": {}, "confusion": None}
    assert tags["type"] == "multi_label" and tags["classes"] == TAGS
    assert tags["thresholds"] == dict(zip(TAGS, THRESHOLDS, strict=True))
    assert tags["metrics"]["map"] == 0.65 and "tags" not in tags["metrics"]
    assert tags["per_class"]["wool"]["threshold"] == 0.8
    assert multi["metrics"] == {"score": 0.7, "num_images": 12}
    assert multi["summary"]["tags"] == {"micro_f1": 0.6, "map": 0.65}
    assert multi["per_class"] == garment["per_class"]
    # A one-task model's flat metrics are its task's.
    assert tagger["classes"] == [] and tagger["input_shape"] == [64, 64]
    (only,) = tagger["tasks"]
    assert only["metrics"]["micro_f1"] == 0.6 and only["thresholds"]["wool"] == 0.5
    assert tagger["summary"] is None
    assert client.get("/api/v1/models/tagger").json() == tagger
    assert client.get("/api/v1/models/default").json()["name"] == "multi"


def test_unknown_model_is_404(client):
    for response in (client.get("/api/v1/models/nope"),
                     client.post("/api/v1/classify", content=PHOTO, params={"model": "nope"},
                                 headers={"Content-Type": "image/jpeg"})):
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["code"] == "unknown_model" and "multi, tagger" in error["message"]


def test_every_bundled_model_is_served_by_default(monkeypatch, tmp_path, model_dirs):
    """Without --model, every bundled model is loaded, the default one first."""
    import shutil

    from fashionlens.models import resolve

    bundled = tmp_path / "models"
    # The second model's folder name can never be the default's, whichever ships as default.
    for name, source in ((resolve.DEFAULT_NAME, resolve.DEFAULT_MODEL),
                         ("zz-other", model_dirs["multi"])):
        shutil.copytree(source, bundled / name)
    monkeypatch.setattr(resolve, "BUNDLED_DIR", bundled)
    assert ServiceSettings().model_specs() == ["default", "zz-other"]
    assert ServiceSettings(models=["zz-other"]).model_specs() == ["zz-other"]
    engine = Engine(ServiceSettings())
    try:
        assert list(engine.models) == [default_model_name(), "multi"]
        assert engine.default_model == default_model_name()
    finally:
        engine.close()

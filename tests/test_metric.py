"""Metric learning: losses, the head on cached features, full training, saved models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fashionlens.data import DataSpec
from fashionlens.errors import ConfigError, ModelError
from fashionlens.evaluation.retrieval import pair_accuracy, precision_at_k
from fashionlens.models import create_model, load_model
from fashionlens.models.embedding import (
    EmbeddingHead,
    EmbeddingSpec,
    backbone_features,
    stage_taps,
)
from fashionlens.search import Embedder
from fashionlens.training.metric import MetricConfig, train_embedding, train_head


def clustered_features(items: int = 40, views: int = 4, dim: int = 32, seed: int = 0):
    """Per item a centre; its views are the centre plus noise that is large along the
    first 8 axes (a nuisance, like background) and small elsewhere."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(items, dim))
    noise = rng.normal(size=(items, views, dim)) * 0.3
    noise[..., :8] *= 12
    categories = np.arange(items) % 4
    centres[:, 8:12] += 3 * np.eye(4)[categories]
    return (centres[:, None] + noise).astype(np.float32), np.arange(items), categories


@pytest.mark.parametrize("loss, mining", [("triplet", "semihard"), ("triplet", "hard"),
                                          ("supcon", "all")])
def test_head_learns_to_ignore_the_nuisance(loss, mining):
    features, items, categories = clustered_features()
    cfg = MetricConfig(dim=8, loss=loss, mining=mining, epochs=60, batch_items=16, lr=3e-3)
    head = EmbeddingHead(EmbeddingSpec(dim=8, in_features=32))

    def pairs(module):
        with torch.no_grad():
            a = module(torch.as_tensor(features[:, 0])).numpy()
            b = module(torch.as_tensor(features[:, 1])).numpy()
        return pair_accuracy(a, b)["top1"]

    before = pairs(head)
    history = train_head(features, items, categories, head, cfg)
    after = pairs(head)
    assert after > before + 0.3 and after >= 0.6, (before, after)
    assert history[-1]["loss"] < history[0]["loss"]


def test_pair_accuracy_and_precision_count_ranks():
    first = np.eye(4, dtype=np.float32)
    second = first.copy()
    second[3] = [1, 0, 0, 0.5]  # item 3's second photo looks like item 0
    result = pair_accuracy(first, second, ks=(1, 2, 3))
    # Only the query 3' misses: item 0's two photos rank above its pair.
    assert result["top1"] == result["top2"] == pytest.approx(7 / 8)
    assert result["top3"] == 1.0 and result["mean_rank"] == pytest.approx(10 / 8)
    labels = ["a", "a", "b", "b"]
    p = precision_at_k(second, labels, first, labels, k=1)
    assert p["precision@1"] == pytest.approx(0.75) and p["per_label"] == {"a": 1.0, "b": 0.5}


def test_posterior_weight_mixes_item_and_class_similarity():
    torch.manual_seed(0)
    spec = EmbeddingSpec(dim=6, in_features=12, posterior_weight=0.25, classes=3)
    head = EmbeddingHead(spec)
    features, logits = torch.randn(2, 12), torch.randn(2, 3)
    with torch.no_grad():
        vectors, item = head.search_vector(features, logits), head(features)
    assert vectors.shape == (2, spec.output_dim) == (2, 9)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(2), atol=1e-5)
    posterior = torch.nn.functional.normalize(logits.softmax(-1), dim=-1)
    expected = (item[0] @ item[1] + 0.25 * posterior[0] @ posterior[1]) / 1.25
    assert float(vectors[0] @ vectors[1]) == pytest.approx(float(expected), abs=1e-5)
    with pytest.raises(ModelError, match="logits needed"):
        head.search_vector(features, None)
    with pytest.raises(ModelError, match="at least 2 classes"):
        EmbeddingSpec.from_dict({"dim": 4, "in_features": 8, "posterior_weight": 0.2})


def test_a_bare_backbone_has_no_posterior_to_append(tmp_path, tiny_folder):
    cfg = MetricConfig(base="test_efficientnet", pretrained="none", posterior_weight=0.2,
                       epochs=1, device="cpu")
    with pytest.raises(ConfigError, match="does not classify"):
        train_embedding(cfg, DataSpec(path=str(tiny_folder)), tmp_path / "run")


def test_stage_taps_need_a_backbone_that_exposes_its_stages():
    model = create_model("test_efficientnet", num_classes=0, pretrained="none")
    stages, channels = stage_taps(model, 2)
    assert stages == [len(model.feature_info) - 2, len(model.feature_info) - 1]
    assert channels == [model.feature_info[i]["num_chs"] for i in stages]
    assert stage_taps(torch.nn.Linear(3, 3), 0) == ([], [])
    with pytest.raises(ModelError, match="does not expose its stages"):
        stage_taps(torch.nn.Linear(3, 3), 2)


def test_bad_metric_config_is_refused():
    with pytest.raises(ConfigError, match="metric.loss: 'arcfce'"):
        MetricConfig(loss="arcfce").check()
    with pytest.raises(ConfigError, match="metric.dim: must be at least 2, got 1"):
        MetricConfig(dim=1).check()
    with pytest.raises(ConfigError, match="metric.temperature: must be positive"):
        MetricConfig(temperature=0.0).check()


@pytest.mark.parametrize("mode", ["head", "full"])
def test_train_embedding_saves_a_model_that_embeds(tmp_path, tiny_folder, mode):
    cfg = MetricConfig(base="test_efficientnet", pretrained="none", mode=mode, dim=16,
                       views=2, epochs=2, batch_items=8, threads=1, precision="fp32",
                       device="cpu")
    result = train_embedding(cfg, DataSpec(path=str(tiny_folder), val_fraction=0.25),
                             tmp_path / "run")
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and "pairs_top10" in metrics["validation"]
    assert 0 <= metrics["validation"]["precision@10"] <= 1
    model, info = load_model(result.model_dir)
    assert info.embedding["dim"] == 16 and hasattr(model, "embedding_head")
    # The head reads the pooled features and the last two stages' pooled outputs.
    assert len(info.embedding["taps"]) == 2
    with torch.no_grad():
        features = backbone_features(model, torch.zeros(1, 3, 64, 64))
    assert features.shape[1] == info.embedding["in_features"]
    embedder = Embedder(result.model_dir, precision="fp32")
    assert embedder.dim == 16
    photo = next(p for p in tiny_folder.rglob("*") if p.is_file())
    vector = embedder.embed_one(photo)
    assert vector.shape == (16,) and np.isclose(np.linalg.norm(vector), 1.0, atol=1e-4)
    assert (result.run_dir / "config.yaml").read_text().startswith("metric:")


def test_items_with_several_photos_come_from_the_item_column(tmp_path, tiny_folder):
    """Two photos per item: the item is the positive pair, and the split keeps an
    item's photos together."""
    photos = sorted(p for p in tiny_folder.rglob("*") if p.is_file())
    rows = ["image,label,item"] + [f"{p},{p.parent.name},{p.parent.name}-{i // 2}"
                                   for i, p in enumerate(photos)]
    table = tmp_path / "items.csv"
    table.write_text("\n".join(rows) + "\n")
    cfg = MetricConfig(base="test_efficientnet", pretrained="none", dim=8, views=1,
                       epochs=1, batch_items=4, threads=1, precision="fp32", device="cpu",
                       item_column="item")
    result = train_embedding(cfg, DataSpec(path=str(table), val_fraction=0.25),
                             tmp_path / "run")
    metrics = result.metrics
    assert metrics["items"] * 2 == metrics["train_photos"]
    assert metrics["train_photos"] + metrics["val_photos"] == len(photos)


def test_cli_trains_an_embedding_and_evaluates_search(tmp_path, tiny_folder, model_dir):
    from typer.testing import CliRunner

    from fashionlens.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["train-embedding", str(tiny_folder), "--base", str(model_dir),
                                 "--dim", "8", "--views", "1", "--epochs", "2", "--device",
                                 "cpu", "--posterior-weight", "0.2", "--output",
                                 str(tmp_path), "--name", "emb"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "pairs_top10" in result.stdout and "model saved to" in result.stdout
    model = tmp_path / "emb" / "model"
    result = runner.invoke(app, ["evaluate-search", str(tiny_folder), "--model", str(model),
                                 "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    data = json.loads(result.stdout)
    _, info = load_model(model)
    assert data["dimension"] == 8 + len(info.classes)  # the class posterior is appended
    assert set(data["pairs"]) >= {"top1", "top5", "top10"} and 0 <= data["pairs"]["top10"] <= 1
    assert 0 <= data["category"]["precision@10"] <= 1
    # The head's settings are part of the model's identity: after changing the posterior
    # weight the vectors differ (same size), so a catalog must not take them as its own.
    before = Embedder(model, precision="fp32")
    meta = json.loads((model / "model.json").read_text())
    meta["embedding"]["posterior_weight"] = 0.1
    (model / "model.json").write_text(json.dumps(meta))
    after = Embedder(model, precision="fp32")
    assert after.dim == before.dim and after.fingerprint != before.fingerprint
    bad = runner.invoke(app, ["evaluate-search", str(tiny_folder), "--model", str(model),
                              "--protocol", "speed"])
    assert "unknown protocol speed" in str(bad.exception)
    bad = runner.invoke(app, ["train-embedding", str(tiny_folder), "--loss", "arcfce"])
    assert str(bad.exception).startswith("--loss: 'arcfce' is not one of")
    for flag in ("--margin", "--category-weight", "--posterior-weight"):
        bad = runner.invoke(app, ["train-embedding", str(tiny_folder), flag, "nan"])
        assert str(bad.exception) == f"{flag}: must be a finite number, got nan"


@pytest.mark.parametrize("method, features, kept", [
    ("prototype", ["prototype"], False),   # fitted on the old search vector: dropped
    ("msp", ["msp"], True),                # class probabilities only: still right
])
def test_a_new_embedding_drops_a_not_a_garment_scorer_that_reads_the_vector(
        tmp_path, tiny_folder, model_dir, method, features, kept):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(model_dir, base)
    meta = json.loads((base / "model.json").read_text())
    meta["unknown"] = {"method": method, "head": None, "threshold": 0.5,
                       "parameters": {"features": features, "mean": [0.0], "std": [1.0],
                                      "weights": [1.0], "bias": 0.0,
                                      "prototypes": [[1.0] * 8]},
                       "calibration": {}}
    meta["duplicate_threshold"] = 0.97  # measured on the old vector: always dropped
    (base / "model.json").write_text(json.dumps(meta))
    (base / "training.json").write_text(json.dumps({"num_train_images": 40}))
    cfg = MetricConfig(base=str(base), mode="head", dim=8, views=1, epochs=1, batch_items=4,
                       threads=1, precision="fp32", device="cpu")
    result = train_embedding(cfg, DataSpec(path=str(tiny_folder), val_fraction=0.25),
                             tmp_path / "run")
    _, info = load_model(result.model_dir)
    assert (info.unknown is not None) is kept
    assert info.duplicate_threshold is None
    # the base's training figures go on with it (its card can still say how it trained)
    assert json.loads((result.model_dir / "training.json").read_text()) == {
        "num_train_images": 40}

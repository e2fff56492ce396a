"""Heads that also read the backbone's tapped stages, and `refit-heads`, which fits them
on frozen features."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fashionlens import load_config
from fashionlens.data.transforms import Preprocess
from fashionlens.errors import ConfigError, ModelError
from fashionlens.inference.runtime import TorchRuntime
from fashionlens.models import ModelInfo, create_model, load_model, save_model
from fashionlens.models.embedding import stage_taps
from fashionlens.models.heads import HeadSpec, attach_heads, head_module, stage_term
from fashionlens.models.info import vector_names
from fashionlens.search.alignment import ALIGNMENT_FILE, TextAlignment
from fashionlens.tasks import tasks_from_heads
from fashionlens.training import refit

from .helpers import TINY_TRAIN, tiny_run_config, with_stage_taps

pytestmark = pytest.mark.timeout(300)
ARCH = "test_efficientnet"


def test_a_head_reading_the_taps_adds_its_stage_term_and_survives_saving(tmp_path):
    torch.manual_seed(0)
    heads = [HeadSpec("kind", "classification", ["coat", "dress", "skirt"]),
             HeadSpec("colour", "classification", ["red", "blue"], taps=True)]
    model = create_model(ARCH, num_classes=3, pretrained="none").eval()
    _, channels = stage_taps(model, 2)
    attach_heads(model, heads, sum(channels))
    spec = with_stage_taps(model, 3)
    assert stage_term(model, "colour") is not None and stage_term(model, "kind") is None
    info = ModelInfo(architecture=ARCH, classes=[], preprocess=Preprocess(size=64),
                     heads=heads, embedding=spec.to_dict(), name="taps-test")
    folder = save_model(model, info, tmp_path / "model")
    assert json.loads((folder / "model.json").read_text())["heads"][1]["taps"] is True

    batch = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    final, stages = model.forward_intermediates(batch, indices=spec.taps)
    pooled = model.forward_head(final, pre_logits=True)
    taps = torch.cat([s.mean((2, 3)) for s in stages], -1)
    with torch.no_grad():
        logits = head_module(model, heads, "colour")(pooled) + stage_term(model, "colour")(taps)
    loaded, _ = load_model(folder)
    got = TorchRuntime(loaded, info.preprocess, info=info, precision="fp32").run(batch)
    np.testing.assert_allclose(got["colour"], logits.softmax(-1).numpy(), atol=1e-5)
    without = TorchRuntime(model, info.preprocess, info=info, precision="fp32")
    assert not np.allclose(got["colour"], torch.softmax(
        head_module(model, heads, "colour")(pooled), -1).detach().numpy(), atol=1e-3)
    np.testing.assert_allclose(without.run(batch)["kind"], got["kind"], atol=1e-5)


def test_heads_named_like_torch_module_attributes_get_modules_and_round_trip(tmp_path):
    """`type` is a common column name, and an attribute of every torch module: the first
    head's stage term under that name used to crash `refit-heads`."""
    torch.manual_seed(0)
    heads = [HeadSpec("type", "classification", ["coat", "dress", "skirt"], taps=True),
             HeadSpec("train", "classification", ["red", "blue"], taps=True),
             HeadSpec("head_train", "classification", ["a", "b"])]
    model = create_model(ARCH, num_classes=3, pretrained="none").eval()
    _, channels = stage_taps(model, 2)
    attach_heads(model, heads, sum(channels))
    spec = with_stage_taps(model, 3)
    for name in ("type", "train"):
        assert stage_term(model, name) is not None
        torch.nn.init.normal_(stage_term(model, name).weight)
    assert head_module(model, heads, "train") is not head_module(model, heads, "head_train")
    assert callable(model.train) and callable(model.type)  # the module's own, untouched
    info = ModelInfo(architecture=ARCH, classes=[], preprocess=Preprocess(size=64),
                     heads=heads, embedding=spec.to_dict(), name="names-test")
    folder = save_model(model, info, tmp_path / "model")
    batch = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    expected = TorchRuntime(model, info.preprocess, info=info, precision="fp32").run(batch)
    loaded, _ = load_model(folder)
    got = TorchRuntime(loaded, info.preprocess, info=info, precision="fp32").run(batch)
    for name in ("type", "train", "head_train"):
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5)


def test_a_head_reading_taps_needs_a_model_that_taps_stages(tmp_path):
    heads = [HeadSpec("kind", "classification", ["coat", "dress"], taps=True)]
    model = create_model(ARCH, num_classes=2, pretrained="none")
    with pytest.raises(ModelError, match="reads the backbone's tapped stages"):
        attach_heads(model, heads)
    info = ModelInfo(architecture=ARCH, classes=[], preprocess=Preprocess(size=64),
                     heads=[HeadSpec("kind", "classification", ["coat", "dress"])])
    folder = save_model(model, info, tmp_path / "model")
    meta = json.loads((folder / "model.json").read_text())
    meta["heads"][0]["taps"] = True
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"model\.json: head 'kind' reads"):
        load_model(folder)


def test_fit_head_learns_from_the_taps_and_folds_their_scale_into_the_weights():
    """Pooled features carry nothing; one tapped channel, far from zero and widely
    scaled, carries the class: the fitted head must find it and apply to the raw taps."""
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 2, n)
    pooled = rng.normal(size=(n, 6)).astype(np.float32)
    taps = rng.normal(size=(n, 4)).astype(np.float32)
    taps[:, 2] = 1000.0 + 50.0 * (labels * 2 - 1) + rng.normal(size=n)
    task = build_task_for(["no", "yes"])
    task.prepare(labels, load_config(overrides=TINY_TRAIN).train, torch.device("cpu"))
    weight, bias, tap_weight = refit.fit_head(
        task, torch.zeros(2, 6), torch.zeros(2), pooled, taps, labels, epochs=1000)
    logits = (torch.as_tensor(pooled) @ weight.T + bias
              + torch.as_tensor(taps) @ tap_weight.T)
    assert (logits.argmax(1).numpy() == labels).mean() > 0.95
    assert tap_weight.shape == (2, 4)


def test_fit_head_goes_on_from_the_stage_term_a_head_has():
    """A head refit before starts from its term, as the model applies it to the raw taps
    (far from zero and widely scaled here): with no epoch to run, it comes back as it
    was."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 50)
    pooled = rng.normal(size=(50, 6)).astype(np.float32)
    taps = (500.0 + 40.0 * rng.normal(size=(50, 4))).astype(np.float32)
    weight, bias = torch.randn(2, 6), torch.randn(2)
    term = torch.randn(2, 4) * 0.01
    task = build_task_for(["no", "yes"])
    task.prepare(labels, load_config(overrides=TINY_TRAIN).train, torch.device("cpu"))
    w, b, w_taps = refit.fit_head(task, weight, bias, pooled, taps, labels, epochs=0,
                                  stage_weight=term)
    assert torch.allclose(w, weight) and torch.allclose(w_taps, term, atol=1e-6)
    assert torch.allclose(b, bias, atol=1e-4)


def test_out_of_fold_scores_come_from_heads_that_never_saw_the_photo():
    """Each photo is its own feature (one-hot): a head that saw a photo can tell its tags,
    one that did not has nothing to go on, so all photos of a fold score alike."""
    n, folds = 40, 4
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 2, (n, 2)).astype(np.float32)
    pooled, taps = np.eye(n, dtype=np.float32), np.zeros((n, 1), np.float32)
    task = tasks_from_heads([HeadSpec("tags", "multilabel", ["a", "b"])])[0]
    task.prepare(targets, load_config(overrides=TINY_TRAIN).train, torch.device("cpu"))
    start = (torch.zeros(2, n), torch.zeros(2))
    w, b, _ = refit.fit_head(task, *start, pooled, taps, targets, epochs=300)
    seen = torch.sigmoid(torch.as_tensor(pooled) @ w.T + b).numpy()
    assert ((seen > 0.5) == (targets > 0.5)).mean() > 0.95
    unseen = refit.out_of_fold_scores(task, *start, pooled, taps, targets, folds=folds,
                                      epochs=300)
    assert len(np.unique(unseen.round(5), axis=0)) <= folds
    assert ((unseen > 0.5) == (targets > 0.5)).mean() < 0.8


def build_task_for(classes: list[str]):
    return tasks_from_heads([HeadSpec("label", "classification", classes)])[0]


def test_refit_heads_wins_back_a_spoiled_head_and_caches_the_features(
        tmp_path, spoiled_model, tiny_folder, monkeypatch):
    out = tmp_path / "refit"
    (spoiled_model / "training.json").write_text(json.dumps({"train_seconds": 12.5}))
    # an alignment stays only where the vectors stay: refitting the first head (the
    # backbone's classifier, which the vector fingerprint counts) leaves it behind
    TextAlignment(np.ones((384, 4), np.float32),
                  {"model_fingerprint": vector_names(spoiled_model)[1]}).save(spoiled_model)
    result = refit.refit_heads(spoiled_model, tiny_run_config(tiny_folder), ["label"], out,
                               epochs=30)
    [head] = result.heads
    # the trained model's figures go on with the refit one (its card keeps them)
    assert json.loads((out / "model" / "training.json").read_text()) == {"train_seconds": 12.5}
    assert head.kept and head.after > head.before
    model, info = load_model(out / "model")
    assert info.heads[0].taps and stage_term(model, "label") is not None
    assert info.metrics["refit"]["label"]["kept"] is True
    summary = json.loads((out / "refit.json").read_text())
    assert summary["heads"]["label"]["after"] == round(head.after, 4)
    assert summary["training_photos"] > 0 and summary["validation_photos"] > 0
    assert summary["text_alignment_carried"] is False
    assert not (out / "model" / ALIGNMENT_FILE).exists()
    assert (out / "confusion-label.png").stat().st_size > 0
    # the original model folder is untouched
    assert not load_model(spoiled_model)[1].heads[0].taps

    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted again")

    monkeypatch.setattr(refit, "extract_features", no_extraction)
    again = refit.refit_heads(spoiled_model, tiny_run_config(tiny_folder), ["label"],
                              tmp_path / "refit", epochs=30)
    assert again.heads[0].after == pytest.approx(head.after)


def test_refit_heads_refuses_what_it_cannot_do(tmp_path, model_dir, spoiled_model,
                                               tiny_folder):
    with pytest.raises(ModelError, match="taps no backbone stages"):
        refit.refit_heads(model_dir, tiny_run_config(tiny_folder), ["label"], tmp_path / "a")
    with pytest.raises(ConfigError, match="--heads colour: the model has no such head"):
        refit.refit_heads(spoiled_model, tiny_run_config(tiny_folder), ["colour"], tmp_path / "b")
    copy = shutil.copytree(tiny_folder, tmp_path / "photos")
    shutil.rmtree(next(p for p in sorted(copy.iterdir()) if p.is_dir()))
    with pytest.raises(ConfigError, match="other classes than the model's head"):
        refit.refit_heads(spoiled_model, tiny_run_config(copy), ["label"], tmp_path / "c")


def test_the_refit_heads_command_and_the_model_card(tmp_path, spoiled_model, tiny_folder):
    from typer.testing import CliRunner

    from fashionlens.cli.main import app
    from fashionlens.models.card import card_text

    config = tmp_path / "run.yaml"
    tiny_run_config(tiny_folder).save(config)
    runner = CliRunner()
    done = runner.invoke(app, ["refit-heads", str(spoiled_model), str(config), "--heads",
                               "label", "--out", str(tmp_path / "out"), "--epochs", "30"])
    assert done.exit_code == 0, done.output
    assert "label: validation accuracy" in done.output and "refit kept for: label" in done.output
    _, info = load_model(tmp_path / "out" / "model")
    assert "refit on frozen features" in card_text(info) and "`label` accuracy" in card_text(info)
    missing = runner.invoke(app, ["refit-heads", str(spoiled_model), str(tmp_path / "no.yaml"),
                                  "--heads", "label", "--out", str(tmp_path / "x")])
    assert isinstance(missing.exception, ConfigError)  # `main` prints it, exit status 2
    assert "no.yaml: no such config file" in str(missing.exception)


def test_fit_head_keeps_the_trained_answers_on_photos_without_the_label():
    """Photos of another kind (no label for this head) lie beyond the labelled ones on the
    tapped channel that decides: left alone, the refit head extrapolates to 'yes' there;
    held to the trained head's 'no', it keeps saying 'no'."""
    rng = np.random.default_rng(1)
    n = 300
    labels = rng.integers(0, 2, n)
    pooled = rng.normal(size=(n, 6)).astype(np.float32)
    taps = rng.normal(size=(n, 3)).astype(np.float32)
    taps[:, 1] = 10.0 * (labels * 2 - 1) + rng.normal(size=n)
    other_pooled = rng.normal(size=(100, 6)).astype(np.float32)
    other_taps = rng.normal(size=(100, 3)).astype(np.float32)
    other_taps[:, 1] = 30.0
    trained_says_no = np.tile(np.array([[0.95, 0.05]], np.float32), (100, 1))
    task = build_task_for(["no", "yes"])
    task.prepare(labels, load_config(overrides=TINY_TRAIN).train, torch.device("cpu"))

    def answers_on_the_others(keep: float) -> np.ndarray:
        weight, bias, tap_weight = refit.fit_head(
            task, torch.zeros(2, 6), torch.zeros(2), pooled, taps, labels, epochs=600,
            unlabelled=(other_pooled, other_taps, trained_says_no), keep=keep)
        logits = (torch.as_tensor(other_pooled) @ weight.T + bias
                  + torch.as_tensor(other_taps) @ tap_weight.T)
        return logits.argmax(1).numpy()

    assert (answers_on_the_others(0.0) == 1).mean() > 0.9
    assert (answers_on_the_others(1.0) == 0).mean() > 0.9


def test_the_card_says_where_a_refit_tag_heads_thresholds_were_tuned():
    from fashionlens.models.card import _validation

    heads = [HeadSpec("tags", "multilabel", ["a", "b"])]
    figures = {"micro_f1": 0.6, "micro_f1_crossfit": 0.55, "num_images": 40}
    refit_record = {"kept": True, "decisions": {
        "thresholds_from": "out-of-fold training scores (5 folds)"}}
    text = _validation(heads, {"tasks": {"tags": figures}, "refit": {"tags": refit_record}},
                       {}, {})
    assert "micro-F1 (thresholds tuned on out-of-fold training scores (5 folds))" in text
    assert "held out" in text and "flatters" not in text
    refit_record["kept"] = False  # the trained head stayed: tuned on validation by training
    text = _validation(heads, {"tasks": {"tags": figures}, "refit": {"tags": refit_record}},
                       {}, {})
    assert "micro-F1 (thresholds tuned on these photos)" in text and "flatters" in text


def test_thresholds_are_tuned_on_as_many_photos_of_each_source():
    from fashionlens.data.dataset import SourcedDataset

    sources = np.array([0] * 50 + [1] * 8 + [2] * 20)
    keep = refit.balanced_rows(sources, seed=1)
    assert [int((sources[keep] == k).sum()) for k in (0, 1, 2)] == [8, 8, 8]
    assert keep[50:58].all()  # the smallest source whole
    assert (refit.balanced_rows(sources, seed=1) == keep).all()  # seeded

    class Part:
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

    joint = SourcedDataset([Part(5), Part(3), Part(4)], ["a", "b", "c"])
    assert refit.source_of(joint, np.array([0, 4, 5, 7, 8, 11])).tolist() == [0, 0, 1, 1, 2, 2]
    assert refit.source_of(object(), np.array([0, 9])).tolist() == [0, 0]


def test_fit_head_counts_a_repeated_row_as_many_times():
    """Two sets of photos with the same features and opposite labels: the head sides with
    the set that counts more, and repeats of one change nothing at all."""
    pooled = np.tile(np.eye(2, dtype=np.float32), (10, 1))  # 20 rows, two kinds of photo
    taps = np.zeros((20, 1), np.float32)
    labels = np.tile([0, 1], 10)
    labels[:4] = [1, 0, 1, 0]  # 2 of each kind's 10 photos say the opposite
    task = build_task_for(["no", "yes"])
    task.prepare(labels, load_config(overrides=TINY_TRAIN).train, torch.device("cpu"))
    start = (torch.zeros(2, 2), torch.zeros(2))

    def answers(repeats):
        w, b, _ = refit.fit_head(task, *start, pooled, taps, labels, epochs=200,
                                 repeats=repeats)
        return (torch.as_tensor(np.eye(2, dtype=np.float32)) @ w.T + b).argmax(1).tolist()

    assert answers(None) == [0, 1]  # the majority
    weights = np.ones(20, np.int64)
    weights[:4] = 10  # the four odd photos now outweigh the other 16
    assert answers(weights) == [1, 0]
    plain = refit.fit_head(task, *start, pooled, taps, labels, epochs=3)
    ones = refit.fit_head(task, *start, pooled, taps, labels, epochs=3,
                          repeats=np.ones(20, np.int64))
    assert all(torch.equal(a, b) for a, b in zip(plain, ones, strict=True))


def test_source_weights_follow_the_config_sources():
    config = load_config(overrides=TINY_TRAIN)
    assert refit.source_weights(config).tolist() == [1]
    from fashionlens.config import SourceConfig
    config.sources = [SourceConfig(name="a"), SourceConfig(name="b", refit_weight=20)]
    assert refit.source_weights(config)[np.array([0, 1, 1, 0])].tolist() == [1, 20, 20, 1]

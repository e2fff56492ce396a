"""train(config): a tiny network learns separable colours and leaves a complete run folder."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from fashionlens import load_config, train
from fashionlens.config import FieldError
from fashionlens.errors import DataError
from fashionlens.evaluation.plots import curves_figure
from fashionlens.models import load_model
from fashionlens.training.loop import FitResult
from fashionlens.training.run import _output_dir, fine_tuning_note

from .helpers import COLOURS, TINY_TRAIN, make_csv_dataset, write_corrupt_jpeg, write_photo


def _config(data, out, name, *extra):
    return load_config(overrides=[*TINY_TRAIN, f"data.path={data}", f"output.dir={out}",
                                  f"output.name={name}", *extra])


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run.model_dir / "model.safetensors"))


def test_fine_tuning_learns_separable_classes(tiny_folder, tmp_path):
    # No linear probe: the score comes from gradient training alone.
    cfg = _config(tiny_folder, tmp_path, "ft", "train.linear_probe=false", "train.epochs=3")
    run = train(cfg)
    chance = 1 / len(COLOURS)
    assert run.metrics["accuracy"] >= 0.75 > chance + 0.3
    assert run.fit.best_epoch >= 1
    epochs = [h for h in run.fit.history if "train_loss" in h]
    assert [h["epoch"] for h in epochs] == [1, 2, 3]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert run.skipped == {}


def test_run_folder_is_complete(trained_run, tiny_folder):
    out = trained_run.output_dir
    for name in ("model/model.json", "model/model.safetensors", "metrics.json",
                 "confusion.png", "curves.png", "config.yaml"):
        assert (out / name).is_file(), name
    assert not (out / "skipped.txt").exists()
    assert trained_run.model_dir == out / "model"

    summary = json.loads((out / "metrics.json").read_text())
    metrics = summary["metrics"]
    for key in ("accuracy", "top3_accuracy", "macro_f1", "per_class", "confusion_matrix"):
        assert key in metrics, key
    assert metrics["accuracy"] > 0.6  # the linear probe alone separates solid colours
    assert metrics["top3_accuracy"] == 1.0  # three classes: the top 3 always hold the truth
    assert set(metrics["per_class"]) == set(COLOURS)
    assert summary["classes"] == sorted(COLOURS)
    assert summary["num_train_images"] + summary["num_val_images"] == 16 * len(COLOURS)
    assert summary["num_val_images"] == 12  # val_fraction 0.25 of 48
    assert sum(map(sum, metrics["confusion_matrix"])) == summary["num_val_images"]
    assert summary["skipped_images"] == {} and summary["missing_images"] == []
    probe_row = summary["history"][0]  # the linear probe's scores come first (epoch 0)
    assert set(probe_row) == {"epoch", "val_loss", "val_accuracy", "val_macro_f1"}
    assert probe_row["epoch"] == 0
    assert [h["epoch"] for h in summary["history"][1:]] == [1, 2]
    assert summary["precision"] == "fp32"  # the precision the run actually used
    best = summary["best_epoch"]
    assert summary["fine_tuning_improved"] is (best > 0)
    assert summary["kept"] == ("linear probe (epoch 0)" if best == 0 else f"epoch {best}")
    assert ("did not beat the linear probe" in summary["note"]) is (best == 0)
    # The photos the run never trained on, for `predict runs/NAME/validation.txt`.
    held_out = (out / "validation.txt").read_text().splitlines()
    assert len(held_out) == summary["num_val_images"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in held_out)

    for png in ("confusion.png", "curves.png"):
        with Image.open(out / png) as img:
            assert img.format == "PNG" and img.width > 100

    saved = load_config(out / "config.yaml")
    assert saved.model.name == "test_efficientnet"
    assert saved.train.epochs == 2 and saved.data.path == str(tiny_folder)
    assert yaml.safe_load((out / "config.yaml").read_text())["output"]["name"] == "base"

    model, info = load_model(out / "model")
    assert info.classes == sorted(COLOURS)
    assert info.architecture == "test_efficientnet"
    assert info.preprocess.size == 64
    assert info.metrics["accuracy"] == metrics["accuracy"]
    assert "confusion_matrix" not in info.metrics
    assert info.config["train"]["epochs"] == 2
    assert model.get_classifier().out_features == 3


def test_same_seed_gives_identical_results(trained_run, tiny_folder, tmp_path):
    again = train(_config(tiny_folder, tmp_path, "again"))
    assert again.metrics == trained_run.metrics
    first, second = _weights(trained_run), _weights(again)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key

    other = train(_config(tiny_folder, tmp_path, "other-seed", "seed=1"))
    third = _weights(other)
    assert any(not torch.equal(first[k], third[k]) for k in first)


def test_corrupt_photos_are_skipped_and_listed(tiny_folder, tmp_path):
    data = tmp_path / "photos"
    shutil.copytree(tiny_folder, data)
    bad = write_corrupt_jpeg(data / "red" / "broken.jpg")
    text = data / "green" / "note.png"
    text.write_text("not a photo")
    run = train(_config(data, tmp_path / "runs", "corrupt", "train.tta=true",
                        "output.half_weights=true"))

    assert set(run.skipped) == {str(bad), str(text)}
    skipped_txt = (run.output_dir / "skipped.txt").read_text()
    assert str(bad) in skipped_txt and str(text) in skipped_txt
    summary = json.loads((run.output_dir / "metrics.json").read_text())
    assert set(summary["skipped_images"]) == {str(bad), str(text)}
    assert summary["num_train_images"] + summary["num_val_images"] == 16 * len(COLOURS)
    assert run.metrics["accuracy"] > 0.6  # evaluated with test-time augmentation
    with safe_open(str(run.model_dir / "model.safetensors"), "pt") as fh:
        assert fh.get_tensor("conv_stem.weight").dtype == torch.float16
    load_model(run.model_dir)


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_photo_found_while_training_without_cache(tiny_folder, tmp_path, workers):
    data = tmp_path / "photos"
    shutil.copytree(tiny_folder, data)
    bad = write_corrupt_jpeg(data / "blue" / "zz_broken.jpg")
    run = train(_config(data, tmp_path / "runs", "nocache", "train.cache_images=false",
                        "train.epochs=1", "train.linear_probe=false",
                        f"train.num_workers={workers}"))
    assert str(bad) in run.skipped
    assert str(bad) in (run.output_dir / "skipped.txt").read_text()


def test_csv_with_split_column_and_missing_files(tmp_path):
    csv_path = make_csv_dataset(tmp_path / "shop", per_class=6, with_split=True)
    with csv_path.open("a") as fh:
        fh.write("ghost,red,s9,train\n")
    run = train(_config(csv_path, tmp_path / "runs", "csv", "data.image_column=id",
                        "data.image_dir=images", "data.image_extension=.png",
                        "data.split_column=split", "train.epochs=1"))
    summary = json.loads((run.output_dir / "metrics.json").read_text())
    assert summary["num_train_images"] == 12 and summary["num_val_images"] == 6
    assert summary["missing_images"] == [str(tmp_path / "shop" / "images" / "ghost.png")]
    assert "ghost.png\tfile not found" in (run.output_dir / "skipped.txt").read_text()


def test_one_class_is_not_enough(tmp_path):
    for i in range(6):
        write_photo(tmp_path / "photos" / "shirt" / f"{i}.jpg", seed=i)
    with pytest.raises(DataError, match="at least two classes"):
        train(_config(tmp_path / "photos", tmp_path / "runs", "one"))


def test_a_taken_run_name_is_numbered(tmp_path, tiny_folder, caplog):
    taken = tmp_path / "runs" / "demo"
    (taken / "model").mkdir(parents=True)
    (taken / "model" / "model.json").write_text("{}")
    (tmp_path / "runs" / "demo-2").mkdir()
    (tmp_path / "runs" / "demo-2" / "metrics.json").write_text("{}")
    cfg = _config(tiny_folder, tmp_path / "runs", "demo")
    with caplog.at_level(logging.INFO, logger="fashionlens.training.run"):
        assert _output_dir(cfg)[0] == tmp_path / "runs" / "demo-3"
    assert f"run folder: {tmp_path / 'runs' / 'demo-3'} ({taken} is taken" in caplog.text
    assert _output_dir(cfg)[0] == tmp_path / "runs" / "demo-4"  # claimed folders count as taken
    assert (taken / "model" / "model.json").read_text() == "{}"  # never touched


def test_exist_ok_reuses_the_folder_and_clears_only_the_old_outputs(tmp_path, tiny_folder):
    run = tmp_path / "runs" / "demo"
    (run / "model").mkdir(parents=True)
    (run / "model" / "model.json").write_text("{}")
    for name in ("skipped.txt", "confusion.png", "validation.txt"):
        (run / name).write_text("old")
    (run / "my-notes.md").write_text("keep me")
    cfg = _config(tiny_folder, tmp_path / "runs", "demo", "output.exist_ok=true")
    assert _output_dir(cfg)[0] == run
    assert sorted(p.name for p in run.iterdir()) == ["my-notes.md"]


def test_existing_run_is_not_overwritten(trained_run, tiny_folder):
    out_dir = trained_run.output_dir.parent
    before = (trained_run.model_dir / "model.safetensors").read_bytes()
    again = train(_config(tiny_folder, out_dir, "base", "train.epochs=1",
                          "train.linear_probe=false"))
    assert again.output_dir == out_dir / "base-2"
    assert (trained_run.model_dir / "model.safetensors").read_bytes() == before
    _, info = load_model(again.model_dir)
    assert info.name == "base-2"


def test_a_data_error_leaves_no_run_folder(tmp_path):
    with pytest.raises(DataError):
        train(_config(tmp_path / "nothing", tmp_path / "runs", "x"))
    assert not (tmp_path / "runs" / "x").exists()


def test_all_photos_unreadable_says_so(tmp_path):
    csv_path = make_csv_dataset(tmp_path / "shop", per_class=3)
    for image in (tmp_path / "shop" / "images").iterdir():
        image.write_bytes(b"not a photo")
    with pytest.raises(DataError) as info:
        train(_config(csv_path, tmp_path / "runs", "bad", "data.image_column=id",
                      "data.image_dir=images", "data.image_extension=.png"))
    assert str(info.value).startswith(f"no readable photos in {csv_path}")


def test_fine_tuning_note_says_what_was_kept():
    fit = FitResult(best_epoch=0, probe_score=0.667, history=[
        {"epoch": 0, "val_accuracy": 0.667}, {"epoch": 1, "val_accuracy": 0.167},
        {"epoch": 2, "val_accuracy": 0.5}])
    note = fine_tuning_note(fit, "accuracy", num_val=6)
    assert "did not beat the linear probe" in note
    assert "0.667 after the probe (epoch 0)" in note and "at best 0.500" in note
    assert "weights (epoch 0) were kept" in note and "6 validation photos" in note
    assert fine_tuning_note(FitResult(best_epoch=2, probe_score=0.5), "accuracy", 6) == ""
    assert fine_tuning_note(FitResult(best_epoch=2), "accuracy", 0) == ""  # no probe
    last = FitResult(best_epoch=0, kept_epoch=2, probe_score=0.667, history=fit.history)
    assert "the last epoch's weights (epoch 2) were kept" in fine_tuning_note(
        last, "accuracy", num_val=6)


def test_keep_last_saves_the_last_epoch_even_below_the_probe(tiny_folder, tmp_path,
                                                            monkeypatch):
    from fashionlens.training import loop
    real, calls = loop.validate, []

    def falling(*args, **kwargs):  # every epoch scores below the one before: probe best
        row = real(*args, **kwargs)
        row["val_accuracy"] = 1.0 - 0.1 * len(calls)
        calls.append(row)
        return row

    monkeypatch.setattr(loop, "validate", falling)
    best = train(_config(tiny_folder, tmp_path, "best", "train.epochs=2"))
    calls.clear()
    last = train(_config(tiny_folder, tmp_path, "last", "train.epochs=2", "train.keep=last"))
    assert (best.fit.best_epoch, best.fit.kept_epoch) == (0, 0)
    assert (last.fit.best_epoch, last.fit.kept_epoch) == (0, 2)
    summary = json.loads((last.output_dir / "metrics.json").read_text())
    assert summary["kept"] == "epoch 2 (the last: train.keep)"
    assert "the last epoch's weights (epoch 2) were kept" in summary["note"]
    kept_best, kept_last = _weights(best), _weights(last)
    assert any(not torch.equal(kept_best[k], kept_last[k]) for k in kept_best)


def test_keep_must_be_best_or_last(tiny_folder, tmp_path):
    with pytest.raises(FieldError, match="train.keep"):
        _config(tiny_folder, tmp_path, "x", "train.keep=final")


def test_curves_start_at_the_linear_probe_with_whole_epoch_ticks():
    history = [{"epoch": 0, "val_loss": 1.0, "val_accuracy": 0.6, "val_macro_f1": 0.5},
               {"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.3, "val_loss": 1.5,
                "val_accuracy": 0.2, "val_macro_f1": 0.1},
               {"epoch": 2, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.2,
                "val_accuracy": 0.5, "val_macro_f1": 0.4}]
    fig = curves_figure(history, kept_epoch=0)
    _, ax_acc = fig.axes
    lines = {line.get_label(): list(line.get_xdata()) for line in ax_acc.get_lines()}
    assert lines["val accuracy"] == [0, 1, 2] and lines["train accuracy"] == [1, 2]
    assert lines["kept (epoch 0)"] == [0, 0]
    ticks = [t for t in ax_acc.get_xticks() if -0.5 <= t <= 2.5]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_missing_data_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        train(_config(tmp_path / "nothing", tmp_path / "runs", "x"))


def test_binary_linear_probe(tiny_folder, tmp_path):
    data = tmp_path / "photos"
    for name in ("blue", "red"):
        shutil.copytree(tiny_folder / name, data / name)
    run = train(_config(data, tmp_path / "runs", "binary", "train.epochs=1"))
    probe_score = run.fit.history[0]["val_accuracy"]
    assert probe_score >= 0.75, "the two-class probe head must separate the classes"
    assert run.metrics["accuracy"] >= probe_score  # the best weights are the ones kept
    assert run.metrics["top3_accuracy"] == 1.0


def test_sampler_plateau_macro_f1_and_time_budget(tiny_folder, tmp_path):
    run = train(_config(tiny_folder, tmp_path, "variants", "train.balance=sampler",
                        "train.schedule=plateau", "train.monitor=macro_f1",
                        "train.linear_probe=false", "train.epochs=5",
                        "train.max_minutes=0.000001"))
    assert run.fit.stopped_early, "the time budget must stop training after one epoch"
    assert [h["epoch"] for h in run.fit.history] == [1]
    assert "val_macro_f1" in run.fit.history[0]
    assert run.fit.best_score == pytest.approx(run.fit.history[0]["val_macro_f1"])


def test_one_photo_per_class_trains_without_validation(tmp_path):
    for name, colour in COLOURS.items():
        write_photo(tmp_path / "photos" / name / "only.jpg", colour)
    run = train(_config(tmp_path / "photos", tmp_path / "runs", "novals", "train.epochs=1"))
    summary = json.loads((run.output_dir / "metrics.json").read_text())
    assert summary["num_train_images"] == 3 and summary["num_val_images"] == 0
    assert summary["metrics"] == {} and run.metrics == {}
    assert (run.output_dir / "curves.png").is_file()
    assert not (run.output_dir / "confusion.png").exists()
    _, info = load_model(run.model_dir)
    assert info.classes == sorted(COLOURS)


def test_a_runs_figures_come_from_photos_read_as_predict_reads_them(tmp_path, monkeypatch):
    """Epochs score cached photos shrunk to just above the input size; the run's figures
    (metrics.json, the model card, tuned thresholds) come from the photos as `predict`
    and `evaluate` read them, so they are the figures `evaluate` gives."""
    import numpy as np

    import fashionlens.training.run as run
    from fashionlens.inference.photos import prepare_photo

    for c, (name, colour) in enumerate(sorted(COLOURS.items())):
        for i in range(6):
            write_photo(tmp_path / "data" / name / f"{i}.jpg", colour, size=(171, 133),
                        seed=50 * c + i)
    final = []
    real = run.evaluate_dataset

    def spy(runtime, dataset, *args, **kwargs):
        final.append((dataset, runtime.preprocess))
        return real(runtime, dataset, *args, **kwargs)

    monkeypatch.setattr(run, "evaluate_dataset", spy)
    result = train(_config(tmp_path / "data", tmp_path / "runs", "exact", "train.epochs=1"))
    dataset, pre = final[-1]  # the run's own figures (epochs are scored in the loop)
    assert len(dataset) == result.metrics["num_images"] > 0
    for row, sample in enumerate(dataset.samples):
        read, _ = dataset[row]
        assert np.array_equal(read.numpy(), prepare_photo(sample.path, pre))

"""The `fashionlens` command: train, evaluate and predict through typer, and clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fashionlens.cli.main import app
from fashionlens.cli.predict import photos_of
from fashionlens.errors import ConfigError, FashionLensError
from fashionlens.inference import DEFAULT_MODEL, SAMPLE_PHOTOS
from fashionlens.models import read_info
from fashionlens.models.resolve import BUNDLED_DIR

from .helpers import (
    COLOURS,
    make_csv_dataset,
    run_main,
    solid_photo,
    write_corrupt_jpeg,
    write_photo,
)

runner = CliRunner()

TINY_FLAGS = ["--model", "test_efficientnet", "--pretrained", "none", "--epochs", "1",
              "--batch-size", "8", "--seed", "0", "--set", "model.image_size=64",
              "--set", "train.num_workers=0", "--set", "train.precision=fp32",
              "--set", "train.device=cpu"]


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture
def inbox(tmp_path):
    folder = tmp_path / "inbox"
    for i, (name, colour) in enumerate(sorted(COLOURS.items())):
        write_photo(folder / f"{i}_{name}.jpg", colour, seed=300 + i)
    write_corrupt_jpeg(folder / "9_broken.jpg")
    return folder


def test_train_with_flags(tiny_folder, tmp_path):
    result = _ok(_invoke("train", "--data", tiny_folder, "--output", tmp_path, "--name", "cli",
                         *TINY_FLAGS))
    model = tmp_path / "cli" / "model"
    assert (model / "model.json").is_file() and (model / "model.safetensors").is_file()
    assert "accuracy" in result.stdout and "macro avg" in result.stdout
    assert str(model) in result.stdout.replace("\n", "")
    meta = json.loads((model / "model.json").read_text())
    assert meta["architecture"] == "test_efficientnet"
    assert meta["config"]["train"]["epochs"] == 1 and meta["config"]["seed"] == 0


def test_train_from_a_config_file_with_csv_flags(tmp_path):
    csv_path = make_csv_dataset(tmp_path / "shop", per_class=6, with_split=True)
    config = tmp_path / "conf" / "run.yaml"
    config.parent.mkdir()
    config.write_text("data:\n  path: ../shop/labels.csv\ntrain:\n  epochs: 3\n  lr: 3e-3\n"
                      "  linear_probe: false\n")
    _ok(_invoke("train", config, "--image-column", "id", "--image-dir", "images",
                "--image-ext", ".png", "--split-column", "split", "--output", tmp_path / "runs",
                "--name", "csv", *TINY_FLAGS))
    saved = (tmp_path / "runs" / "csv" / "config.yaml").read_text()
    assert str(csv_path) in saved
    summary = json.loads((tmp_path / "runs" / "csv" / "metrics.json").read_text())
    assert summary["num_train_images"] == 12 and summary["num_val_images"] == 6
    assert summary["history"][-1]["epoch"] == 1  # --epochs beats the file's 3


def test_train_reports_config_errors(tiny_folder, tmp_path):
    result = _invoke("train", "--data", tiny_folder, "--output", tmp_path,
                     *TINY_FLAGS, "--set", "train.epohcs=2")
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "epohcs" in str(result.exception)
    assert not any(tmp_path.iterdir())


def test_evaluate_table_and_json(model_dir, tiny_folder):
    table = _ok(_invoke("evaluate", model_dir, tiny_folder))
    assert "accuracy" in table.stdout and "macro avg" in table.stdout
    for name in COLOURS:
        assert name in table.stdout

    report = json.loads(_ok(_invoke("evaluate", model_dir, tiny_folder, "--json")).stdout)
    assert report["num_images"] == 16 * len(COLOURS)
    assert 0.0 <= report["accuracy"] <= 1.0 and report["accuracy"] > 0.6
    assert set(report["per_class"]) == set(COLOURS)
    assert report["unknown_labels"] == {} and report["skipped_images"] == {}


def test_evaluate_csv_with_split_flag(model_dir, tmp_path):
    csv_path = make_csv_dataset(tmp_path, per_class=3, with_split=True)
    result = _ok(_invoke("evaluate", model_dir, csv_path, "--image-column", "id",
                         "--image-dir", "images", "--image-ext", "png", "--split", "validation",
                         "--json"))
    assert json.loads(result.stdout)["num_images"] == 3


def test_predict_table(model_dir, inbox):
    result = _ok(_invoke("predict", inbox, "--model", model_dir, "--top-k", "2"))
    out = result.stdout
    for name in COLOURS:
        assert name in out
    assert "error" in out
    assert "1 of 4 photos could not be read" in result.stderr
    # The tiny model was never calibrated for "not a garment": the table says so.
    assert "not calibrated for 'not a garment'" in out


def test_predict_json_lines(model_dir, inbox):
    result = _ok(_invoke("predict", inbox, "--model", model_dir, "--json", "--top-k", "3",
                         "--batch-size", "2"))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    assert all("path" in row for row in lines)
    good = [row for row in lines if "error" not in row]
    assert [row["label"] for row in good] == sorted(COLOURS)
    assert all(len(row["top_k"]) == 3 for row in good)
    broken = [row for row in lines if "error" in row]
    assert len(broken) == 1 and broken[0]["path"].endswith("9_broken.jpg")

    tta = _ok(_invoke("predict", inbox / "0_blue.jpg", "--model", model_dir, "--json", "--tta"))
    (row,) = [json.loads(line) for line in tta.stdout.splitlines()]
    assert row["label"] == "blue"


def test_predict_several_targets(model_dir, inbox, tmp_path):
    """A shell glob or several folders: every photo once, in the order given, each named
    as its own target names it."""
    loose = write_photo(tmp_path / "loose" / "red.jpg", COLOURS["red"], seed=7)
    result = _ok(_invoke("predict", loose, inbox, inbox / "0_blue.jpg", "--model", model_dir,
                         "--json"))
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["red.jpg", "0_blue.jpg", "1_green.jpg",
                                                   "2_red.jpg", "9_broken.jpg"]
    listed = tmp_path / "list.txt"
    listed.write_text("inbox/1_green.jpg\nloose/red.jpg\n")
    _, names = photos_of([loose, inbox, listed])
    assert names[str(loose)] == str(loose)  # a photo: as typed
    assert names[str(inbox / "1_green.jpg")] == "1_green.jpg"  # relative to its folder
    assert len(names) == 5  # the list's two photos were already named: read once

    missing = _invoke("predict", inbox, tmp_path / "nope.jpg", "--model", model_dir)
    assert missing.exit_code != 0 and "nope.jpg" in str(missing.exception)


def test_predict_missing_path(model_dir, tmp_path):
    result = _invoke("predict", tmp_path / "nope.jpg", "--model", model_dir)
    assert result.exit_code != 0
    assert isinstance(result.exception, FashionLensError)
    assert "nope.jpg" in str(result.exception)


def test_predict_only_unreadable_photos_fails(model_dir, tmp_path):
    bad = write_corrupt_jpeg(tmp_path / "bad.jpg")
    result = _invoke("predict", bad, "--model", model_dir, "--json")
    assert result.exit_code != 0
    assert isinstance(result.exception, FashionLensError)
    assert json.loads(result.stdout.splitlines()[0])["path"] == str(bad)


def test_usage_errors(tmp_path):
    result = _invoke("predict", "--top-k", "0", tmp_path)
    assert result.exit_code == 2 and "top-k" in result.output.replace("\n", "")
    assert _invoke("frobnicate").exit_code == 2
    assert "train" in _ok(_invoke("--help")).stdout


def _run_main(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASHIONLENS_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "fashionlens.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_main_prints_errors_without_traceback(tmp_path):
    missing = tmp_path / "no-such-folder"
    proc = _run_main("evaluate", tmp_path / "no-model", missing)
    assert proc.returncode == 2
    assert "error:" in proc.stderr
    assert "no-model" in proc.stderr and "no such model folder" in proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def test_main_on_a_missing_photo(model_dir, tmp_path):
    proc = _run_main("predict", tmp_path / "gone.jpg", "--model", model_dir)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "gone.jpg" in proc.stderr
    assert "Traceback" not in proc.stderr


CLOTHING10 = {"Dress", "Hat", "Longsleeve", "Outwear", "Pants", "Shirt", "Shoes", "Shorts",
              "Skirt", "T-Shirt"}
needs_default_model = pytest.mark.skipif(not (DEFAULT_MODEL / "model.json").is_file(),
                                         reason="the bundled default model is not built yet")
CLOTHING10_MODEL = BUNDLED_DIR / "clothing10"
needs_clothing10 = pytest.mark.skipif(not (CLOTHING10_MODEL / "model.json").is_file(),
                                      reason="the bundled clothing10 model is not built yet")
needs_samples = pytest.mark.skipif(
    not SAMPLE_PHOTOS.is_dir() or not any(SAMPLE_PHOTOS.rglob("*.jpg")),
    reason="the bundled sample photos are not there yet")


@needs_default_model
def test_predict_with_the_bundled_default_model(tmp_path):
    """Without --model, predict answers with the bundled default: every head it scores."""
    photo = tmp_path / "jumper.jpg"
    solid_photo((40, 60, 160), (300, 400), seed=1).save(photo, quality=90)
    result = _ok(_invoke("predict", photo, "--json"))
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    info = read_info(DEFAULT_MODEL)
    heads = info.scored_heads
    assert list(row["tasks"]) == [h.name for h in heads]
    for head in heads:
        answer = row["tasks"][head.name]
        if head.kind == "classification":
            assert answer["label"] in head.classes
            assert answer["top_k"][0]["label"] == answer["label"]
            assert len(answer["top_k"]) == min(3, len(head.classes))
    if info.single_label:  # a one-head model's answer is also the row's own
        assert row["label"] == row["tasks"][heads[0].name]["label"]


@needs_default_model
def test_predict_keeps_the_tasks_asked_for(tmp_path):
    """--task keeps those tasks' answers, in the order asked, in JSON and in the table;
    a task the model lacks is an error naming those it has."""
    photo = tmp_path / "jumper.jpg"
    solid_photo((40, 60, 160), (300, 400), seed=1).save(photo, quality=90)
    heads = [h.name for h in read_info(DEFAULT_MODEL).scored_heads]
    asked = heads[::-1][:2]
    flags = [part for name in asked for part in ("--task", name)]
    (row,) = [json.loads(line) for line in
              _ok(_invoke("predict", photo, "--json", *flags)).stdout.splitlines()]
    assert list(row["tasks"]) == asked and "unknown_score" in row
    if len(heads) > 2:
        table = _ok(_invoke("predict", photo, *flags)).stdout
        assert all(name in table for name in asked)
        assert not any(f" {name} " in table for name in heads if name not in asked)
    wrong = _invoke("predict", photo, "--task", "sleeve")
    assert isinstance(wrong.exception, ConfigError)
    assert str(wrong.exception).startswith("--task sleeve: the model has no such task")


@needs_clothing10
def test_predict_with_clothing10(tmp_path):
    photo = tmp_path / "jumper.jpg"
    solid_photo((40, 60, 160), (300, 400), seed=1).save(photo, quality=90)
    result = _ok(_invoke("predict", photo, "--model", "clothing10", "--json"))
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert set(read_info(CLOTHING10_MODEL).classes) == CLOTHING10
    assert row["label"] in CLOTHING10
    assert row["top_k"][0]["label"] == row["label"] and len(row["top_k"]) == 3


@needs_clothing10
@needs_samples
def test_clothing10_recognises_the_bundled_samples():
    """The sample photos are folders of clothing10's classes (a one-head layout)."""
    result = _ok(_invoke("evaluate", "clothing10", SAMPLE_PHOTOS, "--json"))
    report = json.loads(result.stdout)
    assert report["num_images"] == len(list(SAMPLE_PHOTOS.rglob("*.jpg")))
    assert report["unknown_labels"] == {}
    assert report["accuracy"] > 0.5  # chance is 0.1


@needs_samples
def test_predict_without_a_target_uses_the_bundled_samples(model_dir):
    result = _ok(_invoke("predict", "--model", model_dir, "--json"))
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == len([p for p in SAMPLE_PHOTOS.rglob("*") if p.suffix == ".jpg"])
    assert all("error" not in row and row["label"] in COLOURS for row in rows)


_main = run_main


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"),
                                         ("--name", "a/b")])
def test_bad_train_flags_are_named_as_typed(tiny_folder, tmp_path, monkeypatch, capsys,
                                            flag, value):
    code, _, err = _main(monkeypatch, capsys, "train", "--data", tiny_folder, "--output",
                         tmp_path, *TINY_FLAGS, flag, value)
    assert code == 2
    assert f"error: {flag}:" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_a_bad_value_from_set_keeps_the_field_name(tiny_folder, tmp_path, monkeypatch, capsys):
    code, _, err = _main(monkeypatch, capsys, "train", "--data", tiny_folder, "--output",
                         tmp_path, *TINY_FLAGS, "--set", "train.lr=nan")
    assert code == 2 and "error: train.lr: must be a finite number" in err


def test_a_yaml_config_that_is_not_a_mapping(tmp_path, monkeypatch, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("- data: photos\n")
    code, _, err = _main(monkeypatch, capsys, "train", config)
    assert code == 2 and f"{config}: expected a mapping" in err.replace("\n", "")


def test_pretrained_that_is_no_checkpoint(tiny_folder, tmp_path, monkeypatch, capsys):
    notes = tmp_path / "weights.pth"
    notes.write_text("these are not weights\n")
    flags = [f for f in TINY_FLAGS if f not in ("--pretrained", "none")]
    code, _, err = _main(monkeypatch, capsys, "train", "--data", tiny_folder, "--output",
                         tmp_path / "runs", *flags, "--pretrained", notes)
    assert code == 2 and "Traceback" not in err
    assert "not a checkpoint that PyTorch or safetensors can read" in " ".join(err.split())


def test_a_csv_whose_photos_are_all_unreadable(tmp_path, monkeypatch, capsys):
    csv_path = make_csv_dataset(tmp_path / "shop", per_class=3)
    for image in (tmp_path / "shop" / "images").iterdir():
        write_corrupt_jpeg(image)
    code, _, err = _main(monkeypatch, capsys, "train", "--data", csv_path, "--image-column",
                         "id", "--image-dir", "images", "--image-ext", ".png", "--output",
                         tmp_path / "runs", *TINY_FLAGS)
    assert code == 2 and "Traceback" not in err
    assert f"no readable photos in {csv_path}" in err.replace("\n", "")


def test_train_twice_numbers_the_run_and_predicts_held_out_photos(tiny_folder, tmp_path):
    args = ["train", "--data", tiny_folder, "--output", tmp_path, "--name", "demo",
            *TINY_FLAGS, "--set", "train.linear_probe=false"]
    first = _ok(_invoke(*args))
    assert f"run folder: {tmp_path / 'demo'}" in first.stdout
    assert "in fp32" in first.stdout  # the precision the run used (TINY_FLAGS ask for fp32)
    second = _ok(_invoke(*args))
    assert f"run folder: {tmp_path / 'demo-2'}" in second.stdout
    reused = _ok(_invoke(*args, "--exist-ok"))
    assert f"run folder: {tmp_path / 'demo'}" in reused.stdout
    assert not (tmp_path / "demo-3").exists()

    held_out = tmp_path / "demo" / "validation.txt"
    assert f"predict --model {tmp_path / 'demo' / 'model'} {held_out}" in reused.stdout
    rows = [json.loads(line) for line in _ok(_invoke(
        "predict", held_out, "--model", tmp_path / "demo" / "model", "--json")).stdout.splitlines()]
    assert [row["path"] for row in rows] == held_out.read_text().splitlines()
    assert all("error" not in row for row in rows)


def test_one_short_line_per_epoch(tiny_folder, tmp_path):
    result = _ok(runner.invoke(app, ["train", "--data", str(tiny_folder), "--output",
                                     str(tmp_path), *TINY_FLAGS], env={"COLUMNS": "80"}))
    lines = [line.split(maxsplit=1)[1] for line in result.stderr.splitlines()
             if line.startswith("INFO") and ("epoch" in line)]
    assert lines[0].startswith("linear probe (epoch 0): val loss")
    assert lines[1].startswith("epoch 1/1: train loss ") and "| val loss" in lines[1]
    assert len(lines) == 2 and all("{" not in line for line in lines)


def test_fine_tuning_that_does_not_beat_the_probe_is_said_plainly(tiny_folder, tmp_path):
    # Solid colours: the linear probe is already perfect, so no epoch can beat it.
    result = _ok(_invoke("train", "--data", tiny_folder, "--output", tmp_path, "--name", "lp",
                         *TINY_FLAGS))
    summary = json.loads((tmp_path / "lp" / "metrics.json").read_text())
    assert summary["best_epoch"] == 0 and summary["fine_tuning_improved"] is False
    assert "kept the linear probe (epoch 0)" in result.stdout
    assert "did not beat the linear probe" in " ".join(result.stdout.split())


def test_predict_a_list_of_photos(model_dir, inbox, tmp_path):
    listing = tmp_path / "photos.txt"
    listing.write_text(f"# held out\n{inbox / '0_blue.jpg'}\n\ninbox/2_red.jpg\n")
    rows = [json.loads(line) for line in _ok(_invoke(
        "predict", listing, "--model", model_dir, "--json")).stdout.splitlines()]
    assert [row["label"] for row in rows] == ["blue", "red"]
    table = _ok(_invoke("predict", listing, "--model", model_dir)).stdout
    assert "│ 0_blue.jpg" in table and str(inbox) not in table  # named within their folder
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    result = _invoke("predict", empty, "--model", model_dir)
    assert isinstance(result.exception, FashionLensError) and "lists no photos" in str(
        result.exception)


COMMANDS = [["train"], ["evaluate"], ["predict"], ["search"], ["train-embedding"],
            ["evaluate-search"], ["serve"], ["catalog", "build"], ["catalog", "duplicates"],
            ["catalog", "reembed"], ["catalog", "import-vectors"], []]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "main")
def test_help_shows_no_type_after_flags(command):
    text = _ok(runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})).stdout
    assert "<bool>" not in text
    assert "--help" in text


def test_command_summaries_are_one_sentence_each():
    import click
    import typer.main

    group = typer.main.get_command(app)
    commands = list(group.commands.values())
    commands += list(group.commands["catalog"].commands.values())
    for command in commands:
        if isinstance(command, click.Group):
            continue
        summary = (command.help or "").split("\n\n")[0].strip()
        assert summary and "\n" not in summary, command.name
        assert summary.endswith((".", ")")), command.name


def test_evaluate_options_have_help_and_the_title_fits(model_dir, tiny_folder, monkeypatch):
    import typer.main

    from fashionlens.cli import common

    command = typer.main.get_command(app).commands["evaluate"]
    undocumented = [p.name for p in command.params if not getattr(p, "help", None)
                    and p.param_type_name == "option"]
    assert undocumented == []
    monkeypatch.setattr(common.out, "_width", None)  # measure the terminal from COLUMNS
    result = _ok(runner.invoke(app, ["evaluate", str(model_dir), str(tiny_folder)],
                               env={"COLUMNS": "80"}))
    title = result.stdout.splitlines()[0]
    assert title.startswith("base on ") and str(model_dir) not in title


def test_step_bar_prints_nothing_when_piped(monkeypatch):
    import io

    from rich.console import Console

    from fashionlens import progress

    piped = Console(file=io.StringIO())  # not a terminal, like `fashionlens train | tee log`
    monkeypatch.setattr(progress, "enabled", lambda: True)
    monkeypatch.setattr(progress, "console", piped)
    with progress.StepBar("epoch 1/1", 3) as bar:
        bar.advance("loss 1.000")
    assert piped.file.getvalue() == ""


def test_a_bad_value_in_the_config_file_is_not_blamed_on_the_flag(tmp_path, monkeypatch,
                                                                   capsys):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  lr: .nan\n")
    code, _, err = _main(monkeypatch, capsys, "train", config, "--lr", "0.01")
    assert code == 2
    assert f"train.lr: must be a finite number, got nan (in {config})" in err.replace("\n", "")

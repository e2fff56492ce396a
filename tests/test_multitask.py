"""Multi-task and multi-label training on tiny two-colour photos: one backbone, named heads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashionlens import load_config, train
from fashionlens.errors import DataError
from fashionlens.models import read_info

from .helpers import COLOURS, TINY_TRAIN

NAMES = sorted(COLOURS)


def _two_colour_photo(path: Path, top: str, bottom: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = np.zeros((40, 48, 3), np.int16)
    arr[:20] = COLOURS[top]
    arr[20:] = COLOURS[bottom]
    arr += rng.integers(-20, 21, size=arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB").save(path)


@pytest.fixture(scope="module")
def two_colour_csv(tmp_path_factory) -> Path:
    """Photos with a top and a bottom colour: `top` (a class), `tags` (both colours),
    `title` (text naming the top colour), a few rows missing `top`, and a split column."""
    root = tmp_path_factory.mktemp("multi")
    rows = []
    n = 0
    for top in NAMES:
        for bottom in NAMES:
            for k in range(5):
                n += 1
                _two_colour_photo(root / "images" / f"{n}.png", top, bottom, seed=n)
                rows.append({"id": n, "top": "" if k < 2 and top == "red" else top,
                             "tags": ";".join(sorted({top, bottom})),
                             "title": f"A {top.upper()} over {bottom} item",
                             "split": "validation" if k == 0 else "train"})
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "labels.csv"


def _config(data: Path, out: Path, tasks: list[dict], *extra: str):
    config = data.parent / f"config-{len(list(data.parent.glob('config-*')))}.yaml"
    import yaml

    config.write_text(yaml.safe_dump({
        "data": {"path": str(data), "image_column": "id", "image_dir": "images",
                 "image_extension": ".png", "split_column": "split"},
        "tasks": tasks}))
    return load_config(config, overrides=[*TINY_TRAIN, f"output.dir={out}", "output.name=m",
                                          "train.epochs=3", *extra])


TASKS = [
    {"name": "top", "kind": "classification"},
    {"name": "colours", "kind": "multilabel", "column": "tags"},
    {"name": "named", "column": "title",
     "keywords": {"red": ["red"], "blue": ["blue"]}, "default": "other"},
]


@pytest.fixture(scope="module")
def multi_run(two_colour_csv, tmp_path_factory):
    return train(_config(two_colour_csv, tmp_path_factory.mktemp("runs"), TASKS))


def test_one_model_declares_every_head_and_scores_each_task(multi_run):
    info = read_info(multi_run.model_dir)
    assert [(h.name, h.kind) for h in info.heads] == [
        ("top", "classification"), ("colours", "multilabel"), ("named", "classification")]
    assert info.head("colours").classes == NAMES
    assert len(info.head("colours").thresholds) == 3  # tuned on validation, stored
    assert info.head("named").classes == ["blue", "other", "red"]  # keywords + default
    summary = json.loads((multi_run.output_dir / "metrics.json").read_text())
    tasks = summary["metrics"]["tasks"]
    assert set(tasks) == {"top", "colours", "named"}
    assert tasks["top"]["accuracy"] >= 0.6  # the probe separates solid colours
    for key in ("micro_f1", "macro_f1", "map", "exact_match", "micro_f1_crossfit", "per_tag"):
        assert key in tasks["colours"], key
    assert tasks["colours"]["micro_f1"] > 0.6
    assert set(summary["metrics"]["summary"]) >= {"top", "colours", "named", "score"}
    # Rows with an empty `top` still trained the other heads; they are not scored for top.
    assert tasks["top"]["num_images"] == 6 and tasks["colours"]["num_images"] == 9
    assert summary["history"][0]["epoch"] == 0 and "val_score" in summary["history"][-1]
    for name in ("confusion-top.png", "confusion-named.png", "curves.png"):
        assert (multi_run.output_dir / name).is_file(), name


@pytest.mark.parametrize(("tasks", "message"), [
    ([{"name": "top", "column": "nope"}], "no column 'nope'"),
    ([{"name": "split"}], "one class only"),
    ([{"name": "top", "mapping": {"purple": "red"}}], "never has: purple"),
    ([{"name": "vector"}], "reserved"),
    ([{"name": "top"}, {"name": "top"}], "two tasks are named 'top'"),
])
def test_bad_task_settings_name_the_column_or_value(two_colour_csv, tmp_path, tasks, message):
    with pytest.raises(DataError, match=message):
        train(_config(two_colour_csv, tmp_path, tasks))


def test_a_tag_only_in_validation_is_named(two_colour_csv, tmp_path):
    lines = two_colour_csv.read_text().splitlines()
    lines = [lines[0]] + [line.replace("validation", "validation").replace(
        "blue;red,A", "blue;red;scarf,A") if line.endswith(",validation") else line
        for line in lines[1:]]
    odd = two_colour_csv.parent / "odd.csv"
    odd.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="only in the validation photos.*scarf"):
        train(_config(odd, tmp_path, [{"name": "colours", "kind": "multilabel",
                                       "column": "tags"}]))
    # With min_count the rare tag is dropped, named in the report, and training goes on.
    run = train(_config(odd, tmp_path, [{"name": "colours", "kind": "multilabel",
                                         "column": "tags", "min_count": 2}],
                        "train.epochs=1"))
    summary = json.loads((run.output_dir / "metrics.json").read_text())
    assert summary["tasks"]["colours"]["tags_not_learned"] == {"scarf": 0}


def test_empty_tag_rows_everywhere_are_refused(two_colour_csv, tmp_path):
    lines = two_colour_csv.read_text().splitlines()
    header = lines[0].split(",")
    at = header.index("tags")
    blank = [lines[0]] + [",".join("" if i == at else v for i, v in enumerate(line.split(",")))
                          for line in lines[1:]]
    path = two_colour_csv.parent / "blank.csv"
    path.write_text("\n".join(blank) + "\n")
    with pytest.raises(DataError, match=r"every row is empty in the task columns \(tags\)"):
        train(_config(path, tmp_path, [{"name": "colours", "kind": "multilabel",
                                        "column": "tags"}]))


def test_predict_json_gives_every_task(multi_run, two_colour_csv):
    from typer.testing import CliRunner

    from fashionlens.cli.main import app

    photo = two_colour_csv.parent / "images" / "1.png"  # blue over blue
    result = CliRunner().invoke(app, ["predict", str(photo), "--model",
                                      str(multi_run.model_dir), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout.splitlines()[0])
    # no top-level label: several tasks; never calibrated for "not a garment"
    assert set(answer) == {"path", "tasks", "unknown_score", "unknown"}
    assert answer["unknown_score"] is None and answer["unknown"] is None
    assert set(answer["tasks"]) == {"top", "colours", "named"}
    top = answer["tasks"]["top"]
    assert set(top) == {"label", "probability", "top_k"} and top["label"] in NAMES
    colours = answer["tasks"]["colours"]
    assert set(colours) == {"tags", "scores"} and set(colours["scores"]) == set(NAMES)
    shown = [t["probability"] for t in colours["tags"]]
    assert shown == sorted(shown, reverse=True)
    thresholds = dict(zip(NAMES, read_info(multi_run.model_dir).head("colours").thresholds,
                          strict=True))
    assert {t["label"] for t in colours["tags"]} == {
        tag for tag, p in colours["scores"].items() if p >= thresholds[tag]}
    # --threshold 0 keeps every tag; the table shows a row per task.
    everything = CliRunner().invoke(app, ["predict", str(photo), "--model",
                                          str(multi_run.model_dir), "--json",
                                          "--threshold", "0"])
    assert len(json.loads(everything.stdout)["tasks"]["colours"]["tags"]) == 3
    table = CliRunner().invoke(app, ["predict", str(photo), "--model", str(multi_run.model_dir)])
    assert table.exit_code == 0 and "colours" in table.output and "named" in table.output


def test_evaluate_scores_a_multi_task_model_per_task(multi_run, two_colour_csv):
    from fashionlens.evaluation.evaluate import evaluate

    result = evaluate(multi_run.model_dir, two_colour_csv, splits=["validation"],
                      split_column="split")
    tasks = result.metrics["tasks"]
    saved = json.loads((multi_run.output_dir / "metrics.json").read_text())["metrics"]["tasks"]
    assert tasks["top"]["accuracy"] == pytest.approx(saved["top"]["accuracy"])
    assert tasks["colours"]["micro_f1"] == pytest.approx(saved["colours"]["micro_f1"])
    # One task alone reads the column it learned from and scores it as a one-task model:
    # the same figure as beside the others (rows without a `top` are not scored).
    alone = evaluate(multi_run.model_dir, two_colour_csv, splits=["validation"],
                     split_column="split", task="top")
    assert alone.metrics["accuracy"] == pytest.approx(tasks["top"]["accuracy"])
    with pytest.raises(DataError, match="--task colours: not a classification task"):
        evaluate(multi_run.model_dir, two_colour_csv, task="colours")


def test_the_evaluate_command_prints_a_row_per_task(multi_run, two_colour_csv):
    from typer.testing import CliRunner

    from fashionlens.cli.main import app

    result = CliRunner().invoke(app, ["evaluate", "--model", str(multi_run.model_dir),
                                      "--data", str(two_colour_csv), "--split", "validation"])
    assert result.exit_code == 0, result.output
    for task in ("top", "colours", "named", "micro-f1", "mean monitored score"):
        assert task in result.output, task


def test_a_tag_model_logs_its_own_figures_per_epoch():
    from fashionlens.training.loop import epoch_line

    line = epoch_line({"epoch": 2, "train_loss": 0.9, "train_accuracy": 0.5, "val_loss": 1.25,
                       "val_micro_f1": 0.41, "val_map": 0.52, "seconds": 3}, 12)
    assert line == ("epoch 2/12: train loss 0.900 acc 0.500 | val loss 1.250 micro-f1 0.410 "
                    "map 0.520 | 3 s")


def test_refit_heads_tunes_tag_thresholds_on_photos_the_figures_are_not_read_on(
        multi_run, two_colour_csv, tmp_path, monkeypatch):
    """A multilabel head's thresholds and cap come from out-of-fold scores of its training
    photos, so the validation figures refit.json gives are read on photos they never saw."""
    from fashionlens.models import load_model, save_model
    from fashionlens.training import refit

    from .helpers import with_stage_taps

    model, info = load_model(multi_run.model_dir)
    info.embedding = with_stage_taps(model, len(info.classes)).to_dict()
    tapped = save_model(model, info, tmp_path / "tapped")
    tuned_on: list[int] = []
    real = refit.out_of_fold_scores

    def spy(task, *args, **kwargs):
        scores = real(task, *args, **kwargs)
        tuned_on.append(len(scores))
        return scores

    monkeypatch.setattr(refit, "out_of_fold_scores", spy)
    config = _config(two_colour_csv, tmp_path / "runs", TASKS)
    result = refit.refit_heads(tapped, config, ["top", "colours"], tmp_path / "out", epochs=5)
    # the colours head only, on its 36 training photos (not the 9 validation photos)
    assert tuned_on == [36]
    summary = json.loads((tmp_path / "out" / "refit.json").read_text())
    decisions = summary["heads"]["colours"]["decisions"]
    assert decisions["thresholds_from"] == (f"out-of-fold training scores ({refit.FOLDS} "
                                            "folds, 36 photos, each source alike)")
    assert 0.0 <= decisions["micro_f1"] <= 1.0 and "decisions" not in summary["heads"]["top"]
    assert {h.name for h in result.heads} == {"top", "colours"}
    if summary["heads"]["colours"]["kept"]:  # the saved thresholds are the ones it scored
        saved = load_model(tmp_path / "out" / "model")[1].head("colours")
        assert saved.taps and len(saved.thresholds) == len(NAMES)


def test_an_int8_export_of_a_joint_model_is_measured_on_every_head(
        multi_run, two_colour_csv, tmp_path, monkeypatch):
    """Calibrated on a run config's training photos, measured on its validation photos:
    each head on the photos that carry its label, and the gate is the worst head's."""
    import shutil

    pytest.importorskip("nncf")
    from typer.testing import CliRunner

    from fashionlens.cli.main import app
    from fashionlens.exporting import quantize

    monkeypatch.setattr(quantize, "MIN_HELD_OUT", 5)  # 9 validation photos
    model = shutil.copytree(multi_run.model_dir, tmp_path / "model",
                            ignore=shutil.ignore_patterns("export"))
    config = tmp_path / "run.yaml"
    _config(two_colour_csv, tmp_path / "runs", TASKS).save(config)
    result = CliRunner().invoke(app, ["export", str(model), "--format", "openvino-int8",
                                      "--calibrate", str(config), "--calibration-size", "20"])
    assert result.exit_code == 0, (result.output, result.exception)
    manifest = json.loads((model / "export" / "openvino-int8" / "export.json").read_text())
    heads = manifest["accuracy"]["heads"]
    assert heads["top"]["photos"] == 6 and heads["top"]["measure"] == "accuracy"
    assert heads["colours"]["photos"] == 9 and heads["colours"]["measure"] == "micro_f1"
    assert heads["named"]["photos"] == 9
    worst = min(heads, key=lambda name: heads[name]["change_points"])
    assert manifest["accuracy_ok"] == (
        -heads[worst]["change_points"] <= 100 * quantize.MAX_ACCURACY_LOSS)
    if not manifest["accuracy_ok"]:  # the reason names the head that lost most
        assert manifest["reason"].startswith(f"{worst} loses")
    assert manifest["calibration"]["photos"] == 20
    assert "colours" in result.output  # a row of the table


def test_refit_heads_adds_the_classes_a_head_lacked_when_asked(multi_run, two_colour_csv,
                                                                tmp_path):
    """A head trained without a class (`named` had no `azure`: any top over blue) learns it in
    a refit with --add-classes, its other classes kept where the config's order puts them;
    without the flag, or for a class the config lost, the refit refuses."""
    import torch

    from fashionlens.data.transforms import eval_transform
    from fashionlens.errors import ConfigError
    from fashionlens.inference.runtime import TorchRuntime
    from fashionlens.models import load_model, save_model
    from fashionlens.models.heads import stage_term
    from fashionlens.training import refit

    from .helpers import with_stage_taps

    model, info = load_model(multi_run.model_dir)
    info.embedding = with_stage_taps(model, len(info.classes)).to_dict()
    tapped = save_model(model, info, tmp_path / "tapped")
    more = [dict(t) for t in TASKS]
    more[2] = {**more[2], "keywords": {"azure": ["over blue"], "red": ["red"],
                                       "blue": ["blue"]}}
    config = _config(two_colour_csv, tmp_path / "runs", more)
    with pytest.raises(ConfigError, match="--add-classes lets"):
        refit.refit_heads(tapped, config, ["named"], tmp_path / "refused")
    fewer = [dict(t) for t in TASKS]
    fewer[2] = {**fewer[2], "keywords": {"red": ["red"]}}
    with pytest.raises(ConfigError, match="missing from the config: blue"):
        refit.refit_heads(tapped, _config(two_colour_csv, tmp_path / "runs", fewer),
                          ["named"], tmp_path / "fewer", add_classes=True)
    lines: list[str] = []
    result = refit.refit_heads(tapped, config, ["named"], tmp_path / "out", epochs=60,
                               add_classes=True, report=lines.append)
    assert "named: 1 new classes (azure)" in lines
    [head] = result.heads
    assert head.kept and head.after > head.before
    grown, grown_info = load_model(tmp_path / "out" / "model")
    assert grown_info.head("named").classes == ["azure", "blue", "other", "red"]
    assert stage_term(grown, "named").out_features == 4
    runtime = TorchRuntime(grown, grown_info.preprocess, info=grown_info, precision="fp32")
    view = eval_transform(grown_info.preprocess)
    images = sorted((two_colour_csv.parent / "images").glob("*.png"),
                    key=lambda p: int(p.stem))
    # photos 31-35 are red over blue, 36-45 red over green or red (5 photos per pair);
    # the keywords are read in name order (the config is written sorted)
    batch = torch.stack([view(Image.open(p).convert("RGB")) for p in images[30:45]])
    named = runtime.run(batch)["named"].argmax(1)
    assert (named[:5] == 0).mean() >= 0.6 and (named[5:] == 3).mean() >= 0.6
    # the first head keeps its classes: the search vector is built on them
    assert grown_info.heads[0].classes == info.heads[0].classes

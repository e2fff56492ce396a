"""`fashionlens runs` (trained runs side by side) and the model card (`model/README.md`).

The run folders are written by hand around tiny untrained `test_efficientnet` models: no
training, no photos.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fashionlens.cli.main import app
from fashionlens.data.transforms import Preprocess
from fashionlens.errors import ConfigError, DataError
from fashionlens.models import ModelInfo, create_model, read_info, save_model
from fashionlens.models.card import (
    CARD_FILE,
    SUMMARY_FILE,
    card_text,
    stored_summary,
    write_model_card,
)
from fashionlens.models.heads import HeadSpec, attach_heads

runner = CliRunner()

CLASSES = ["coat", "dress", "shirt"]
TAGS = ["floral", "striped", "denim", "leather"]
DATA = {"path": "/shop/labels.csv", "image_column": "image", "target_column": "label",
        "split_column": "split", "group_column": None, "image_dir": "images",
        "image_extension": ".jpg", "train_splits": ["train"], "val_splits": ["validation"],
        "exclude_labels": [], "val_fraction": 0.15}

SINGLE_METRICS = {"accuracy": 0.8123, "top3_accuracy": 0.9511, "macro_f1": 0.7011,
                  "macro_precision": 0.7222, "macro_recall": 0.7333, "num_images": 12,
                  "per_class": {c: {"precision": 0.5, "recall": 0.25, "f1": 0.3333,
                                    "support": 4} for c in CLASSES},
                  "confusion_matrix": [[4, 0, 0], [0, 4, 0], [0, 0, 4]], "classes": CLASSES}
MULTI_METRICS = {
    "tasks": {
        "category": {"accuracy": 0.9001, "top3_accuracy": 1.0, "macro_f1": 0.8802,
                     "num_images": 12, "per_class": {}},
        "tags": {"micro_f1": 0.7101, "micro_f1_crossfit": 0.6402, "micro_f1_at_0.5": 0.6003,
                 "macro_f1": 0.5504, "map": 0.6543, "exact_match": 0.4005, "num_images": 12,
                 "per_tag": {t: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "ap": 0.6,
                                 "threshold": 0.35, "support": 3} for t in TAGS}},
    },
    "summary": {"category": {"accuracy": 0.9001, "macro_f1": 0.8802},
                "tags": {"micro_f1": 0.7101, "map": 0.6543}, "score": 0.7772, "num_images": 12},
}


def _summary(metrics: dict, seconds: float, rss: float) -> dict:
    """A metrics.json as training/run.py writes it."""
    return {"metrics": metrics, "best_epoch": 1, "kept": "epoch 1", "note": "",
            "precision": "fp32", "stopped_early": False, "train_seconds": seconds,
            "total_seconds": seconds + 6, "peak_rss_mb": rss, "num_train_images": 40,
            "num_val_images": 12, "history": []}


def _make_run(root: Path, name: str, heads: list[HeadSpec], metrics_json: str | None,
              mtime: float, tasks: list[dict] | None = None,
              preprocess: Preprocess | None = None) -> tuple[Path, ModelInfo, int]:
    """A run folder: config.yaml, metrics.json (any text) and a saved tiny model."""
    run = root / name
    run.mkdir(parents=True)
    torch.manual_seed(0)
    model = create_model("test_efficientnet", num_classes=len(heads[0].classes),
                         pretrained="none")
    attach_heads(model, heads)
    config = {"data": DATA, "model": {"name": "test_efficientnet", "pretrained": "none"},
              "train": {"epochs": 2, "monitor": "accuracy", "tta": False},
              "tasks": tasks or [], "seed": 0}
    info = ModelInfo(architecture="test_efficientnet", classes=[],
                     preprocess=preprocess or Preprocess(size=64), config=config, name=name,
                     heads=heads)
    save_model(model, info, run / "model")
    (run / "config.yaml").write_text("seed: 0\n")
    if metrics_json is not None:
        (run / "metrics.json").write_text(metrics_json)
        os.utime(run / "metrics.json", (mtime, mtime))
    return run, info, sum(p.numel() for p in model.parameters())


@pytest.fixture
def runs_folder(tmp_path):
    """alpha: one task (oldest); beta: a classification and a multilabel task (newest);
    broken: a metrics.json that is not JSON; plus a folder that is no run."""
    root = tmp_path / "runs"
    day = 1_750_000_000.0
    alpha = _make_run(root, "alpha", [HeadSpec("label", "classification", CLASSES,
                                               column="label")],
                      json.dumps(_summary(SINGLE_METRICS, 120.0, 2048.0)), day)
    beta = _make_run(root, "beta",
                     [HeadSpec("category", "classification", CLASSES, column="cat"),
                      HeadSpec("tags", "multilabel", TAGS, [0.3, 0.35, 0.4, 0.45],
                               column="tags")],
                     json.dumps(_summary(MULTI_METRICS, 300.0, 900.0)), day + 3 * 86400,
                     tasks=[{"name": "category", "kind": "classification", "column": "cat"},
                            {"name": "tags", "kind": "multilabel", "column": "tags"}],
                     preprocess=Preprocess(size=64, fit="letterbox", height=80, width=64))
    broken = _make_run(root, "broken", [HeadSpec("label", "classification", CLASSES)],
                       '{"metrics": {"accuracy": 0.5', day + 86400)
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a run")
    return root, {"alpha": alpha, "beta": beta, "broken": broken}


def _ok(*args: str):
    result = runner.invoke(app, ["runs", *[str(a) for a in args]])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _json(*args: str) -> list[dict]:
    return json.loads(_ok(*args, "--json").stdout)


def test_json_lists_every_run_with_its_facts(runs_folder):
    root, made = runs_folder
    records = {r["name"]: r for r in _json(root)}
    assert set(records) == {"alpha", "beta", "broken"}  # 'notes' holds no model

    alpha = records["alpha"]
    assert [t["name"] for t in alpha["tasks"]] == ["label"]
    assert alpha["backbone"] == "test_efficientnet"
    assert alpha["parameters"] == made["alpha"][2]  # from the header: BN statistics excluded
    assert alpha["input_size"] == [64, 64] and alpha["fit"] == "crop"
    assert alpha["accuracy"] == pytest.approx(0.8123)
    assert alpha["macro_f1"] == pytest.approx(0.7011)
    assert alpha["score"] == pytest.approx(0.8123)  # the monitored figure (accuracy)
    assert alpha["train_minutes"] == pytest.approx(2.0)
    assert alpha["peak_memory_mb"] == pytest.approx(2048.0)
    assert alpha["precision"] == "fp32"
    assert alpha["date"].startswith("2025-06-15") and alpha["problems"] == []

    beta = records["beta"]
    assert [(t["name"], t["kind"], t["classes"]) for t in beta["tasks"]] == [
        ("category", "classification", 3), ("tags", "multilabel", 4)]
    assert beta["score"] == pytest.approx(0.7772)
    assert beta["tasks"][0]["metrics"] == {"accuracy": pytest.approx(0.9001)}
    assert beta["tasks"][1]["metrics"] == {"map": pytest.approx(0.6543)}
    assert beta["input_size"] == [80, 64] and beta["fit"] == "letterbox"
    assert beta["parameters"] == made["beta"][2] > made["alpha"][2]  # the extra head

    broken = records["broken"]
    assert broken["score"] is None and broken["parameters"] == made["broken"][2]
    assert any(p.startswith("metrics.json: unreadable") for p in broken["problems"])


def test_sort_keys(runs_folder):
    root, _ = runs_folder
    assert [r["name"] for r in _json(root)] == ["alpha", "beta", "broken"]
    assert [r["name"] for r in _json(root, "--sort", "score")] == ["alpha", "beta", "broken"]
    assert [r["name"] for r in _json(root, "--sort", "date")] == ["beta", "broken", "alpha"]
    assert [r["name"] for r in _json(root, "--sort", "time")] == ["alpha", "beta", "broken"]
    assert [r["name"] for r in _json(root, "--sort", "memory")] == ["beta", "alpha", "broken"]
    # Multi-task runs have no single accuracy: after the runs that have one, by name.
    assert [r["name"] for r in _json(root, "--sort", "accuracy")] == ["alpha", "beta", "broken"]
    params = [r["name"] for r in _json(root, "--sort", "params")]
    assert params[-1] == "beta"
    result = runner.invoke(app, ["runs", str(root), "--sort", "speed"])
    assert isinstance(result.exception, ConfigError)
    assert "speed" in str(result.exception) and "score" in str(result.exception)


def test_table_fits_80_columns_and_notes_the_broken_run(runs_folder):
    root, _ = runs_folder
    result = _ok(root)
    text = result.stdout
    assert "3 runs in" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for expected in ("alpha", "beta", "broken", "label", "category", "tags",
                     "acc 0.812", "F1 0.701", "score 0.777", "category acc", "0.900",
                     "tags mAP 0.654", "2.0 min", "2.0 GB", "900 MB", "80x64 letterbox",
                     "64x64", "2025-06-15"):
        assert expected in text, expected
    assert "note: broken/metrics.json: unreadable" in text
    assert "Traceback" not in text


def test_one_run_folder_an_empty_folder_and_a_missing_one(runs_folder, tmp_path):
    root, _ = runs_folder
    assert [r["name"] for r in _json(root / "alpha")] == ["alpha"]
    (tmp_path / "empty").mkdir()
    assert _json(tmp_path / "empty") == []
    assert "no trained runs" in _ok(tmp_path / "empty").stdout
    result = runner.invoke(app, ["runs", str(tmp_path / "nowhere")])
    assert isinstance(result.exception, DataError) and "nowhere" in str(result.exception)


def test_runs_without_metrics_or_weights_are_listed_with_a_note(runs_folder):
    root, _ = runs_folder
    (root / "alpha" / "metrics.json").unlink()
    (root / "beta" / "model" / "model.safetensors").write_bytes(b"nonsense")
    records = {r["name"]: r for r in _json(root)}
    assert any("metrics.json: missing" in p for p in records["alpha"]["problems"])
    assert records["alpha"]["date"]  # the model's own time stamp then
    assert records["beta"]["parameters"] is None
    assert any("safetensors" in p for p in records["beta"]["problems"])
    assert "Traceback" not in _ok(root).stdout


def _bundle_tool():
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "tools" / "bundle_model.py"
    spec = importlib.util.spec_from_file_location("bundle_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_card_summary_travels_with_the_model(runs_folder, tmp_path):
    """A model made from a trained one without a run of its own (a new search vector, a
    bundle of a bundle) keeps its card's training figures: the summary the card read is
    stored beside it, and bundle_model.py falls back on it."""
    root, made = runs_folder
    run, _, _ = made["alpha"]
    summary = json.loads((run / "metrics.json").read_text())
    info = read_info(run / "model")
    write_model_card(run / "model", info, {**summary, "history": [{"epoch": 1}]})
    kept = stored_summary(run / "model")
    assert kept is not None and "history" not in kept
    assert kept["num_train_images"] == summary["num_train_images"]
    assert card_text(info, kept) == card_text(info, summary)
    assert "40 training photos" in card_text(info, kept)

    tool = _bundle_tool()
    # a run folder without metrics.json: the model's own summary
    derived = tmp_path / "derived"
    (derived / "model").mkdir(parents=True)
    (derived / "model" / SUMMARY_FILE).write_text(json.dumps(kept))
    assert tool.run_summary(derived, None) == kept
    # an explicit summary wins over both
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"num_train_images": 7}))
    assert tool.run_summary(derived, other) == {"num_train_images": 7}
    # the model folder's summary comes before the run's metrics.json (which, for a
    # train-embedding run, is about the embedding)
    (derived / "metrics.json").write_text(json.dumps({"validation": {"pairs_top10": 0.9}}))
    assert tool.run_summary(derived, None) == kept
    # an older run whose model kept none: its metrics.json
    (run / "model" / SUMMARY_FILE).unlink()
    assert tool.run_summary(run, None) == summary
    (derived / "metrics.json").unlink()
    # neither: nothing recorded, and the card says so instead of guessing
    (derived / "model" / SUMMARY_FILE).unlink()
    assert tool.run_summary(derived, None) is None
    assert stored_summary(derived / "model") is None


def test_bundling_keeps_a_text_alignment_only_for_the_same_vectors(runs_folder, tmp_path,
                                                                   monkeypatch):
    import numpy as np

    from fashionlens.models.info import vector_names
    from fashionlens.search.alignment import ALIGNMENT_FILE, TextAlignment, read_alignment

    _, made = runs_folder
    tool = _bundle_tool()
    monkeypatch.setattr(tool, "BUNDLED_DIR", tmp_path / "bundled")

    def bundle(run: Path) -> Path:
        monkeypatch.setattr("sys.argv", ["bundle_model.py", str(run), "--name", "shop"])
        tool.main()
        return tmp_path / "bundled" / "shop"

    target = bundle(made["alpha"][0])
    assert not (target / ALIGNMENT_FILE).exists()
    TextAlignment(np.ones((384, 4), np.float32),
                  {"model_fingerprint": vector_names(target)[1]}).save(target)
    bundle(made["alpha"][0])  # the same vectors again (e.g. scoring heads refit)
    assert read_alignment(target).fingerprint == vector_names(target)[0]
    bundle(made["beta"][0])  # other weights: the alignment would mislead
    assert not (target / ALIGNMENT_FILE).exists()
    assert read_info(target).earlier_fingerprints is None

    # beta with its tags head refit: the same vectors, so the bundle it replaces is named
    # as an earlier version, and what was recorded with that one stays valid
    from fashionlens.models import load_model
    from fashionlens.models.info import same_vectors

    network, beta_info = load_model(made["beta"][0] / "model")
    with torch.no_grad():
        network.task_heads["tags"].weight.add_(1.0)
    save_model(network, beta_info, tmp_path / "beta-refit" / "model")
    before = vector_names(target)
    bundle(tmp_path / "beta-refit")
    after = vector_names(target)
    assert after[0] == before[0] and after[1] != before[1]
    assert read_info(target).earlier_fingerprints == {"vectors": before[0],
                                                      "fingerprints": [before[1]]}
    assert same_vectors(before[1], after[0], after)
    bundle(made["alpha"][0])  # other vectors again: nothing earlier carries over
    assert read_info(target).earlier_fingerprints is None


def test_unreadable_stored_summary_names_the_file(tmp_path):
    from fashionlens.errors import ModelError

    (tmp_path / SUMMARY_FILE).write_text("[1, 2")
    with pytest.raises(ModelError, match=SUMMARY_FILE):
        stored_summary(tmp_path)
    (tmp_path / SUMMARY_FILE).write_text("[1, 2]")
    with pytest.raises(ModelError, match="JSON object"):
        stored_summary(tmp_path)


def test_card_of_a_single_task_model(runs_folder):
    root, made = runs_folder
    run, _, _ = made["alpha"]
    summary = json.loads((run / "metrics.json").read_text())
    info = read_info(run / "model")
    path = write_model_card(run / "model", info, summary)
    assert path == run / "model" / CARD_FILE
    text = path.read_text()
    assert text == card_text(info, summary)
    assert text.startswith("# alpha\n")
    assert not [p for p in (run / "model").iterdir() if p.name.startswith(".")]  # no temp file
    for expected in ("`test_efficientnet`", "64×64", "`label` (classification)",
                     "coat, dress, shirt", "/shop/labels.csv", "`split`", "40 training photos",
                     "12 validation photos", "| accuracy | 0.8123 |", "| macro-F1 | 0.7011 |",
                     "| coat | 0.5000 | 0.2500 | 0.3333 | 4 |", "2.0 min", "fp32", "2048 MB",
                     "Intended use", "confident and wrong", "Not for decisions about people"):
        assert expected in text, expected
    assert "crossfit" not in text  # no multilabel head


def test_card_of_a_multi_task_model(runs_folder):
    root, made = runs_folder
    run, info, _ = made["beta"]
    summary = json.loads((run / "metrics.json").read_text())
    text = card_text(info, summary)
    for expected in ("`category` (classification)", "`tags` (multilabel)",
                     "floral, striped, denim, leather", "from 0.300 to 0.450",
                     "80×64", "letterbox", "`cat` → `category`", "Overall score: 0.7772",
                     "| accuracy | 0.9001 |", "| mean average precision (mAP) | 0.6543 |",
                     "0.6402", "`micro_f1_crossfit`", "other half of the validation photos",
                     "| floral | 0.5000 | 0.6000 | 0.3500 | 3 |", "5.0 min", "900 MB"):
        assert expected in text, expected
    assert "come from another run" not in text
    summary["picked"] = {"heads_from_second": ["tags"], "first": str(run),
                         "second": "/runs/stage2"}
    assert ("Heads `tags` come from another run on the same backbone and validation photos "
            "(stage2; tools/pick_heads.py)") in card_text(info, summary)


def test_card_abbreviates_long_lists_and_invents_nothing():
    classes = [f"class{i:02d}" for i in range(60)]
    info = ModelInfo(architecture="test_efficientnet", classes=classes,
                     preprocess=Preprocess(size=64), name="bare")
    text = card_text(info)
    assert "class00" in text and "class59" not in text and "(36 more)" in text
    assert "No validation metrics were recorded" in text
    assert "min" not in text.split("## Training\n")[1].split("##")[0]  # no time recorded


@pytest.mark.parametrize("pretrained, shown", [
    ("BUNDLED/products/model.safetensors", "bundled `products/model.safetensors`"),
    ("/elsewhere/mine.safetensors", "`/elsewhere/mine.safetensors`"),
])
def test_card_names_bundled_starting_weights_by_name_not_path(pretrained, shown):
    from fashionlens.models.resolve import BUNDLED_DIR

    pretrained = pretrained.replace("BUNDLED", str(BUNDLED_DIR))
    info = ModelInfo(architecture="test_efficientnet", classes=["a", "b"],
                     preprocess=Preprocess(size=64), name="started",
                     config={"model": {"pretrained": pretrained}})
    assert f"(starting weights: {shown})" in card_text(info)


def test_card_names_starting_weights_in_the_working_folder_relative_to_it(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    info = ModelInfo(architecture="test_efficientnet", classes=["a", "b"],
                     preprocess=Preprocess(size=64), name="started",
                     config={"model": {"pretrained": str(tmp_path / "runs/s1/model.safetensors")}})
    assert "(starting weights: `runs/s1/model.safetensors`)" in card_text(info)


def test_bundle_tool_reads_canvases_and_the_card_names_them(runs_folder):
    tool = _bundle_tool()
    assert tool.parse_canvases("288x192,168X224") == ((288, 192), (168, 224))
    assert tool.parse_canvases("none") == ()
    with pytest.raises(SystemExit, match="HEIGHTxWIDTH"):
        tool.parse_canvases("288by192")
    root, made = runs_folder
    run, _, _ = made["alpha"]
    info = read_info(run / "model")
    assert "canvas" not in card_text(info, None)
    info.preprocess = Preprocess(fit="letterbox", height=64, width=48, canvases=((96, 64),))
    assert "nearer that of 96×64 goes into that canvas" in card_text(info, None)

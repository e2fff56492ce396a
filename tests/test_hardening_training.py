"""Issue 18, training area: run configs, model.json, run folders and the inputs `train` and
`evaluate` read: every bad value is refused with a message naming the field (exit 2, no
traceback), before torch loads where it can be."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fashionlens.errors import ModelError
from fashionlens.models.info import read_info

from .helpers import TINY_TRAIN, folded, make_csv_dataset, run_main

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "fashionlens" / "assets" / "models"


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `fashionlens ARGS` as a user does (main(): the error handling included):
    (exit code, stdout and stderr with line breaks folded to spaces). An exception other
    than SystemExit (a traceback for a user) fails the test."""

    def run(*args):
        code, out, err = run_main(monkeypatch, capsys, *args)
        return code, folded(out, err)

    return run


def _tiny(*overrides: str) -> list[str]:
    return [item for o in [*TINY_TRAIN, *overrides] for item in ("-o", o)]


def _model_copy(tmp_path: Path, change) -> Path:
    """A copy of the bundled clothing10 description with one change (its weights linked)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(BUNDLED / "clothing10" / "model.safetensors")
    meta = json.loads((BUNDLED / "clothing10" / "model.json").read_text())
    meta = change(meta)
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def _set(path: str, value):
    def change(meta):
        node = meta
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
        return meta
    return change


# (id, arguments after `fashionlens` given the tiny folder, the tmp folder and a CSV with
# a duplicated header; words the message must hold)
CASES = [
    ("hflip", lambda d, t: ["train", "--data", d, *_tiny("augment.hflip=5")],
     ["augment.hflip", "between 0 and 1"]),
    ("scale", lambda d, t: ["train", "--data", d, *_tiny("augment.scale=[1, 0.1]")],
     ["augment.scale", "low <= high"]),
    ("drop_rate", lambda d, t: ["train", "--data", d, *_tiny("model.drop_rate=1.5")],
     ["model.drop_rate"]),
    ("image_size", lambda d, t: ["train", "--data", d, *_tiny("model.image_size=-1")],
     ["model.image_size", "16 and 2048"]),
    ("seed_flag", lambda d, t: ["train", "--data", d, "--seed", "-1", *_tiny()],
     ["--seed", "0 to 4294967295"]),
    ("seed_huge", lambda d, t: ["train", "--data", d, *_tiny("seed=100000000000000000000000")],
     ["seed", "0 to 4294967295"]),
    ("seed_1e23", lambda d, t: ["train", "--data", d, *_tiny("seed=1e23")], ["seed"]),
    ("device", lambda d, t: ["train", "--data", d, *_tiny(), "-o", "train.device=cuda:7",
                             "--output", t / "runs"],
     ["train.device", "cuda:7", "not available"]),
    ("device_word", lambda d, t: ["train", "--data", d, *_tiny("train.device=gpu9")],
     ["train.device", "'gpu9' is not a device"]),
    ("freeze_stages", lambda d, t: ["train", "--data", d, *_tiny("train.freeze_stages=99")],
     ["train.freeze_stages"]),
    ("label_smoothing", lambda d, t: ["train", "--data", d,
                                      *_tiny("train.label_smoothing=2")],
     ["train.label_smoothing"]),
    ("num_workers", lambda d, t: ["train", "--data", d, *_tiny("train.num_workers=-5")],
     ["train.num_workers"]),
    ("threads", lambda d, t: ["train", "--data", d, *_tiny("train.threads=-1")],
     ["train.threads"]),
    ("layer_decay", lambda d, t: ["train", "--data", d, *_tiny("train.layer_decay=-1")],
     ["train.layer_decay"]),
    ("warmup", lambda d, t: ["train", "--data", d, *_tiny("train.warmup_epochs=-5")],
     ["train.warmup_epochs"]),
    ("patience", lambda d, t: ["train", "--data", d,
                               *_tiny("train.early_stopping_patience=-1")],
     ["train.early_stopping_patience"]),
    ("max_minutes", lambda d, t: ["train", "--data", d, *_tiny("train.max_minutes=-1")],
     ["train.max_minutes"]),
    ("yaml_tag", lambda d, t: ["train", "--data", d, *_tiny(),
                               "-o", "train.lr=!!python/object/apply:os.system ['echo hi']"],
     ["train.lr=", "not plain YAML"]),
    ("image_ext", lambda d, t: ["train", "--data", t / "dup.csv", "--image-ext",
                                "../../etc/passwd", *_tiny()],
     ["--image-ext", "not a file extension"]),
    ("image_ext_evaluate", lambda d, t: ["evaluate", "--data", d, "--image-ext",
                                         "../../etc/passwd"],
     ["--image-ext", "not a file extension"]),
    ("duplicated_header", lambda d, t: ["train", "--data", t / "dup.csv", "--image-column",
                                        "id", *_tiny()],
     ["dup.csv", "'label' more than once"]),
    ("output_dir", lambda d, t: ["train", "--data", d, *_tiny(), "--output", "/proc/x/runs"],
     ["/proc/x/runs", "output.dir"]),
    ("model_json_list", lambda d, t: ["evaluate", "--model", _model_copy(t, lambda m: [m]),
                                      "--data", d],
     ["model.json", "must hold a JSON object"]),
    ("preprocess_size_negative", lambda d, t: [
        "evaluate", "--model", _model_copy(t, _set("preprocess.size", -1)), "--data", d],
     ["model.json", "preprocess.size", "-1"]),
    ("preprocess_size_huge", lambda d, t: [
        "predict", "--model", _model_copy(t, _set("preprocess.size", 100000)), d],
     ["model.json", "preprocess.size", "100000"]),
    ("evaluate_missing_csv", lambda d, t: ["evaluate", "--data", t / "nothing.csv"],
     ["nothing.csv", "no such file"]),
    ("train_missing_photos", lambda d, t: ["train", "--data", t / "gone.csv",
                                           "--image-column", "id", "--image-ext", ".png",
                                           *_tiny()],
     ["gone.csv", "no usable labelled rows", "missing"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_training_input_is_refused_without_traceback(case, cli, tiny_folder, tmp_path,
                                                         monkeypatch):
    _, build, words = case
    monkeypatch.chdir(tmp_path)
    csv_path = make_csv_dataset(tmp_path / "csv")
    lines = csv_path.read_text().splitlines()
    (tmp_path / "dup.csv").write_text("\n".join([lines[0] + ",label"]
                                                + [f"{row},x" for row in lines[1:]]) + "\n")
    (tmp_path / "gone.csv").write_text("id,label\nnot-here,red\nnor-here,blue\n")
    code, text = cli(*build(tiny_folder, tmp_path))
    assert code == 2, text
    assert "Traceback" not in text
    for word in words:
        assert word in text, f"{word!r} not in: {text}"
    # A refused run leaves no run folder behind.
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("change, field", [
    (_set("preprocess.size", 100000), "preprocess.size"),
    (_set("preprocess.size", -1), "preprocess.size"),
    (_set("preprocess.size", "224"), "preprocess.size"),
    (_set("preprocess.std", [0.5, 0.0, 0.5]), "preprocess.std[1]"),
    (_set("preprocess.mean", [0.5, float("nan"), 0.5]), "preprocess.mean[1]"),
    (_set("preprocess.mean", {"r": 0.5}), "preprocess.mean"),
    (_set("preprocess.height", 10**9), "preprocess.height"),
    (_set("preprocess.crop_pct", 0), "preprocess.crop_pct"),
    (_set("preprocess.interpolation", "lanczos9"), "preprocess.interpolation"),
    (_set("preprocess", [224]), "preprocess"),
    (_set("classes", {"a": 1}), "classes"),
    (_set("classes", [1, 2]), "classes[0]"),
    (_set("architecture", 5), "architecture"),
    (_set("heads", [{"name": "x", "kind": "multilabel", "classes": ["a"],
                     "thresholds": [7]}]), "heads[0].thresholds[0]"),
    (_set("heads", {"name": "x"}), "heads"),
    (_set("embedding.dim", 10**9), "embedding.dim"),
    (_set("embedding.taps", "3"), "embedding.taps"),
    (_set("unknown.threshold", "high"), "unknown.threshold"),
    (_set("config", []), "config"),
    (_set("format_version", 99), "format_version"),
])
def test_a_corrupt_model_json_is_refused_naming_the_field(tmp_path, change, field):
    folder = _model_copy(tmp_path, change)
    with pytest.raises(ModelError) as caught:
        read_info(folder)
    message = str(caught.value)
    assert str(folder / "model.json") in message and f"'{field}'" in message, message


def test_the_bundled_model_descriptions_pass_the_checks():
    for folder in sorted(BUNDLED.iterdir()):
        if (folder / "model.json").is_file():
            read_info(folder)


def test_exist_ok_clears_only_what_a_run_writes(cli, tiny_folder, tmp_path):
    """`train --exist-ok` replaced the old run's outputs and deleted the user's own file
    in model/ with them (model/my_weights.bin)."""
    run = tmp_path / "runs" / "demo"
    (run / "model").mkdir(parents=True)
    (run / "model" / "my_weights.bin").write_bytes(b"mine")
    (run / "model" / "model.json").write_text("{}")
    (run / "notes.txt").write_text("mine too")
    code, text = cli("train", "--data", tiny_folder, "--output", tmp_path / "runs",
                     "--name", "demo", "--exist-ok", *_tiny("train.epochs=1",
                                                           "train.linear_probe=false"))
    assert code == 0, text
    assert (run / "model" / "my_weights.bin").read_bytes() == b"mine"
    assert (run / "notes.txt").read_text() == "mine too"
    assert read_info(run / "model").name == "demo"  # the run's own files were replaced


def test_a_failed_run_removes_the_folder_it_created(cli, tiny_folder, tmp_path):
    """A run that fails after claiming its folder (here: more frozen stages than the
    backbone has, found when the model is built) left the folder, and the next run became
    NAME-2."""
    args = ["train", "--data", tiny_folder, "--output", tmp_path / "runs", "--name", "demo"]
    code, text = cli(*args, *_tiny("train.freeze_stages=9"))
    assert code == 2 and "train.freeze_stages" in text and "Traceback" not in text, text
    assert not (tmp_path / "runs" / "demo").exists()
    # An existing folder (--exist-ok) keeps what was there before the failed run.
    (tmp_path / "runs" / "demo").mkdir()
    (tmp_path / "runs" / "demo" / "notes.txt").write_text("mine")
    code, text = cli(*args, "--exist-ok", *_tiny("train.freeze_stages=9"))
    assert code == 2, text
    assert sorted(p.name for p in (tmp_path / "runs" / "demo").iterdir()) == ["notes.txt"]


# Runs a command in a fresh interpreter and reports whether torch was imported by the time
# it exited (the refusals above must come before torch loads).
HEAVY_SCRIPT = """
import json, sys
from fashionlens.cli.main import main
try:
    main()
except SystemExit as exc:
    code = exc.code
print()
print("HEAVY=" + json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("what", ["evaluate_missing_csv", "train_missing_photos",
                                  "train_bad_value"])
def test_inputs_are_checked_before_torch_loads(tmp_path, what):
    """`evaluate` with a missing CSV answered after 13.6 s and `train` with missing photos
    after 11.5 s: both loaded torch first."""
    (tmp_path / "gone.csv").write_text("id,label\nnot-here,red\nnor-here,blue\n")
    args = {"evaluate_missing_csv": ["evaluate", "--data", "nothing.csv"],
            "train_missing_photos": ["train", "--data", "gone.csv", "--image-column", "id"],
            "train_bad_value": ["train", "--data", "gone.csv", "-o", "augment.hflip=5"]}[what]
    done = subprocess.run([sys.executable, "-c", HEAVY_SCRIPT, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout.rsplit("HEAVY=", 1)[1])
    assert report["code"] == 2, done.stdout + done.stderr
    assert report["torch"] is False, done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_config_and_tasks_import_one_way():
    """`config` imported `tasks.base` (for TaskConfig) and `tasks.base` imported `config`
    (for TrainConfig): now the task config lives in the torch-free config module, which
    imports no task."""
    source = (Path(__file__).resolve().parents[1] / "src" / "fashionlens" / "config.py")
    assert "tasks" not in "".join(line for line in source.read_text().splitlines()
                                  if line.startswith(("from ", "import ")))
    from fashionlens.config import TaskConfig
    from fashionlens.tasks import TaskConfig as FromTasks

    assert FromTasks is TaskConfig

"""`train --resume`: an interrupted run continues from its last epoch and ends where an
uninterrupted run with the same seed ends."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fashionlens import load_config, train
from fashionlens.cli.main import app
from fashionlens.errors import ConfigError, DataError
from fashionlens.training import loop
from fashionlens.training.run import CHECKPOINT, resume_config

from .helpers import TINY_TRAIN

EXTRA = ["train.epochs=3", "train.warmup_epochs=1", "model.drop_rate=0.3",
         "augment.hflip=0.5", "augment.brightness=0.4"]


def _config(data, out, name, *extra):
    return load_config(overrides=[*TINY_TRAIN, f"data.path={data}", f"output.dir={out}",
                                  f"output.name={name}", *(extra or EXTRA)])


def test_a_resumed_run_ends_like_an_uninterrupted_one(tiny_folder, tmp_path, monkeypatch):
    whole = train(_config(tiny_folder, tmp_path, "whole"))
    assert not (whole.output_dir / CHECKPOINT).exists()  # removed once the run ends

    real_save = loop.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt  # Ctrl-C right after the first epoch's checkpoint

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tiny_folder, tmp_path, "cut"))
    cut = tmp_path / "cut"
    assert (cut / CHECKPOINT).is_file() and not (cut / "model").exists()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)

    result = CliRunner().invoke(app, ["train", "--resume", str(cut)])
    assert result.exit_code == 0, result.output
    a = load_file(str(whole.model_dir / "model.safetensors"))
    b = load_file(str(cut / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((cut / "metrics.json").read_text())["history"]
    expected = json.loads((whole.output_dir / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]
    assert [row["train_loss"] for row in history[1:]] == pytest.approx(
        [row["train_loss"] for row in expected[1:]], abs=1e-6)


def test_resume_refuses_what_it_cannot_continue(tmp_path, trained_run):
    with pytest.raises(DataError, match="the run finished"):
        resume_config(trained_run.output_dir)
    with pytest.raises(DataError, match="not a run folder"):
        resume_config(tmp_path)
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path), "--epochs", "2"])
    assert isinstance(result.exception, ConfigError) and "--epochs" in str(result.exception)


def test_a_run_killed_after_an_epoch_resumes_to_the_same_weights(tiny_folder, tmp_path):
    """As a user stops it: `fashionlens train` killed (SIGKILL) once an epoch's checkpoint
    is on disk, then `fashionlens train --resume`; it ends with the weights and losses of
    the uninterrupted run. With a worker process loading the photos, the resumed epoch's
    dropout draws used to differ (the loader drew its worker seed from the global RNG), and
    the run's saved data path was relative (resume looked for it inside the run folder)."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    extra = ["train.epochs=4", "train.linear_probe=false", "train.threads=1",
             "model.drop_rate=0.3", "augment.hflip=0.5", "augment.brightness=0.4"]
    data = tmp_path / "photos"
    shutil.copytree(tiny_folder, data)
    env = {**os.environ, "FASHIONLENS_PROGRESS": "0"}
    command = [sys.executable, "-m", "fashionlens.cli.main", "train", "--data", "photos",
               "--output", "runs", "--name", "cut",
               *[a for o in [*TINY_TRAIN, *extra, "train.num_workers=1"] for a in ("-o", o)]]
    cut = tmp_path / "runs" / "cut"
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        while not (cut / CHECKPOINT).exists() and proc.poll() is None:
            time.sleep(0.005)  # waits on the checkpoint file, not on a duration
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    stopped_after = loop.load_checkpoint(cut / CHECKPOINT)["epoch"]
    assert 1 <= stopped_after < 4 and not (cut / "model").exists()

    resumed = subprocess.run([sys.executable, "-m", "fashionlens.cli.main", "train",
                              "--resume", str(cut)], cwd=tmp_path / "runs", env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    whole = train(_config(data, tmp_path / "runs", "whole", *extra, "train.num_workers=0"))

    a = load_file(str(whole.model_dir / "model.safetensors"))
    b = load_file(str(cut / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((cut / "metrics.json").read_text())["history"]
    expected = json.loads((whole.output_dir / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    for key in ("train_loss", "val_loss"):
        assert [row[key] for row in history] == [row[key] for row in expected], key

"""Distributed training (torchrun + DDP): two CPU processes (gloo) train what one process
trains, and a process started without torchrun is the plain single process.

The two-process runs go through the real launcher, torch.distributed.run, once for both
commands (tests/distributed_worker.py runs them as the command line does). Tolerance: the
processes average two half-batch gradients where one process takes one mean over the
batch, so only float rounding may differ; losses agree to 1e-5 (relative) and weights to
1e-5 (absolute); measured here ~1e-7 and ~1e-8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import RandomSampler

from fashionlens import load_config, train
from fashionlens.data import DataSpec
from fashionlens.data.dataset import SeededEpochSampler, ShardedEpochSampler
from fashionlens.errors import ConfigError, DataError
from fashionlens.training import distributed
from fashionlens.training.metric import MetricConfig, train_embedding

from .helpers import TINY_TRAIN

# Unweighted losses (balance none) make the two-process gradient the one-process one.
DIST_TRAIN = [*TINY_TRAIN, "train.balance=none"]


def _flags(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("-o", item)]


EMBEDDING = dict(base="test_efficientnet", pretrained="none", mode="full", dim=16, views=2,
                 epochs=2, batch_items=8, threads=1, precision="fp32", device="cpu")


@pytest.fixture(scope="module")
def two_processes(tiny_folder, tmp_path_factory) -> tuple[Path, str]:
    """`train` and `train-embedding --mode full` run by 2 CPU processes under torchrun:
    their output folder and what they printed."""
    out = tmp_path_factory.mktemp("two")
    commands = [
        ["train", "--name", "two", *_flags([*DIST_TRAIN, f"data.path={tiny_folder}",
                                            f"output.dir={out}"])],
        ["train-embedding", "--data", str(tiny_folder), "--output", str(out), "--name",
         "emb", "-o", "data.val_fraction=0.25",
         *_flags([f"metric.{k}={v}" for k, v in EMBEDDING.items()])],
    ]
    (out / "commands.json").write_text(json.dumps(commands))
    env = {**os.environ, "FASHIONLENS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):  # a fresh launch, whatever runs pytest
        env.pop(name, None)
    worker = Path(__file__).with_name("distributed_worker.py")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(worker), str(out / "commands.json")],
                            cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def _close_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=atol, msg=key)


def _epochs(n: int = 20, batch: int = 6, world: int = 2, drop_last: bool = True, epoch=3):
    """One process's batches and every rank's, for the same seeded epoch."""
    def sampler(rank: int | None):
        generator = torch.Generator().manual_seed(7)
        base = SeededEpochSampler(RandomSampler(range(n), generator=generator), generator, 7)
        if rank is None:
            base.set_epoch(epoch)
            return list(base)
        sharded = ShardedEpochSampler(base, batch, drop_last, rank, world)
        sharded.set_epoch(epoch)
        items = list(sharded)  # one pass per epoch, as the loader makes
        assert len(sharded) == len(items)
        return items

    return sampler(None), [sampler(rank) for rank in range(world)]


@pytest.mark.parametrize("world", [2, 3])
def test_shards_of_each_global_batch_are_the_one_process_batch(world):
    whole, shards = _epochs(world=world)
    local = 6 // world
    # 20 photos, global batch 6: three full batches; the last 2 photos are dropped.
    assert [len(s) for s in shards] == [3 * local] * world
    for k in range(3):
        together = [item for s in shards for item in s[k * local:(k + 1) * local]]
        assert together == whole[k * 6:(k + 1) * 6]  # rows and augmentation seeds


def test_a_batch_smaller_than_the_global_batch_is_shared_out():
    whole, shards = _epochs(n=5, batch=8, drop_last=False)
    assert [len(s) for s in shards] == [2, 3] and shards[0] + shards[1] == whole


def test_without_torchrun_everything_is_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched() and distributed.is_main_process()
    with distributed.session("cpu") as ctx:
        assert not ctx.active and ctx.main and ctx.world == 1 and ctx.seed_offset == 0
        model = torch.nn.Linear(2, 2)
        assert distributed.wrap(model) is model
        assert distributed.shard(5) == [0, 1, 2, 3, 4]
        assert distributed.broadcast({"a": 1}) == {"a": 1}
        assert distributed.all_sum([1.5, 2]) == [1.5, 2]
        assert distributed.from_main(lambda: "folder") == "folder"
        distributed.check_batch(7, 3)  # nothing to share


def test_a_batch_the_processes_cannot_share_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "_current", distributed.Context(active=True, world=4))
    with pytest.raises(ConfigError, match=r"train.batch_size: 30 photos .* multiple of 4"):
        distributed.check_batch(30, 100)
    with pytest.raises(DataError, match="3 training photos are too few for 4 processes"):
        distributed.check_batch(32, 3)
    assert distributed.shard(10) == [0, 1]  # rank 0 of 4
    assert distributed.without_option(["train", "--nproc", "2", "--epochs", "3",
                                       "--nproc=4"], "--nproc") == ["train", "--epochs", "3"]
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="--nproc: must be at least 1"):
        distributed.relaunch(0)


def test_nproc_runs_the_same_command_under_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(distributed.subprocess, "call", lambda cmd: calls.append(cmd) or 3)
    monkeypatch.setattr(sys, "argv", ["fashionlens", "-q", "train", "c.yaml", "--nproc", "2"])
    with pytest.raises(SystemExit) as stop:
        distributed.relaunch(2)
    assert stop.value.code == 3  # torchrun's status is the command's
    assert calls == [[sys.executable, "-m", "torch.distributed.run", "--standalone",
                      "--nproc_per_node=2", "-m", "fashionlens.cli.main", "-q", "train",
                      "c.yaml"]]
    distributed.relaunch(None)  # no --nproc: runs here
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    distributed.relaunch(2)  # already under torchrun: runs here
    assert len(calls) == 1 and not distributed.is_main_process()


def test_two_processes_train_what_one_process_trains(tiny_folder, tmp_path, two_processes):
    out, printed = two_processes
    one = train(load_config(overrides=[*DIST_TRAIN, f"data.path={tiny_folder}",
                                       f"output.dir={tmp_path}", "output.name=one"]))
    assert printed.count("run folder:") == 1  # only the main process reports
    two = out / "two"
    assert not (out / "two-2").exists()  # one run folder, claimed by the main process
    assert not (two / "checkpoint.pt").exists() and (two / "model" / "model.json").is_file()
    a = json.loads((one.output_dir / "metrics.json").read_text())
    b = json.loads((two / "metrics.json").read_text())
    assert [row["epoch"] for row in b["history"]] == [0, 1, 2]  # linear probe, 2 epochs
    for x, y in zip(a["history"], b["history"], strict=True):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
            if key in x:
                assert y[key] == pytest.approx(x[key], rel=1e-5), (x["epoch"], key)
    assert b["best_epoch"] == a["best_epoch"]
    assert b["metrics"]["accuracy"] == a["metrics"]["accuracy"]
    assert b["num_train_images"] == a["num_train_images"] == 36
    _close_weights(one.model_dir / "model.safetensors", two / "model" / "model.safetensors")


def test_two_processes_learn_the_embedding_one_process_learns(tiny_folder, tmp_path,
                                                              two_processes):
    """Metric learning in full mode: each process embeds half of every batch; the loss
    mines pairs across the whole batch."""
    out, _ = two_processes
    one = train_embedding(MetricConfig(**EMBEDDING), DataSpec(path=str(tiny_folder),
                                                              val_fraction=0.25),
                          tmp_path / "one")
    history = json.loads((out / "emb" / "metrics.json").read_text())["history"]
    assert len(history) == len(one.history) == 2
    for x, y in zip(one.history, history, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
        assert y["pairs_top10"] == x["pairs_top10"]
    _close_weights(one.model_dir / "model.safetensors", out / "emb" / "model" / "model.safetensors")

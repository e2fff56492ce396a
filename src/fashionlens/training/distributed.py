"""Training on several GPUs or machines: one process per GPU, started by torchrun.

torchrun starts the processes and tells each who it is through environment variables
(WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT). Without them every function here is a
no-op and a run is the single process it always was, bit for bit. Under torchrun:

- `session` joins the process group (NCCL on GPUs, gloo on CPUs) and gives each process
  the GPU of its LOCAL_RANK; only the main process (rank 0) logs and draws progress bars;
- `wrap` is the one place a model is wrapped in DistributedDataParallel, which averages
  the gradients of the processes after each backward pass;
- the config's batch size is the *global* batch: each process takes batch_size / world
  photos of every global batch (`data.dataset.ShardedEpochSampler`), so a step sees the
  photos, augmentations and (for unweighted losses) the gradient one process would;
- `run_sharded` splits an inference pass (linear probe, validation, embedding features)
  over the processes and hands every process the whole result;
- `from_main` / `broadcast` make one decision (the run folder, a checkpoint, early
  stopping) on the main process and give it to all, so none waits for a step the others
  skip. Only the main process writes files.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError, DataError, FashionLensError
from ..precision import resolve_device

log = logging.getLogger(__name__)

T = TypeVar("T")

# What torchrun sets in every process it starts.
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
# Long enough for the main process to validate a large set while the others wait.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Context:
    """This process's place in the run; `active` is False for a plain single process."""

    active: bool = False
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """The process that logs and writes the run's files."""
        return self.rank == 0

    @property
    def seed_offset(self) -> int:
        """Added to per-epoch seeds (dropout), so the processes draw different masks;
        0 on the main process, so one process draws what it always drew."""
        return self.rank << 40


_current: Context | None = None


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its
    variables)."""
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def is_main_process() -> bool:
    """Rank 0, or a process not started by a launcher; readable before and after a session."""
    return int(os.environ.get("RANK", "0")) == 0


def current() -> Context:
    """The context of the session in progress, or a single process's."""
    return _current if _current is not None else Context()


def available_device(name: str | torch.device, flag: str = "train.device") -> torch.device:
    """`resolve_device`, refusing a device this machine lacks (`cuda:7` on one GPU, `cuda`
    without a GPU) with a message naming the field, before any work starts."""
    device = resolve_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count or (device.index or 0) >= count:
            have = f"{count} GPU{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})" \
                if count else "no usable GPU"
            raise ConfigError(f"{flag}: '{name}' is not available; this machine has {have}; "
                              "use auto or cpu")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                       and torch.backends.mps.is_available()):
        raise ConfigError(f"{flag}: '{name}' is not available on this machine; use auto or cpu")
    return device


def process_device(name: str, local_rank: int, flag: str = "train.device") -> torch.device:
    """The device of the process with `local_rank`: its own GPU, or the CPU."""
    device = resolve_device(name)
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError(f"{flag}: '{name}' names one GPU, but under torchrun each process "
                          "takes the GPU of its LOCAL_RANK; use auto or cuda")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(f"process {local_rank} of this machine has no GPU: it has {count}; "
                          "start at most that many processes per machine "
                          "(torchrun --nproc_per_node, fashionlens --nproc)")
    return torch.device("cuda", local_rank)


@contextmanager
def session(device: str = "auto", flag: str = "train.device") -> Iterator[Context]:
    """Join the process group torchrun prepared, for the duration of one training run.

    Outside torchrun: yields a single process's context on `device`. A session inside a
    session (or in a program that set up the group itself) reuses the group in place."""
    global _current
    if not launched():
        yield Context(device=available_device(device, flag))
        return
    if _current is not None:
        yield _current
        return
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local_rank = int(os.environ["LOCAL_RANK"])
    where = process_device(device, local_rank, flag)
    owned = not dist.is_initialized()
    if where.type == "cuda":
        torch.cuda.set_device(where)
    if owned:
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo", timeout=TIMEOUT)
    _current = Context(active=True, world=world, rank=rank, local_rank=local_rank,
                       device=where)
    if rank != 0:  # one log and one set of progress bars, the main process's
        os.environ["FASHIONLENS_PROGRESS"] = "0"
        logging.getLogger("fashionlens").setLevel(logging.WARNING)
    else:
        log.info("distributed training: %d processes (%s), this one on %s", world,
                 dist.get_backend(), where)
    try:
        yield _current
    finally:
        _current = None
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def wrap(module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """The module as the training step calls it: itself in one process, wrapped in
    DistributedDataParallel under torchrun (its weights are broadcast from the main
    process here, so every process starts from the same ones)."""
    ctx = current()
    if not ctx.active:
        return module
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                               find_unused_parameters=find_unused_parameters)


class Forward(nn.Module):
    """A training forward pass as one module: DDP synchronises gradients only for passes
    that go through its own `forward`, and the loops call the model's parts directly."""

    def __init__(self, model: nn.Module, step: Callable[[nn.Module, torch.Tensor], Any]
                 ) -> None:
        super().__init__()
        self.model = model
        self._step = step

    def forward(self, images: torch.Tensor) -> Any:
        return self._step(self.model, images)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm statistics over the global batch rather than each process's share
    (GPUs only: PyTorch's SyncBatchNorm has no CPU kernel)."""
    ctx = current()
    if not ctx.active or ctx.world == 1:
        return model
    if ctx.device.type != "cuda":
        log.warning("BatchNorm statistics are computed per process on CPUs (no "
                    "SyncBatchNorm there); train.freeze_bn keeps the pretrained ones")
        return model
    from timm.layers import convert_sync_batchnorm  # also converts timm's BatchNormAct2d

    return convert_sync_batchnorm(model)


def shard(count: int) -> list[int]:
    """This process's contiguous share of rows 0..count-1 (all of them in one process);
    concatenated in rank order the shares give back 0..count-1."""
    ctx = current()
    return list(range(count * ctx.rank // ctx.world, count * (ctx.rank + 1) // ctx.world))


def all_gather(value: T) -> list[T]:
    """Every process's `value`, in rank order (any picklable object)."""
    ctx = current()
    if not ctx.active:
        return [value]
    values: list = [None] * ctx.world
    dist.all_gather_object(values, value)
    return values


def broadcast(value: T) -> T:
    """The main process's `value`, on every process."""
    if not current().active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_main(make: Callable[[], T]) -> T:
    """`make()` run on the main process alone, its result on every process. A
    FashionLensError it raises is raised on every process (none is left waiting)."""
    ctx = current()
    if not ctx.active:
        return make()
    outcome: tuple[bool, Any] = (True, None)
    if ctx.main:
        try:
            outcome = (True, make())
        except FashionLensError as exc:
            outcome = (False, exc)
    outcome = broadcast(outcome)
    if not outcome[0]:
        raise outcome[1]
    return outcome[1]


def all_sum(values: Sequence[float]) -> list[float]:
    """Per-process sums (loss, counts) added up over the processes."""
    ctx = current()
    if not ctx.active:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def run_sharded(runtime, dataset, outputs: Sequence[str], description: str,
                rows: Sequence[int] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`inference.runtime.run_dataset` with the photos shared out among the processes;
    every process gets all the outputs, in the order one process would give them."""
    from ..inference.runtime import run_dataset

    ctx = current()
    if not ctx.active:
        return run_dataset(runtime, dataset, outputs, description=description, rows=rows)
    every = list(range(len(dataset))) if rows is None else list(rows)
    mine = [every[i] for i in shard(len(every))]
    part = run_dataset(runtime, dataset, outputs, description=description, rows=mine) \
        if mine else None
    parts = [p for p in all_gather(part) if p is not None and len(p[1])]
    if not parts:
        return {name: np.zeros((0, 0), np.float32) for name in outputs}, np.zeros(0, np.int64)
    return ({name: np.concatenate([p[0][name] for p in parts]) for name in outputs},
            np.concatenate([p[1] for p in parts]))


def check_batch(batch_size: int, photos: int, flag: str = "train.batch_size") -> None:
    """Refuse a global batch the processes cannot share equally."""
    ctx = current()
    if not ctx.active or ctx.world == 1:
        return
    if batch_size % ctx.world:
        raise ConfigError(f"{flag}: {batch_size} photos per step cannot be shared equally by "
                          f"{ctx.world} processes; use a multiple of {ctx.world} (it is the "
                          "global batch, split over the processes)")
    if photos < ctx.world:
        raise DataError(f"{photos} training photos are too few for {ctx.world} processes")


def relaunch(nproc: int | None, flag: str = "--nproc") -> None:
    """`fashionlens train --nproc N`: run this same command again under torchrun with N
    processes on this machine and exit with its status. Inside torchrun, or without
    --nproc, it returns and the command runs here."""
    if nproc is None or launched():
        return
    if nproc < 1:
        raise ConfigError(f"{flag}: must be at least 1, got {nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "fashionlens.cli.main",
               *without_option(sys.argv[1:], flag)]
    log.info("starting %d training processes: %s", nproc, " ".join(command[1:]))
    sys.exit(subprocess.call(command))


def without_option(args: list[str], flag: str) -> list[str]:
    """`args` less `flag VALUE` / `flag=VALUE` (torchrun would read --nproc as its own
    --nproc_per_node, abbreviated)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            kept.append(arg)
    return kept

"""Helpers for the tests: tiny photos and datasets drawn with Pillow."""

from __future__ import annotations

import csv
import json
import socket
import time
from pathlib import Path

import numpy as np
from PIL import Image


def default_model_name() -> str:
    """The name the bundled default model answers under (its model.json name), so a test
    about "the default" holds whichever bundled model ships as the default."""
    from fashionlens.models.resolve import DEFAULT_MODEL, META_FILE

    return json.loads((DEFAULT_MODEL / META_FILE).read_text()).get("name") or DEFAULT_MODEL.name


# Distinct colours for the tiny classes: learnable from random features in a few steps.
COLOURS = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}

# Config overrides shared by every training test: tiny, CPU, fp32, fast.
TINY_ARCH = "test_efficientnet"  # the tiny backbone the tests register with timm
TINY_TRAIN = [
    "model.name=test_efficientnet",
    "model.pretrained=none",
    "model.image_size=64",
    "model.drop_rate=0.0",
    "model.drop_path_rate=0.0",
    "train.epochs=2",
    "train.batch_size=8",
    "train.num_workers=0",
    "train.precision=fp32",
    "train.device=cpu",
    "train.lr=0.003",
    "data.val_fraction=0.25",
]


def solid_photo(colour: tuple[int, int, int], size: tuple[int, int] = (48, 40),
                seed: int = 0, noise: int = 25) -> Image.Image:
    """A solid colour with per-pixel noise, as an RGB image."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(colour, dtype=np.int16)[None, None, :] + rng.integers(
        -noise, noise + 1, size=(size[1], size[0], 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def write_photo(path: Path, colour=(128, 128, 128), size=(48, 40), seed: int = 0,
                fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    solid_photo(colour, size, seed).save(path, format=fmt)
    return path


def make_folder_dataset(root: Path, per_class: int = 16, colours: dict | None = None,
                        ext: str = ".jpg") -> Path:
    """root/<class>/<n>.jpg for every colour class."""
    colours = colours or COLOURS
    for c, (name, colour) in enumerate(sorted(colours.items())):
        for i in range(per_class):
            write_photo(root / name / f"{name}_{i:02d}{ext}", colour, seed=1000 * c + i)
    return root


def make_csv_dataset(root: Path, per_class: int = 6, with_split: bool = False) -> Path:
    """root/images/<id>.png plus root/labels.csv with id,label,sender[,split] columns."""
    rows = []
    for c, (name, colour) in enumerate(sorted(COLOURS.items())):
        for i in range(per_class):
            image_id = f"{name}{i}"
            write_photo(root / "images" / f"{image_id}.png", colour, seed=100 * c + i)
            row = {"id": image_id, "label": name, "sender": f"s{i % 3}"}
            if with_split:
                row["split"] = "validation" if i % 3 == 0 else "train"
            rows.append(row)
    csv_path = root / "labels.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def write_corrupt_jpeg(path: Path) -> Path:
    """A JPEG cut off half-way, like a failed upload."""
    write_photo(path, (120, 60, 200), size=(64, 64), fmt="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def pattern_photo(seed: int, size: tuple[int, int] = (48, 48)) -> Image.Image:
    """A random 4x4 patchwork of colours: photos that differ in layout, not just colour."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
    return Image.fromarray(cells, "RGB").resize(size, Image.NEAREST)


def write_pattern_photo(path: Path, seed: int, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pattern_photo(seed).save(path, format=fmt)
    return path


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `fashionlens ARGS` as a user does, through main() and its error handling, in
    this process: (exit code, stdout, stderr). An exception main() does not turn into a
    message (a traceback for a user) propagates and fails the test."""
    import sys

    from fashionlens.cli.main import main

    monkeypatch.setattr(sys, "argv", ["fashionlens", *(str(a) for a in args)])
    code: int = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def folded(*texts: str) -> str:
    """Output with line breaks (Rich wraps at the terminal's width) folded to spaces."""
    return " ".join(" ".join(texts).split())


def closed_after(sock: socket.socket, trickle: bytes, every: float, limit: float
                  ) -> tuple[float, bytes]:
    """Send `trickle` every `every` seconds until the server closes the connection;
    returns (seconds it took, what the server sent)."""
    started = time.monotonic()
    received = b""
    sock.settimeout(every)
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(4096)
            if not chunk:
                return time.monotonic() - started, received
            received += chunk
        except TimeoutError:
            pass
        except OSError:
            return time.monotonic() - started, received
        try:
            sock.sendall(trickle)
        except OSError:
            return time.monotonic() - started, received
    return time.monotonic() - started, received


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(proc, url: str, output, seconds: float = 180) -> None:
    """Wait for a `fashionlens serve` subprocess to answer /readyz; fail the test with
    `output()` (what it printed) if it exits first, or after `seconds`."""
    import httpx
    import pytest

    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited early:\n{output()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the server did not become ready")
        time.sleep(0.3)


def load_tool(name: str):
    """A developer tool of tools/ as a module (they are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_stage_taps(model, classes: int):
    """Give a model an embedding head tapping its last two stages (what heads can read);
    returns its EmbeddingSpec."""
    import torch

    from fashionlens.models.embedding import (
        EmbeddingSpec,
        attach_embedding_head,
        pooled_features,
        stage_taps,
    )

    taps, channels = stage_taps(model, 2)
    pooled = int(pooled_features(model.eval(), torch.zeros(1, 3, 64, 64)).shape[1])
    spec = EmbeddingSpec(dim=8, in_features=pooled + sum(channels), taps=taps,
                         tap_channels=channels, classes=classes)
    attach_embedding_head(model, spec)
    return spec


def saved_tapping_model(folder: Path, heads: list, preprocess, name: str) -> Path:
    """A tiny untrained model saved to `folder`: `heads` attached (those with `taps` read
    two tapped stages; a colour-statistics term large enough that a wrong histogram
    shows) and a search vector reading the same taps and appending the class posterior:
    every output kind there is."""
    import torch

    from fashionlens.models import ModelInfo, create_model, save_model
    from fashionlens.models.embedding import (
        EmbeddingSpec,
        attach_embedding_head,
        pooled_features,
        stage_taps,
    )
    from fashionlens.models.heads import attach_heads

    torch.manual_seed(0)
    classes = len(heads[0].classes)
    model = create_model(TINY_ARCH, num_classes=classes, pretrained="none").eval()
    taps, channels = stage_taps(model, 2)
    attach_heads(model, heads, sum(channels))
    with torch.no_grad():
        for head in heads:
            if head.colour_statistics:
                model.stage_terms[head.name].weight[:, sum(channels):].normal_(0, 3.0)
    pooled = int(pooled_features(model, torch.zeros(1, 3, *preprocess.shape)).shape[1])
    spec = EmbeddingSpec(dim=16, in_features=pooled + sum(channels), posterior_weight=0.25,
                         classes=classes, taps=taps, tap_channels=channels)
    attach_embedding_head(model, spec)
    info = ModelInfo(architecture=TINY_ARCH, classes=[], preprocess=preprocess, heads=heads,
                     embedding=spec.to_dict(), name=name)
    return save_model(model.eval(), info, folder)


def saved_model_with_every_output(folder: Path, name: str) -> Path:
    """`saved_tapping_model` with three scored heads: classification, multilabel reading
    the tapped stages, and a colour head reading them and the photo's colour statistics."""
    from fashionlens.data.preprocess import Preprocess
    from fashionlens.models.info import HeadSpec

    heads = [HeadSpec("kind", "classification", ["coat", "dress"]),
             HeadSpec("tags", "multilabel", ["bag", "belt", "hat"], [0.3, 0.5, 0.7],
                      taps=True),
             HeadSpec("colour", "classification", ["red", "green", "blue"], taps=True,
                      colour_statistics=True)]
    return saved_tapping_model(folder, heads, Preprocess(size=64), name)


def tiny_run_config(folder: Path):
    """The tiny training config on a folder of photos."""
    from fashionlens import load_config

    return load_config(overrides=[*TINY_TRAIN, f"data.path={folder}"])

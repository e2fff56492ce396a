"""A trained model as a self-contained folder: weights plus everything needed to use them.

`model.safetensors` holds the weights, `model.json` the architecture, its heads (each
with its kind, class or tag names and thresholds; `models.heads`), pre-processing, the
resolved training config and the validation metrics. Nothing from the training data is
needed to predict.

Format 1 (the first release, e.g. the bundled `clothing10`) had one `classes` list and no
`heads`; it reads as one classification head named `label`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data.transforms import Preprocess
from ..errors import ModelError
from .embedding import EmbeddingSpec, attach_embedding_head
from .heads import HeadSpec, attach_heads, task_heads
from .registry import create_model
from .resolve import META_FILE

FORMAT_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
LEGACY_HEAD = "label"  # the one head of a format-1 model


@dataclass
class ModelInfo:
    """What a saved model is. `classes` alone (format 1) means one classification head
    named `label`; `heads` lists them all otherwise (the first one's classes are then
    `classes`, when it is a classification head)."""

    architecture: str
    classes: list[str]
    preprocess: Preprocess
    task: str = "classification"
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    name: str = ""
    embedding: dict | None = None  # an EmbeddingSpec when the model has an embedding head
    heads: list[HeadSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.heads and self.classes:
            self.heads = [HeadSpec(LEGACY_HEAD, "classification", list(self.classes))]
        scored = task_heads(self.heads)
        self.classes = (list(scored[0].classes)
                        if scored and scored[0].kind == "classification" else [])
        if self.embedding and not any(h.kind == "embedding" for h in self.heads):
            self.heads.append(HeadSpec("embedding", "embedding"))

    @property
    def scored_heads(self) -> list[HeadSpec]:
        return task_heads(self.heads)

    def head(self, name: str) -> HeadSpec:
        for head in self.heads:
            if head.name == name:
                return head
        raise ModelError(f"{self.name or 'this model'} has no head '{name}' (heads: "
                         f"{', '.join(h.name for h in self.heads)})")

    @property
    def single_label(self) -> bool:
        """One classification head and nothing else that scores: today's classifiers."""
        scored = self.scored_heads
        return len(scored) == 1 and scored[0].kind == "classification"

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "task": self.task,
            "architecture": self.architecture,
            "classes": self.classes,
            "heads": [h.to_dict() for h in self.heads],
            "preprocess": self.preprocess.to_dict(),
            "config": self.config,
            "metrics": self.metrics,
            **({"embedding": self.embedding} if self.embedding else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, source: str) -> ModelInfo:
        try:
            heads = [HeadSpec.from_dict(h, source) for h in d.get("heads") or []]
            return cls(architecture=d["architecture"], classes=list(d.get("classes") or []),
                       preprocess=Preprocess.from_dict(d["preprocess"]),
                       task=d.get("task", "classification"), config=d.get("config", {}),
                       metrics=d.get("metrics", {}), name=d.get("name", ""),
                       embedding=d.get("embedding"), heads=heads)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed model description ({exc})") from exc


def save_model(model: torch.nn.Module, info: ModelInfo, directory: str | Path,
               half: bool = False) -> Path:
    """Write the artifact atomically: a half-written folder never replaces a good one."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        state = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
                 for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / META_FILE).write_text(json.dumps(info.to_dict(), indent=2))
        # mkdtemp makes a private folder; give the artifact the user's usual permissions.
        for name in (WEIGHTS_FILE, META_FILE):
            os.chmod(tmp / name, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        if directory.exists():
            for name in (WEIGHTS_FILE, META_FILE):
                (tmp / name).replace(directory / name)
            shutil.rmtree(tmp)
        else:
            tmp.replace(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def weights_digest(directory: str | Path) -> str:
    """A short SHA-256 of the model's weights file: which weights a result came from."""
    h = hashlib.sha256()
    with (Path(directory) / WEIGHTS_FILE).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_info(directory: str | Path) -> ModelInfo:
    directory = Path(directory)
    meta = directory / META_FILE
    if not meta.is_file():
        raise ModelError(f"{directory}: not a fashionlens model folder (no {META_FILE})")
    try:
        data = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{meta}: invalid JSON ({exc})") from exc
    return ModelInfo.from_dict(data, str(meta))


def load_model(directory: str | Path) -> tuple[torch.nn.Module, ModelInfo]:
    """Rebuild a saved model in eval mode, in float32 whatever it was stored as."""
    directory = Path(directory)
    info = read_info(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{directory}: weights file {WEIGHTS_FILE} is missing")
    scored = info.scored_heads
    model = create_model(info.architecture, num_classes=len(scored[0].classes) if scored else 0,
                         pretrained="none")
    attach_heads(model, info.heads)
    if info.embedding:
        spec = EmbeddingSpec.from_dict(info.embedding)
        if spec.posterior_weight > 0 and spec.classes != len(info.classes):
            raise ModelError(f"{directory / META_FILE}: the embedding appends a posterior of "
                             f"{spec.classes} classes but the model has {len(info.classes)}")
        attach_embedding_head(model, spec)
    try:
        state = {k: v.float() if v.is_floating_point() else v
                 for k, v in load_file(str(weights)).items()}
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{weights}: weights do not fit {info.architecture} ({exc})") from exc
    model.eval()
    return model, info

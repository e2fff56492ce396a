"""A trained model as a self-contained folder: weights plus everything needed to use them.

`model.safetensors` holds the weights, `model.json` the architecture, its heads (each
with its kind, class or tag names and thresholds; `models.heads`), pre-processing, the
resolved training config and the validation metrics. Nothing from the training data is
needed to predict.

Format 1 (the first release, e.g. the bundled `clothing10`) had one `classes` list and no
`heads`; it reads as one classification head named `label`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import ModelError
from .embedding import EmbeddingSpec, attach_embedding_head
from .heads import attach_heads
from .info import (  # noqa: F401  (re-exported: where these lived before models.info)
    FORMAT_VERSION,
    LEGACY_HEAD,
    WEIGHTS_FILE,
    ModelInfo,
    fingerprint_of,
    read_info,
    weights_digest,
)
from .registry import create_model
from .resolve import META_FILE


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
    spec = EmbeddingSpec.from_dict(info.embedding) if info.embedding else None
    try:
        attach_heads(model, info.heads, sum(spec.tap_channels) if spec is not None else 0)
    except ModelError as exc:
        raise ModelError(f"{directory / META_FILE}: {exc}") from exc
    if spec is not None:
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

"""The one place that runs a model on a batch of photos.

Predictor, Embedder, the service and evaluation hand a runtime a batch of pre-processed
photos and get named outputs back as NumPy arrays:

- each head's scores under the head's name (`models.heads`: softmax of a
  classification head, sigmoid of a multilabel head);
- `probabilities`: the first head's softmax when it is a classification head (what
  one-task classifiers, the service and the catalog read);
- `vector`: the unit search vector (the embedding head's, with the class posterior
  appended when it says so; else the L2-normalised pooled features);
- `features`: the pooled backbone features (linear probes);
- `stages`: the tapped stages' pooled outputs, for a model whose embedding taps them
  (what the stage terms of heads declared with `taps` read; `training.refit`);
- `colour_statistics`: the photo's colour histograms (`models.colour`), what the stage
  term of a head declared with `colour_statistics` reads too; needs no model.

What a model outputs is read from what it declares (its artifact's classes and embedding
head, timm's `forward_head` contract), never probed with test inputs. One pass gives
every output asked for. `TorchRuntime` runs eager PyTorch on the device and precision
decided by `fashionlens.precision`; another backend (ONNX Runtime, OpenVINO) would take
the same batches and give the same names.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.preprocess import Preprocess
from ..errors import ModelError
from ..memory import TRIM_EVERY, release_freed_memory
from ..models.artifact import load_model
from ..models.colour import colour_statistics
from ..models.embedding import (
    backbone_features,
    classifier_logits,
    embedding_head,
    pooled_part,
    search_vectors,
    tap_channels,
    tapped_part,
)
from ..models.heads import activate, head_logits
from ..models.info import ModelInfo, fingerprint_of
from ..models.registry import create_model, model_preprocess
from ..models.resolve import ModelRef, resolve_model
from ..precision import autocast, resolve_device, resolve_precision
from ..progress import track
from .outputs import COLOURS, FEATURES, PROBABILITIES, STAGES, VECTOR, normalise


class TorchRuntime:
    """A model on a device, in a precision, behind `run(batch) -> named outputs`."""

    backend = "torch"

    def __init__(self, model: nn.Module, preprocess: Preprocess, *,
                 info: ModelInfo | None = None, spec: str = "", fingerprint: str = "",
                 folder: Path | None = None, device: str | torch.device = "cpu",
                 precision: str | None = None) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.info = info
        self.spec = spec  # how to name this model again (models.resolve)
        self.fingerprint = fingerprint
        self.folder = folder
        self.device = resolve_device(device)
        self.model.to(self.device).to(memory_format=torch.channels_last)
        self.precision = resolve_precision(precision, self.device)  # "bf16" or "fp32"
        # timm's contract: forward_head(forward_features(x), pre_logits=True) gives the
        # pooled features the classifier reads; without it there is no search vector.
        self._splits = hasattr(model, "forward_head") and hasattr(model, "get_classifier")
        self.heads = info.scored_heads if info is not None else []
        outputs = []
        if info is not None and info.classes:
            outputs.append(PROBABILITIES)
        if self._splits:
            outputs += [h.name for h in self.heads]
        if hasattr(model, "forward_head"):
            outputs += [VECTOR, FEATURES]
            if tap_channels(model):
                outputs.append(STAGES)
        outputs.append(COLOURS)
        self.outputs: tuple[str, ...] = tuple(outputs)

    @classmethod
    def load(cls, model: str | Path | None = None, *, backbone: bool = False,
             pretrained: str = "embedded", device: str | torch.device = "cpu",
             precision: str | None = None, flag: str = "--model") -> TorchRuntime:
        """A runtime for anything `models.resolve.resolve_model` names; with
        `backbone=True` a bare backbone name too (loaded with `pretrained` weights)."""
        ref: ModelRef = resolve_model(model, backbone=backbone, flag=flag)
        if ref.folder is not None:
            network, info = load_model(ref.folder)
            return cls(network, info.preprocess, info=info, spec=ref.name,
                       fingerprint=fingerprint_of(ref.folder, info), folder=ref.folder,
                       device=device, precision=precision)
        network = create_model(ref.name, pretrained=pretrained)
        spec = ref.name if pretrained == "embedded" else f"{ref.name}@{pretrained}"
        return cls(network, model_preprocess(network), spec=spec,
                   fingerprint=f"{ref.name}:{pretrained}", device=device, precision=precision)

    @property
    def classes(self) -> list[str]:
        return self.info.classes if self.info is not None else []

    @property
    def vector_dim(self) -> int:
        """The search vector's length, from the model's declaration."""
        if VECTOR not in self.outputs:
            raise ModelError(f"{self.spec or 'this model'}: the architecture has no "
                             "forward_head; it gives no search vector")
        head = embedding_head(self.model)
        if head is not None:
            return head.spec.output_dim
        return int(self.model.num_features)

    def _check(self, wanted: Collection[str]) -> None:
        missing = [name for name in wanted if name not in self.outputs]
        if missing:
            raise ModelError(f"{self.spec or 'this model'} gives no {', '.join(missing)} "
                             f"(it gives: {', '.join(self.outputs) or 'nothing'})")

    @torch.no_grad()
    def run(self, batch: torch.Tensor | np.ndarray, outputs: Collection[str] | None = None
            ) -> dict[str, np.ndarray]:
        """The named outputs for a batch of pre-processed photos (N x 3 x H x W)."""
        wanted = tuple(outputs) if outputs is not None else self.outputs
        self._check(wanted)
        batch = torch.as_tensor(batch).to(self.device).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            tensors = self.forward(batch, wanted)
        return {name: normalise(values.float().cpu().numpy()) if name == VECTOR
                else values.float().cpu().numpy() for name, values in tensors.items()}

    def forward(self, batch: torch.Tensor, wanted: Collection[str]) -> dict[str, torch.Tensor]:
        """The named outputs as tensors, before `run`'s conversion to arrays: the one
        place their math lives, which `exporting.export` traces for the other backends.
        `vector` is the search vector before `run` scales it to unit length again."""
        result: dict[str, torch.Tensor] = {}
        named = [h for h in self.heads if h.name in wanted]
        features = None
        if (VECTOR in wanted or FEATURES in wanted or STAGES in wanted or named
                or (PROBABILITIES in wanted and self._splits)):
            features = backbone_features(self.model, batch)
        logits = None
        if PROBABILITIES in wanted or (VECTOR in wanted and self._posterior()):
            logits = (classifier_logits(self.model, features) if self._splits
                      else self.model(batch))
        if VECTOR in wanted:
            result[VECTOR] = search_vectors(self.model, features, logits)
        if PROBABILITIES in wanted:
            result[PROBABILITIES] = logits.float().softmax(-1)
        if STAGES in wanted:
            result[STAGES] = tapped_part(self.model, features).float()
        colours = None
        if COLOURS in wanted or any(h.colour_statistics for h in named):
            colours = colour_statistics(batch, self.preprocess.mean, self.preprocess.std)
            if COLOURS in wanted:
                result[COLOURS] = colours
        if FEATURES in wanted or named:
            pooled = pooled_part(self.model, features)
            if FEATURES in wanted:
                result[FEATURES] = pooled.float()
            by_head = head_logits(self.model, self.heads, pooled, [h.name for h in named],
                                  taps=tapped_part(self.model, features), colours=colours)
            for head in named:
                result[head.name] = activate(head, by_head[head.name])
        return result

    def _posterior(self) -> bool:
        head = embedding_head(self.model)
        return head is not None and head.spec.posterior_weight > 0


def run_dataset(runtime: TorchRuntime, dataset, outputs: Collection[str],
                batch_size: int = 64, workers: int = 0, description: str = "predict",
                rows: Collection[int] | None = None
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Named outputs for every readable photo of a PhotoDataset (or its `rows`), and the
    dataset rows they belong to (unreadable photos go to `dataset.skipped`). The model
    runs in eval mode and is handed back in the mode it came in."""
    from torch.utils.data import DataLoader, Subset

    from ..data.dataset import collate_by_shape

    source = dataset if rows is None else Subset(dataset, list(rows))
    loader = DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_by_shape)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    seen = []
    # Only a torch model has a training mode; the other backends are inference-only.
    network = getattr(runtime, "model", None)
    was_training = network.training if isinstance(network, nn.Module) else None
    if was_training is not None:
        network.eval()
    try:
        for batches, errors in track(loader, description):
            dataset.record_skipped(errors)
            for images, indices in batches:  # one stack per input shape (canvases)
                for name, values in runtime.run(images, outputs).items():
                    parts[name].append(values)
                seen.append(indices.numpy())
                if len(seen) % TRIM_EVERY == 0:
                    release_freed_memory()
    finally:
        if was_training is not None:
            network.train(was_training)
    rows = seen
    if not rows:
        return {name: np.zeros((0, 0), np.float32) for name in outputs}, np.zeros(0, np.int64)
    order = np.argsort(np.concatenate(rows), kind="stable")  # stacks by shape: re-sort
    return ({name: np.concatenate(v)[order] for name, v in parts.items()},
            np.concatenate(rows)[order])

"""The one runtime: named outputs from what a model declares, one pass for all of them."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from fashionlens.errors import ModelError
from fashionlens.inference.runtime import COLOURS, FEATURES, PROBABILITIES, VECTOR, TorchRuntime
from fashionlens.models import load_model


def _batch(size: int = 64, n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_a_classifier_declares_probabilities_and_a_vector(model_dir):
    runtime = TorchRuntime.load(model_dir, precision="fp32")
    assert runtime.outputs == (PROBABILITIES, "label", VECTOR, FEATURES, COLOURS)
    both = runtime.run(_batch())
    # The one head under its own name is the same softmax.
    np.testing.assert_allclose(both["label"], both[PROBABILITIES], atol=1e-6)
    assert both[FEATURES].shape[0] == 3
    assert both[PROBABILITIES].shape == (3, len(runtime.classes))
    np.testing.assert_allclose(both[PROBABILITIES].sum(1), 1.0, atol=1e-5)
    assert both[VECTOR].shape == (3, runtime.vector_dim)  # the declared size, not probed
    np.testing.assert_allclose(np.linalg.norm(both[VECTOR], axis=1), 1.0, atol=1e-5)
    # One pass for both gives what asking for each alone gives.
    np.testing.assert_allclose(runtime.run(_batch(), (VECTOR,))[VECTOR], both[VECTOR],
                               atol=1e-6)


def test_the_split_pass_gives_the_models_own_probabilities(model_dir):
    runtime = TorchRuntime.load(model_dir, precision="fp32")
    model, _ = load_model(model_dir)
    with torch.no_grad():
        expected = model.eval()(_batch()).softmax(-1).numpy()
    np.testing.assert_allclose(runtime.run(_batch(), (PROBABILITIES,))[PROBABILITIES],
                               expected, atol=1e-5)


def test_a_backbone_gives_only_a_vector(model_dir):
    runtime = TorchRuntime.load("test_efficientnet", backbone=True, pretrained="none",
                                precision="fp32")
    assert runtime.outputs == (VECTOR, FEATURES, COLOURS)
    assert runtime.spec == "test_efficientnet@none"
    assert runtime.run(_batch(), (VECTOR,))[VECTOR].shape == (3, runtime.vector_dim)
    with pytest.raises(ModelError, match="gives no probabilities"):
        runtime.run(_batch(), (PROBABILITIES,))


def test_the_fingerprint_names_the_weights(model_dir, embedding_model_dir):
    first = TorchRuntime.load(model_dir)
    assert TorchRuntime.load(str(model_dir)).fingerprint == first.fingerprint
    assert TorchRuntime.load(embedding_model_dir).fingerprint != first.fingerprint
    assert first.fingerprint.startswith("test_efficientnet:")


def test_a_long_pass_hands_freed_memory_back_every_few_batches(model_dir, tiny_folder,
                                                               monkeypatch):
    from fashionlens import memory
    from fashionlens.data.dataset import PhotoDataset
    from fashionlens.data.sources import Sample
    from fashionlens.data.transforms import eval_transform
    from fashionlens.inference import runtime as runtime_module
    from fashionlens.models.colour import COLOUR_FEATURES

    model, info = load_model(model_dir)
    runtime = TorchRuntime(model, info.preprocess, info=info, precision="fp32")
    photos = sorted(tiny_folder.rglob("*.jpg"))[:7]
    dataset = PhotoDataset([Sample(p, "") for p in photos], eval_transform(info.preprocess))
    trims = []
    monkeypatch.setattr(runtime_module, "TRIM_EVERY", 3)
    monkeypatch.setattr(runtime_module, "release_freed_memory", lambda: trims.append(1))
    outputs, rows = runtime_module.run_dataset(runtime, dataset, (COLOURS,), batch_size=1)
    assert len(rows) == 7 and outputs[COLOURS].shape == (7, COLOUR_FEATURES)
    assert len(trims) == 2  # after the 3rd and the 6th batch
    if platform.libc_ver()[0] == "glibc":
        assert memory.release_freed_memory()

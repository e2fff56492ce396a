"""Shared fixtures: tiny photo sets drawn with Pillow, and one tiny trained model.

Nothing here reads real data or the network. Training uses timm's ~100k-parameter
`test_efficientnet` from random initialisation on 64 px solid-colour photos.
"""

from __future__ import annotations

import os

os.environ["FASHIONLENS_PROGRESS"] = "0"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from .helpers import TINY_TRAIN, make_folder_dataset, with_stage_taps  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """Three separable colour classes, 16 photos each, folder per class (read-only use)."""
    return make_folder_dataset(tmp_path_factory.mktemp("tiny") / "photos")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_folder):
    """One tiny training run shared by the predictor, evaluation and CLI tests."""
    from fashionlens import load_config, train

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(overrides=[*TINY_TRAIN, f"data.path={tiny_folder}",
                                 f"output.dir={out}", "output.name=base"])
    return train(cfg)


@pytest.fixture(scope="session")
def model_dir(trained_run) -> Path:
    return trained_run.model_dir


@pytest.fixture
def spoiled_model(tmp_path, model_dir) -> Path:
    """The tiny trained classifier with its head spoiled (so a refit has something to
    win back) and an embedding head tapping two stages (the refit tests)."""
    from fashionlens.models import load_model, save_model

    model, info = load_model(model_dir)
    spec = with_stage_taps(model, len(info.classes))
    with torch.no_grad():
        model.get_classifier().weight.mul_(-1.0)
    info.embedding = spec.to_dict()
    return save_model(model, info, tmp_path / "spoiled")


@pytest.fixture(scope="session")
def embedding_model_dir(tmp_path_factory) -> Path:
    """An untrained tiny `test_efficientnet` saved as a model folder, for the catalog tests."""
    from fashionlens.data.transforms import Preprocess
    from fashionlens.models import ModelInfo, create_model, save_model

    torch.manual_seed(0)
    model = create_model("test_efficientnet", num_classes=3, pretrained="none")
    info = ModelInfo(architecture="test_efficientnet", classes=["a", "b", "c"],
                     preprocess=Preprocess(size=64), name="embed-test")
    return save_model(model, info, tmp_path_factory.mktemp("embed") / "model")

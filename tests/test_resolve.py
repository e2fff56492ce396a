"""One way to name a model: default, a bundled name, a model or run folder, a backbone."""

from __future__ import annotations

import pytest

from fashionlens.errors import ModelError
from fashionlens.models import resolve
from fashionlens.models.resolve import ModelRef, resolve_model


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    """A package with two bundled models, the first of them the default."""
    root = tmp_path / "assets-models"
    for name in ("clothing10", "products"):
        (root / name).mkdir(parents=True)
        (root / name / "model.json").write_text("{}")
    monkeypatch.setattr(resolve, "BUNDLED_DIR", root)
    # Pinned here: these tests are about how names resolve, not which model ships as default.
    monkeypatch.setattr(resolve, "DEFAULT_NAME", "clothing10")
    monkeypatch.setattr(resolve, "DEFAULT_MODEL", root / "clothing10")
    return root


def test_default_and_bundled_names(bundled):
    for spec in (None, "", "default"):
        assert resolve_model(spec) == ModelRef("default", bundled / "clothing10")
    assert resolve_model("products") == ModelRef("products", bundled / "products")
    assert resolve.bundled_models() == {"clothing10": bundled / "clothing10",
                                        "products": bundled / "products"}


def test_a_bundled_folder_given_by_path_is_recorded_by_name(bundled):
    assert resolve_model(str(bundled / "clothing10")).name == "default"
    assert resolve_model(bundled / "products").name == "products"


def test_model_and_run_folders(bundled, tmp_path):
    run = tmp_path / "runs" / "demo"
    (run / "model").mkdir(parents=True)
    (run / "model" / "model.json").write_text("{}")
    folder = (run / "model").resolve()
    assert resolve_model(run / "model") == ModelRef(str(folder), folder)
    assert resolve_model(str(run)) == ModelRef(str(folder), folder)  # a run folder


def test_backbones_only_where_asked(bundled):
    assert resolve_model("efficientnet_lite0", backbone=True) == ModelRef("efficientnet_lite0")
    with pytest.raises(ModelError, match=r"--model efficientnet_lite0: .*\(default, "
                                         r"clothing10, products\)"):
        resolve_model("efficientnet_lite0")


def test_errors_name_the_flag_and_what_was_typed(bundled, tmp_path):
    with pytest.raises(ModelError, match="--base runs/nothing: no such model folder"):
        resolve_model("runs/nothing", backbone=True, flag="--base")
    (tmp_path / "photos").mkdir()
    with pytest.raises(ModelError, match="not a fashionlens model folder"):
        resolve_model(tmp_path / "photos")


def test_without_the_bundled_model_a_backbone_still_embeds(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve, "BUNDLED_DIR", tmp_path / "none")
    monkeypatch.setattr(resolve, "DEFAULT_MODEL", tmp_path / "none" / "clothing10")
    assert resolve_model("default", backbone=True) == ModelRef(resolve.DEFAULT_BACKBONE)
    with pytest.raises(ModelError, match="bundled model is not installed"):
        resolve_model("default")

"""int8 exports: calibrated on the user's photos, measured against fp32, and run by
`--runtime auto` only where they passed (accuracy within half a point, faster here)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from fashionlens.cli.main import app
from fashionlens.errors import ConfigError, ModelError
from fashionlens.exporting import quantize
from fashionlens.exporting.quantize import CalibrationPhoto, quantize_model
from fashionlens.inference import backends
from fashionlens.inference.backends import OpenVinoBackend, OpenVinoInt8Backend
from fashionlens.inference.int8 import runs_int8_here
from fashionlens.inference.loading import load_runtime
from fashionlens.inference.outputs import VECTOR
from fashionlens.search.embeddings import Embedder

pytest.importorskip("nncf")
pytest.importorskip("openvino")


@pytest.fixture
def single(tmp_path, model_dir):
    return shutil.copytree(model_dir, tmp_path / "single",
                           ignore=shutil.ignore_patterns("export"))


def _labelled(folder) -> list[CalibrationPhoto]:
    return [CalibrationPhoto(p, p.parent.name) for p in sorted(folder.rglob("*.jpg"))]


def test_an_int8_export_is_measured_and_runs(single, tiny_folder, monkeypatch):
    monkeypatch.setattr(quantize, "MIN_HELD_OUT", 10)  # the tiny set has 48 photos
    written = quantize_model(single, _labelled(tiny_folder), calibration_size=20)
    assert written == single / "export" / "openvino-int8"
    manifest = json.loads((written / "export.json").read_text())
    assert manifest["format"] == "openvino-int8" and manifest["calibration"]["photos"] == 20
    accuracy = manifest["accuracy"]
    assert accuracy["photos"] == 28  # the photos not calibrated on, all labelled
    assert 0 <= accuracy["int8"] <= 1 and 0 <= accuracy["fp32"] <= 1
    assert manifest["speed"]["fp32_images_per_s"] > 0 and manifest["cpu"]["model"]
    assert manifest["recommended"] == (manifest["accuracy_ok"] and
                                       manifest["speed"]["speedup"] > 1)
    int8 = load_runtime(single, "openvino-int8")
    assert isinstance(int8, OpenVinoInt8Backend) and int8.precision == "int8"
    fp32 = load_runtime(single, "openvino")
    batch = np.random.default_rng(0).uniform(-1, 1, (4, 3, *fp32.preprocess.shape))
    got, want = int8.run(batch)["label"], fp32.run(batch)["label"]
    assert got.shape == want.shape and np.allclose(got.sum(1), 1, atol=1e-4)
    assert np.abs(got - want).max() < 0.2  # int8, not something else
    norms = np.linalg.norm(int8.run(batch)[VECTOR], axis=1)  # int8 rounding renormalised
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_auto_runs_int8_only_where_it_passed(single, tiny_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(quantize, "MIN_HELD_OUT", 10)
    written = quantize_model(single, _labelled(tiny_folder), calibration_size=20)
    manifest_path = written / "export.json"
    manifest = json.loads(manifest_path.read_text())

    def rewrite(**fields):
        manifest_path.write_text(json.dumps({**manifest, **fields}))

    rewrite(accuracy_ok=True, recommended=True)
    assert isinstance(load_runtime(single), OpenVinoInt8Backend)
    # stored vectors must not depend on the CPU: embedders stay fp32 under auto
    assert isinstance(Embedder(single).runtime, OpenVinoBackend)
    assert Embedder(single).precision == "fp32"
    assert isinstance(load_runtime(single, precision="fp32"), OpenVinoBackend)
    assert not isinstance(load_runtime(single, precision="fp32"), OpenVinoInt8Backend)
    rewrite(accuracy_ok=False, recommended=False)
    assert not isinstance(load_runtime(single), OpenVinoInt8Backend)
    # measured on another CPU: timed here once, the verdict kept in the user cache
    rewrite(accuracy_ok=True, recommended=False, cpu={"model": "another CPU"})
    faster = runs_int8_here(written, single / "export" / "onnx")
    store = json.loads((tmp_path / "cache" / "int8-speed.json").read_text())
    (verdict,) = store.values()
    assert verdict["faster"] == faster == (verdict["int8_images_per_s"] >
                                           verdict["fp32_images_per_s"])
    assert isinstance(load_runtime(single), OpenVinoInt8Backend) == faster


def test_unlabelled_photos_calibrate_but_measure_nothing(single, tiny_folder):
    photos = [CalibrationPhoto(p) for p in sorted(tiny_folder.rglob("*.jpg"))]
    written = quantize_model(single, photos, calibration_size=12)
    manifest = json.loads((written / "export.json").read_text())
    assert manifest["recommended"] is False and "accuracy not measured" in manifest["reason"]
    assert not isinstance(load_runtime(single), OpenVinoInt8Backend)


def test_missing_int8_export_and_too_few_photos_are_clear(single, tiny_folder):
    with pytest.raises(ModelError, match="--format openvino-int8 --calibrate"):
        load_runtime(single, "openvino-int8")
    with pytest.raises(ConfigError, match="at least 10 readable photos"):
        quantize_model(single, _labelled(tiny_folder)[:5])
    assert "openvino-int8" in backends.RUNTIMES


def test_the_export_command_quantises_a_folder_per_class(single, tiny_folder, tmp_path):
    runner = CliRunner()
    target = tmp_path / "int8"
    result = runner.invoke(app, ["export", str(single), "--format", "openvino-int8",
                                 "--calibrate", str(tiny_folder), "--calibration-size", "20",
                                 "--output", str(target)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (target / "model.xml").is_file() and "images/s" in result.output
    result = runner.invoke(app, ["export", str(single), "--format", "openvino-int8"])
    assert isinstance(result.exception, ConfigError) and "--calibrate" in str(result.exception)

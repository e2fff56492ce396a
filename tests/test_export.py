"""ONNX / OpenVINO exports: the same named outputs as torch, checked before they are
written, cached beside the model and rebuilt when its weights change."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fashionlens import Predictor, evaluate
from fashionlens.cli.main import app
from fashionlens.errors import ConfigError, FashionLensError, ModelError
from fashionlens.exporting import export
from fashionlens.exporting.ensure import ensure_exported
from fashionlens.exporting.export import export_model
from fashionlens.exporting.writing import exported_path
from fashionlens.inference import backends, loading
from fashionlens.inference.backends import OnnxRuntimeBackend, OpenVinoBackend
from fashionlens.inference.export_cache import find_exported
from fashionlens.inference.loading import load_runtime
from fashionlens.inference.outputs import PROBE_OUTPUTS
from fashionlens.inference.runtime import FEATURES, PROBABILITIES, VECTOR, TorchRuntime
from fashionlens.models import load_model, save_model
from fashionlens.models.info import read_info, weights_digest
from fashionlens.models.resolve import DEFAULT_MODEL

from .helpers import COLOURS, saved_model_with_every_output, write_photo

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

ARCH = "test_efficientnet"
# A few photos are enough to compare outputs; the bundled 40 are the default.
CHECK_PHOTOS = 8


@pytest.fixture(scope="module")
def photos(tmp_path_factory, tiny_folder):
    return sorted(tiny_folder.rglob("*.jpg"))[::6][:CHECK_PHOTOS]


@pytest.fixture
def single(tmp_path, model_dir):
    """A writable copy of the tiny trained classifier (exports go inside it)."""
    return shutil.copytree(model_dir, tmp_path / "single",  # without exports others made
                           ignore=shutil.ignore_patterns("export"))


@pytest.fixture
def multi(tmp_path):
    """Three scored heads (classification, multilabel reading the tapped stages, and a
    colour head reading them and the photo's colour statistics) and an embedding head
    reading two stage taps and appending the class posterior: every output kind there
    is."""
    return saved_model_with_every_output(tmp_path / "multi", "multi-test")


def _batch(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1


@pytest.mark.parametrize(("which", "fmt", "runtime"), [
    ("single", "onnx", "onnxruntime"),
    ("single", "openvino", "openvino"),
    ("multi", "onnx", "onnxruntime"),
    ("multi", "openvino", "openvino"),
])
def test_an_export_gives_torchs_outputs(request, photos, which, fmt, runtime):
    folder = request.getfixturevalue(which)
    written = export_model(folder, fmt, photos=photos)
    assert written == folder / "export" / fmt
    manifest = json.loads((written / "export.json").read_text())
    torch_runtime = TorchRuntime.load(folder, precision="fp32")
    expected_names = [n for n in torch_runtime.outputs if n not in PROBE_OUTPUTS]
    assert manifest["outputs"] == expected_names
    # ONNX is checked on both backends that run it, IR on OpenVINO
    assert sorted(manifest["agreement"]) == (["onnxruntime", "openvino"] if fmt == "onnx"
                                             else ["openvino"])
    for agreement in manifest["agreement"].values():
        assert agreement["photos"] == len(photos)
        assert max(agreement["max_abs_diff"].values()) <= 1e-3

    loaded = load_runtime(folder, runtime)
    assert loaded.backend == runtime and loaded.precision == "fp32"
    assert loaded.outputs == tuple(expected_names)
    assert loaded.vector_dim == torch_runtime.vector_dim
    assert loaded.fingerprint == torch_runtime.fingerprint  # the same vectors
    assert [h.name for h in loaded.heads] == [h.name for h in torch_runtime.heads]
    want = torch_runtime.run(_batch())
    for got in (loaded.run(_batch()), loaded.run(_batch().numpy(), expected_names)):
        assert set(got) == set(expected_names)
        for name in expected_names:
            np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)
    with pytest.raises(ModelError, match="gives no features"):
        loaded.run(_batch(), (FEATURES,))
    with pytest.raises(ModelError, match="N x 3 x 64 x 64"):
        loaded.run(torch.zeros(1, 3, 32, 32))


def test_the_export_is_cached_and_rebuilt_when_the_weights_change(single, photos,
                                                                  monkeypatch):
    calls = []
    real = export.export_model

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, photos=photos, **kwargs)

    monkeypatch.setattr(export, "export_model", counted)
    first = ensure_exported(single, "onnx")
    made = (first / "model.onnx").stat().st_mtime_ns
    assert ensure_exported(single, "onnx") == first and len(calls) == 1  # reused
    assert isinstance(load_runtime(single, "onnxruntime"), OnnxRuntimeBackend)
    assert len(calls) == 1 and (first / "model.onnx").stat().st_mtime_ns == made

    model, info = load_model(single)
    with torch.no_grad():
        model.get_classifier().bias.add_(0.5)
    save_model(model, info, single)  # same folder, new weights digest
    assert ensure_exported(single, "onnx") == first and len(calls) == 2
    manifest = json.loads((first / "export.json").read_text())
    assert manifest["weights_digest"] == weights_digest(single)
    np.testing.assert_allclose(load_runtime(single, "onnxruntime").run(_batch())["label"],
                               TorchRuntime.load(single, precision="fp32").run(
                                   _batch())["label"], atol=1e-4)


def test_a_disagreeing_export_is_refused_and_nothing_is_written(single, photos, monkeypatch):
    infer = OnnxRuntimeBackend._infer

    def perturbed(self, images, wanted):
        values = infer(self, images, wanted)
        values[VECTOR] = values[VECTOR] + 0.01
        return values

    monkeypatch.setattr(OnnxRuntimeBackend, "_infer", perturbed)
    with pytest.raises(ModelError, match=r"'vector': max abs difference 0\.01"):
        export_model(single, "onnx", photos=photos)
    assert not (single / "export" / "onnx").exists()
    assert not [p for p in (single / "export").iterdir()]  # no temp folder left behind


def test_another_top_1_class_is_refused_even_within_the_tolerance(single, photos,
                                                                  monkeypatch):
    infer = OpenVinoBackend._infer

    def swapped(self, images, wanted):
        values = infer(self, images, wanted)
        values[PROBABILITIES] = values[PROBABILITIES][:, ::-1].copy()
        return values

    monkeypatch.setattr(OpenVinoBackend, "_infer", swapped)
    with pytest.raises(ModelError, match="another top-1 class than torch for 'probabilities'"):
        export_model(single, "openvino", photos=photos, tolerance=10.0)


def test_predictor_and_evaluate_on_onnxruntime_answer_as_torch(single, photos, tiny_folder,
                                                               tmp_path):
    export_model(single, "onnx", photos=photos)
    inbox = [write_photo(tmp_path / "in" / f"{name}.jpg", colour, size=(57, 71), seed=9)
             for name, colour in sorted(COLOURS.items())]
    torch_answers = list(Predictor(single, precision="fp32", runtime="torch")
                         .predict_paths(inbox))
    onnx = Predictor(single, runtime="onnxruntime")
    assert onnx.runtime.backend == "onnxruntime"
    for a, b in zip(torch_answers, onnx.predict_paths(inbox), strict=True):
        assert (a.label, [t["label"] for t in a.top_k]) == (b.label, [t["label"] for t in b.top_k])
        assert a.tasks.keys() == b.tasks.keys()
        assert abs(a.probability - b.probability) < 1e-4
    # run_dataset (evaluation) works without a torch module to switch to eval mode
    by_torch = evaluate(single, tiny_folder, precision="fp32", runtime="torch")
    by_onnx = evaluate(single, tiny_folder, runtime="onnxruntime")
    assert by_onnx.metrics["accuracy"] == by_torch.metrics["accuracy"]


def test_which_runtime_load_runtime_picks(single, monkeypatch):
    backbone = load_runtime(ARCH, "onnxruntime", backbone=True, pretrained="none")
    assert isinstance(backbone, TorchRuntime)  # no model folder: nothing to export
    assert isinstance(load_runtime(single, "torch"), TorchRuntime)
    assert isinstance(load_runtime(single), OpenVinoBackend)  # auto: OpenVINO, exported
    assert (single / "export" / "onnx" / "export.json").is_file()  # on first use
    monkeypatch.setattr(backends, "installed", lambda name: name == "onnxruntime")
    assert backends.choose_runtime("auto") == "onnxruntime"
    monkeypatch.setattr(backends, "installed", lambda name: False)
    monkeypatch.setattr(loading, "installed", backends.installed)  # its own binding
    assert backends.choose_runtime("auto") == "torch"
    with pytest.raises(ConfigError, match="onnxruntime package is not installed"):
        load_runtime(single, "onnxruntime")
    with pytest.raises(ConfigError, match="not one of"):
        load_runtime(single, "tensorrt")
    monkeypatch.undo()
    assert backends.choose_runtime("auto") == "openvino"
    with pytest.raises(ConfigError, match="bf16 needs --runtime torch"):
        load_runtime(single, "openvino", precision="bf16")


def test_a_bundled_model_exports_to_the_user_cache(tmp_path, monkeypatch):
    if not (DEFAULT_MODEL / "model.json").is_file():
        pytest.skip("the bundled model is not installed")
    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))
    digest = weights_digest(DEFAULT_MODEL)
    assert exported_path(DEFAULT_MODEL, "openvino") == \
        tmp_path / "cache" / f"{DEFAULT_MODEL.name}-{digest}" / "openvino"


@pytest.mark.parametrize("name", ["clothing10", "fashion", "products", "outfits"])
def test_the_bundled_models_ship_a_current_checked_export(name, tmp_path, monkeypatch):
    """What an install without torch runs: it must match the shipped weights, or predict
    there would fail (re-export with `fashionlens export NAME --output <model>/export/onnx`)."""
    folder = DEFAULT_MODEL.parent / name
    if not (folder / "model.json").is_file():
        pytest.skip(f"the bundled model {name} is not installed")
    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))
    shipped = find_exported(folder, "onnx")
    assert shipped == folder / "export" / "onnx"
    manifest = json.loads((shipped / "export.json").read_text())
    assert sorted(manifest["agreement"]) == ["onnxruntime", "openvino"]
    shapes = len(read_info(folder).preprocess.shapes)  # every photo in each canvas
    assert all(a["photos"] == 40 * shapes for a in manifest["agreement"].values())
    # lossless: the fp16 weights stay fp16 numbers behind a Cast, so about the same size
    assert manifest["fp16_stored_weights"] > 0
    assert manifest["files"]["model.onnx"] < 1.2 * manifest["source_weights_bytes"]


def test_the_export_command_reports_where_and_how_close(single, tmp_path, monkeypatch,
                                                         photos):
    real = export.check_photos
    monkeypatch.setattr(export, "check_photos", lambda runtime, given=None: real(runtime,
                                                                                  photos))
    runner = CliRunner()
    target = tmp_path / "out"
    result = runner.invoke(app, ["export", str(single), "--format", "onnx", "--output",
                                 str(target)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (target / "model.onnx").is_file()
    assert str(target) in result.output.replace("\n", "")
    assert "max abs difference" in result.output and "model.onnx" in result.output
    busy = tmp_path / "busy"
    (busy / "notes.txt").parent.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["export", str(single), "--output", str(busy)])
    assert isinstance(result.exception, FashionLensError)
    assert "is not an export" in str(result.exception)
    result = runner.invoke(app, ["export", str(single), "--format", "tflite"])
    assert result.exit_code != 0 and "tflite" in result.output


def test_int8_keeps_what_reads_the_pixels_without_a_convolution_in_fp32(multi, photos):
    """The colour statistics and the term that reads them stay fp32 in an int8 export (in
    int8 they cost the bundled `fashion` 64 points of baseColour); the backbone and the
    other heads do not."""
    from fashionlens.exporting.quantize import _kept_fp32
    from fashionlens.inference.ov_core import openvino_core

    written = export_model(multi, "onnx", photos=photos)
    kept = _kept_fp32(openvino_core().read_model(str(written / "model.onnx")))
    matmuls = [n for n in kept if "MatMul" in n or "Gemm" in n]
    assert any("colour" in n for n in matmuls), kept
    assert not any("tags" in n or "kind" in n for n in matmuls), matmuls
    assert sum("Conv" in n and "conv_stem" in n for n in kept) == 1  # the first only

"""Canvases: a model that reads photos of other aspect ratios at other input shapes (a
tall street photo into a tall canvas), alike in torch, ONNX Runtime and OpenVINO, in
batches that mix shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fashionlens import Predictor
from fashionlens.data import PhotoDataset, eval_transform
from fashionlens.data.preprocess import Preprocess, eval_array
from fashionlens.data.sources import Sample
from fashionlens.errors import ModelError
from fashionlens.exporting.export import export_model
from fashionlens.inference.export_cache import graph_key
from fashionlens.inference.loading import load_runtime
from fashionlens.inference.photos import decoded_batches, prepare_photo
from fashionlens.inference.runtime import TorchRuntime, run_dataset
from fashionlens.models import ModelInfo
from fashionlens.models.heads import HeadSpec
from fashionlens.models.info import fingerprint_of, read_info

from .helpers import COLOURS, TINY_ARCH, pattern_photo, saved_tapping_model, write_photo

ARCH = "test_efficientnet"
LETTERBOX = {"fit": "letterbox", "height": 64, "width": 48}


def test_each_photo_goes_into_the_canvas_nearest_its_aspect_ratio():
    pre = Preprocess(**LETTERBOX, canvases=((96, 64), (48, 64)))
    assert pre.shapes == ((64, 48), (96, 64), (48, 64))
    assert pre.shape_for(300, 400) == (64, 48)   # 4:3 portrait: the default
    assert pre.shape_for(400, 600) == (96, 64)   # 2:3 street photo: the tall one
    assert pre.shape_for(600, 400) == (48, 64)   # landscape
    assert pre.resize_size == 96
    # a square photo is as near 64x48 as 48x64 in log ratio: the default wins the tie
    assert pre.shape_for(500, 500) == (64, 48)
    assert Preprocess(**LETTERBOX).shape_for(400, 600) == (64, 48)  # no canvases: one shape
    tall = Image.new("RGB", (40, 60), (200, 10, 10))
    assert eval_array(tall, pre).shape == (3, 96, 64)
    assert eval_array(tall, pre.fixed((64, 48))).shape == (3, 64, 48)
    assert eval_array(tall, Preprocess(fit="stretch", height=64, width=48,
                                       canvases=((96, 64),))).shape == (3, 96, 64)


def test_canvases_are_stored_only_where_a_model_has_them():
    plain = Preprocess(**LETTERBOX)
    assert "canvases" not in plain.to_dict()  # older model.json files stay byte-identical
    pre = Preprocess(**LETTERBOX, canvases=((96, 64),))
    assert pre.to_dict()["canvases"] == [[96, 64]]
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="not \\[height, width\\]"):
        Preprocess(**LETTERBOX, canvases=((96,),))
    with pytest.raises(ValueError, match="at least 8"):
        Preprocess(**LETTERBOX, canvases=((96, 0),))
    with pytest.raises(ValueError, match="whole-photo fit"):
        Preprocess(canvases=((96, 64),))


def test_a_batch_of_mixed_shapes_is_run_per_shape_and_answered_in_order(tmp_path):
    pre = Preprocess(**LETTERBOX, canvases=((96, 64),))
    sizes = [(30, 40), (40, 60), (30, 40), (40, 60), (40, 60)]
    paths = [write_photo(tmp_path / f"{i}.jpg", (40 * i, 20, 20), size=s)
             for i, s in enumerate(sizes)]
    paths.insert(2, tmp_path / "missing.jpg")
    seen_shapes = []

    def run(batch: np.ndarray) -> dict:
        seen_shapes.append(batch.shape[2:])
        red = batch[:, 0].reshape(len(batch), -1).max(1)
        return {"red": red, "both": (red, red * 2)}

    decoded = next(decoded_batches(paths, lambda p: prepare_photo(p, pre), 8, 1))
    assert sorted(seen_shapes) == []
    assert decoded.rows == [0, 1, 3, 4, 5] and list(decoded.errors) == [2]
    assert [positions for _, positions in decoded.groups] == [[0, 3], [1, 4, 5]]
    answer = decoded.map(run)
    assert sorted(seen_shapes) == [(64, 48), (96, 64)]
    one_by_one = [run(prepare_photo(paths[i], pre)[None])["red"][0] for i in decoded.rows]
    np.testing.assert_allclose(answer["red"], one_by_one)
    np.testing.assert_allclose(answer["both"][1], 2 * np.asarray(one_by_one))


@pytest.fixture
def canvas_model(tmp_path):
    """A tiny model with a classification head, a colour head reading the tapped stages
    and the photo's colour statistics (which read the input's own height and width), a
    search vector, and a tall canvas."""
    heads = [HeadSpec("kind", "classification", ["blue", "green", "red"]),
             HeadSpec("colour", "classification", ["dark", "light"], taps=True,
                      colour_statistics=True)]
    return saved_tapping_model(tmp_path / "canvas", heads,
                               Preprocess(**LETTERBOX, canvases=((96, 64),)), "canvas-test")


def test_a_model_with_canvases_exports_and_answers_alike_on_every_runtime(canvas_model,
                                                                          tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    inbox = [write_photo(tmp_path / "in" / f"{name}-{i}.jpg", colour, size=size, seed=i)
             for i, size in enumerate([(45, 60), (40, 60), (60, 40)])
             for name, colour in sorted(COLOURS.items())]
    # OpenVINO IR converted from the free-shaped graph: reshaped to each canvas on load
    ir = export_model(canvas_model, "openvino", photos=inbox)
    assert json.loads((ir / "export.json").read_text())["agreement"]["openvino"]["photos"] \
        == 2 * len(inbox)
    written = export_model(canvas_model, "onnx", photos=inbox)
    manifest = json.loads((written / "export.json").read_text())
    assert manifest["input"]["shapes"] == [["batch", 3, 64, 48], ["batch", 3, 96, 64]]
    for agreement in manifest["agreement"].values():
        assert agreement["photos"] == 2 * len(inbox)  # every photo in each canvas
    torch_answers = list(Predictor(canvas_model, precision="fp32", runtime="torch")
                         .predict_paths(inbox, batch_size=4))
    for runtime in ("onnxruntime", "openvino"):
        answers = list(Predictor(canvas_model, runtime=runtime).predict_paths(inbox,
                                                                               batch_size=4))
        for a, b in zip(torch_answers, answers, strict=True):
            assert a.path == b.path
            for task in ("kind", "colour"):
                assert a.tasks[task]["label"] == b.tasks[task]["label"]
                assert abs(a.tasks[task]["probability"] - b.tasks[task]["probability"]) < 1e-4
        loaded = load_runtime(canvas_model, runtime)
        with pytest.raises(ModelError, match="N x 3 x 64 x 48 or N x 3 x 96 x 64"):
            loaded.run(np.zeros((1, 3, 64, 64), np.float32))
    # a tall photo alone is read in its canvas: the same answer as the batch gave it
    tall = Predictor(canvas_model, precision="fp32", runtime="torch").predict_one(inbox[3])
    assert tall.tasks["kind"]["probability"] == pytest.approx(
        torch_answers[3].tasks["kind"]["probability"], abs=1e-5)
    # evaluation and refits (run_dataset: a torch data loader) stack by shape too
    runtime = TorchRuntime.load(canvas_model, precision="fp32")
    dataset = PhotoDataset([Sample(path=p, label="") for p in inbox],
                           eval_transform(runtime.preprocess))
    outputs, rows = run_dataset(runtime, dataset, ["kind"], batch_size=4)
    assert rows.tolist() == list(range(len(inbox)))
    np.testing.assert_allclose(outputs["kind"].max(1),
                               [a.tasks["kind"]["probability"] for a in torch_answers],
                               atol=1e-5)


def test_canvases_change_the_models_fingerprint_and_export_key(canvas_model):
    info = read_info(canvas_model)
    plain = ModelInfo(architecture=info.architecture, classes=info.classes,
                      preprocess=Preprocess(**LETTERBOX), heads=info.heads)
    assert fingerprint_of(canvas_model, info).endswith(":canvases=96x64")
    assert fingerprint_of(canvas_model, plain) != fingerprint_of(canvas_model, info)
    assert graph_key(plain) != graph_key(info)
    assert TorchRuntime.load(canvas_model).fingerprint == fingerprint_of(canvas_model, info)


def test_int8_is_not_offered_for_a_model_with_canvases(canvas_model, tmp_path):
    from fashionlens.exporting.quantize import quantize_model

    with pytest.raises(ModelError, match="input shapes"):
        quantize_model(canvas_model, [])


def test_the_services_micro_batches_mix_shapes(canvas_model, tmp_path):
    from types import SimpleNamespace

    from fashionlens.service.engine import ServedModel

    runtime = TorchRuntime.load(canvas_model, precision="fp32")
    pre = runtime.preprocess
    photos = [write_photo(tmp_path / f"{i}.jpg", (60 * i, 90, 30), size=size, seed=i)
              for i, size in enumerate([(45, 60), (40, 60), (45, 60)])]
    tensors = [prepare_photo(p, pre) for p in photos]
    served = SimpleNamespace(runtime=runtime, heads=runtime.heads,
                             outputs=["kind", "colour", "vector"])
    answers = ServedModel.forward(served, tensors)
    for tensor, answer in zip(tensors, answers, strict=True):
        alone = runtime.run(tensor[None], ["kind", "vector"])
        np.testing.assert_allclose(answer.scores["kind"], alone["kind"][0], atol=1e-5)
        np.testing.assert_allclose(answer.vector, alone["vector"][0], atol=1e-5)


def test_a_run_trains_a_model_with_canvases_and_refuses_bad_ones(tmp_path):
    from fashionlens import load_config, train
    from fashionlens.errors import ConfigError

    from .helpers import TINY_TRAIN, make_folder_dataset

    data = make_folder_dataset(tmp_path / "data", per_class=6)
    for i, path in enumerate(sorted(data.rglob("*.jpg"))[::3]):  # a few tall photos
        write_photo(path, COLOURS[path.parent.name], size=(40, 60), seed=i)
    whole = [*TINY_TRAIN, f"data.path={data}", f"output.dir={tmp_path / 'runs'}",
             "output.name=canvas", "model.fit=letterbox", "model.height=64",
             "model.width=48"]
    result = train(load_config(overrides=whole, values={"model": {"canvases": [[96, 64]]}}))
    info = read_info(result.model_dir)
    assert info.preprocess.canvases == ((96, 64),) and info.preprocess.shapes[0] == (64, 48)
    assert result.metrics["num_images"] > 0  # validation ran through both canvases
    with pytest.raises(ConfigError, match=r"model.canvases\[0\]"):
        load_config(overrides=whole, values={"model": {"canvases": [[96]]}})
    with pytest.raises(ConfigError, match="model.canvases"):
        load_config(overrides=[*TINY_TRAIN, f"data.path={data}"],
                    values={"model": {"canvases": [[96, 64]]}})  # a crop model


def test_train_embedding_reads_each_photo_at_its_own_canvas():
    """The search vector learns photos at the shape it will read them at: a tall photo's
    plain and re-shot views at the tall canvas, and a batch of mixed photos gives each
    photo the features it gets alone."""
    from fashionlens.models import create_model
    from fashionlens.training.metric import ViewSet, view_features


    pre = Preprocess(**LETTERBOX, canvases=((96, 64),))
    photos = [pattern_photo(seed, size) for seed, size in
              enumerate([(48, 100), (80, 60), (50, 110), (64, 48), (40, 90)])]
    views = ViewSet(photos, pre, views=2, seed=0)
    assert [tuple(views[i].shape) for i in (0, 1)] == [(3, 3, 96, 64), (3, 3, 64, 48)]
    torch.manual_seed(0)
    model = create_model(TINY_ARCH, num_classes=2, pretrained="none").eval()
    device = torch.device("cpu")
    together = view_features(model, views, device, "fp32", 1, "views")
    assert together.shape[:2] == (5, 3)
    for i in range(5):
        alone = view_features(model, ViewSet(photos[i:i + 1], pre, views=2, seed=0),
                              device, "fp32", 1, "one")
        # the seeds differ by position, so only the plain view is the same photo
        np.testing.assert_allclose(together[i, 0], alone[0, 0], rtol=1e-4, atol=1e-5)

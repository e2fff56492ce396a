"""Predictor on photos, bytes and folders; evaluate() on labelled sets."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image

from fashionlens import Predictor, evaluate
from fashionlens.errors import DataError, FashionLensError, ImageError, ModelError
from fashionlens.inference import collect_images

from .helpers import COLOURS, TINY_TRAIN, solid_photo, write_corrupt_jpeg, write_photo


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor(model_dir, precision="fp32", threads=2)


@pytest.fixture
def photo_folder(tmp_path):
    """One fresh photo per colour (unseen seeds), plus a corrupt one, in sub-folders."""
    folder = tmp_path / "inbox"
    for i, (name, colour) in enumerate(sorted(COLOURS.items())):
        write_photo(folder / f"{i}_{name}.jpg", colour, size=(57, 71), seed=500 + i)
    write_corrupt_jpeg(folder / "3_broken.jpg")
    write_photo(folder / "sub" / "4_red.png", COLOURS["red"], seed=77, fmt="PNG")
    (folder / "readme.txt").write_text("ignored: not an image extension")
    return folder


def _check_probabilities(prediction, classes, top_k):
    assert prediction.error is None
    assert len(prediction.top_k) == top_k
    probs = [t["probability"] for t in prediction.top_k]
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert sum(probs) <= 1.0 + 1e-4
    assert probs == sorted(probs, reverse=True)
    assert prediction.label == prediction.top_k[0]["label"] and prediction.label in classes
    assert prediction.probability == probs[0]
    assert len({t["label"] for t in prediction.top_k}) == top_k


def test_predict_folder_with_one_corrupt_photo(predictor, photo_folder):
    paths = collect_images(photo_folder)
    assert [p.name for p in paths] == ["0_blue.jpg", "1_green.jpg", "2_red.jpg", "3_broken.jpg",
                                       "4_red.png"]
    results = list(predictor.predict_paths(paths, top_k=2, batch_size=2))
    assert [r.path for r in results] == [str(p) for p in paths]  # order kept across batches
    broken = results[3]
    assert broken.error and "truncated" in broken.error and broken.label is None
    assert broken.to_dict() == {"path": str(paths[3]), "error": broken.error}
    good = [r for r in results if r.error is None]
    assert len(good) == 4
    for r in good:
        _check_probabilities(r, predictor.classes, 2)
        answer = r.to_dict()
        assert set(answer) == {"path", "label", "probability", "top_k", "tasks", "unknown_score",
                               "unknown"}
        # The one task under its head's name says the same as the top level.
        assert answer["tasks"] == {"label": {k: answer[k] for k in ("label", "probability",
                                                                    "top_k")}}
    # the model scored perfectly on held-out solid colours; fresh ones must be right too
    assert [r.label for r in good] == ["blue", "green", "red", "red"]


def test_top_k_is_capped_by_the_number_of_classes(predictor, photo_folder):
    path = photo_folder / "0_blue.jpg"
    assert len(predictor.predict_one(path, top_k=1).top_k) == 1
    full = predictor.predict_one(path, top_k=10)
    _check_probabilities(full, predictor.classes, 3)
    assert sum(t["probability"] for t in full.top_k) == pytest.approx(1.0, abs=1e-4)
    assert len(predictor.predict_one(path, top_k=0).top_k) == 1


def test_predict_one_from_path_bytes_and_image(predictor, photo_folder):
    path = photo_folder / "1_green.jpg"
    from_path = predictor.predict_one(path)
    from_str = predictor.predict_one(str(path))
    from_bytes = predictor.predict_one(path.read_bytes(), name="upload.jpg")
    with Image.open(path) as img:
        from_image = predictor.predict_one(img.convert("RGB"))
    assert from_path.path == str(path) and from_bytes.path == "upload.jpg"
    assert from_image.path == "<image>"
    for result in (from_str, from_bytes, from_image):
        assert result.label == from_path.label == "green"
        assert result.probability == pytest.approx(from_path.probability, abs=1e-3)


def test_predict_one_refuses_unreadable_input(predictor, tmp_path):
    bad = write_corrupt_jpeg(tmp_path / "bad.jpg")
    with pytest.raises(ImageError) as info:
        predictor.predict_one(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(ImageError, match="upload-3"):
        predictor.predict_one(b"definitely not a jpeg", name="upload-3")
    with pytest.raises(ImageError, match="upload-4"):
        predictor.predict_one(b"definitely not a jpeg", name="upload-4", tta=True)


def test_tta_predictions(predictor, photo_folder):
    paths = collect_images(photo_folder)
    plain = list(predictor.predict_paths(paths, top_k=3))
    tta = list(predictor.predict_paths(paths, top_k=3, tta=True))
    assert [r.path for r in tta] == [str(p) for p in paths]
    assert tta[3].error and tta[3].label is None
    for a, b in zip(plain, tta, strict=True):
        if a.error is None:
            _check_probabilities(b, predictor.classes, 3)
            assert b.label == a.label
    buf = io.BytesIO()
    solid_photo(COLOURS["blue"], (50, 50), seed=3).save(buf, "PNG")
    assert predictor.predict_one(buf.getvalue(), tta=True).label == "blue"


def test_predictor_knows_its_model(predictor, model_dir):
    assert predictor.classes == sorted(COLOURS)
    assert predictor.model_info.architecture == "test_efficientnet"
    assert predictor.model_dir == model_dir


def test_predictor_on_a_missing_model(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        Predictor(tmp_path / "no-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a fashionlens model folder"):
        Predictor(tmp_path / "empty")


def test_collect_images(tmp_path):
    single = write_photo(tmp_path / "one.jpg")
    assert collect_images(single) == [single]
    with pytest.raises(FashionLensError, match="no such file"):
        collect_images(tmp_path / "missing.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FashionLensError, match="no image files"):
        collect_images(tmp_path / "empty")


# --- evaluate() ---------------------------------------------------------------------

def test_evaluate_on_a_folder(model_dir, tiny_folder):
    result = evaluate(model_dir, tiny_folder, precision="fp32")
    metrics = result.metrics
    assert metrics["num_images"] == 16 * len(COLOURS)
    assert metrics["accuracy"] > 0.6
    assert 0.0 <= metrics["macro_f1"] <= 1.0
    assert set(metrics["per_class"]) == set(COLOURS)
    assert result.unknown_labels == {} and result.skipped == {} and result.missing == []
    report = result.to_dict()
    assert report["model"] == str(model_dir) and report["accuracy"] == metrics["accuracy"]


def test_evaluate_on_a_csv_with_unknown_labels_missing_and_corrupt_files(model_dir, tmp_path):
    rows = ["photo,kind,split"]
    for i, (name, colour) in enumerate(sorted(COLOURS.items())):
        for k in range(3):
            write_photo(tmp_path / "pics" / f"{name}{k}.jpg", colour, seed=900 + 10 * i + k)
            rows.append(f"pics/{name}{k}.jpg,{name},{'test' if k else 'train'}")
    write_photo(tmp_path / "pics" / "purple.jpg", (140, 0, 140))
    rows += ["pics/purple.jpg,purple,test", "pics/gone.jpg,red,test"]
    write_corrupt_jpeg(tmp_path / "pics" / "broken.jpg")
    rows.append("pics/broken.jpg,green,test")
    csv_path = tmp_path / "eval.csv"
    csv_path.write_text("\n".join(rows) + "\n")

    result = evaluate(model_dir, csv_path, image_column="photo", target_column="kind",
                      precision="fp32")
    assert result.unknown_labels == {"purple": 1}
    assert result.missing == [str(tmp_path / "pics" / "gone.jpg")]
    assert list(result.skipped) == [str(tmp_path / "pics" / "broken.jpg")]
    assert result.metrics["num_images"] == 9
    assert result.metrics["accuracy"] > 0.6

    only_test = evaluate(model_dir, csv_path, image_column="photo", target_column="kind",
                         split_column="split", splits=["test"], tta=True, precision="fp32")
    assert only_test.metrics["num_images"] == 6

    with pytest.raises(DataError, match="split column"):
        evaluate(model_dir, csv_path, image_column="photo", target_column="kind",
                 splits=["test"])
    with pytest.raises(DataError, match="no rows"):
        evaluate(model_dir, csv_path, image_column="photo", target_column="kind",
                 split_column="split", splits=["holdout"])
    with pytest.raises(DataError, match="'label'"):
        evaluate(model_dir, csv_path, image_column="photo")


def test_evaluate_with_only_unknown_labels(model_dir, tmp_path):
    write_photo(tmp_path / "data" / "hat" / "a.jpg")
    with pytest.raises(DataError, match="none of its labels"):
        evaluate(model_dir, tmp_path / "data")


def test_evaluate_when_no_photo_is_readable(model_dir, tmp_path):
    write_corrupt_jpeg(tmp_path / "data" / "red" / "a.jpg")
    with pytest.raises(DataError, match="could be read"):
        evaluate(model_dir, tmp_path / "data")


def test_evaluate_reads_photos_as_predict_does(model_dir, tmp_path, monkeypatch):
    """evaluate scores the pixels predict reads: it once shrank each photo to the model's
    resize size and let the transform resize it again, and one home photo in 341 changed
    its answer between `evaluate` and `predict`."""
    import numpy as np

    import fashionlens.evaluation.evaluate as evaluation
    from fashionlens.inference.photos import prepare_photo

    for name, colour in sorted(COLOURS.items()):
        write_photo(tmp_path / "data" / name / "a.jpg", colour, size=(331, 257), seed=9)
    seen = {}
    real = evaluation.evaluate_dataset

    def spy(runtime, dataset, *args, **kwargs):
        seen["dataset"], seen["pre"] = dataset, runtime.info.preprocess
        return real(runtime, dataset, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_dataset", spy)
    evaluate(model_dir, tmp_path / "data")
    dataset = seen["dataset"]
    assert len(dataset) == len(COLOURS)
    for row, sample in enumerate(dataset.samples):
        read, _ = dataset[row]
        assert np.array_equal(read.numpy(), prepare_photo(sample.path, seen["pre"]))


@pytest.mark.parametrize("tta", [False, True])
def test_evaluate_lists_the_photos_it_could_not_read(model_dir, tmp_path, tta):
    for name, colour in sorted(COLOURS.items()):
        write_photo(tmp_path / "data" / name / "a.jpg", colour, seed=3)
    broken = write_corrupt_jpeg(tmp_path / "data" / "red" / "b.jpg")
    result = evaluate(model_dir, tmp_path / "data", tta=tta)
    assert list(result.skipped) == [str(broken)]
    assert result.metrics["num_images"] == len(COLOURS)


def test_evaluate_uses_the_training_column_names(tmp_path, tiny_folder):
    """A model trained on a CSV is evaluated on a CSV of the same layout without flags."""
    from fashionlens import load_config, train

    shop = tmp_path / "shop"
    (shop / "images").mkdir(parents=True)
    rows = ["id,garment"]
    for name in sorted(COLOURS):
        for k, path in enumerate(sorted((tiny_folder / name).iterdir())[:6]):
            shutil.copy(path, shop / "images" / f"{name}{k}.jpg")
            rows.append(f"{name}{k},{name}")
    (shop / "labels.csv").write_text("\n".join(rows) + "\n")
    run = train(load_config(overrides=[
        *TINY_TRAIN, f"data.path={shop / 'labels.csv'}", "data.image_column=id",
        "data.target_column=garment", "data.image_dir=images", "data.image_extension=.jpg",
        "train.epochs=1", f"output.dir={tmp_path / 'runs'}", "output.name=csv"]))
    result = evaluate(run.model_dir, shop / "labels.csv", precision="fp32")
    assert result.metrics["num_images"] == 18

""""Not a garment" rejection: the scorer's maths, calibration into model.json and back, and
the fields every prediction carries (CLI, API, catalog add)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fashionlens.cli.main import app
from fashionlens.curation.dataset import load_curation_set
from fashionlens.curation.review import build_queue
from fashionlens.curation.scan import scan_photos
from fashionlens.data.sources import DataSpec
from fashionlens.errors import ModelError
from fashionlens.inference import unknown as u
from fashionlens.inference.predictor import Predictor

from .helpers import write_pattern_photo


def _spec(**changes) -> u.UnknownSpec:
    params = {"features": ["msp", "prototype"], "mean": [0.5, 0.5], "std": [0.25, 0.5],
              "weights": [2.0, 1.0], "bias": 1.0, "prototypes": [[1.0, 0.0], [0.0, 1.0]]}
    params.update(changes)
    return u.UnknownSpec("combined", 0.5, params, head="label")


# --- the scorer on small arrays ---------------------------------------------------------


def test_raw_features_and_score_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5]])
    vectors = np.array([[2.0, 0.0], [1.0, 1.0]])  # scaled to unit length first
    raw = u.raw_features(["msp", "entropy", "prototype", "vector"], probabilities, vectors,
                         np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert raw.shape == (2, 5)
    np.testing.assert_allclose(raw[:, 0], [0.1, 0.5], atol=1e-9)
    entropy = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    np.testing.assert_allclose(raw[:, 1], [entropy, 1.0], atol=1e-6)
    np.testing.assert_allclose(raw[:, 2], [0.0, 1 - math.sqrt(0.5)], atol=1e-6)
    np.testing.assert_allclose(raw[:, 3:], [[1, 0], [math.sqrt(.5), math.sqrt(.5)]], atol=1e-6)

    scorer = u.UnknownScorer(_spec())
    scores = scorer.score(probabilities, vectors)
    z = (raw[:, [0, 2]] - 0.5) / np.array([0.25, 0.5])
    expected = 1 / (1 + np.exp(-(z @ np.array([2.0, 1.0]) + 1.0)))
    np.testing.assert_allclose(scores, expected, atol=1e-9)
    assert scores[1] > scores[0]  # the unsure, off-prototype photo is the less familiar
    assert scorer.decide(scores).tolist() == [False, True]
    assert scorer.decide(scores, threshold=0.0).tolist() == [True, True]
    assert u.answer(scorer, float(scores[0])) == {"unknown_score": round(float(scores[0]), 6),
                                                  "unknown": False}
    assert u.answer(None, None) == {"unknown_score": None, "unknown": None}


def test_threshold_refuses_at_most_the_share_asked():
    scores = np.linspace(0, 0.99, 100)
    t = u.threshold_for(scores, 0.02)
    assert (scores >= t).sum() == 2
    assert (scores >= u.threshold_for(scores, 0.0)).sum() == 0


def test_a_malformed_entry_names_the_field():
    with pytest.raises(ModelError, match="field 'unknown'.*method 'nope'"):
        u.UnknownSpec.from_dict({"method": "nope", "threshold": 0.5, "parameters": {}})
    with pytest.raises(ModelError, match="threshold 2.0 is not in 0-1"):
        u.UnknownSpec.from_dict({"method": "msp", "threshold": 2, "parameters": {}})
    with pytest.raises(ModelError, match="parameter 'weights'"):
        u.UnknownScorer(_spec(weights="x"))
    scorer = u.UnknownScorer(_spec(features=["msp", "vector"]))  # 1 + D columns, 2 weights
    with pytest.raises(ModelError, match="2 weights but .* give 4 features"):
        scorer.score(np.array([[0.9, 0.1]]), np.array([[1.0, 0.0, 0.0]]))


def test_fit_scorer_separates_and_keeps_the_false_rejection_asked():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8)

    def garments(n: int, seed: int) -> u.Outputs:
        r = np.random.default_rng(seed)
        labels = r.integers(0, 3, n)
        vectors = centres[labels] + 0.1 * r.normal(size=(n, 8))
        probs = np.full((n, 3), 0.05)
        probs[np.arange(n), labels] = 0.9
        return u.Outputs(probs, vectors, [f"g{seed}-{i}" for i in range(n)])

    def others(n: int) -> u.Outputs:
        return u.Outputs(rng.dirichlet(np.ones(3), n), rng.normal(size=(n, 8)),
                         [f"o{i}" for i in range(n)])

    reference, threshold_set, test = garments(200, 1), garments(100, 2), garments(100, 3)
    spec, report = u.fit_scorer(reference, reference, {"noise": others(100)}, threshold_set,
                                "label", test, {"noise": others(100)},
                                max_false_rejection=0.05)
    assert report["chosen"] in u.METHODS and set(report["methods"]) == set(u.METHODS)
    assert report["held_out"]["auroc"] > 0.95
    assert spec.calibration["threshold_set"]["false_rejection"] <= 0.05
    # what is stored reads back into the same scorer
    again = u.UnknownScorer(u.UnknownSpec.from_dict(json.loads(json.dumps(spec.to_dict()))))
    np.testing.assert_allclose(again.score(test.probabilities, test.vectors),
                               u.UnknownScorer(spec).score(test.probabilities, test.vectors),
                               atol=1e-6)


# --- calibration into model.json and every way a prediction is made ------------------


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, model_dir, tiny_folder) -> Path:
    """A copy of the tiny colour classifier calibrated against patterned photos."""
    root = tmp_path_factory.mktemp("unknown")
    model = shutil.copytree(model_dir, root / "model", ignore=shutil.ignore_patterns("export"))
    others = root / "patterns"
    for i in range(24):
        write_pattern_photo(others / f"pattern-{i:02d}.png", seed=i)
    result = CliRunner().invoke(app, ["calibrate-unknown", str(model), "--in", str(tiny_folder),
                                      "--out", str(others), "--method", "combined",
                                      "--max-false-rejection", "0.1", "--runtime", "torch",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["chosen"] == "combined" and report["saved"] is True
    return model


def test_calibration_is_written_to_model_json(calibrated, model_dir):
    data = json.loads((calibrated / "model.json").read_text())
    entry = data["unknown"]
    assert entry["method"] == "combined" and entry["head"] == "label"
    assert 0.0 <= entry["threshold"] <= 1.0
    assert entry["calibration"]["max_false_rejection"] == 0.1
    assert entry["calibration"]["threshold_set"]["false_rejection"] <= 0.1
    assert "auroc" in entry["calibration"]["held_out"]
    # everything else of the model description is as it was
    before = json.loads((model_dir / "model.json").read_text())
    assert {k: v for k, v in data.items() if k != "unknown"} == before


def test_an_uncalibrated_model_says_so_with_nulls(model_dir, tiny_folder):
    photo = next(tiny_folder.rglob("*.jpg"))
    result = CliRunner().invoke(app, ["predict", str(photo), "--model", str(model_dir),
                                      "--json", "--runtime", "torch"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout.splitlines()[0])
    assert answer["unknown_score"] is None and answer["unknown"] is None


def test_predict_json_carries_the_fields_and_the_override(calibrated, tiny_folder):
    photos = sorted(tiny_folder.rglob("*.jpg"))[:3]
    args = ["predict", str(photos[0]), "--model", str(calibrated), "--runtime", "torch"]
    answer = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout.splitlines()[0])
    threshold = json.loads((calibrated / "model.json").read_text())["unknown"]["threshold"]
    assert 0.0 <= answer["unknown_score"] <= 1.0
    assert answer["unknown"] == (answer["unknown_score"] >= threshold)
    forced = json.loads(CliRunner().invoke(app, [*args, "--json", "--unknown-threshold", "0"]
                                           ).stdout.splitlines()[0])
    assert forced["unknown"] is True and forced["unknown_score"] == answer["unknown_score"]
    table = CliRunner().invoke(app, [*args, "--unknown-threshold", "0"])
    assert "1 photo(s) do not look like a garment we know" in table.stdout
    assert "(unknown_score at or above 0)" in table.stdout  # the line in force, even 0
    bad = CliRunner().invoke(app, [*args, "--unknown-threshold", "1.5"])
    assert bad.exit_code == 2


def test_the_api_answers_with_the_fields(calibrated, tiny_folder):
    from fashionlens.service import ServiceSettings, create_app

    photo = sorted(tiny_folder.rglob("*.jpg"))[0].read_bytes()
    settings = ServiceSettings(models=[str(calibrated)], runtime="torch")
    with TestClient(create_app(settings)) as client:
        body = client.post("/api/v1/classify", content=photo,
                           headers={"Content-Type": "image/jpeg"}).json()
        assert 0.0 <= body["unknown_score"] <= 1.0
        assert body["unknown"] == (body["unknown_score"] >= body["unknown_threshold"])
        forced = client.post("/api/v1/classify?unknown_threshold=0", content=photo,
                             headers={"Content-Type": "image/jpeg"}).json()
        assert forced["unknown"] is True and forced["unknown_threshold"] == 0.0
        bad = client.post("/api/v1/classify?unknown_threshold=2", content=photo,
                          headers={"Content-Type": "image/jpeg"})
        assert bad.status_code == 422


def _digests(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}


def test_catalog_add_refuses_unknown_photos_and_names_them(calibrated, tiny_folder, tmp_path):
    catalog = tmp_path / "catalog"
    first = sorted(tiny_folder.rglob("*.jpg"))[0]
    built = CliRunner().invoke(app, ["catalog", "build", str(first.parent), "--catalog",
                                     str(catalog), "--model", str(calibrated),
                                     "--runtime", "torch"])
    assert built.exit_code == 0, built.output
    new = tmp_path / "new"
    write_pattern_photo(new / "odd-one.png", seed=99)
    shutil.copy(sorted(tiny_folder.rglob("*.jpg"))[-1], new / "garment.jpg")
    before = _digests(new)
    refused = CliRunner().invoke(app, ["catalog", "add", str(new), "--catalog", str(catalog),
                                       "--refuse-unknown", "--unknown-threshold", "0",
                                       "--runtime", "torch"])
    assert refused.exit_code != 0  # every photo refused: nothing added
    assert "odd-one.png" in refused.output and "garment.jpg" in refused.output
    assert "refused 2 photo(s) that do not look like a garment we know" in refused.output
    assert _digests(new) == before  # the user's photos are only read
    added = CliRunner().invoke(app, ["catalog", "add", str(new), "--catalog", str(catalog),
                                     "--refuse-unknown", "--unknown-threshold", "1",
                                     "--runtime", "torch"])
    assert added.exit_code == 0, added.output
    assert "added 2" in added.output
    unscreened = CliRunner().invoke(app, ["catalog", "add", str(new), "--catalog",
                                          str(catalog), "--unknown-threshold", "0.5"])
    assert "--refuse-unknown" in str(unscreened.exception)


def test_predictor_scores_every_photo_the_same_way_in_a_batch(calibrated, tiny_folder):
    photos = sorted(tiny_folder.rglob("*.jpg"))[:4]
    predictor = Predictor(calibrated, runtime="torch")
    batched = [p.unknown_score for p in predictor.predict_paths(photos, batch_size=4)]
    alone = [predictor.predict_one(p).unknown_score for p in photos]
    np.testing.assert_allclose(batched, alone, atol=1e-4)


def test_calibration_reads_a_csv_as_training_does(calibrated, tiny_folder, tmp_path):
    """Rows of the model's classes (and of the splits asked) only; --dry-run writes nothing."""
    photos = sorted(tiny_folder.rglob("*.jpg"))
    table = tmp_path / "labels.csv"
    lines = ["image,label,split"]
    lines += [f"{p},{p.parent.name},{'extra' if i % 4 else 'train'}"
              for i, p in enumerate(photos)]
    lines += [f"{photos[0]},Not sure,extra"]  # not a class of the model: left out
    table.write_text("\n".join(lines) + "\n")
    before = (calibrated / "model.json").read_bytes()
    others = tmp_path / "others"
    for i in range(8):
        write_pattern_photo(others / f"p{i}.png", seed=200 + i)
    args = ["calibrate-unknown", str(calibrated), "--in", str(table), "--out", str(others),
            "--method", "msp", "--runtime", "torch", "--dry-run", "--json"]
    result = CliRunner().invoke(app, [*args, "--in-split", "extra"])
    assert result.exit_code == 0, result.output
    photos_used = json.loads(result.stdout)["photos"]
    wanted = sum(1 for i in range(len(photos)) if i % 4)
    assert photos_used["garments_fit"] + photos_used["garments_threshold"] + \
        photos_used["garments_held_out"] == wanted
    assert (calibrated / "model.json").read_bytes() == before
    none = CliRunner().invoke(app, [*args, "--in-split", "validation"])
    assert "no row of the model's classes in split(s) validation" in str(none.exception)


def test_review_queue_lists_off_topic_photos(calibrated, model_dir, tiny_folder, tmp_path,
                                            monkeypatch):
    """The queue's off-topic check is the model's own unknown score (what `predict` says),
    from the scan's one forward pass, cached; an off-topic photo gets one entry."""
    data_dir = shutil.copytree(tiny_folder, tmp_path / "data")
    first_class = sorted(p for p in data_dir.iterdir() if p.is_dir())[0]
    for i in range(3):
        write_pattern_photo(first_class / f"odd-{i}.png", seed=100 + i)
    data = load_curation_set(DataSpec(path=str(data_dir)))
    paths = [p.path for p in data.photos]
    cache = tmp_path / "cache"
    scan = scan_photos(paths, data.source, model=str(calibrated), runtime="torch",
                       cache_dir=cache)
    expected = [p.unknown_score for p in
                Predictor(calibrated, runtime="torch").predict_paths(paths)]
    np.testing.assert_allclose(scan.unknown_scores, expected, atol=1e-3)
    assert scan.unknown_threshold == pytest.approx(
        json.loads((calibrated / "model.json").read_text())["unknown"]["threshold"])
    queue = build_queue(data, scan).queue
    off = [e for e in queue["entries"] if e["reason"] == "off-topic"]
    # (the scan's own scores: the threshold is one calibration photo's score, so a photo
    # can sit exactly on it, where predict's 6-decimal rounding would tip it over)
    flagged = {p.id for p, s in zip(data.photos, scan.unknown_scores, strict=True)
               if s >= scan.unknown_threshold}
    assert {e["photo"] for e in off} == flagged
    assert {Path(e["photo"]).name for e in off} >= {"odd-0.png", "odd-1.png", "odd-2.png"}
    assert queue["counts"]["off-topic"] == len(off)
    others = [e["photo"] for e in queue["entries"] if e["reason"] in ("mislabel", "outlier")]
    assert not flagged & set(others)
    again = scan_photos(paths, data.source, model=str(calibrated), runtime="torch",
                        cache_dir=cache)
    assert again.cached == len(paths)
    np.testing.assert_array_equal(again.unknown_scores, scan.unknown_scores)
    # --unknown-threshold moves the line: at 0 every photo is listed, and only there.
    monkeypatch.setenv("FASHIONLENS_CACHE", str(cache))
    result = CliRunner().invoke(app, ["review", str(data_dir), "--model", str(calibrated),
                                      "--runtime", "torch", "--unknown-threshold", "0",
                                      "--out", str(tmp_path / "queue.json")])
    assert result.exit_code == 0, result.output
    everything = json.loads((tmp_path / "queue.json").read_text())
    assert everything["unknown_threshold"] == 0
    assert everything["counts"]["off-topic"] == len(paths)
    assert everything["counts"]["mislabel"] == everything["counts"]["outlier"] == 0
    # A model never calibrated: no scores, and the queue says why there is no such check.
    plain = scan_photos(paths, data.source, model=str(model_dir), runtime="torch",
                        cache_dir=cache)
    assert plain.unknown_scores is None
    notes = build_queue(data, plain).queue["notes"]
    assert any("no off-topic check" in n for n in notes)


def test_calibration_with_too_few_garments_says_so(calibrated, tiny_folder, tmp_path):
    others = tmp_path / "others"
    for i in range(4):
        write_pattern_photo(others / f"p{i}.png", seed=300 + i)
    one = sorted(tiny_folder.rglob("*.jpg"))[0]
    result = CliRunner().invoke(app, ["calibrate-unknown", str(calibrated), "--in", str(one),
                                      "--out", str(others), "--runtime", "torch", "--dry-run"])
    assert result.exit_code != 0
    assert "too few garment photos (1 read" in str(result.exception) + result.output

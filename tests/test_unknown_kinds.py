""""Not a garment" calibrated with several kinds of garment photo (home photos, studio
shots, people): the threshold holds every kind's false rejection, the sources file and its
errors, and `calibrate-unknown --sources` writing the per-kind figures into model.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fashionlens.cli import unknown_sources as us
from fashionlens.cli.main import app
from fashionlens.errors import ConfigError, DataError, ModelError
from fashionlens.inference import unknown as u

from .helpers import run_main, write_pattern_photo

pytestmark = pytest.mark.timeout(240)


# --- the threshold, by kind ---------------------------------------------------------


def test_the_kind_that_needs_the_highest_threshold_decides_it():
    rng = np.random.default_rng(0)
    # the many home photos score low, the few studio shots higher: a pooled threshold
    # would refuse far more studio shots than the bound
    scores = {"home": rng.uniform(0.0, 0.5, 900), "studio": rng.uniform(0.3, 0.9, 100)}
    threshold, worst = u.threshold_for_kinds(scores, 0.02)
    assert worst == "studio"
    for s in scores.values():
        assert (s >= threshold).mean() <= 0.02
    pooled = u.threshold_for(np.concatenate(list(scores.values())), 0.02)
    assert (scores["studio"] >= pooled).mean() > 0.1
    assert threshold == pytest.approx(u.threshold_for(scores["studio"], 0.02))


def test_a_kind_without_photos_is_named():
    with pytest.raises(u.CalibrationError, match="people"):
        u.threshold_for_kinds({"home": np.ones(5), "people": np.zeros(0)}, 0.02)


def _garments(n: int, seed: int, spread: float, tag: str) -> u.Outputs:
    r = np.random.default_rng(seed)
    centres = np.eye(3, 8)
    labels = r.integers(0, 3, n)
    vectors = centres[labels] + spread * r.normal(size=(n, 8))
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), labels] = 0.9
    return u.Outputs(probs, vectors, [f"{tag}{seed}-{i}" for i in range(n)])


def _others(n: int, seed: int) -> u.Outputs:
    r = np.random.default_rng(seed)
    return u.Outputs(r.dirichlet(np.ones(3), n), r.normal(size=(n, 8)),
                     [f"o{seed}-{i}" for i in range(n)])


def test_fit_scorer_by_kind_keeps_each_kind_within_the_bound_and_reports_it():
    # "studio" garments spread wider than "home": they need the higher threshold
    threshold = {"home": _garments(300, 2, 0.05, "h"), "studio": _garments(100, 3, 0.3, "s")}
    test = {"home": _garments(300, 4, 0.05, "h"), "studio": _garments(100, 5, 0.3, "s")}
    fit = u.concat([_garments(200, 1, 0.05, "h"), _garments(100, 6, 0.3, "s")])
    spec, report = u.fit_scorer(fit, fit, {"noise": _others(200, 7)}, threshold, "label",
                                test, {"noise": _others(200, 8)}, method="combined",
                                max_false_rejection=0.05)
    kinds = spec.calibration["kinds"]
    assert set(kinds) == {"home", "studio"} and report["kinds"] == kinds
    assert spec.calibration["threshold_decided_by"] == "studio"
    for figures in kinds.values():
        assert figures["threshold_set"]["false_rejection"] <= 0.05
        assert figures["held_out"]["photos"] in (100, 300)
        assert 0.0 <= figures["held_out"]["auroc"] <= 1.0
    assert spec.threshold == pytest.approx(kinds["studio"]["threshold_needed"], abs=1e-6)
    assert report["methods"]["combined"]["held_out_false_rejection_by_kind"].keys() == \
        {"home", "studio"}
    # stored and read back, the same scorer and the same figures
    again = u.UnknownSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again.calibration["kinds"] == json.loads(json.dumps(kinds))


def test_an_entry_written_before_kinds_still_loads_and_scores():
    old = {"method": "combined", "head": "label", "threshold": 0.5,
           "parameters": {"features": ["msp", "prototype"], "mean": [0.5, 0.5],
                          "std": [0.25, 0.5], "weights": [2.0, 1.0], "bias": 1.0,
                          "prototypes": [[1.0, 0.0], [0.0, 1.0]]},
           "calibration": {"max_false_rejection": 0.02, "threshold_set": {}}}
    scorer = u.UnknownScorer(u.UnknownSpec.from_dict(old))
    scores = scorer.score(np.array([[0.9, 0.1]]), np.array([[1.0, 0.0]]))
    assert scores.shape == (1,) and 0.0 < scores[0] < 1.0


def test_a_search_vector_dimension_that_never_varies_gives_finite_scores():
    """A model may leave a vector dimension at 0 for every photo: its spread is 0, and the
    'head' scorer (which reads the whole vector) once stored std 0 for it, scoring NaN."""
    def dead_column(outputs: u.Outputs) -> u.Outputs:
        outputs.vectors[:, -1] = 0.0
        return outputs

    threshold = {"home": dead_column(_garments(200, 2, 0.05, "h"))}
    fit = dead_column(_garments(200, 1, 0.05, "h"))
    spec, _ = u.fit_scorer(fit, fit, {"noise": dead_column(_others(200, 7))}, threshold,
                           "label", method="head", max_false_rejection=0.05)
    assert min(spec.parameters["std"]) > 0
    scores = u.UnknownScorer(spec).score(fit.probabilities, fit.vectors)
    assert np.isfinite(scores).all()
    # and an entry stored with std 0 (before the floor) is read as unscaled
    stored = spec.to_dict()
    stored["parameters"]["std"][-1] = 0.0
    again = u.UnknownScorer(u.UnknownSpec.from_dict(stored))
    assert np.isfinite(again.score(fit.probabilities, fit.vectors)).all()


@pytest.mark.parametrize("method", ["prototype", "mahalanobis"])
def test_a_scorer_fitted_on_another_search_vector_says_so(method):
    spec, _ = u.fit_scorer(_garments(200, 1, 0.05, "h"), _garments(200, 1, 0.05, "h"),
                           {"noise": _others(200, 7)}, {"home": _garments(200, 2, 0.05, "h")},
                           "label", method=method, max_false_rejection=0.05)
    other = _garments(10, 3, 0.05, "h")
    with pytest.raises(ModelError, match="fitted on 8-d search vectors.*4-d"):
        u.UnknownScorer(spec).score(other.probabilities, other.vectors[:, :4])


# --- the sources file ------------------------------------------------------------------


def _photo_tree(root: Path) -> dict[str, list[Path]]:
    found = {}
    for name, seeds in (("home", range(0, 6)), ("studio", range(10, 16)),
                        ("other", range(20, 26))):
        found[name] = [write_pattern_photo(root / name / f"{name}-{i}.png", seed=i)
                       for i in seeds]
    return found


def test_sources_read_lists_folders_and_csv_selections(tmp_path):
    photos = _photo_tree(tmp_path / "photos")
    (tmp_path / "home-fit.txt").write_text("".join(f"{p}\n" for p in photos["home"][:3]))
    table = tmp_path / "labels.csv"
    rows = ["image,label,sender,split"] + [
        f"{p.stem},{'Skip' if i == 0 else 'Shirt'},s{i % 2},{'validation' if i else 'train'}"
        for i, p in enumerate(photos["studio"])]
    table.write_text("\n".join(rows) + "\n")
    (tmp_path / "sources.yaml").write_text(
        "known:\n"
        "  home: {fit: home-fit.txt, threshold: photos/home/home-3.png,"
        " test: [photos/home/home-4.png, photos/home/home-5.png]}\n"
        "  studio:\n"
        "    fit: photos/studio/studio-10.png\n"
        "    measure: {csv: labels.csv, image_column: image, image_dir: photos/studio,"
        " image_extension: .png, where: {split: validation}, exclude: {label: [Skip]},"
        " group_column: sender}\n"
        "other:\n"
        "  patterns: {fit: photos/other}\n"
        "  never: {test: photos/other/other-20.png}\n")
    sources = us.read_sources(tmp_path / "sources.yaml")
    assert len(sources.known["home"]["fit"].paths) == 3
    assert len(sources.known["home"]["test"].paths) == 2
    measure = sources.known["studio"]["measure"]
    assert [p.name for p in measure.paths] == [f"studio-{i}.png" for i in range(11, 16)]
    assert set(measure.groups.values()) == {"s0", "s1"}
    assert len(sources.other["patterns"]["fit"].paths) == 6
    assert "fit" not in sources.other["never"]


@pytest.mark.parametrize("text, message", [
    ("known: {home: {fit: a.png}}\nother: {x: {fit: a.png}}\n",
     "known.home: needs photos it was not fitted on"),
    ("known: {home: {fit: a.png, measure: a.png, test: a.png}}\nother: {x: {fit: a.png}}\n",
     "not both"),
    ("known: {home: {fit: a.png, measure: a.png, extra: a.png}}\nother: {x: {fit: a.png}}\n",
     "unknown role"),
    ("known: {home: {fit: a.png, measure: a.png}}\nother: {x: {test: a.png}}\n",
     "no 'other' source has 'fit'"),
    ("known: {home: {fit: a.png, measure: a.png}}\n", "field 'other'"),
    ("known: {home: {fit: a.png, measure: a.png}}\nother: {x: {fit: missing.png}}\n",
     "other.x.fit: .*missing.png"),
    ("known: {home: {fit: a.png, measure: {csv: t.csv, image_column: photo}}}\n"
     "other: {x: {fit: a.png}}\n", "no column 'photo'.*known.home.measure"),
    ("known: {home: {fit: a.png, measure: {csv: t.csv, image_column: image,"
     " where: {split: nope}}}}\nother: {x: {fit: a.png}}\n", "no row matches"),
    ("known: [\n", "not valid YAML"),
])
def test_a_bad_sources_file_names_the_file_and_the_field(tmp_path, text, message):
    write_pattern_photo(tmp_path / "a.png", seed=1)
    (tmp_path / "t.csv").write_text("image,split\na.png,train\n")
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    with pytest.raises((ConfigError, DataError), match=message) as caught:
        us.read_sources(path)
    assert str(path) in str(caught.value) or "t.csv" in str(caught.value)


def test_a_photo_on_both_sides_is_refused():
    garments = _garments(4, 1, 0.1, "/p/")
    sets = {"in_fit": garments, "in_threshold": {"home": garments}, "in_test": {},
            "out_fit": {"x": garments.take([0])}, "out_test": {}}
    with pytest.raises(DataError, match="other source 'x'"):
        us.check_apart(sets)


# --- the command ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def kinds_setup(tmp_path_factory, model_dir, tiny_folder) -> tuple[Path, Path]:
    """A copy of the tiny colour model and a sources file: two kinds of garment (two of
    its colour classes, then the third), pattern photos as not fashion."""
    root = tmp_path_factory.mktemp("kinds")
    model = shutil.copytree(model_dir, root / "model", ignore=shutil.ignore_patterns("export"))
    classes = sorted(p for p in tiny_folder.iterdir() if p.is_dir())
    kinds = {"home": classes[:2], "studio": classes[2:]}
    known = {}
    for kind, folders in kinds.items():
        photos = sorted(p for f in folders for p in f.glob("*.jpg"))
        (root / f"{kind}-fit.txt").write_text("".join(f"{p}\n" for p in photos[::2]))
        (root / f"{kind}-measure.txt").write_text("".join(f"{p}\n" for p in photos[1::2]))
        known[kind] = {"fit": f"{kind}-fit.txt", "measure": f"{kind}-measure.txt"}
    for i in range(32):
        write_pattern_photo(root / "patterns" / ("fit" if i % 2 else "test") / f"{i}.png",
                            seed=i)
    sources = root / "sources.yaml"
    sources.write_text(json.dumps({"known": known, "other": {
        "patterns": {"fit": "patterns/fit", "test": "patterns/test"}}}))
    return model, sources


def test_calibrate_unknown_with_sources_writes_figures_per_kind(kinds_setup, model_dir):
    model, sources = kinds_setup
    result = CliRunner().invoke(app, ["calibrate-unknown", str(model), "--sources",
                                      str(sources), "--method", "combined",
                                      "--max-false-rejection", "0.1", "--runtime", "torch",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["saved"] is True and set(report["kinds"]) == {"home", "studio"}
    entry = json.loads((model / "model.json").read_text())["unknown"]
    calibration = entry["calibration"]
    assert calibration["threshold_decided_by"] in ("home", "studio")
    for figures in calibration["kinds"].values():
        assert figures["threshold_set"]["false_rejection"] <= 0.1
        assert "false_rejection" in figures["held_out"]
    assert calibration["other_sources"]["fitted"] == ["patterns"]
    assert "patterns" in calibration["other_sources"]["held_out_auroc"]
    # every other field of the model description is as it was
    before = json.loads((model_dir / "model.json").read_text())
    after = json.loads((model / "model.json").read_text())
    assert {k: v for k, v in after.items() if k != "unknown"} == before
    # and the model scores photos with it
    from fashionlens.inference.predictor import Predictor

    photo = next(Path(p) for p in (sources.parent / "home-measure.txt").read_text().split())
    assert Predictor(model, runtime="torch").predict_one(photo).unknown_score is not None


def test_calibrate_unknown_table_names_each_kind(kinds_setup):
    model, sources = kinds_setup
    result = CliRunner().invoke(app, ["calibrate-unknown", str(model), "--sources",
                                      str(sources), "--method", "msp", "--runtime", "torch",
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "home" in result.output and "studio" in result.output
    assert "kept out of" in result.output


def test_sources_and_in_out_are_one_or_the_other(monkeypatch, capsys, kinds_setup, tmp_path):
    model, sources = kinds_setup
    code, _, err = run_main(monkeypatch, capsys, "calibrate-unknown", model, "--sources",
                            sources, "--in", tmp_path)
    assert code != 0 and "leave out --in" in err
    code, _, err = run_main(monkeypatch, capsys, "calibrate-unknown", model)
    assert code != 0 and "--sources FILE" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("known: {}\nother: {}\n")
    code, _, err = run_main(monkeypatch, capsys, "calibrate-unknown", model, "--sources", bad)
    assert code != 0 and "bad.yaml" in err and "Traceback" not in err

"""Curation: datasheet, review queue, decisions and the cleaned CSV, on tiny fixtures.

The queue tests give the photos synthetic embedding vectors (class clusters with known
flips and copies) so the checks run in well under a second; one test measures real
photos with the tiny trained model to check the scan and its cache.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fashionlens.atomic import write_json_atomic
from fashionlens.cli.main import app
from fashionlens.curation.dataset import load_curation_set
from fashionlens.curation.datasheet import read_person_text, write_datasheet
from fashionlens.curation.decisions import Decisions, apply_decisions, decisions_path
from fashionlens.curation.duplicates import find_duplicates
from fashionlens.curation.review import build_queue, read_queue
from fashionlens.curation.scan import scan_photos
from fashionlens.data.sources import DataSpec, load_labelled
from fashionlens.errors import DataError

from .helpers import COLOURS, write_corrupt_jpeg, write_pattern_photo

runner = CliRunner()
PER_CLASS = 20
FLIPS = {"blue03": "green", "red07": "blue"}  # photo id -> wrong label written


@pytest.fixture
def noisy(tmp_path) -> dict:
    """A CSV of 3 classes x 12 distinct photos, two labels flipped, one train photo copied
    byte for byte into validation (leakage), one copied with an edit inside train, and
    one broken file."""
    root = tmp_path / "shop"
    rows = []
    for c, name in enumerate(sorted(COLOURS)):
        for i in range(PER_CLASS):
            pid = f"{name}{i:02d}"
            write_pattern_photo(root / "images" / f"{pid}.png", seed=100 * c + i)
            rows.append({"image": f"images/{pid}.png", "label": FLIPS.get(pid, name),
                         "split": "validation" if i % 4 == 0 else "train",
                         "sender": f"s{i % 3}", "true": name})
    shutil.copy(root / "images" / "green05.png", root / "images" / "leak.png")
    rows.append({"image": "images/leak.png", "label": "green", "split": "validation",
                 "sender": "s9", "true": "green"})
    from PIL import Image

    with Image.open(root / "images" / "red02.png") as img:  # resized and re-encoded copy
        img.convert("RGB").resize((44, 44)).save(root / "images" / "red02-copy.jpg",
                                                  quality=80)
    rows.append({"image": "images/red02-copy.jpg", "label": "red", "split": "train",
                 "sender": "s1", "true": "red"})
    write_corrupt_jpeg(root / "images" / "broken.jpg")
    rows.append({"image": "images/broken.jpg", "label": "blue", "split": "train",
                 "sender": "s2", "true": "blue"})
    path = root / "labels.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"csv": path, "root": root, "rows": rows}


def synthetic_vectors(photos, true: dict[str, str], seed: int = 0) -> np.ndarray:
    """Unit vectors clustered by the photo's true class; a copy gets its original's
    vector (plus a little noise)."""
    rng = np.random.default_rng(seed)
    centres = {name: rng.normal(size=64) for name in sorted(COLOURS)}
    vectors, by_stem = [], {}
    for p in photos:
        stem = Path(p.id).stem
        base = {"leak": "green05", "red02-copy": "red02"}.get(stem)
        if base in by_stem:
            v = by_stem[base] + rng.normal(size=64) * 0.01
        else:
            v = centres[true[p.id]] + rng.normal(size=64) * 0.8
        by_stem[stem] = v
        vectors.append(v / np.linalg.norm(v))
    return np.asarray(vectors, np.float32)


def measured(noisy, tmp_path):
    spec = DataSpec(path=str(noisy["csv"]), split_column="split", group_column="sender")
    data = load_curation_set(spec)
    scan = scan_photos([p.path for p in data.photos], data.source, model=None,
                       cache_dir=tmp_path / "cache")
    true = {r["image"]: r["true"] for r in noisy["rows"]}
    scan.vectors = synthetic_vectors(data.photos, true)
    scan.vectors[~scan.readable] = 0
    return data, scan


def test_queue_finds_flips_duplicates_leakage_and_broken_files(noisy, tmp_path):
    data, scan = measured(noisy, tmp_path)
    queue = build_queue(data, scan).queue
    by_reason: dict[str, list[dict]] = {}
    for entry in queue["entries"]:
        by_reason.setdefault(entry["reason"], []).append(entry)
    assert [e["photo"] for e in by_reason["unreadable"]] == ["images/broken.jpg"]
    assert [e["photo"] for e in by_reason["leakage"]] == ["images/leak.png"], by_reason["leakage"]
    assert "identical files" in by_reason["leakage"][0]["why"]
    assert by_reason["leakage"][0]["related"][0]["photo"] == "images/green05.png"
    dup = {e["photo"] for e in by_reason["duplicate"]}
    assert dup == {"images/red02-copy.jpg"} and "perceptual hashes" in \
        by_reason["duplicate"][0]["why"]
    flagged = [e["photo"] for e in by_reason["mislabel"]]
    assert set(flagged[:2]) == {f"images/{pid}.png" for pid in FLIPS}, flagged
    first = by_reason["mislabel"][0]
    true = {r["image"]: r["true"] for r in noisy["rows"]}
    assert first["suggested"] == [true[first["photo"]]]
    assert 0 < first["confidence"] <= 1 and "never saw it" in first["why"]
    assert queue["counts"]["mislabel"] == len(flagged)
    assert len({e["id"] for e in queue["entries"]}) == len(queue["entries"])


def test_multilabel_queue_flags_a_wrong_tag(tmp_path):
    rng = np.random.default_rng(1)
    tags = ["bag", "hat", "shoes"]
    rows, truth = [], []
    for i in range(60):
        have = sorted(t for t in tags if rng.random() < 0.5) or ["bag"]
        truth.append(have)
        given = ["hat"] if i == 7 else have  # photo 7 is tagged 'hat' only
        write_pattern_photo(tmp_path / f"{i}.png", seed=i)
        rows.append({"image": f"{i}.png", "tags": ";".join(given)})
    with (tmp_path / "tags.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "tags"])
        writer.writeheader()
        writer.writerows(rows)
    data = load_curation_set(DataSpec(path=str(tmp_path / "tags.csv"), target_column="tags"),
                             tags_column="tags")
    assert data.multilabel and data.classes == tags
    scan = scan_photos([p.path for p in data.photos], data.source, model=None,
                       cache_dir=tmp_path / "cache")
    centres = rng.normal(size=(3, 24)) * 2
    vectors = np.array([sum(centres[tags.index(t)] for t in have) + rng.normal(size=24) * 0.3
                        for have in truth])
    scan.vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    queue = build_queue(data, scan).queue
    mis = [e for e in queue["entries"] if e["reason"] == "mislabel"]
    assert mis and mis[0]["photo"] == "7.png", [e["photo"] for e in mis[:3]]
    assert mis[0]["suggested"] == truth[7]


def test_datasheet_measures_leakage_and_keeps_person_text(noisy, tmp_path):
    data, scan = measured(noisy, tmp_path)
    sheet = tmp_path / "docs" / "datasheet.md"
    result = write_datasheet(data, scan, find_duplicates(scan), sheet, "shop")
    facts = result["facts"]
    assert facts["photos"] == 3 * PER_CLASS + 3 and facts["unreadable"] == ["images/broken.jpg"]
    assert facts["leaking_groups"] == 1 and facts["leaking_photos"] == 1
    assert facts["exact_duplicate_groups"] == 1
    assert facts["groups_in_both_splits"] == ["s0", "s1", "s2"]
    text = sheet.read_text()
    for heading in ("Motivation", "Composition", "Collection process",
                    "Preprocessing, cleaning and labelling", "Uses", "Distribution",
                    "Maintenance"):
        assert f"## {heading}\n" in text
    assert "**Leakage: 1 duplicate groups straddle train and validation**" in text
    assert "images/leak.png (validation, green)" in text
    page = result["html"].read_text()
    assert "data:image/png;base64," in page and "<h2>Composition</h2>" in page
    assert "src=\"http" not in page and "href=" not in page  # nothing outside the page
    assert (sheet.parent / "datasheet-plots" / "classes.png").is_file()
    # A person writes the motivation; regenerating keeps it and the other placeholders.
    mine = "Made by the shop to train its garment tagger.\n\nPaid for by the shop."
    start = text.index("<!-- person:motivation begin")
    end = text.index("<!-- person:motivation end -->")
    head = text[start:text.index("\n", start) + 1]
    sheet.write_text(text[:start] + head + mine + "\n" + text[end:])
    again = write_datasheet(data, scan, find_duplicates(scan), sheet, "shop")
    assert again["kept"] == ["motivation"]
    person = read_person_text(sheet)
    assert person["motivation"] == mine
    assert person["maintenance"].startswith("_To be written by a person")
    assert "<p>Paid for by the shop.</p>" in again["html"].read_text()


def test_decisions_saved_at_once_and_applied_to_a_csv_that_trains(noisy, tmp_path):
    data, scan = measured(noisy, tmp_path)
    queue = build_queue(data, scan).queue
    qpath = tmp_path / "review" / "queue.json"
    write_json_atomic(qpath, queue)
    queue = read_queue(qpath)
    decisions = Decisions(decisions_path(qpath), queue)
    decisions.record("images/leak.png", "drop")
    decisions.record("images/blue03.png", "relabel", ["blue"])
    decisions.record("images/red07.png", "keep")
    with pytest.raises(DataError, match="'purple' is not one of"):
        decisions.record("images/red07.png", "relabel", ["purple"])
    with pytest.raises(DataError, match="not in the review queue"):
        decisions.record("images/blue00.png", "drop")
    # Saved already: a new reader (a restarted server) sees all three.
    resumed = Decisions(decisions_path(qpath), queue)
    assert resumed.items["images/red07.png"]["action"] == "keep"
    resumed.undo("images/red07.png")
    assert "images/red07.png" not in Decisions(decisions_path(qpath), queue).items
    out = tmp_path / "clean" / "cleaned.csv"
    counts = apply_decisions(queue, resumed.items, out)
    rows_in = 3 * PER_CLASS + 3
    assert counts == {"rows": rows_in, "kept": rows_in - 1, "dropped": 1, "relabelled": 1}
    with out.open() as fh:
        rows = {Path(r["image"]).name: r for r in csv.DictReader(fh)}
    assert "leak.png" not in rows and rows["blue03.png"]["label"] == "blue"
    assert rows["red07.png"]["label"] == "blue" and rows["red07.png"]["sender"] == "s1"
    assert noisy["csv"].read_text().count("leak.png") == 1  # the original is untouched
    assert (noisy["root"] / "images" / "leak.png").is_file()
    loaded = load_labelled(DataSpec(path=str(out), split_column="split"))
    assert len(loaded.samples) == rows_in - 1 and all(s.path.is_file() for s in loaded.samples
                                             if s.path.name != "broken.jpg")
    with pytest.raises(DataError, match="is the original dataset"):
        apply_decisions(queue, {}, noisy["csv"])


def test_scan_with_the_model_and_its_cache(tiny_folder, model_dir, tmp_path):
    data = load_curation_set(DataSpec(path=str(tiny_folder)))
    paths = [p.path for p in data.photos]
    first = scan_photos(paths, data.source, model=str(model_dir), runtime="torch",
                        cache_dir=tmp_path)
    assert first.vectors.shape[0] == len(paths) and first.cached == 0
    assert np.allclose(np.linalg.norm(first.vectors, axis=1), 1, atol=1e-3)
    assert first.formats[0] == "JPEG" and first.width[0] == 48
    again = scan_photos(paths, data.source, model=str(model_dir), runtime="torch",
                        cache_dir=tmp_path)
    assert again.cached == len(paths) and np.allclose(again.vectors, first.vectors)


def test_cli_datasheet_review_and_apply(noisy, tmp_path, model_dir, monkeypatch):
    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))
    common = ["--split-column", "split", "--group-column", "sender"]
    sheet = tmp_path / "sheet.md"
    result = runner.invoke(app, ["datasheet", str(noisy["csv"]), *common, "--no-model",
                                 "--out", str(sheet), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["leaking_groups"] == 1 and sheet.is_file()
    qpath = tmp_path / "q.json"
    result = runner.invoke(app, ["review", str(noisy["csv"]), *common, "--model",
                                 str(model_dir), "--runtime", "torch", "--out", str(qpath)])
    assert result.exit_code == 0, result.output
    assert "review it: fashionlens serve --review" in result.stdout
    queue = read_queue(qpath)
    assert queue["counts"]["leakage"] == 1 and queue["counts"]["unreadable"] == 1
    result = runner.invoke(app, ["review", "apply", str(qpath)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "q.cleaned.csv").is_file() and "0 decisions" in result.stdout


def test_cli_errors_name_the_file_and_column(noisy, tmp_path):
    result = runner.invoke(app, ["review", str(noisy["csv"]), "--target-column", "kind",
                                 "--no-model"])
    assert isinstance(result.exception, DataError)
    assert "kind" in str(result.exception) and "labels.csv" in str(result.exception)
    bad = tmp_path / "queue.json"
    bad.write_text('{"format": "something else"}')
    result = runner.invoke(app, ["review", "apply", str(bad)])
    assert isinstance(result.exception, DataError)
    assert str(bad) in str(result.exception) and "not a fashionlens review queue" in \
        str(result.exception)
    result = runner.invoke(app, ["datasheet", str(noisy["csv"]), "--no-model", "--out",
                                 str(tmp_path / "sheet.txt")])
    assert isinstance(result.exception, DataError) and "sheet.txt" in str(result.exception)

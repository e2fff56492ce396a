"""Issue 18, the review area: what a review queue may serve over HTTP, what `review --out`
may overwrite, and the inputs of `review`, `datasheet` and `calibrate-unknown` that
must end in a clear message (exit 2), never a traceback.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fashionlens.service import Engine, ServiceSettings, create_app

from .helpers import run_main, write_corrupt_jpeg, write_pattern_photo, write_photo

KEY = "review-key-0123456789"
WITH_KEY = {"X-API-Key": KEY}


_main = run_main


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def shop(tmp_path) -> dict:
    """A CSV of 12 photos with a copy (a queue entry); a row naming /etc/passwd; a row
    naming a symlink in the photo folder that points to a photo outside it."""
    root = tmp_path / "shop"
    rows = []
    for i in range(12):
        name = ("red", "blue", "green")[i % 3]
        write_pattern_photo(root / "images" / f"{name}{i}.png", seed=i)
        rows.append({"image": f"images/{name}{i}.png", "label": name})
    shutil.copy(root / "images" / "red0.png", root / "images" / "red0-copy.png")
    rows.append({"image": "images/red0-copy.png", "label": "red"})
    write_pattern_photo(tmp_path / "elsewhere" / "secret.png", seed=99)
    (root / "images" / "link.png").symlink_to(tmp_path / "elsewhere" / "secret.png")
    rows += [{"image": "/etc/passwd", "label": "red"},
             {"image": "images/link.png", "label": "blue"}]
    return {"root": root, "csv": _write_csv(root / "labels.csv", rows), "tmp": tmp_path}


@pytest.fixture(scope="module")
def engine():
    engine = Engine(ServiceSettings(models=["default"], api_key=KEY))
    yield engine
    engine.close()


def _client(engine, queue: Path, **settings) -> TestClient:
    options = {"api_key": KEY, "review": str(queue), **settings}
    return TestClient(create_app(ServiceSettings(**options), engine=engine))


def test_review_serves_only_images_under_the_dataset_and_with_the_key(
        shop, engine, monkeypatch, capsys, tmp_path):
    queue_path = tmp_path / "queue.json"
    code, out, err = _main(monkeypatch, capsys, "review", shop["csv"], "--no-model",
                           "--out", queue_path)
    assert code == 0, err
    # The row naming /etc/passwd and the symlink out of the folder are not reviewed.
    assert "2 photos not reviewed: outside" in " ".join(err.split())
    queue = json.loads(queue_path.read_text())
    listed = {p["photo"] for e in queue["entries"] for p in [e, *e["related"]]}
    assert listed == {"images/red0.png", "images/red0-copy.png"}
    with _client(engine, queue_path) as client:
        # Reads need the key: the queue and its photos are the shop's.
        assert client.get("/api/v1/review").status_code == 401
        assert client.get("/api/v1/review/photo",
                          params={"photo": "images/red0.png"}).status_code == 401
        answer = client.get("/api/v1/review", headers=WITH_KEY)
        assert answer.status_code == 200
        text = answer.text
        assert str(tmp_path) not in text and "/etc/passwd" not in text  # no absolute path
        assert answer.json()["queue"] == "queue.json"
        photo = client.get("/api/v1/review/photo", params={"photo": "images/red0.png"},
                           headers=WITH_KEY)
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
        assert photo.content == (shop["root"] / "images" / "red0.png").read_bytes()
        for name in ("/etc/passwd", "../elsewhere/secret.png", "images/link.png"):
            refused = client.get("/api/v1/review/photo", params={"photo": name},
                                 headers=WITH_KEY)
            assert refused.status_code == 404, name
            assert refused.json()["error"]["code"] == "unknown_photo"
    # A queue edited (or broken) to name other files: still only images under its folder.
    (shop["root"] / "notes.png").write_text("not a photo\n")
    for name in ("/etc/passwd", "../elsewhere/secret.png", "images/link.png", "notes.png"):
        queue["entries"].append({**queue["entries"][0], "photo": name, "related": []})
    queue_path.write_text(json.dumps(queue))
    with _client(engine, queue_path) as client:
        for name, status, code in [("/etc/passwd", 403, "outside_dataset"),
                                   ("../elsewhere/secret.png", 403, "outside_dataset"),
                                   ("images/link.png", 403, "outside_dataset"),
                                   ("notes.png", 404, "not_an_image")]:
            refused = client.get("/api/v1/review/photo", params={"photo": name},
                                 headers=WITH_KEY)
            assert refused.status_code == status, (name, refused.text)
            assert refused.json()["error"]["code"] == code
            assert "root:" not in refused.text  # (the file's content is never answered)
    # The operator may open the queue to anyone (decisions still need the key) ...
    with _client(engine, queue_path, public_review=True) as client:
        assert client.get("/api/v1/review").status_code == 200
        decision = {"photo": "images/red0-copy.png", "action": "keep"}
        assert client.post("/api/v1/review/decisions", json=decision).status_code == 401
    # ... and a service without a key shows it to nobody.
    with _client(engine, queue_path, api_key=None) as client:
        refused = client.get("/api/v1/review")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "review_needs_key"


def test_review_image_root_reviews_photos_under_it(shop, monkeypatch, capsys, tmp_path):
    queue_path = tmp_path / "queue.json"
    code, _, err = _main(monkeypatch, capsys, "review", shop["csv"], "--no-model", "--out",
                         queue_path, "--image-root", tmp_path)
    assert code == 0, err
    assert "1 photos not reviewed" in " ".join(err.split())  # /etc/passwd only
    queue = json.loads(queue_path.read_text())
    assert queue["base"] == str(tmp_path.resolve())
    assert all(not Path(e["photo"]).is_absolute() for e in queue["entries"])


def test_review_out_never_replaces_the_dataset_or_another_file(shop, monkeypatch, capsys,
                                                               tmp_path):
    data = shop["csv"]
    before = data.read_bytes()
    code, _, err = _main(monkeypatch, capsys, "review", data, "--no-model", "--out", data)
    assert code == 2 and "is the dataset being reviewed" in " ".join(err.split())
    assert data.read_bytes() == before
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}\n')
    code, _, err = _main(monkeypatch, capsys, "review", data, "--no-model", "--out", notes)
    assert code == 2 and "is not a review queue this tool wrote" in " ".join(err.split())
    assert notes.read_text() == '{"mine": true}\n'
    # An earlier queue is replaced, as before.
    queue = tmp_path / "queue.json"
    for _ in range(2):
        code, _, err = _main(monkeypatch, capsys, "review", data, "--no-model", "--out",
                             queue)
        assert code == 0, err


# --- no tracebacks ----------------------------------------------------------------------


@pytest.fixture
def inputs(shop, tmp_path, embedding_model_dir, tiny_folder) -> dict:
    """Files for the cases below: broken queues, a small garment folder (one file name
    not UTF-8), other photos."""
    qdir = tmp_path / "queues"
    qdir.mkdir()
    (qdir / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (qdir / "cut.json").write_text('{"format": "fashionlens-review", "entries": [')
    (qdir / "bare.json").write_text('{"format": "fashionlens-review", "entries": []}')
    entry = {"format": "fashionlens-review", "entries": ["a"], "base": str(tmp_path),
             "label_column": "label", "classes": ["red"],
             "dataset": {"path": str(shop["csv"]), "image_column": "image",
                         "target_column": "label"}}
    (qdir / "entry.json").write_text(json.dumps(entry))
    good = {**entry, "entries": []}
    (qdir / "good.json").write_text(json.dumps(good))
    (qdir / "clean.json").write_text(json.dumps(good))
    (qdir / "good.decisions.json").write_text("[" * 100_000 + "]" * 100_000)
    garments = tmp_path / "garments"
    for folder in sorted(tiny_folder.iterdir()):
        for photo in sorted(folder.iterdir())[:6]:
            (garments / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, garments / folder.name / photo.name)
    odd = garments / "red"
    shutil.copy(next(odd.iterdir()), os.fsdecode(bytes(odd) + b"/caf\xe9-\xff.jpg"))
    others = tmp_path / "others"
    for i in range(8):
        write_pattern_photo(others / f"pattern-{i}.png", seed=i)
    write_photo(tmp_path / "one" / "thing.png", (5, 5, 5))
    write_corrupt_jpeg(tmp_path / "broken.jpg")
    return {"tmp": tmp_path, "q": qdir, "csv": shop["csv"], "model": embedding_model_dir,
            "garments": garments, "others": others, "one": tmp_path / "one"}


CALIBRATE = ["--runtime", "torch", "--dry-run", "--method", "msp"]
CASES = [
    ("queue nested 100,000 deep", lambda w: ["review", "apply", w["q"] / "deep.json"],
     2, "nested too deeply"),
    ("queue cut short", lambda w: ["review", "apply", w["q"] / "cut.json"],
     2, "not a readable review queue"),
    ("queue without its dataset", lambda w: ["review", "apply", w["q"] / "bare.json"],
     2, "field 'dataset' is missing"),
    ("queue entry not an object", lambda w: ["review", "apply", w["q"] / "entry.json"],
     2, "field 'entries[0]' is str"),
    ("decisions nested 100,000 deep", lambda w: ["review", "apply", w["q"] / "good.json",
                                                 "--out", w["tmp"] / "clean.csv"],
     2, "nested too deeply"),
    ("cleaned CSV where nothing can be written",
     lambda w: ["review", "apply", w["q"] / "clean.json", "--out", "/proc/clean.csv"],
     2, "/proc/clean.csv: cannot write the cleaned CSV there"),
    ("review queue where nothing can be written",
     lambda w: ["review", w["csv"], "--no-model", "--out", "/proc/queue.json"],
     2, "/proc/queue.json: cannot write the review queue there"),
    ("datasheet --separator ''",
     lambda w: ["datasheet", w["csv"], "--no-model", "--separator", "",
                "--out", w["tmp"] / "d.md"],
     2, "--separator is empty"),
    ("datasheet --out /proc/x.md",
     lambda w: ["datasheet", w["csv"], "--no-model", "--out", "/proc/x.md"],
     2, "/proc/x.md: cannot write the datasheet there"),
    ("datasheet --tags nosuch",
     lambda w: ["datasheet", w["csv"], "--no-model", "--tags", "nosuch",
                "--out", w["tmp"] / "d.md"],
     2, "no column 'nosuch' (asked for with --tags); columns are: image, label"),
    ("calibrate-unknown with one --out photo",
     lambda w: ["calibrate-unknown", w["model"], "--in", w["garments"], "--out", w["one"],
                *CALIBRATE],
     2, "too few other photos: --out"),
    ("calibrate-unknown --in equal to --out",
     lambda w: ["calibrate-unknown", w["model"], "--in", w["garments"], "--out",
                w["garments"], *CALIBRATE],
     2, "photos are also garment photos given with --in"),
    ("calibrate-unknown, a file name that is not UTF-8",
     lambda w: ["calibrate-unknown", w["model"], "--in", w["garments"], "--out",
                w["others"], *CALIBRATE],
     0, "chosen: msp"),
]


@pytest.mark.parametrize("args, code, message", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_no_traceback(inputs, monkeypatch, capsys, args, code, message):
    got, out, err = _main(monkeypatch, capsys, *args(inputs))
    text = " ".join((out + err).split())
    assert got == code, text
    assert message in text
    assert "Traceback" not in text

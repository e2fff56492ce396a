"""Issue 18, inference: no traceback where a model folder lost its weights but kept its
export. An export is run only as a copy of the weights it was made from (its manifest
records their digest, and the digest names the vectors it makes), so the answer is a
clear error naming the missing file, exit 2, on every runtime that reads the export."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from fashionlens.inference import SAMPLE_PHOTOS
from fashionlens.models.resolve import BUNDLED_DIR

PHOTO = SAMPLE_PHOTOS / "Dress" / "dress-1.jpg"


@pytest.fixture(scope="module")
def weightless(tmp_path_factory):
    """A copy of the bundled clothing10 model (with its shipped export), weights deleted."""
    source = BUNDLED_DIR / "clothing10"
    if not (source / "export" / "onnx" / "export.json").is_file():
        pytest.skip("the bundled model's export is not installed")
    folder = shutil.copytree(source, tmp_path_factory.mktemp("model") / "clothing10")
    (folder / "model.safetensors").unlink()
    return folder


def _run_main(*args, cache) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASHIONLENS_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "COLUMNS": "200", "FASHIONLENS_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "fashionlens.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


# (case id, the command's arguments given the model folder and a scratch folder)
CASES = [
    ("predict --runtime auto", lambda m, d: ["predict", PHOTO, "--model", m,
                                             "--runtime", "auto"]),
    ("predict --runtime onnxruntime", lambda m, d: ["predict", PHOTO, "--model", m,
                                                    "--runtime", "onnxruntime"]),
    ("predict --runtime openvino-int8", lambda m, d: ["predict", PHOTO, "--model", m,
                                                      "--runtime", "openvino-int8"]),
    ("catalog build --model", lambda m, d: ["catalog", "build", SAMPLE_PHOTOS / "Dress",
                                            "--model", m, "--catalog", d / "catalog"]),
    ("evaluate", lambda m, d: ["evaluate", m, "--data", SAMPLE_PHOTOS]),
]


@pytest.mark.parametrize("args", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_no_traceback(weightless, tmp_path, args):
    proc = _run_main(*args(weightless, tmp_path), cache=tmp_path / "cache")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert "model.safetensors is missing" in " ".join(output.split()), output


# --- the service: one object answers a photo query ------------------------------------


def test_one_object_answers_a_photo_query(tmp_path):
    """"Similar items" for an upload is one call on one object (`Engine.photo_search()`
    gives it): the photo's pass, the output cache and the catalog's search, where the
    route used to carry the query encoder's key, draft size, transform and submit into
    `Engine.photo_output` and then search through the catalog's holder. A classify of the
    same photo first (the served model's own pass) leaves the model one run for both."""
    import asyncio

    from fashionlens.service import Engine, ServiceSettings
    from fashionlens.service.demo import build_demo_catalog

    folder = build_demo_catalog(tmp_path / "catalog", limit=1)
    engine = Engine(ServiceSettings(catalog=str(folder), models=["default"]))
    photo = (SAMPLE_PHOTOS / "Hat" / "hat-1.jpg").read_bytes()

    async def scenario():
        search = await engine.photo_search()
        served = engine.model(None)
        assert search.model is served  # the default model makes the catalog's vectors
        runs = served.batcher.items
        classified = await served.photos.output(photo, "hat.jpg")
        found, matches = await search.similar(photo, "hat.jpg", k=3)
        return runs, classified, found, matches, served.batcher.items

    try:
        runs, classified, found, matches, after = asyncio.run(scenario())
    finally:
        engine.close()
    assert after - runs == 1  # one pass answered classify and similar
    assert (found.width, found.height) == (classified.width, classified.height)
    assert [m.item.id for m in matches][0] == "Hat/hat-1" and len(matches) == 3
    assert matches[0].similarity > 0.99

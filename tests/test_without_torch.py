"""The plain install has no torch (nor scikit-learn, matplotlib, onnx, ONNX Runtime):
predict, catalog, search and serve must work without them
on the bundled models (their shipped ONNX exports), and commands that need them must
say which extra to install. Those packages are made unimportable in a fresh
interpreter (None in sys.modules: `import` fails and `find_spec` finds nothing, as when
they are not installed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fashionlens.models.resolve import BUNDLED_DIR, SAMPLE_PHOTOS

HEAVY = ("torch", "timm", "torchvision", "sklearn", "matplotlib", "onnx", "onnxruntime")
MARKER = "HEAVY-MODULES="
BLOCK = f"""
import json, sys
for name in {HEAVY!r}:
    sys.modules[name] = None
"""
CLI = BLOCK + f"""
from fashionlens.cli.main import main
sys.argv = ["fashionlens", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
loaded = [m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in {HEAVY!r}]
print()
print({MARKER!r} + json.dumps({{"code": code, "heavy": loaded}}))
"""

pytestmark = pytest.mark.skipif(not (BUNDLED_DIR / "clothing10" / "export").is_dir(),
                                reason="the bundled models' exports are not installed")


def _run(code: str, *args: str, cwd: Path | None = None) -> tuple[dict, str, str]:
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    assert lines, (done.stdout, done.stderr)
    return json.loads(lines[-1][len(MARKER):]), done.stdout, done.stderr


def test_predict_runs_the_bundled_models_without_torch():
    from fashionlens.models import read_info
    from fashionlens.models.resolve import DEFAULT_MODEL

    photo = SAMPLE_PHOTOS / "Dress" / "dress-1.jpg"
    report, output, errors = _run(CLI, "predict", "--json", photo)  # the default: every head
    assert report == {"code": 0, "heavy": []}, errors
    answer = json.loads(output.splitlines()[0])
    assert answer["path"] == str(photo)
    assert list(answer["tasks"]) == [h.name for h in read_info(DEFAULT_MODEL).scored_heads]
    report, output, errors = _run(CLI, "predict", "--model", "clothing10", "--json", photo)
    assert report == {"code": 0, "heavy": []}, errors
    answer = json.loads(output.splitlines()[0])
    assert answer["path"] == str(photo) and answer["label"] == "Dress"
    assert 0 <= answer["unknown_score"] <= 1 and answer["unknown"] is False  # calibrated
    report, output, errors = _run(CLI, "predict", "--model", "products", "--json", photo)
    assert report == {"code": 0, "heavy": []}, errors
    tasks = json.loads(output.splitlines()[0])["tasks"]
    assert set(tasks) == {"articleType", "baseColour", "season", "usage", "gender"}


def test_catalog_and_search_without_torch(tmp_path):
    catalog = tmp_path / "catalog"
    report, output, errors = _run(CLI, "catalog", "build", SAMPLE_PHOTOS / "Dress",
                                  "--catalog", catalog)
    assert report == {"code": 0, "heavy": []}, errors
    photo = next((SAMPLE_PHOTOS / "Dress").glob("*.jpg"))
    report, output, errors = _run(CLI, "search", photo, "--catalog", catalog, "-k", "2",
                                  "--json")
    assert report == {"code": 0, "heavy": []}, errors
    assert '"distance"' in output or '"score"' in output


def test_the_service_classifies_without_torch():
    code = BLOCK + f"""
from fastapi.testclient import TestClient
from fashionlens.service import ServiceSettings, create_app
photo = {str(SAMPLE_PHOTOS / "Dress" / "dress-1.jpg")!r}
with TestClient(create_app(ServiceSettings(models=["default"]))) as client:
    with open(photo, "rb") as fh:
        response = client.post("/api/v1/classify", files={{"file": ("d.jpg", fh, "image/jpeg")}})
loaded = [m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in {HEAVY!r}]
print({MARKER!r} + json.dumps({{"code": response.status_code, "heavy": loaded,
                                 "body": response.json()}}))
"""
    report, _, errors = _run(code)
    assert report["code"] == 200 and report["heavy"] == [], (report, errors)
    assert "Dress" in json.dumps(report["body"])


def test_training_says_which_extra_it_needs(tmp_path):
    report, _, errors = _run(CLI, "train", "--data", SAMPLE_PHOTOS, "--epochs", "1",
                             "--output", tmp_path)
    assert report["code"] == 2
    assert "'fashionlens[train]'" in errors and "Traceback" not in errors

"""Issue 18, "what a new user tripped on": `predict`'s input handling (an empty argument, a
photo list with a BOM, a pipe where a list belongs, the 'not a garment' threshold printed
with every digit). The web app's Models and Try pages are checked in a real browser in
tests/test_webapp_browser.py."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fashionlens.cli.main import app
from fashionlens.inference import SAMPLE_PHOTOS

runner = CliRunner()


def _run_main(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASHIONLENS_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "fashionlens.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


def _fifo(folder, name: str) -> str:
    path = folder / name
    os.mkfifo(path)
    return str(path)


# (case id, how to make the argument in a folder, words the message must contain)
CASES = [
    ("empty argument", lambda d: "", "the photo argument is empty"),
    ("blank argument", lambda d: "   ", "the photo argument is empty"),
    ("pipe as photo list", lambda d: _fifo(d, "photos.txt"), "not a regular file or folder"),
    ("pipe as CSV", lambda d: _fifo(d, "photos.csv"), "not a regular file or folder"),
]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize(("make", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_predict_refuses_bad_input_without_traceback(tmp_path, make, words):
    """Each is refused at once with a message (no hang on a pipe, no prediction of the
    working directory for ''), exit 2, no traceback. The working directory holds a photo,
    so '' predicting it would exit 0."""
    Image.new("RGB", (40, 48), (200, 30, 30)).save(tmp_path / "red.jpg")
    proc = _run_main("predict", make(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_photo_list_with_a_byte_order_mark(tmp_path):
    """A list saved by Windows Notepad ('UTF-8 with BOM'): its first photo is read, not
    reported missing."""
    photos = [SAMPLE_PHOTOS / "Dress" / "dress-1.jpg", SAMPLE_PHOTOS / "Hat" / "hat-1.jpg"]
    listing = tmp_path / "photos.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + "\n".join(map(str, photos)).encode() + b"\n")
    result = runner.invoke(app, ["predict", "--json", str(listing)])
    assert result.exit_code == 0, (result.output, result.exception)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and "error" not in result.stdout, result.stdout
    assert "Dress" in lines[0] and "Hat" in lines[1]


def test_unknown_threshold_printed_with_every_digit(tmp_path):
    """clothing10's threshold is 0.975371: the summary says so, not 0.975 (a photo
    scoring 0.975 is not flagged)."""
    y, x = np.mgrid[0:1:240j, 0:1:240j]  # a colour gradient: unknown_score ~0.9995
    buffer = io.BytesIO()
    Image.fromarray((np.stack([x, y, 1 - x], -1) * 255).astype(np.uint8)).save(buffer, "PNG")
    (tmp_path / "gradient.png").write_bytes(buffer.getvalue())
    result = runner.invoke(app, ["predict", "--model", "clothing10", str(tmp_path)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)
    assert "unknown_score at or above 0.975371" in " ".join(result.stdout.split())


README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_threshold_and_test_command_are_true():
    """The README prints the bundled model's 'not a garment' threshold as predict does
    (every digit), says what the browser tests need, and says where the example photos
    of "Not a garment" come from (they are not beside a checkout)."""
    from fashionlens.cli.predict import threshold_text
    from fashionlens.inference import DEFAULT_MODEL
    from fashionlens.models import read_info

    text = README.read_text(encoding="utf-8")
    info = read_info(DEFAULT_MODEL)
    shown = re.findall(r"unknown_score at or above ([0-9.]+)\)", text)
    # Checked against whichever model is bundled as the default: replacing it means
    # rewriting the README's examples from its own output.
    assert info.unknown, (f"the bundled default model ({info.name}) is not calibrated for "
                          "'not a garment' (fashionlens calibrate-unknown); the README "
                          f"documents the default's threshold (it shows {shown})")
    threshold = threshold_text(info.unknown["threshold"])
    assert shown and set(shown) == {threshold}, (
        f"the README shows the threshold(s) {shown}; the bundled default model "
        f"({info.name}) has {threshold}")
    command = text[text.index("# 2. Install what the tests need"):]
    command = command[:command.index("pytest\n")]
    assert "chromium" in command and "skipped" in command, command
    example = text.index("$ fashionlens predict photos/")
    assert "`photos/` is a folder of your own" in text[example - 800:example]

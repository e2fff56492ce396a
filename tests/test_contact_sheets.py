"""tools/contact_sheets.py: seeded draws of photos to label by eye, on numbered sheets."""

from __future__ import annotations

import csv
import sys

import pytest
from PIL import Image

from .helpers import load_tool, write_pattern_photo

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tool():
    return load_tool("contact_sheets")


def _picked(folder):
    with (folder / "pick.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_second_draw_skips_the_first_and_the_input_is_left_alone(tool, tmp_path,
                                                                   monkeypatch):
    for i in range(30):
        write_pattern_photo(tmp_path / "images" / f"p{i:02d}.jpg", seed=i, fmt="JPEG")
    rows = [f"p{i:02d},{'Skip' if i == 3 else 'Shirt'},{'validation' if i % 5 == 0 else 'train'}"
            for i in range(30)]
    source = tmp_path / "labels.csv"
    source.write_text("image,label,split\n" + "\n".join(reversed(rows)) + "\n")
    before = source.read_bytes()

    def draw(out, *extra):
        monkeypatch.setattr(sys, "argv", [
            "contact_sheets.py", str(source), "--count", "10", "--seed", "1",
            "--exclude-label", "Skip", "--out", str(out), *extra])
        tool.main()
        return _picked(out)

    first = draw(tmp_path / "a")
    assert [r["index"] for r in first] == [str(i) for i in range(10)]
    chosen = {r["image"] for r in first}
    assert "p03" not in chosen and not any(int(r["image"][1:]) % 5 == 0 for r in first)
    assert draw(tmp_path / "again") == first  # seeded
    second = draw(tmp_path / "b", "--skip", str(tmp_path / "a" / "pick.csv"), "--start", "10")
    assert [r["index"] for r in second] == [str(i) for i in range(10, 20)]
    assert not chosen & {r["image"] for r in second}
    with Image.open(tmp_path / "b" / "sheet010.png") as sheet:
        assert sheet.size == (5 * tool.TILE, 4 * tool.TILE)
    assert source.read_bytes() == before
    # fewer rows left than asked for: said, not a traceback
    with pytest.raises(SystemExit, match="fewer than --count"):
        draw(tmp_path / "c", "--skip", str(tmp_path / "a" / "pick.csv"), "--count", "99")


def test_a_missing_column_or_photo_is_named(tool, tmp_path, monkeypatch):
    source = tmp_path / "labels.csv"
    source.write_text("image,split\np0,train\n")
    monkeypatch.setattr(sys, "argv", ["contact_sheets.py", str(source), "--count", "1",
                                      "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="no column label"):
        tool.main()
    source.write_text("image,label,split\np0,Shirt,train\n")
    with pytest.raises(SystemExit, match=r"p0\.jpg: cannot read this photo"):
        tool.main()

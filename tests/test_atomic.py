"""The one atomic writer: all or nothing, nothing left behind, permissions kept on ask."""

from __future__ import annotations

import os

import pytest

from fashionlens.atomic import atomic_file, write_bytes_atomic, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "queue.json"
    write_json_atomic(target, {"entries": [1]})
    with pytest.raises(RuntimeError), atomic_file(target) as fh:
        fh.write(b"half a fi")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n "entries": [\n  1\n ]\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.json"]


def test_new_folders_text_mode_and_kept_permissions(tmp_path):
    target = tmp_path / "a" / "b" / "model.json"
    write_bytes_atomic(target, b"{}")
    os.chmod(target, 0o640)
    with atomic_file(target, text=True, keep_mode=True, encoding="utf-8") as fh:
        fh.write("{\"ü\": 1}")
    assert target.read_text(encoding="utf-8") == "{\"ü\": 1}"
    assert target.stat().st_mode & 0o777 == 0o640

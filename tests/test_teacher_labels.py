"""tools/teacher_labels.py: a specialist's answers as labels for a joint run's source."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from .helpers import load_tool, write_pattern_photo


@pytest.fixture(scope="module")
def tool():
    return load_tool("teacher_labels")


def test_group_answers_sum_a_groups_classes_and_name_its_likeliest_member(tool):
    probabilities = np.array([[0.40, 0.35, 0.25],    # b+c (0.60) beat a (0.40): c's group
                              [0.10, 0.20, 0.70]])
    classes = ["Navy", "Red", "Maroon"]
    groups = {"Navy": "blue", "Red": "red", "Maroon": "red"}
    answers, sure = tool.group_answers(probabilities, classes, groups)
    assert answers == ["Red", "Maroon"] and np.allclose(sure, [0.60, 0.90])
    answers, sure = tool.group_answers(probabilities, classes, None)
    assert answers == ["Navy", "Maroon"] and np.allclose(sure, [0.40, 0.70])


def test_only_the_asked_splits_get_labels_and_the_input_is_left_alone(
        tool, embedding_model_dir, tmp_path, monkeypatch, capsys):
    for i in range(4):
        write_pattern_photo(tmp_path / "images" / f"p{i}.png", seed=i, fmt="PNG")
    source = tmp_path / "labels.csv"
    source.write_text("image,label,split\np0,Shirt,train\np1,Hat,train\n"
                      "p2,Hat,validation\np3,\"Dress, long\",train\n")
    before = source.read_bytes()
    out = tmp_path / "teacher.csv"
    monkeypatch.setattr(sys, "argv", [
        "teacher_labels.py", str(source), "--image-dir", "images", "--image-extension",
        ".png", "--splits", "train", "--model", str(embedding_model_dir), "--head", "label",
        "--min-probability", "0.0", "--out", str(out)])
    tool.main()
    report = json.loads(capsys.readouterr().out)
    assert report["asked"] == 3 and report["labelled"] == 3
    rows = list(csv.DictReader(out.open()))
    assert [r["label"] for r in rows] == ["Shirt", "Hat", "Hat", "Dress, long"]
    assert rows[2]["teacher_label"] == "" and rows[2]["teacher_probability"] == ""
    assert all(r["teacher_label"] in {"a", "b", "c"} for i, r in enumerate(rows) if i != 2)
    assert source.read_bytes() == before
    monkeypatch.setattr(sys, "argv", ["teacher_labels.py", str(source), "--splits", "train",
                                      "--model", "x", "--head", "y", "--out", str(source)])
    with pytest.raises(SystemExit):
        tool.main()
    assert source.read_bytes() == before

"""Train/validation splits: groups stay together, lone photos stay in training."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from fashionlens.data import DataSpec, LabelledSet, Sample, split_train_val
from fashionlens.errors import DataError


def _set(samples: list[Sample]) -> LabelledSet:
    return LabelledSet(samples=samples, classes=sorted({s.label for s in samples}),
                       source="test.csv")


def _samples(per_class: dict[str, int], groups: int | None = None,
             split: str | None = None) -> list[Sample]:
    out = []
    for label, n in per_class.items():
        for i in range(n):
            out.append(Sample(path=Path(f"{label}_{i}.jpg"), label=label,
                              group=f"g{i % groups}" if groups else None, split=split))
    return out


def _paths(data: LabelledSet) -> set[Path]:
    return {s.path for s in data.samples}


def test_random_split_is_stratified_disjoint_and_seeded():
    data = _set(_samples({"shirt": 20, "dress": 20, "coat": 20}))
    spec = DataSpec(val_fraction=0.25)
    train, val = split_train_val(data, spec, seed=3)
    assert not _paths(train) & _paths(val)
    assert _paths(train) | _paths(val) == _paths(data)
    assert len(val.samples) == 15
    assert Counter(s.label for s in val.samples) == {"shirt": 5, "dress": 5, "coat": 5}
    assert train.classes == val.classes == ["coat", "dress", "shirt"]
    again_train, again_val = split_train_val(data, spec, seed=3)
    assert [s.path for s in again_val.samples] == [s.path for s in val.samples]
    _, other_val = split_train_val(data, spec, seed=4)
    assert _paths(other_val) != _paths(val)


def test_grouped_split_keeps_each_group_on_one_side():
    samples = []
    for g in range(12):  # 12 contributors, each with photos of several classes
        for label in ("shirt", "dress", "coat"):
            for k in range(2):
                samples.append(Sample(path=Path(f"{g}_{label}_{k}.jpg"), label=label,
                                      group=f"sender{g}"))
    data = _set(samples)
    for seed in range(3):
        train, val = split_train_val(data, DataSpec(group_column="sender", val_fraction=0.25),
                                     seed)
        train_groups = {s.group for s in train.samples}
        val_groups = {s.group for s in val.samples}
        assert train_groups and val_groups
        assert not train_groups & val_groups, "a contributor straddles train and validation"
        assert len(train.samples) + len(val.samples) == len(samples)
        assert len(val_groups) == 3


def test_class_with_one_image_stays_in_training(caplog):
    data = _set(_samples({"shirt": 10, "dress": 10, "sari": 1}))
    with caplog.at_level(logging.WARNING, logger="fashionlens"):
        for seed in range(5):
            train, val = split_train_val(data, DataSpec(val_fraction=0.3), seed)
            assert Path("sari_0.jpg") in _paths(train)
            assert "sari" in train.classes
            assert all(s.label != "sari" for s in val.samples)
    assert any("sari" in r.getMessage() and "single image" in r.getMessage()
               for r in caplog.records)


def test_tiny_set_with_more_classes_than_validation_slots():
    # 6 photos, 3 classes: too few for a stratified split; still a valid split.
    data = _set(_samples({"a": 2, "b": 2, "c": 2}))
    train, val = split_train_val(data, DataSpec(val_fraction=0.2), seed=0)
    assert len(val.samples) >= 1
    assert not _paths(train) & _paths(val)
    assert _paths(train) | _paths(val) == _paths(data)


def test_split_column_is_honoured():
    samples = (_samples({"shirt": 4, "dress": 4}, split="train")
               + [Sample(Path("v1.jpg"), "shirt", split="validation"),
                  Sample(Path("v2.jpg"), "dress", split="validation"),
                  Sample(Path("t1.jpg"), "dress", split="test"),
                  Sample(Path("v3.jpg"), "scarf", split="validation")])
    data = _set(samples)
    spec = DataSpec(split_column="split")
    train, val = split_train_val(data, spec, seed=0)
    assert {s.split for s in train.samples} == {"train"}
    assert len(train.samples) == 8
    # 'test' rows are in neither; 'scarf' never appears in training so it is dropped.
    assert _paths(val) == {Path("v1.jpg"), Path("v2.jpg")}
    assert train.classes == ["dress", "shirt"]

    spec = DataSpec(split_column="split", train_splits=["train", "validation"], val_splits=["test"])
    train, val = split_train_val(data, spec, seed=0)
    assert len(train.samples) == 11 and _paths(val) == {Path("t1.jpg")}


def test_split_column_without_validation_rows_falls_back_to_a_random_split():
    data = _set(_samples({"shirt": 10, "dress": 10}, split="train"))
    train, val = split_train_val(data, DataSpec(split_column="split", val_fraction=0.2), 0)
    assert len(val.samples) == 4 and len(train.samples) == 16


def test_split_column_without_training_rows():
    data = _set(_samples({"shirt": 3}, split="holdout"))
    with pytest.raises(DataError, match="holdout"):
        split_train_val(data, DataSpec(split_column="split"), 0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_val_fraction_must_be_between_0_and_1(fraction):
    data = _set(_samples({"shirt": 5, "dress": 5}))
    with pytest.raises(DataError, match="val_fraction"):
        split_train_val(data, DataSpec(val_fraction=fraction), 0)


def test_single_image_cannot_be_split():
    with pytest.raises(DataError, match="at least 2"):
        split_train_val(_set(_samples({"shirt": 1})), DataSpec(), 0)


def test_grouped_split_keeps_a_single_image_class_in_training():
    samples = [Sample(Path(f"{label}{i}.jpg"), label, group=f"g{i % 6}")
               for label in ("shirt", "dress") for i in range(12)]
    samples.append(Sample(Path("lone.jpg"), "sari", group="g3"))
    data = _set(samples)
    val_groups_seen = set()
    for seed in range(8):
        train, val = split_train_val(data, DataSpec(group_column="sender", val_fraction=0.2),
                                     seed)
        assert Path("lone.jpg") in _paths(train), f"seed {seed}: the sari class was lost"
        assert "sari" in train.classes
        assert not {s.group for s in train.samples} & {s.group for s in val.samples}
        assert len(train.samples) + len(val.samples) == len(samples)
        assert val.samples
        val_groups_seen |= {s.group for s in val.samples}
    assert "g3" not in val_groups_seen

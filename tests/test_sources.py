"""Labelled sets from a folder per class or a CSV export."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionlens.data import DataSpec, load_labelled
from fashionlens.errors import DataError

from .helpers import make_csv_dataset, write_photo


def _write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- folder per class -------------------------------------------------------------

def test_folder_per_class(tmp_path):
    root = tmp_path / "shop"
    write_photo(root / "shirt" / "a.jpg")
    write_photo(root / "shirt" / "nested" / "b.PNG", fmt="PNG")
    write_photo(root / "dress" / "c.jpeg", fmt="JPEG")
    (root / "dress" / "notes.txt").write_text("not a photo")
    (root / "dress" / ".hidden.jpg").write_bytes(b"x")
    (root / ".thumbnails").mkdir()
    write_photo(root / ".thumbnails" / "t.jpg")
    (root / "README.md").write_text("top-level files are not classes")

    data = load_labelled(DataSpec(path=str(root)))
    assert data.classes == ["dress", "shirt"]
    assert sorted((s.path.name, s.label) for s in data.samples) == [
        ("a.jpg", "shirt"), ("b.PNG", "shirt"), ("c.jpeg", "dress")]
    assert data.counts() == {"shirt": 2, "dress": 1}
    assert data.class_to_index == {"dress": 0, "shirt": 1}
    assert data.missing == []


def test_folder_exclude_labels(tmp_path):
    root = tmp_path / "shop"
    for label in ("shirt", "dress", "Not sure"):
        write_photo(root / label / "x.jpg")
    data = load_labelled(DataSpec(path=str(root), exclude_labels=["Not sure"]))
    assert data.classes == ["dress", "shirt"]
    assert all(s.label != "Not sure" for s in data.samples)


def test_folder_without_images(tmp_path):
    root = tmp_path / "empty_shop"
    (root / "shirt").mkdir(parents=True)
    (root / "shirt" / "list.txt").write_text("nothing")
    with pytest.raises(DataError, match="no images found"):
        load_labelled(DataSpec(path=str(root)))


def test_missing_dataset_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_labelled(DataSpec(path=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="file not found"):
        load_labelled(DataSpec(path=str(tmp_path / "nope.csv")))
    with pytest.raises(DataError, match="data.path"):
        load_labelled(DataSpec(path=""))


def test_unsupported_file(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(DataError, match="expected a folder"):
        load_labelled(DataSpec(path=str(path)))


# --- CSV ----------------------------------------------------------------------------

def test_csv_with_path_column(tmp_path):
    write_photo(tmp_path / "pics" / "1.jpg")
    write_photo(tmp_path / "pics" / "2.jpg")
    absolute = write_photo(tmp_path / "elsewhere" / "3.jpg")
    csv_path = _write_csv(tmp_path / "labels.csv",
                          "file,garment\npics/1.jpg,shirt\n pics/2.jpg , dress \n"
                          f"{absolute},shirt\n")
    data = load_labelled(DataSpec(path=str(csv_path), image_column="file",
                                  target_column="garment"))
    assert data.classes == ["dress", "shirt"]
    assert [(s.path, s.label) for s in data.samples] == [
        (tmp_path / "pics" / "1.jpg", "shirt"),
        (tmp_path / "pics" / "2.jpg", "dress"),
        (absolute, "shirt"),
    ]
    assert data.source == str(csv_path)


def test_csv_with_ids_image_dir_and_extension(tmp_path):
    csv_path = make_csv_dataset(tmp_path, per_class=2)
    for ext in (".png", "png"):
        data = load_labelled(DataSpec(path=str(csv_path), image_column="id",
                                      image_dir="images", image_extension=ext,
                                      group_column="sender"))
        assert len(data.samples) == 6
        assert data.classes == ["blue", "green", "red"]
        first = data.samples[0]
        assert first.path == tmp_path / "images" / "blue0.png"
        assert first.group == "s0"
        assert first.split is None


def test_csv_split_and_group_columns(tmp_path):
    csv_path = make_csv_dataset(tmp_path, per_class=3, with_split=True)
    data = load_labelled(DataSpec(path=str(csv_path), image_column="id", image_dir="images",
                                  image_extension=".png", split_column="split",
                                  group_column="sender"))
    assert {s.split for s in data.samples} == {"train", "validation"}
    assert {s.group for s in data.samples} == {"s0", "s1", "s2"}


def test_csv_unknown_column_names_it_and_lists_columns(tmp_path):
    csv_path = make_csv_dataset(tmp_path, per_class=1)
    with pytest.raises(DataError) as info:
        load_labelled(DataSpec(path=str(csv_path), image_column="filename"))
    message = str(info.value)
    assert "'filename'" in message
    assert "image_column" in message
    for column in ("id", "label", "sender"):
        assert column in message
    assert str(csv_path) in message

    with pytest.raises(DataError, match="'sender_id'.*group_column"):
        load_labelled(DataSpec(path=str(csv_path), image_column="id",
                               group_column="sender_id"))


def test_csv_missing_files_are_listed(tmp_path):
    write_photo(tmp_path / "images" / "a.jpg")
    write_photo(tmp_path / "images" / "b.jpg")
    csv_path = _write_csv(tmp_path / "labels.csv",
                          "image,label\na,shirt\nb,dress\nghost,shirt\nlost,dress\n")
    data = load_labelled(DataSpec(path=str(csv_path), image_dir="images",
                                  image_extension=".jpg"))
    assert [s.path.name for s in data.samples] == ["a.jpg", "b.jpg"]
    assert data.missing == [tmp_path / "images" / "ghost.jpg", tmp_path / "images" / "lost.jpg"]


def test_csv_where_every_file_is_missing(tmp_path):
    csv_path = _write_csv(tmp_path / "labels.csv", "image,label\nghost.jpg,shirt\n")
    with pytest.raises(DataError, match="missing") as info:
        load_labelled(DataSpec(path=str(csv_path)))
    assert "ghost.jpg" in str(info.value)


def test_csv_exclude_labels_and_blank_labels(tmp_path):
    for name in "abcd":
        write_photo(tmp_path / f"{name}.jpg")
    csv_path = _write_csv(tmp_path / "labels.csv",
                          "image,label\na.jpg,shirt\nb.jpg,Skip\nc.jpg,\nd.jpg,dress\n")
    data = load_labelled(DataSpec(path=str(csv_path), exclude_labels=["Skip"]))
    assert data.classes == ["dress", "shirt"]
    assert [s.path.name for s in data.samples] == ["a.jpg", "d.jpg"]


def test_csv_empty_image_value_names_the_line(tmp_path):
    write_photo(tmp_path / "a.jpg")
    csv_path = _write_csv(tmp_path / "labels.csv", "image,label\na.jpg,shirt\n,dress\n")
    with pytest.raises(DataError, match="line 3"):
        load_labelled(DataSpec(path=str(csv_path)))


def test_empty_csv(tmp_path):
    csv_path = _write_csv(tmp_path / "labels.csv", "")
    with pytest.raises(DataError, match="empty") as info:
        load_labelled(DataSpec(path=str(csv_path)))
    assert str(csv_path) in str(info.value)


def test_csv_with_header_only(tmp_path):
    csv_path = _write_csv(tmp_path / "labels.csv", "image,label\n")
    with pytest.raises(DataError, match="no usable labelled rows"):
        load_labelled(DataSpec(path=str(csv_path)))


def test_csv_with_bom_and_not_utf8(tmp_path):
    write_photo(tmp_path / "a.jpg")
    write_photo(tmp_path / "b.jpg")
    bom = tmp_path / "excel.csv"
    bom.write_bytes("\ufeffimage,label\na.jpg,Pullover\nb.jpg,Kleid\n".encode())
    assert load_labelled(DataSpec(path=str(bom))).classes == ["Kleid", "Pullover"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("image,label\na.jpg,Ü\xe9ber\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        load_labelled(DataSpec(path=str(latin)))

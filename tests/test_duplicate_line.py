"""Each model's own near-duplicate line: stored in model.json, recorded by the catalog and
vector shards, read by `catalog duplicates` and the review queue."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fashionlens.cli.main import app
from fashionlens.curation.duplicates import find_duplicates
from fashionlens.curation.scan import NO_HASH, Scan
from fashionlens.errors import ModelError
from fashionlens.models.info import read_info, update_info
from fashionlens.search import Catalog, Embedder, ItemRecord
from fashionlens.search.embeddings import DUPLICATE_THRESHOLD

from .helpers import write_pattern_photo


@pytest.fixture(scope="module")
def lined_model(embedding_model_dir, tmp_path_factory) -> Path:
    """The tiny test model with a near-duplicate line of its own (0.5)."""
    folder = tmp_path_factory.mktemp("lined") / "model"
    shutil.copytree(embedding_model_dir, folder)
    update_info(folder, {"duplicate_threshold": 0.5})
    return folder


def test_update_info_sets_and_removes_a_field_and_keeps_the_rest(lined_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(lined_model, folder)
    before = json.loads((folder / "model.json").read_text())
    assert read_info(folder).duplicate_threshold == 0.5
    update_info(folder, {"duplicate_threshold": None})
    after = json.loads((folder / "model.json").read_text())
    assert "duplicate_threshold" not in after
    assert after == {k: v for k, v in before.items() if k != "duplicate_threshold"}
    assert read_info(folder).duplicate_threshold is None


@pytest.mark.parametrize("value", [1.5, 0.0, "high"])
def test_update_info_refuses_a_bad_line_and_leaves_the_file(lined_model, tmp_path, value):
    folder = tmp_path / "model"
    shutil.copytree(lined_model, folder)
    text = (folder / "model.json").read_text()
    with pytest.raises(ModelError, match="field 'duplicate_threshold'"):
        update_info(folder, {"duplicate_threshold": value})
    assert (folder / "model.json").read_text() == text


def test_an_embedder_gives_its_models_line_or_the_default(embedding_model_dir, lined_model):
    assert Embedder(lined_model).duplicate_threshold == 0.5
    assert Embedder(embedding_model_dir).duplicate_threshold == DUPLICATE_THRESHOLD


def _photos(root: Path, n: int = 6) -> list[Path]:
    return [write_pattern_photo(root / f"p{i}.png", seed=i, fmt="PNG") for i in range(n)]


def test_a_catalog_records_its_models_line_and_lists_pairs_from_it(lined_model, tmp_path):
    photos = _photos(tmp_path / "photos")
    with Catalog(tmp_path / "cat", create=True, embedder=Embedder(lined_model)) as cat:
        cat.add([ItemRecord(p.stem, p.read_bytes()) for p in photos])
        assert cat.duplicate_threshold() == 0.5
        assert cat.near_duplicates() == cat.near_duplicates(0.5)
        # the untrained test model puts these patterns close: the line decides
        assert len(cat.near_duplicates()) > len(cat.near_duplicates(0.999))
    result = CliRunner().invoke(app, ["catalog", "duplicates", "--catalog",
                                      str(tmp_path / "cat"), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed["threshold"] == 0.5 and len(listed["pairs"]) == len(
        Catalog(tmp_path / "cat").near_duplicates(0.5))


def test_a_catalog_without_a_recorded_line_uses_the_default(embedding_model_dir, tmp_path):
    photos = _photos(tmp_path / "photos", 2)
    with Catalog(tmp_path / "cat", create=True,
                 embedder=Embedder(embedding_model_dir)) as cat:
        cat.add([ItemRecord(p.stem, p.read_bytes()) for p in photos])
        assert cat.duplicate_threshold() == DUPLICATE_THRESHOLD
        cat.store.db.execute("DELETE FROM meta WHERE name = 'duplicate_threshold'")
        assert cat.duplicate_threshold() == DUPLICATE_THRESHOLD  # catalogs made before


def _scan(similarity: float, line: float | None) -> Scan:
    second = np.array([similarity, np.sqrt(1 - similarity ** 2), 0.0], np.float32)
    vectors = np.stack([np.array([1.0, 0.0, 0.0], np.float32), second,
                        np.array([0.0, 0.0, 1.0], np.float32)])
    return Scan(paths=[Path(f"p{i}.jpg") for i in range(3)], sha256=["a", "b", "c"],
                phash=np.full(3, NO_HASH, np.uint64), width=np.full(3, 64),
                height=np.full(3, 64), formats=["JPEG"] * 3, errors=[None] * 3,
                vectors=vectors, model="m", duplicate_threshold=line)


def test_the_review_queue_groups_duplicates_from_the_scans_model_line():
    assert len(find_duplicates(_scan(0.95, None))) == 1  # default line 0.93
    assert find_duplicates(_scan(0.95, 0.97)) == []     # the model's stricter line
    assert len(find_duplicates(_scan(0.95, 0.97), threshold=0.9)) == 1  # asked for


def test_vector_shards_carry_the_line_into_a_new_catalog(lined_model, embedding_model_dir,
                                                           tmp_path):
    pytest.importorskip("pyarrow")
    from fashionlens.search.shards import shard_model, write_shard

    rows = [{"id": f"i{i}", "source": f"p{i}.png"} for i in range(3)]
    vectors = np.eye(3, 8, dtype=np.float32)
    lined = Embedder(lined_model).vector_model
    plain = Embedder(embedding_model_dir).vector_model
    plain.duplicate_threshold = None  # as shards written before the line existed
    for name, model in (("lined", lined), ("plain", plain)):
        model.dim = 8
        path = tmp_path / name / "shard-00000.parquet"
        path.parent.mkdir()
        write_shard(path, rows, vectors, model)
        assert shard_model(path).duplicate_threshold == model.duplicate_threshold
        with Catalog(tmp_path / f"cat-{name}", create=True) as cat:
            cat.import_shards(path.parent)
            assert cat.duplicate_threshold() == (0.5 if name == "lined"
                                                 else DUPLICATE_THRESHOLD)

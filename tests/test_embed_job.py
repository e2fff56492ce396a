"""`fashionlens embed` (shards, resume, both engines) and the shard import into a catalog."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fashionlens.cli.main import app
from fashionlens.errors import DataError
from fashionlens.search import Catalog, Embedder
from fashionlens.search.embed_job import Job, read_photo_list, run_local, run_ray
from fashionlens.search.shards import MANIFEST, read_shard, shard_model

from .helpers import write_corrupt_jpeg, write_pattern_photo

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402


@pytest.fixture(scope="module")
def embedder(embedding_model_dir) -> Embedder:
    return Embedder(embedding_model_dir, runtime="auto")


@pytest.fixture
def photos(tmp_path) -> Path:
    """10 readable photos in two categories and one corrupt one."""
    root = tmp_path / "photos"
    for i in range(10):
        write_pattern_photo(root / ("Hat" if i % 2 else "Dress") / f"p{i:02d}.png", seed=i,
                            fmt="PNG")
    write_corrupt_jpeg(root / "Dress" / "broken.jpg")
    return root


def _job(photos: Path, out: Path, embedder: Embedder, shard_size: int = 4) -> Job:
    return Job(read_photo_list(photos), out,
               embedder.vector_model, shard_size)


def _shards(out: Path) -> dict[str, np.ndarray]:
    vectors = {}
    for path in sorted(out.glob("shard-*.parquet")):
        for records, vecs in read_shard(path, shard_model(path).dim):
            for record, vec in zip(records, vecs, strict=True):
                assert record.id not in vectors
                vectors[record.id] = vec
    return vectors


def test_local_job_writes_shards_with_the_fingerprint_and_resumes(photos, tmp_path, embedder):
    out = tmp_path / "out"
    stats = run_local(_job(photos, out, embedder), embedder, batch_size=3)
    assert stats.embedded == 11 and stats.shards_written == 3 and stats.skipped == 0
    summary = _job(photos, out, embedder).finish()
    assert summary["rows"] == 10 and [f["id"] for f in summary["failed"]] == ["Dress/broken"]
    schema = pq.read_schema(out / "shard-00000.parquet")
    assert schema.field("vector").type == pa.list_(pa.float32(), embedder.dim)
    assert schema.metadata[b"fashionlens.fingerprint"] == embedder.vector_fingerprint.encode()
    vectors = _shards(out)
    assert len(vectors) == 10
    expected = embedder.embed_one(photos / "Hat" / "p03.png")
    assert np.allclose(vectors["Hat/p03"], expected, atol=1e-5)

    # A killed run: shard 1 never finished (no marker), a temporary file was left.
    kept = {n: (out / n).read_bytes() for n in ("shard-00000.parquet", "shard-00002.parquet")}
    (out / "shard-00001.done").unlink()
    (out / ".shard-00001.parquet.123.tmp").write_bytes(b"half")
    again = run_local(_job(photos, out, embedder), embedder)
    assert again.skipped == 2 and again.shards_written == 1 and again.embedded == 4
    assert not list(out.glob(".*.tmp"))
    assert {n: (out / n).read_bytes() for n in kept} == kept  # finished shards untouched
    assert _shards(out).keys() == vectors.keys()

    write_pattern_photo(photos / "Hat" / "late.png", seed=99, fmt="PNG")
    with pytest.raises(DataError, match="another job .different photos"):
        run_local(_job(photos, out, embedder), embedder)


def test_csv_of_uris_carries_metadata_into_the_catalog(photos, tmp_path, embedder):
    lines = ["sku,photo,category,price,brand",
             f"a,{(photos / 'Hat' / 'p01.png').as_uri()},Hat,12.5,acme",
             "b,Dress/p02.png,Dress,3,other", "c,Dress/missing.png,Dress,,x",
             "a,Dress/p04.png,Dress,1,dup", "d,Dress/p04.png,Dress,cheap,x"]
    (photos / "list.csv").write_text("\n".join(lines) + "\n")
    listed = read_photo_list(photos / "list.csv", id_column="sku", image_column="photo")
    assert [r["id"] for r in listed.rows] == ["a", "b", "c"]
    assert any("listed twice" in p for p in listed.problems)
    assert any("row 5" in p and "price" in p for p in listed.problems)
    out = tmp_path / "out"
    job = Job(listed, out, embedder.vector_model, 10)
    run_local(job, embedder)
    assert [f["id"] for f in job.finish()["failed"]] == ["c"]
    with Catalog(tmp_path / "cat", create=True) as cat:
        result = cat.import_shards(out)
        assert result["added"] == 2 and cat.model_fingerprint() == embedder.vector_fingerprint
        item = cat.get("a")
        assert (item.category, item.price, item.extra, item.image) == ("Hat", 12.5,
                                                                       {"brand": "acme"}, None)
        assert item.source.startswith("file://")
        top = cat.search(vector=cat.vector("b"), k=1)[0]
        assert top.item.id == "b" and top.similarity == pytest.approx(1.0, abs=1e-5)


def _write_job(photos: Path, out: Path, embedder: Embedder, shard_size: int = 4) -> Path:
    job = _job(photos, out, embedder, shard_size)
    run_local(job, embedder)
    job.finish()
    return out


def test_import_checks_fingerprints_and_ids_and_is_all_or_nothing(photos, tmp_path, embedder):
    out = _write_job(photos, tmp_path / "out", embedder)
    cat = Catalog(tmp_path / "cat", create=True, dim=embedder.dim)
    cat.close()
    with Catalog(tmp_path / "cat", embedder=embedder) as cat:
        cat.add_vectors([cat_record("Hat/p05")], np.ones((1, embedder.dim)))
        index_before = cat.index_path.read_bytes()
        with pytest.raises(DataError, match=r"shard-00002.parquet: 1 id\(s\) already in the "
                                            r"catalog .* \(Hat/p05\); nothing was imported"):
            cat.import_shards(out)
        assert len(cat) == 1 and [i.id for i in cat.items()] == ["Hat/p05"]
        assert cat.index_path.read_bytes() == index_before and cat.index.ntotal == 1
        cat.remove("Hat/p05")
        assert cat.import_shards(out)["added"] == 10 and len(cat) == cat.index.ntotal == 10
        with pytest.raises(DataError, match="shard-00000.parquet: 3 id.s. already"):
            cat.import_shards(out)  # the same shards again

    # A shard from another model: refused, naming the file, before anything changes.
    other = tmp_path / "other"
    other.mkdir()
    table = pq.read_table(out / "shard-00002.parquet")
    meta = dict(table.schema.metadata)
    meta[b"fashionlens.fingerprint"] = b"another-model:1234"
    pq.write_table(table.replace_schema_metadata(meta), other / "shard-00000.parquet")
    (other / "shard-00000.done").write_text(json.dumps({"rows": 2, "failed": []}))
    with Catalog(tmp_path / "cat") as cat, \
            pytest.raises(DataError, match=r"other/shard-00000.parquet: vectors of model .* "
                                           r"\(another-model:1234\), but the catalog"):
        cat.import_shards(other)
    # Two shard folders with one id in both: the second clashes, the first is rolled back.
    with Catalog(tmp_path / "fresh", create=True) as fresh:
        files = [out / "shard-00000.parquet", out / "shard-00001.parquet",
                 out / "shard-00000.parquet"]
        with pytest.raises(DataError, match="shard-00000.parquet: 3 id.s. already in the "
                                            "catalog .* or in an earlier shard"):
            fresh.import_shards(files)
        assert len(fresh) == 0 and fresh.model_fingerprint() is None and fresh.index is None


def cat_record(item_id: str):
    from fashionlens.search import ItemRecord

    return ItemRecord(item_id, None)


def test_cli_embed_and_import(photos, tmp_path, embedding_model_dir, monkeypatch):
    out, catalog = tmp_path / "out", tmp_path / "cat"
    result = CliRunner().invoke(app, ["embed", str(photos), "--out", str(out), "--engine",
                                      "local", "--model", str(embedding_model_dir),
                                      "--shard-size", "5"])
    assert result.exit_code == 0, result.output
    assert "10 photos in 3 shards" in result.output and "1 could not be read" in result.output
    result = CliRunner().invoke(app, ["catalog", "import-vectors", str(out), "--catalog",
                                      str(catalog)])
    assert result.exit_code == 0, result.output
    assert "imported 10 items from 3 shards" in result.output
    with Catalog(catalog) as cat:  # the shards' model became the catalog's: photo search
        top = cat.search(photos / "Hat" / "p07.png", k=1)[0]
        assert top.item.id == "Hat/p07" and top.item.category == "Hat"

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = CliRunner().invoke(app, ["embed", str(photos), "--out", str(tmp_path / "o2")])
    assert result.exit_code != 0 and not (tmp_path / "o2").exists()
    assert "pip install 'fashionlens[scale]'" in str(result.exception)


def test_ray_engine_writes_the_same_shards(photos, tmp_path, embedder):
    pytest.importorskip("ray")
    local = _write_job(photos, tmp_path / "local", embedder)
    job = _job(photos, tmp_path / "ray", embedder)
    stats = run_ray(job, model=embedder.spec, runtime="auto", workers=1, cpus_per_worker=1,
                    batch_size=3)
    job.finish()
    assert stats.embedded == 11 and stats.shards_written == 3
    ours, theirs = _shards(local), _shards(tmp_path / "ray")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert np.allclose(ours[key], theirs[key], atol=1e-6), key
    again = run_ray(_job(photos, tmp_path / "ray", embedder), model=embedder.spec,
                    runtime="auto")
    assert again.skipped == 3 and again.embedded == 0  # nothing left: Ray is not started


def test_a_job_begun_under_the_whole_model_fingerprint_resumes_under_it(photos, tmp_path,
                                                                        embedder):
    """A job an older version began (its manifest and shards carry the whole model's
    fingerprint) resumes after the upgrade, and its new shards carry the same name, so
    they import together; without the model's names it is refused as before."""
    out = tmp_path / "out"
    run_local(_job(photos, out, embedder), embedder)
    legacy = embedder.fingerprint
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "fingerprint": legacy}))
    (out / "shard-00001.done").unlink()
    with pytest.raises(DataError, match="another job .different model"):
        run_local(_job(photos, out, embedder), embedder)
    job = Job(read_photo_list(photos), out, embedder.vector_model, 4,
              names=embedder.vector_names)
    stats = run_local(job, embedder)
    assert stats.shards_written == 1 and job.model.fingerprint == legacy
    assert shard_model(out / "shard-00001.parquet").fingerprint == legacy

"""Vector shards: what `fashionlens embed` writes and `catalog import-vectors` reads.

    out/
      _manifest.json            the job: model (spec, fingerprint, dim), input digest,
                                rows, shard size, number of shards
      shard-00000.parquet       id, vector (fixed-size list of float32), source,
                                category, colour, size, price, status, extra (JSON);
                                the model in the file's key-value metadata
      shard-00000.done          written after its shard: the shard is finished (rows,
                                photos that could not be read)
      _SUCCESS                  every shard is finished

Every file is written to a temporary name and renamed, so a shard with a `.done` marker
is whole, and a killed job leaves at most temporary files (removed on resume).
pyarrow is imported inside the functions (the `scale` extra).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_bytes_atomic
from ..errors import DataError, FashionLensError
from .records import ItemRecord, VectorModel

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
FORMAT = "fashionlens-vectors/1"
# Key-value metadata of every shard file.
META_FORMAT = b"fashionlens.format"
META_MODEL = b"fashionlens.model"
META_FINGERPRINT = b"fashionlens.fingerprint"
META_DIM = b"fashionlens.dim"
META_DUPLICATE = b"fashionlens.duplicate_threshold"  # absent in shards written before it
FIELDS = ("category", "colour", "size", "price", "status")
# Rows per Arrow record batch when importing: the import holds one of these at a time.
IMPORT_ROWS = 8192


def need_pyarrow():
    """pyarrow, or a clear error naming the extra that brings it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise FashionLensError("vector shards need pyarrow: pip install 'fashionlens[scale]'"
                               ) from None
    return pyarrow


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.parquet"


def done_path(shard: Path) -> Path:
    return shard.with_suffix(".done")


# The model a shard's vectors come from (the name shards have always used).
ShardModel = VectorModel


def schema(dim: int, model: ShardModel):
    pa = need_pyarrow()
    fields = [pa.field("id", pa.string(), nullable=False),
              pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
              pa.field("source", pa.string()),
              pa.field("category", pa.string()), pa.field("colour", pa.string()),
              pa.field("size", pa.string()), pa.field("price", pa.float64()),
              pa.field("status", pa.string()), pa.field("extra", pa.string())]
    return pa.schema(fields, metadata={META_FORMAT: FORMAT.encode(),
                                       META_MODEL: model.spec.encode(),
                                       META_FINGERPRINT: model.fingerprint.encode(),
                                       META_DIM: str(dim).encode(),
                                       **({META_DUPLICATE: f"{model.duplicate_threshold:g}"
                                          .encode()}
                                          if model.duplicate_threshold is not None else {})})


def write_shard(path: Path, rows: Sequence[dict], vectors: np.ndarray, model: ShardModel,
                failed: Sequence[dict] = ()) -> None:
    """Write one shard (tmp + rename), then its `.done` marker. `rows` hold id, source
    and the metadata fields; `vectors[i]` is row i's unit vector."""
    pa = need_pyarrow()
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(rows), model.dim)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    columns: dict[str, Any] = {
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, model.dim),
        "source": pa.array([r.get("source") for r in rows], pa.string())}
    for name in FIELDS:
        values = [r.get(name) for r in rows]
        if name == "price":
            columns[name] = pa.array([None if v in (None, "") else float(v) for v in values],
                                     pa.float64())
        else:
            columns[name] = pa.array([None if v in (None, "") else str(v) for v in values],
                                     pa.string())
    columns["extra"] = pa.array([json.dumps(r.get("extra") or {}, ensure_ascii=False,
                                            sort_keys=True) for r in rows], pa.string())
    table = pa.Table.from_pydict(columns, schema=schema(model.dim, model))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    write_bytes_atomic(done_path(path), json.dumps(
        {"rows": len(rows), "failed": list(failed)}).encode())


def shard_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The finished shard files of a folder (sorted), or the files given."""
    if isinstance(source, str | Path):
        folder = Path(source).expanduser()
        if folder.is_file():
            return [folder]
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder or shard file")
        files = sorted(folder.glob("shard-*.parquet"))
        unfinished = [f.name for f in files if not done_path(f).is_file()]
        if unfinished:
            raise DataError(f"{folder}: shard(s) without a .done marker (the job that wrote "
                            f"them did not finish them: {', '.join(unfinished[:3])}); run "
                            "`fashionlens embed` again to resume it")
        if not files:
            raise DataError(f"{folder}: no shard-*.parquet files")
        manifest = folder / MANIFEST
        if manifest.is_file() and not (folder / SUCCESS).is_file():
            raise DataError(f"{folder}: the embed job has not finished (no {SUCCESS}); run "
                            "`fashionlens embed` again to resume it")
        return files
    return [Path(p).expanduser() for p in source]


def shard_model(path: Path) -> ShardModel:
    """The model recorded in a shard file; DataError naming the file if it is not one."""
    need_pyarrow()
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    if meta.get(META_FORMAT) != FORMAT.encode():
        raise DataError(f"{path}: not a fashionlens vector shard (no {FORMAT} metadata)")
    try:
        line = meta.get(META_DUPLICATE)
        return ShardModel(meta[META_MODEL].decode(), meta[META_FINGERPRINT].decode(),
                          int(meta[META_DIM]), float(line) if line is not None else None)
    except (KeyError, ValueError):
        raise DataError(f"{path}: the shard's model metadata is incomplete") from None


def read_shard(path: Path, dim: int, rows: int = IMPORT_ROWS
               ) -> Iterator[tuple[list[ItemRecord], np.ndarray]]:
    """(records, vectors) of a shard, `rows` at a time (one record batch in memory)."""
    need_pyarrow()
    import pyarrow.parquet as pq

    where = str(path)
    try:
        handle = pq.ParquetFile(path)
        missing = {"id", "vector"} - set(handle.schema_arrow.names)
        if missing:
            raise DataError(f"{where}: no column {', '.join(sorted(missing))}")
        for batch in handle.iter_batches(batch_size=rows):
            vector = batch.column("vector")
            if vector.null_count:
                raise DataError(f"{where}: column 'vector' has empty values")
            values = vector.flatten().to_numpy(zero_copy_only=False)
            if values.size != len(batch) * dim:
                raise DataError(f"{where}: column 'vector' does not hold {dim} values a row")
            vectors = values.astype(np.float32, copy=False).reshape(len(batch), dim)
            names = batch.schema.names
            columns = {name: batch.column(name).to_pylist() for name in names
                       if name != "vector"}
            records = []
            for i, item_id in enumerate(columns["id"]):
                extra = columns.get("extra", [None] * len(batch))[i]
                try:
                    extra = json.loads(extra) if extra else {}
                except ValueError:
                    raise DataError(f"{where}: item '{item_id}': column 'extra' is not "
                                    "JSON") from None
                fields = {name: columns[name][i] for name in FIELDS if name in columns}
                fields["status"] = fields.get("status") or "available"
                records.append(ItemRecord(id=item_id, image=None, extra=extra,
                                          source=columns.get("source", [None] * len(batch))[i],
                                          label=f"{path.name} ({item_id})", **fields))
            yield records, vectors
    except OSError as exc:
        raise DataError(f"{where}: cannot read the shard ({exc})") from None


def import_shards(catalog: Any, source: str | Path | Sequence[str | Path], *,
                  progress: Callable[[int], None] | None = None) -> dict:
    """Import shards into `catalog` (a `catalog.Catalog`, which calls this; not imported
    here, so that this module stays below it) in one transaction (all or nothing), reading
    one record batch at a time. Every shard must come from the catalog's model (a catalog
    without one takes the first shard's); the first shard that does not is named."""
    files = shard_files(source)
    models = [(path, shard_model(path)) for path in files]  # every file checked first
    expected = catalog.model_fingerprint()
    if expected is None and len(catalog):
        raise DataError(f"{catalog.path}: the catalog holds vectors of no recorded model; "
                        "shards can only be imported into a catalog of their model")
    first = models[0][1]
    want = expected or first.fingerprint
    for path, model in models:
        if not (catalog.holds_vectors_of(model.fingerprint) if expected
                else model.fingerprint == want):
            raise DataError(
                f"{path}: vectors of model {model.spec} ({model.fingerprint}), but "
                + (f"the catalog {catalog.path} holds vectors of {catalog.model} ({want})"
                   if expected else f"{files[0]} holds vectors of {first.spec} ({want})")
                + "; vectors of different models cannot be compared")
    dim = catalog.dim or first.dim
    if first.dim != dim:
        raise DataError(f"{files[0]}: {first.dim}-d vectors; the catalog holds {dim}-d ones")
    total_rows = sum(_rows(path) for path in files)

    def adopt() -> None:  # a new catalog takes the shards' model, in the same transaction
        if expected is None:
            catalog.store.set_meta(first.recorded(), catalog.store.db)
            catalog.store.db.execute("DELETE FROM meta WHERE name = 'vectors_only'")

    def batches() -> Iterator[tuple[list[ItemRecord], np.ndarray, str]]:
        for path in files:
            for records, vectors in read_shard(path, dim):
                yield records, vectors, str(path)

    added = catalog.ingestor.import_batches(batches(), dim, before=adopt, progress=progress)
    return {"shards": len(files), "rows": total_rows, "added": added, "model": first.spec,
            "fingerprint": want, "dim": dim}


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)

"""`fashionlens embed`: photos (a folder, a CSV or a Parquet list of paths or URIs) into
Parquet shards of (id, vector, metadata) with the model's fingerprint (see `shards`).

Two engines run the same job and write the same shards:

- `ray`: Ray Data streams the photos through an actor pool; each actor holds the model
  through the project's runtime (`Embedder`: OpenVINO on a CPU under `auto`, torch on a
  GPU) and decodes and embeds a batch at a time. With no address Ray starts in this
  process's machine (no set-up); with `address` (`ray://head:10001`, or `auto` on a
  cluster node) it runs on that cluster. Photos must then be readable from every node
  (a shared folder, or http(s):// / s3:// / gs:// URIs); the shards are written here,
  by the driver, as results stream back.
- `local`: one process, the same Embedder, no Ray (the reference the Ray engine is
  measured against).

Resuming: the input is cut into shards of `shard_size` rows in input order; a shard is
finished when its `.done` marker exists, and a run skips finished shards (the manifest
checks that the input and the model are the ones the folder was started with). Results
arrive in input order, so a kill loses at most the shard being assembled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_bytes_atomic
from ..data.images import is_image_file
from ..data.sources import read_csv_rows
from ..errors import ConfigError, DataError
from ..models.info import same_vectors
from .filters import ALIASES
from .records import METADATA_FIELDS, check_item_id, parse_price
from .shards import (
    MANIFEST,
    SUCCESS,
    ShardModel,
    done_path,
    need_pyarrow,
    shard_name,
    write_shard,
)

log = logging.getLogger(__name__)

# Model batches per actor call (and per Ray block).
CALL_BATCHES = 4
URI_SCHEMES = ("http://", "https://", "file://", "s3://", "gs://", "gcs://", "hdfs://")


# --- the input ----------------------------------------------------------------------


@dataclass
class PhotoList:
    """The photos to embed, in order: each row has id, source (path or URI) and the
    metadata fields (category, colour, size, price, status, extra)."""

    rows: list[dict]
    problems: list[str] = field(default_factory=list)

    def digest(self) -> str:
        """Names the input, so that a resume into the same folder is the same job."""
        h = hashlib.sha256()
        for row in self.rows:
            h.update(f"{row['id']}\0{row['source']}\n".encode())
        return h.hexdigest()[:32]


def _is_uri(value: str) -> bool:
    return value.lower().startswith(URI_SCHEMES)


def _from_table(columns: list[str], rows: Sequence[dict], where: str, id_column: str,
                image_column: str, base: Path) -> PhotoList:
    for what, column in (("id column", id_column), ("image column", image_column)):
        if column not in columns:
            raise DataError(f"{where}: no column '{column}' (asked for as {what}); "
                            f"columns are: {', '.join(columns)}")
    mapped = {}
    for column in columns:
        name = ALIASES.get(column.strip().lower(), column.strip().lower())
        if column not in (id_column, image_column) and name in METADATA_FIELDS:
            mapped[column] = name
    result = PhotoList(rows=[])
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        at = f"{where}, row {number}"
        item_id = str(row.get(id_column) or "").strip()
        source = str(row.get(image_column) or "").strip()
        if not item_id or not source:
            result.problems.append(f"{at}: empty '{id_column if not item_id else image_column}'")
            continue
        try:
            check_item_id(item_id)
        except ValueError as exc:
            result.problems.append(f"{at}: {exc}")
            continue
        if item_id in seen:
            result.problems.append(f"{at}: id '{item_id}' listed twice; only the first is kept")
            continue
        seen.add(item_id)
        if not _is_uri(source) and not Path(source).is_absolute():
            source = str(base / source)
        out: dict[str, Any] = {"id": item_id, "source": source, "extra": {}}
        try:
            for column, value in row.items():
                if column in (id_column, image_column) or value is None or value == "":
                    continue
                if column in mapped:
                    out[mapped[column]] = (parse_price(value) if mapped[column] == "price"
                                           else str(value))
                else:
                    out["extra"][column] = value if isinstance(value, int | float | bool) \
                        else str(value)
        except ValueError as exc:
            result.problems.append(f"{at}: {exc}")
            continue
        result.rows.append(out)
    return result


def read_photo_list(source: str | Path, *, id_column: str = "id",
                    image_column: str = "image") -> PhotoList:
    """The photos of a folder (id: path inside it without extension; category: the
    sub-folder), a CSV or a Parquet file (id and image columns; paths relative to the
    file, or URIs; columns named like item fields fill them, others go to extra)."""
    path = Path(source).expanduser()
    if path.is_dir():
        photos = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)
                        and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not photos:
            raise DataError(f"{path}: no image files in this folder")
        rows = []
        for photo in photos:
            rel = photo.relative_to(path)
            rows.append({"id": rel.with_suffix("").as_posix(), "source": str(photo),
                         "category": rel.parts[0] if len(rel.parts) > 1 else None,
                         "extra": {}})
        return PhotoList(rows=rows)
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        columns, rows = read_csv_rows(path)
        return _from_table(columns, rows, path.name, id_column, image_column, path.parent)
    if suffix in (".parquet", ".pq"):
        need_pyarrow()
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        return _from_table(table.column_names, table.to_pylist(), path.name, id_column,
                           image_column, path.parent)
    raise DataError(f"{path}: expected a folder of photos, a CSV or a Parquet file")


def fetch(source: str) -> Path | bytes:
    """A local path as is; a URI's bytes (http(s), file, or what pyarrow.fs reads)."""
    if not _is_uri(source):
        return Path(source)
    lower = source.lower()
    if lower.startswith("file://"):
        return Path(urllib.request.url2pathname(source[len("file://"):]))
    if lower.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=60) as response:  # noqa: S310
            return response.read()
    import pyarrow.fs

    filesystem, inner = pyarrow.fs.FileSystem.from_uri(source)
    with filesystem.open_input_stream(inner) as stream:
        return stream.read()


def embed_rows(embedder, sources: Sequence[str], names: Sequence[str], batch_size: int
               ) -> tuple[np.ndarray, list[str | None]]:
    """Vectors (zeros for a photo that failed) and errors (None when it worked)."""
    loaded: list[Any] = []
    errors: list[str | None] = [None] * len(sources)
    good: list[int] = []
    for i, source in enumerate(sources):
        try:
            loaded.append(fetch(source))
            good.append(i)
        except Exception as exc:  # noqa: BLE001 - any fetch failure is this photo's
            errors[i] = f"cannot fetch ({exc})"
    vectors = np.zeros((len(sources), embedder.dim), dtype=np.float32)
    results = embedder.embed(loaded, names=[names[i] for i in good], batch_size=batch_size)
    for i, result in zip(good, results, strict=True):
        if result.ok:
            vectors[i] = result.vector
        else:
            errors[i] = result.error
    return vectors, errors


# --- the job ------------------------------------------------------------------------


@dataclass
class Job:
    """One embed job: its input, output folder, model and shard size."""

    photos: PhotoList
    out: Path
    model: ShardModel
    shard_size: int
    # every name the model's vectors go by (`Embedder.vector_names`): a job begun under an
    # older one (before vectors had their own fingerprint) resumes under it
    names: tuple[str, ...] = ()

    @property
    def shards(self) -> int:
        return -(-len(self.photos.rows) // self.shard_size)

    def shard_rows(self, number: int) -> list[dict]:
        return self.photos.rows[number * self.shard_size:(number + 1) * self.shard_size]

    def start(self) -> list[int]:
        """Check or write the manifest; remove a killed run's temporary files; the
        shards still to do."""
        self.out.mkdir(parents=True, exist_ok=True)
        manifest = {"format": "fashionlens-embed/1", "model": self.model.spec,
                    "fingerprint": self.model.fingerprint, "dim": self.model.dim,
                    "input": self.photos.digest(), "rows": len(self.photos.rows),
                    "shard_size": self.shard_size, "shards": self.shards}
        path = self.out / MANIFEST
        if path.is_file():
            try:
                before = json.loads(path.read_text())
            except ValueError:
                raise DataError(f"{path}: unreadable; choose another --out") from None
            changed = [key for key in ("fingerprint", "input", "shard_size")
                       if before.get(key) != manifest[key]]
            if "fingerprint" in changed and same_vectors(before.get("fingerprint"),
                                                         self.model.fingerprint, self.names):
                # the same vectors under the name the job began with: its shards keep one
                self.model = replace(self.model, fingerprint=before["fingerprint"])
                changed.remove("fingerprint")
            if changed:
                names = {"input": "photos", "fingerprint": "model"}
                what = ", ".join(names.get(k, k) for k in changed)
                raise DataError(f"{self.out}: holds shards of another job (different {what}); "
                                "choose another --out, or run the same command to resume")
        elif any(self.out.iterdir()):
            raise DataError(f"{self.out}: exists and is not an embed job's folder; choose an "
                            "empty or new --out")
        else:
            write_bytes_atomic(path, json.dumps(manifest, indent=1).encode())
        for stray in self.out.glob(".*.tmp"):
            stray.unlink(missing_ok=True)
        return [n for n in range(self.shards)
                if not done_path(self.out / shard_name(n)).is_file()]

    def write(self, number: int, vectors: np.ndarray, errors: Sequence[str | None]) -> int:
        """Write shard `number` from its rows' vectors and errors; returns failures."""
        rows = self.shard_rows(number)
        keep = [i for i, e in enumerate(errors) if e is None]
        failed = [{"id": rows[i]["id"], "source": rows[i]["source"], "error": errors[i]}
                  for i in range(len(rows)) if errors[i] is not None]
        write_shard(self.out / shard_name(number), [rows[i] for i in keep],
                    vectors[keep], self.model, failed)
        return len(failed)

    def finish(self) -> dict:
        failed: list[dict] = []
        rows = 0
        for n in range(self.shards):
            done = json.loads(done_path(self.out / shard_name(n)).read_text())
            rows += done["rows"]
            failed.extend(done["failed"])
        write_bytes_atomic(self.out / SUCCESS, b"")
        return {"shards": self.shards, "rows": rows, "failed": failed}


@dataclass
class RunStats:
    skipped: int = 0  # shards finished by an earlier run
    embedded: int = 0  # photos embedded by this run
    seconds: float = 0.0
    shards_written: int = 0
    extra: dict = field(default_factory=dict)


Progress = Callable[[int], None]


def run_local(job: Job, embedder, *, batch_size: int = 32,
              progress: Progress | None = None) -> RunStats:
    """The job in this process (no Ray)."""
    todo = job.start()
    stats = RunStats(skipped=job.shards - len(todo))
    start = time.perf_counter()
    for number in todo:
        rows = job.shard_rows(number)
        vectors = np.zeros((len(rows), job.model.dim), dtype=np.float32)
        errors: list[str | None] = []
        for lo in range(0, len(rows), batch_size):
            part = rows[lo:lo + batch_size]
            vecs, errs = embed_rows(embedder, [r["source"] for r in part],
                                    [r["id"] for r in part], batch_size)
            vectors[lo:lo + len(part)] = vecs
            errors.extend(errs)
            stats.embedded += len(part)
            if progress is not None:
                progress(len(part))
            log.debug("received %d photos", stats.embedded)
        job.write(number, vectors, errors)
        stats.shards_written += 1
        log.info("shard %d/%d written (%d photos)", number + 1, job.shards, len(rows))
    stats.seconds = time.perf_counter() - start
    return stats


def need_ray():
    """ray, or a clear error naming the extra that brings it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("`fashionlens embed` runs on Ray Data, which is not installed: "
                          "pip install 'fashionlens[scale]' (or run it in this process "
                          "with --engine local)") from None
    return ray


class EmbedActor:
    """One Ray actor: loads the model once, then embeds batches of photos."""

    def __init__(self, model: str, runtime: str, device: str, batch_size: int,
                 fingerprint: str) -> None:
        from .embeddings import Embedder

        self.embedder = Embedder(model, runtime=runtime, device=device)
        if not self.embedder.makes_vectors_of(fingerprint):
            raise DataError(f"{model}: on this worker the model's fingerprint is "
                            f"{self.embedder.vector_fingerprint}, not {fingerprint} (another "
                            "version of the model is installed here)")
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors, errors = embed_rows(self.embedder, [str(s) for s in batch["source"]],
                                     [str(n) for n in batch["name"]], self.batch_size)
        return {"shard": batch["shard"], "row": batch["row"], "vector": vectors,
                "error": np.array([e or "" for e in errors], dtype=object)}


def run_ray(job: Job, *, model: str, runtime: str, address: str | None = None,
            workers: int | None = None, cpus_per_worker: float = 2.0,
            gpus_per_worker: float = 0.0, batch_size: int = 32,
            progress: Progress | None = None) -> RunStats:
    """The job on Ray Data: an actor pool of `workers` (default: as many as the cluster's
    CPUs or GPUs allow) each holding the model."""
    ray = need_ray()
    todo = job.start()
    stats = RunStats(skipped=job.shards - len(todo))
    if not todo:
        return stats
    started_here = not ray.is_initialized()
    if started_here:
        # Locally: no dashboard, and the workers' logs stay in Ray's session folder.
        options: dict[str, Any] = ({"address": address} if address else
                                   {"include_dashboard": False, "log_to_driver": False})
        try:
            ray.init(**options)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    try:
        total = ray.cluster_resources()
        cpus = float(total.get("CPU", 1.0))
        gpus = float(total.get("GPU", 0.0))
        cpus_per_worker = min(cpus_per_worker, cpus)
        if gpus_per_worker > 0 and gpus < gpus_per_worker:
            raise ConfigError(f"--gpus-per-worker {gpus_per_worker}: the Ray cluster has "
                              f"{gpus:g} GPUs")
        if workers is None:
            workers = int(gpus // gpus_per_worker) if gpus_per_worker else \
                max(1, int(cpus // cpus_per_worker))
        stats.extra = {"cluster_cpus": cpus, "cluster_gpus": gpus, "workers": workers,
                       "cpus_per_worker": cpus_per_worker}
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # shards complete in order
        context.enable_progress_bars = False  # ours counts photos
        items = [{"shard": n, "row": i, "source": row["source"], "name": row["id"]}
                 for n in todo for i, row in enumerate(job.shard_rows(n))]
        # An actor call takes CALL_BATCHES model batches: fewer round trips per photo.
        per_call = batch_size * CALL_BATCHES
        dataset = ray.data.from_items(items, override_num_blocks=max(
            1, -(-len(items) // per_call)))
        embedded = dataset.map_batches(
            EmbedActor, batch_size=per_call, batch_format="numpy",
            fn_constructor_kwargs={"model": model, "runtime": runtime,
                                   "device": "cuda" if gpus_per_worker else "cpu",
                                   "batch_size": batch_size,
                                   "fingerprint": job.model.fingerprint},
            concurrency=workers, num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None)
        start = time.perf_counter()
        try:
            _collect(job, embedded, stats, progress)
        except ray.exceptions.RayError as exc:  # e.g. an actor could not load the model
            text = str(exc).strip().splitlines()
            raise DataError(f"the Ray job failed: {text[-1] if text else exc}") from None
        stats.seconds = time.perf_counter() - start
    finally:
        if started_here:
            ray.shutdown()
    return stats


def _collect(job: Job, embedded, stats: RunStats, progress: Progress | None) -> None:
    """Assemble the streamed results into shards, writing each once it is whole."""
    buffers: dict[int, tuple[np.ndarray, list]] = {}
    filled: dict[int, int] = {}
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        for shard, row, vector, error in zip(batch["shard"], batch["row"],
                                             batch["vector"], batch["error"], strict=True):
            shard, row = int(shard), int(row)
            if shard not in buffers:
                size = len(job.shard_rows(shard))
                buffers[shard] = (np.zeros((size, job.model.dim), np.float32),
                                  [None] * size)
                filled[shard] = 0
            vectors, errors = buffers[shard]
            vectors[row] = vector
            errors[row] = str(error) or None
            filled[shard] += 1
            if filled[shard] == len(errors):
                job.write(shard, vectors, errors)
                del buffers[shard], filled[shard]
                stats.shards_written += 1
                log.info("shard %d/%d written (%d photos)", shard + 1, job.shards,
                         len(errors))
        stats.embedded += len(batch["row"])
        if progress is not None:
            progress(len(batch["row"]))
        log.debug("received %d photos", stats.embedded)
    if buffers:  # cannot happen unless Ray lost rows
        raise DataError(f"{job.out}: Ray returned incomplete shards "
                        f"{sorted(buffers)}; run again to resume")

"""`fashionlens embed`: photos into Parquet shards of vectors, on Ray Data or in this
process. Heavy imports (the model, Ray, pyarrow) happen inside the command, so that
`fashionlens --help` starts fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..progress import StepBar
from .common import MODEL_HELP, RuntimeName, err, one_of, out

ENGINES = ("ray", "local")


def embed_photos(
    source: Annotated[Path, typer.Argument(
        help="A folder of photos (one sub-folder per category), or a CSV / Parquet file "
             "listing photo paths (relative to the file) or URIs (http(s)://, s3://, gs://, "
             "file://).")],
    out_dir: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder for the shards; run the same command again to resume.")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", metavar="NAME_OR_PATH",
        help=MODEL_HELP + ", or a backbone name (default: 'default'): the catalog's model.")
    ] = None,
    id_column: Annotated[str, typer.Option(help="CSV/Parquet column with item ids.")] = "id",
    image_column: Annotated[str, typer.Option(
        help="CSV/Parquet column with photo paths or URIs.")] = "image",
    shard_size: Annotated[int, typer.Option(
        min=1, help="Photos per shard: the unit of resuming and of import memory.")] = 10_000,
    batch_size: Annotated[int, typer.Option(min=1, help="Photos per model call.")] = 32,
    engine: Annotated[str, typer.Option(
        metavar="[ray|local]", callback=one_of(ENGINES),
        help="ray: Ray Data actor pool (needs the scale extra); local: this process only."),
    ] = "ray",
    address: Annotated[str | None, typer.Option(
        help="An existing Ray cluster (ray://HEAD:10001, or 'auto' on a cluster node); "
             "default: start Ray on this machine.")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Actors holding the model (default: the cluster's CPUs / "
                    "--cpus-per-worker, or its GPUs / --gpus-per-worker).")] = None,
    cpus_per_worker: Annotated[float, typer.Option(
        min=0.1, help="CPUs each actor reserves (its runtime uses them).")] = 2.0,
    gpus_per_worker: Annotated[float, typer.Option(
        min=0.0, help="GPUs each actor reserves (> 0: the model runs on the GPU).")] = 0.0,
    runtime: RuntimeName = "auto",
) -> None:
    """Embed photos into Parquet shards of (id, vector, metadata, model fingerprint).

    Import them with `fashionlens catalog import-vectors OUT --catalog CATALOG`.
    """
    from ..search.embed_job import Job, read_photo_list, run_local, run_ray
    from ..search.embeddings import Embedder
    from ..search.shards import need_pyarrow

    need_pyarrow()
    if engine == "ray":
        from ..search.embed_job import need_ray

        need_ray()
    photos = read_photo_list(source, id_column=id_column, image_column=image_column)
    for problem in photos.problems[:20]:
        err.print(f"skipped: {problem}", highlight=False)
    if len(photos.problems) > 20:
        err.print(f"skipped: ... {len(photos.problems) - 20} more", highlight=False)
    if not photos.rows:
        from ..errors import DataError

        raise DataError(f"{source}: no photo to embed")
    device = "cuda" if gpus_per_worker > 0 else "cpu"
    embedder = Embedder(model, runtime=runtime, device="cpu" if engine == "ray" else device)
    job = Job(photos, out_dir.expanduser(), embedder.vector_model, shard_size,
              names=embedder.vector_names)
    with StepBar("embedding", len(photos.rows)) as bar:
        if engine == "local":
            stats = run_local(job, embedder, batch_size=batch_size,
                              progress=lambda n: bar.advance(steps=n))
        else:
            del embedder  # each actor loads its own
            stats = run_ray(job, model=job.model.spec, runtime=runtime, address=address,
                            workers=workers, cpus_per_worker=cpus_per_worker,
                            gpus_per_worker=gpus_per_worker, batch_size=batch_size,
                            progress=lambda n: bar.advance(steps=n))
    summary = job.finish()
    rate = stats.embedded / stats.seconds if stats.seconds else 0.0
    for failure in summary["failed"][:20]:
        err.print(f"not embedded: {failure['id']} ({failure['source']}): {failure['error']}",
                  highlight=False)
    out.print(f"{summary['rows']} photos in {summary['shards']} shards ({job.out}); this run "
              f"embedded {stats.embedded} ({rate:.1f} photos/s), {stats.skipped} shards were "
              f"done before; {len(summary['failed'])} could not be read; model "
              f"{job.model.spec} ({job.model.dim}-d)", highlight=False)

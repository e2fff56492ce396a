"""`fashionlens embed` on 10,000 photos: Ray Data on this machine versus the single-process
path, and a kill in the middle followed by a resume; JSON.

    flock /tmp/fashionlens-bench.lock python benchmarks/embed_ray.py
    python benchmarks/embed_ray.py --photos 2000 --shard-size 200    # a quicker look

The photos are the shared clothing photos (4,407, about 400 px), linked under new names
until there are `--photos` of them (the same files are read more than once: both engines
read the same list, in the same order). Each engine runs `fashionlens embed` in a new
process with `MODEL` (runtime auto: OpenVINO on the CPU); images/s is
the job's own figure (photos embedded / seconds from the first photo to the last shard,
model loading excluded) and the wall time is the whole command; the engines alternate,
`--repeats` runs each, and the medians are compared. Then a Ray run is killed
(SIGKILL to its process group, Ray's processes included) once `--kill-after` shards are
finished, and the same command resumes it: the figures say how many shards the killed run
finished, how many photos it had embedded that were not in a finished shard (work redone,
from the job's debug log; photos inside the actor, not yet back at the driver, are not
counted: at most a block of CALL_BATCHES model batches),
whether every photo ended up in exactly one shard, and whether the vectors equal those of
the uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

import numpy as np  # noqa: E402

from fashionlens.precision import cpu_description  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "clothing" / "images"
RATE = re.compile(r"this run embedded (\d+) \(([\d.]+) photos/s\), (\d+) shards were done")


def make_photos(folder: Path, count: int) -> None:
    """`count` photos under folder/gNN/, links to the shared clothing photos."""
    sources = sorted(DATA.glob("*.jpg"))
    if not sources:
        sys.exit(f"{DATA}: no photos (see /work/shared/data/README.md)")
    existing = sum(1 for _ in folder.rglob("*.jpg")) if folder.is_dir() else 0
    if existing == count:
        return
    if folder.exists():
        raise SystemExit(f"{folder}: holds {existing} photos, not {count}; remove it")
    for i in range(count):
        target = folder / f"g{i // 1000:02d}" / f"p{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(sources[i % len(sources)])


# The model the committed figures were measured with (the bundled default then).
MODEL = "clothing10"


def embed_command(photos: Path, out: Path, engine: str, shard_size: int, batch: int) -> list:
    return [sys.executable, "-m", "fashionlens.cli.main", "-v", "embed", str(photos), "--out",
            str(out), "--engine", engine, "--shard-size", str(shard_size), "--batch-size",
            str(batch), "--model", MODEL]


def run(command: list, log: Path) -> dict:
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "COLUMNS": "200"})
    wall = time.perf_counter() - start
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{text[-3000:]}")
    match = RATE.search(text)
    return {"wall_s": round(wall, 1), "embedded": int(match[1]),
            "images_per_s": float(match[2]), "shards_done_before": int(match[3])}


def load_shards(out: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    vectors: dict[str, np.ndarray] = {}
    duplicates = 0
    for path in sorted(out.glob("shard-*.parquet")):
        table = pq.read_table(path)
        ids = table.column("id").to_pylist()
        values = table.column("vector").combine_chunks().flatten().to_numpy()
        for item_id, vec in zip(ids, values.reshape(len(ids), -1), strict=True):
            duplicates += item_id in vectors
            vectors[item_id] = vec
    if duplicates:
        raise SystemExit(f"{out}: {duplicates} ids in more than one shard")
    return vectors


def kill_and_resume(photos: Path, out: Path, shard_size: int, batch: int, kill_after: int,
                    reference: dict[str, np.ndarray], logs: Path) -> dict:
    command = embed_command(photos, out, "ray", shard_size, batch)
    log = logs / "ray-killed.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True, env={**os.environ, "COLUMNS": "200"})
        # Killed in the middle of a shard: half-way through the one after `kill_after`.
        target = int((kill_after + 0.5) * shard_size)
        while proc.poll() is None and max(
                [int(m) for m in re.findall(r"received (\d+) photos", log.read_text())],
                default=0) < target:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(2)  # let the killed Ray processes go
    finished = len(list(out.glob("shard-*.done")))
    received = [int(m) for m in re.findall(r"received (\d+) photos", log.read_text())]
    embedded_before_kill = max(received, default=0)
    saved = sum(json.loads(p.read_text())["rows"] + len(json.loads(p.read_text())["failed"])
                for p in out.glob("shard-*.done"))
    resumed = run(command, logs / "ray-resumed.log")
    vectors = load_shards(out)
    same_ids = vectors.keys() == reference.keys()
    max_diff = max(float(np.abs(vectors[k] - reference[k]).max()) for k in reference) \
        if same_ids else None
    return {"killed_after_finished_shards": finished,
            "photos_embedded_before_kill": embedded_before_kill,
            "photos_in_finished_shards_at_kill": saved,
            "photos_redone": embedded_before_kill - saved,
            "shards_redone": -(-(embedded_before_kill - saved) // shard_size),
            "resume": resumed,
            "resume_skipped_shards": resumed["shards_done_before"],
            "every_photo_once": same_ids and len(vectors) == len(reference),
            "max_abs_vector_difference_vs_uninterrupted": max_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--kill-after", type=int, default=4, help="finished shards")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each engine")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fashionlens-embed-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results-embed-ray.json")
    args = parser.parse_args()
    photos = args.work / "photos"
    make_photos(photos, args.photos)
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {"local": [], "ray": []}
    for repeat in range(args.repeats):  # alternated: other jobs' load hits both alike
        for engine in ("local", "ray"):
            out = args.work / f"out-{engine}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            row = run(embed_command(photos, out, engine, args.shard_size, args.batch_size),
                      logs / f"{engine}-{repeat}.log")
            row["load_average_1min_after"] = round(os.getloadavg()[0], 2)
            runs[engine].append(row)
            print(engine, row, flush=True)
    results = {engine: {
        "runs": rows,
        "images_per_s": statistics.median(r["images_per_s"] for r in rows),
        "wall_s": statistics.median(r["wall_s"] for r in rows)} for engine, rows in runs.items()}
    reference = load_shards(args.work / "out-ray")
    local = load_shards(args.work / "out-local")
    engines_agree = max(float(np.abs(local[k] - reference[k]).max()) for k in reference)
    killed = args.work / "out-killed"
    subprocess.run(["rm", "-rf", str(killed)], check=True)
    kill = kill_and_resume(photos, killed, args.shard_size, args.batch_size, args.kill_after,
                           reference, logs)
    print("kill and resume", kill, flush=True)
    overhead = 1 - results["ray"]["images_per_s"] / results["local"]["images_per_s"]
    report = {
        "benchmark": "fashionlens embed: Ray Data on one machine vs the single-process path",
        "cpu": cpu_description(),
        "load_average_at_end": os.getloadavg(),
        "photos": args.photos, "photo_source": "shared clothing photos (about 400 px JPEG), "
                                               "linked under new names",
        "model": f"{MODEL} (bundled), runtime auto (OpenVINO)",
        "shard_size": args.shard_size, "batch_size": args.batch_size,
        "single_process": results["local"], "ray_local": results["ray"],
        "ray_overhead_images_per_s": round(overhead, 4),
        "ray_overhead_wall": round(results["ray"]["wall_s"] / results["local"]["wall_s"] - 1, 4),
        "target_ray_within_15_percent": overhead <= 0.15,
        "max_abs_vector_difference_ray_vs_local": engines_agree,
        "kill_and_resume": kill,
        "target_resume_loses_nothing_and_redoes_at_most_one_shard":
            kill["every_photo_once"] and kill["shards_redone"] <= 1
            and kill["max_abs_vector_difference_vs_uninterrupted"] is not None
            and kill["max_abs_vector_difference_vs_uninterrupted"] < 1e-5,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

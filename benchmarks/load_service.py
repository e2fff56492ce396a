"""Load test of the web service: N concurrent clients on loopback for a bounded time.

Each client loops over the bundled sample photos and, for each photo, sends one
`POST /api/v1/classify` and then one `POST /api/v1/similar` (k=10) of the same bytes, as
the web app's "Try it" page does. Each pair's photo carries a unique JPEG comment, so the
server never sees the same upload twice across pairs (its output cache can only serve the
similar request of the pair; `--cache-entries 0` turns that off too).

Prints one JSON object (and writes it with `--out`): throughput, p50/p95/p99 latency per
endpoint and for the classify+similar pair, errors, and how well requests were
micro-batched; next to the latency, the plain PyTorch model-only time measured in this
process in the same run (batch 1, eager forward of the served model on the same photos,
pre-processed beforehand: what one photo costs without HTTP, decoding, batching or the
catalog); and the server's resident memory (RSS) at the start, its peak, at the end of
the load and after a short idle, with whether it came back within 10 % of the start.

By default the script starts its own server (`fashionlens serve --demo` on a free
loopback port, the bundled model, a catalog of the 40 sample photos) and stops it at the
end. `--url` targets a running server instead (`--pid` then names its process for RSS).

    python benchmarks/load_service.py --clients 8 --duration 60 \
        --out benchmarks/results-load-service.json
    python benchmarks/load_service.py --clients 4 --duration 300   # memory over 5 minutes
    python benchmarks/load_service.py --clients 4 --runtime torch  # the PyTorch server
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from report import emit

from fashionlens.inference import SAMPLE_PHOTOS
from fashionlens.precision import cpu_description

MEMORY_TOLERANCE = 0.10  # the server's RSS after the idle period, relative to its start


def model_only_ms(photos: list[Path], repeats: int = 3) -> dict:
    """Batch-1 eager forward passes of the bundled model (the one `serve --demo` serves)
    on the same photos, in this process: the cost of the network alone, for scale.
    Decoding and pre-processing happen before the clock starts; the precision is the one
    torch server uses (bf16 autocast where the CPU has it)."""
    import torch

    from fashionlens.data.images import load_image
    from fashionlens.inference import Predictor

    predictor = Predictor(runtime="torch")  # the eager network, whatever the server runs
    model = predictor.model.eval()
    size = predictor.model_info.preprocess.resize_size
    tensors = [torch.from_numpy(predictor.transform(load_image(p, draft_size=size)))[None]
               .contiguous(memory_format=torch.channels_last) for p in photos]
    times: dict[str, list[float]] = {"fp32": [], predictor.precision: []}
    with torch.no_grad():
        for precision in times:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                for t in tensors[:3]:  # warm-up
                    model(t)
                for _ in range(repeats):
                    for t in tensors:
                        start = time.perf_counter()
                        model(t)
                        times[precision].append(time.perf_counter() - start)
    result = {name: percentiles(values) for name, values in times.items()}
    result["server_precision"] = predictor.precision
    result["threads"] = torch.get_num_threads()
    result["photos"] = len(photos)
    return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class MemorySampler(threading.Thread):
    """Samples a process's RSS every `every` seconds until stopped."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self._halt.is_set():
            value = rss_mb(self.pid)
            if value is not None:
                self.samples.append((time.monotonic() - start, value))
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    arr = np.asarray(values) * 1000
    return {"count": len(values), "mean": round(float(arr.mean()), 1),
            "p50": round(float(np.percentile(arr, 50)), 1),
            "p95": round(float(np.percentile(arr, 95)), 1),
            "p99": round(float(np.percentile(arr, 99)), 1),
            "max": round(float(arr.max()), 1)}


def start_server(port: int, workdir: Path, cache_entries: int | None,
                 runtime: str = "auto") -> subprocess.Popen:
    command = [sys.executable, "-m", "fashionlens.cli.main", "-q", "serve", "--demo",
               "--catalog", str(workdir / "catalog"), "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", "--runtime", runtime]
    if cache_entries is not None:
        command += ["--cache-entries", str(cache_entries)]
    env = {**os.environ, "FASHIONLENS_PROGRESS": "0"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "server.log", "w"))  # noqa: SIM115


async def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {proc.returncode}")
            try:
                response = await client.get(url + "/readyz")
                if response.status_code == 200:
                    return response.json()
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} was not ready within {timeout:.0f} s")


def unique_jpeg(photo: bytes, tag: str) -> bytes:
    """The same JPEG with a comment segment naming this request: a new photo as far as
    any cache is concerned, the same pixels for the model."""
    comment = tag.encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return photo[:2] + segment + photo[2:]


async def client_loop(client: httpx.AsyncClient, photos: list[bytes], offset: int,
                      stop_at: float, stats: dict, k: int) -> None:
    i = offset
    while time.monotonic() < stop_at:
        # Every pair sends a photo the server has not seen; classify and similar of one
        # pair send the same bytes, as the web app does.
        photo = unique_jpeg(photos[i % len(photos)], f"load test {offset} {i} {time.time()}")
        i += 1
        pair_start = time.perf_counter()
        ok = True
        for name, path, params in (("classify", "/api/v1/classify", {"top_k": 5}),
                                   ("similar", "/api/v1/similar", {"k": k})):
            start = time.perf_counter()
            try:
                response = await client.post(path, params=params, content=photo,
                                             headers={"Content-Type": "image/jpeg"})
                elapsed = time.perf_counter() - start
                if response.status_code != 200:
                    ok = False
                    stats["errors"].append(f"{name}: HTTP {response.status_code} "
                                           f"{response.text[:200]}")
                else:
                    stats[name].append(elapsed)
            except httpx.HTTPError as exc:
                ok = False
                stats["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
        if ok:
            stats["pair"].append(time.perf_counter() - pair_start)


async def run_load(url: str, clients: int, duration: float, warmup: float, k: int) -> dict:
    photos = [p.read_bytes() for p in sorted(SAMPLE_PHOTOS.rglob("*.jpg"))]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        if warmup > 0:
            scratch = {"classify": [], "similar": [], "pair": [], "errors": []}
            stop_at = time.monotonic() + warmup
            await asyncio.gather(*(client_loop(client, photos, 7 * c, stop_at, scratch, k)
                                   for c in range(clients)))
        stats: dict[str, list] = {"classify": [], "similar": [], "pair": [], "errors": []}
        started = time.monotonic()
        stop_at = started + duration
        await asyncio.gather(*(client_loop(client, photos, 11 * c, stop_at, stats, k)
                               for c in range(clients)))
        stats["elapsed"] = time.monotonic() - started
    return stats


def memory_check(start: float | None, peak: float | None, idle: float | None) -> dict:
    """RSS at the start of the load, its peak and after the idle period (MB), and whether
    the server gave the memory back (at most MEMORY_TOLERANCE above the start; ending
    below it, as malloc_trim after start-up allocations can make it, counts as given back)."""
    if start is None or idle is None:
        return {}
    return {"start": round(start, 1), "peak": round(peak or start, 1),
            "after_idle": round(idle, 1),
            "after_idle_vs_start": round(idle / start - 1, 4),
            "within_10_percent": idle / start - 1 <= MEMORY_TOLERANCE}


def memory_summary(samples: list[tuple[float, float]], measured_from: float) -> dict:
    if not samples:
        return {}
    during = [(t, v) for t, v in samples if t >= measured_from] or samples
    times = np.array([t for t, _ in during])
    values = np.array([v for _, v in during])
    slope = float(np.polyfit(times, values, 1)[0]) * 60 if len(during) > 2 else 0.0
    timeline, next_mark = [], times[0]
    for t, v in zip(times, values, strict=True):
        if t >= next_mark:
            timeline.append(round(float(v), 1))
            next_mark += 30
    return {"start": round(float(values[0]), 1), "end": round(float(values[-1]), 1),
            "max": round(float(values.max()), 1), "min": round(float(values.min()), 1),
            "trend_mb_per_min": round(slope, 2), "every_30s": timeline,
            "samples": len(during)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds first")
    parser.add_argument("-k", type=int, default=10, help="similar items per request")
    parser.add_argument("--url", help="a running server (loopback only), e.g. "
                                      "http://127.0.0.1:8000; default: start one")
    parser.add_argument("--pid", type=int, help="the running server's process id (for RSS)")
    parser.add_argument("--cache-entries", type=int,
                        help="serve --cache-entries for the server this script starts; 0 "
                             "makes every similar request decode and run the model again")
    parser.add_argument("--idle", type=float, default=20,
                        help="seconds to wait after the load before reading the server's "
                             "memory again")
    parser.add_argument("--runtime", default="auto",
                        help="serve --runtime for the server this script starts (auto, "
                             "torch, onnxruntime, openvino, openvino-int8)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.clients < 1 or args.duration <= 0 or args.duration > 3600:
        parser.error("need --clients >= 1 and 0 < --duration <= 3600")

    proc = None
    finished = False
    workdir = Path(tempfile.mkdtemp(prefix="fashionlens-load-"))
    if args.url:
        url = args.url.rstrip("/")
        if httpx.URL(url).host not in ("127.0.0.1", "localhost", "::1"):
            parser.error("the load test only targets a server on this machine (loopback)")
        pid = args.pid
    else:
        url = f"http://127.0.0.1:{free_port()}"
        proc = start_server(int(url.rsplit(":", 1)[1]), workdir, args.cache_entries,
                            args.runtime)
        pid = proc.pid
    photo_paths = sorted(SAMPLE_PHOTOS.rglob("*.jpg"))
    try:
        startup = time.monotonic()
        asyncio.run(wait_ready(url, proc))
        startup_s = time.monotonic() - startup
        # The model alone, measured here while the server waits (same machine, same run).
        model_only = model_only_ms(photo_paths)
        rss_start = rss_mb(pid) if pid else None
        sampler = MemorySampler(pid) if pid else None
        if sampler:
            sampler.start()
        load_before = os.getloadavg()
        stats = asyncio.run(run_load(url, args.clients, args.duration, args.warmup, args.k))
        load_after = os.getloadavg()
        ready = httpx.get(url + "/readyz", timeout=10).json()
        time.sleep(args.idle)
        if sampler:
            sampler.stop()
        rss_idle = rss_mb(pid) if pid else None
        peak = max((v for _, v in sampler.samples), default=None) if sampler else None
        finished = True
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if finished:
            shutil.rmtree(workdir, ignore_errors=True)  # the demo catalog and the server log
        else:
            print(f"server log: {workdir / 'server.log'}", file=sys.stderr)
    requests = len(stats["classify"]) + len(stats["similar"]) + len(stats["errors"])
    result = {
        "clients": args.clients,
        "duration_s": round(stats["elapsed"], 1),
        "warmup_s": args.warmup,
        "server": "started by this script (serve --demo)" if proc else url,
        "runtime": args.runtime if proc else None,
        "cache_entries": args.cache_entries if proc else None,
        "server_startup_s": round(startup_s, 1) if proc else None,
        "requests": requests,
        "throughput_rps": round(requests / stats["elapsed"], 1),
        "photos_per_s": round(len(stats["pair"]) / stats["elapsed"], 1),
        "errors": len(stats["errors"]),
        "error_samples": stats["errors"][:5],
        "latency_ms": {"classify": percentiles(stats["classify"]),
                       "similar": percentiles(stats["similar"]),
                       "classify+similar": percentiles(stats["pair"])},
        "model_only_ms_batch1": model_only,
        "classify+similar_p50_vs_model_only_p50": round(
            percentiles(stats["pair"]).get("p50", 0)
            / model_only[model_only["server_precision"]]["p50"], 2) if stats["pair"] else None,
        "memory_mb": memory_check(rss_start, peak, rss_idle),
        "idle_s": args.idle,
        "rss_mb": memory_summary(sampler.samples, args.warmup) if sampler else None,
        "batching": ready.get("batching"),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "cpu_count": os.cpu_count(),
        "cpu": cpu_description(),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()

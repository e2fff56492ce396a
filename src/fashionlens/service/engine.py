"""The service's shared state: models loaded once, the catalog, and how work is scheduled.

- Every served model is a `Predictor`, loaded at start-up (by default every bundled
  model; `ServiceSettings.model_specs`). Its forward pass runs behind a `MicroBatcher`
  on one inference thread and yields, from one run of the model, every head's scores
  (by head name: a classifier's softmax, a tagger's sigmoid) and the search vector, so
  a "classify" and a "similar items" request for the catalog's own model share batches.
- Photo decoding and pre-processing run on the request thread pool (Pillow releases the
  GIL), never on the event loop.
- The catalog (SQLite + FAISS) lives on a thread of its own: its SQLite connection
  belongs to the thread that opened it, and one thread serialises writes for free.
  Query photos are embedded in the same micro-batches and searched by vector.
- Both threads are daemon threads (`threads.DaemonThreadExecutor`): closing the engine
  waits a bounded time for a running job, so a stuck request never keeps the process
  from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..data.images import MAX_PIXELS, load_image
from ..errors import FashionLensError, ImageError, ModelError
from ..inference.outputs import VECTOR
from ..inference.photos import DecodedBatch, stacked_by_shape
from ..inference.predictor import Predictor
from ..models.info import HeadSpec
from ..search.catalog import Catalog
from ..search.embeddings import Embedder
from .batching import MicroBatcher
from .errors import ApiError
from .settings import ServiceSettings
from .threads import DaemonThreadExecutor

log = logging.getLogger(__name__)

T = TypeVar("T")
PLOTS = ("confusion", "curves")


# --- photos --------------------------------------------------------------------------


def decode_upload(data: bytes, name: str, max_side: int, draft_size: int | None
                  ) -> Image.Image:
    """An uploaded photo as RGB; ImageError (422) for anything that is not a usable photo.

    The header is read first, so a photo with absurd dimensions is refused before a
    single pixel is decoded.
    """
    if not data:
        raise ImageError(name, "empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
        except Exception:  # noqa: BLE001 - load_image gives the precise reason below
            width = height = 0
    if max(width, height) > max_side:
        raise ImageError(name, f"image is {width}x{height} pixels; the longest side accepted "
                               f"is {max_side} pixels")
    if width * height > MAX_PIXELS:
        raise ImageError(name, f"image is {width}x{height} pixels, above the limit of "
                               f"{MAX_PIXELS:,} (possible decompression bomb)")
    return load_image(data, draft_size=draft_size, name=name)


# --- models --------------------------------------------------------------------------


@dataclass
class Output:
    """What one forward pass gives for one photo: each scored head's scores by head name
    (empty for the catalog embedder's pass) and the search vector, where there is one."""

    scores: dict[str, np.ndarray]
    vector: np.ndarray | None


class ServedModel:
    """One model folder served over HTTP: predictor, metrics, plots, its batcher."""

    def __init__(self, name: str, model_dir: Path, predictor: Predictor,
                 executor: Executor, settings: ServiceSettings, cache: OutputCache) -> None:
        self.name = name
        self.model_dir = model_dir
        self.predictor = predictor
        self.info = predictor.model_info
        self.transform = predictor.transform
        self.draft_size = self.info.preprocess.resize_size
        self.runtime = predictor.runtime
        self.heads: list[HeadSpec] = self.info.scored_heads
        # One run gives every head and, where the model makes one, the search vector.
        self.outputs = [h.name for h in self.heads]
        missing = [name for name in self.outputs if name not in self.runtime.outputs]
        if missing:
            raise ModelError(f"{model_dir}: the model cannot run its head(s) "
                             f"{', '.join(missing)} on their own (no timm forward_head)")
        if VECTOR in self.runtime.outputs:
            self.outputs.append(VECTOR)
        self.batcher: MicroBatcher[np.ndarray, Output] = MicroBatcher(
            self.forward, executor, max_batch=settings.max_batch,
            max_wait_ms=settings.batch_wait_ms, name=f"model {name}")
        self.photos = PhotoPass(name, self.draft_size, self.transform, self.batcher.submit,
                                cache, settings.max_image_side)

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    def forward(self, tensors: list[np.ndarray]) -> list[Output]:
        """One pass over a micro-batch (runs on the inference thread): every head's
        scores and, where the model gives one, the search vector. Photos of several input
        shapes (a model with canvases) run as one stack per shape."""
        positions = range(len(tensors))
        batch = DecodedBatch(list(positions), stacked_by_shape(tensors, positions), {})
        outputs = batch.map(lambda stack: self.runtime.run(stack, self.outputs))
        vectors = outputs.get(VECTOR)
        return [Output({h.name: outputs[h.name][i] for h in self.heads},
                       None if vectors is None else vectors[i])
                for i in positions]

    def plot(self, which: str) -> Path | None:
        """The run's confusion matrix or curves image, next to the model or in its run."""
        for folder in (self.model_dir, self.model_dir.parent):
            path = folder / f"{which}.png"
            if path.is_file():
                return path
        return None

    def metrics(self) -> dict:
        """Validation metrics from the artifact, else from the run's metrics.json."""
        if self.info.metrics:
            return self.info.metrics
        path = self.model_dir.parent / "metrics.json"
        with contextlib.suppress(OSError, json.JSONDecodeError):
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return data
        return {}


@dataclass
class PhotoResult:
    """A photo's forward-pass output and its size, as cached."""

    output: Output
    width: int
    height: int


class OutputCache:
    """The last few photos' outputs, by (forward pass, digest of the uploaded bytes).

    The web app (and a shop's listing flow) sends the same photo to classify and then to
    similar; with the catalog's own model one forward pass gives both answers, so the
    second request skips decoding and the model. Only used from the event loop.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._entries: OrderedDict[tuple[str, bytes], PhotoResult] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, bytes], need_vector: bool = False) -> PhotoResult | None:
        found = self._entries.get(key) if self.capacity else None
        if found is None or (need_vector and found.output.vector is None):
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: tuple[str, bytes], value: PhotoResult) -> None:
        if not self.capacity:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def photo_digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class PhotoPass:
    """Uploaded photos through one batched forward pass: decoded (bounded) and
    pre-processed on the request thread pool, run in a micro-batch, and kept in the
    output cache by the photo's bytes, so the same photo sent again (classify, then
    similar) skips decoding and the model."""

    def __init__(self, key: str, draft_size: int | None,
                 transform: Callable[[Image.Image], np.ndarray],
                 submit: Callable[[np.ndarray], Awaitable[Output]], cache: OutputCache,
                 max_side: int) -> None:
        self.key = key  # names the forward pass in the cache
        self.draft_size = draft_size
        self.transform = transform
        self.submit = submit
        self.cache = cache
        self.max_side = max_side

    async def output(self, data: bytes, name: str, need_vector: bool = False) -> PhotoResult:
        """The pass's output for one uploaded photo, and the photo's size."""
        digest = (photo_digest(data) if len(data) < (1 << 18)
                  else await run_in_threadpool(photo_digest, data))
        cached = self.cache.get((self.key, digest), need_vector)
        if cached is not None:
            return cached
        img = await run_in_threadpool(decode_upload, data, name, self.max_side,
                                      self.draft_size)
        tensor = await run_in_threadpool(self.transform, img)
        result = PhotoResult(await self.submit(tensor), img.width, img.height)
        self.cache.put((self.key, digest), result)
        return result


class PhotoSearch:
    """Answers "items similar to this photo" for one catalog: the photo's query vector
    and the catalog's search, in one call (`similar`).

    The vector comes from a served model's pass when that model makes the catalog's
    vectors (the same weights and embedding settings: the same fingerprint), so a
    classify and a similar request of one photo share it; otherwise from the catalog's
    embedder behind a batcher of its own.
    """

    def __init__(self, catalog: CatalogService, embedder: Embedder,
                 models: Sequence[ServedModel], executor: Executor,
                 settings: ServiceSettings, cache: OutputCache) -> None:
        self.catalog = catalog
        self.embedder = embedder
        self.model: ServedModel | None = None
        for served in models:
            if VECTOR in served.runtime.outputs and \
                    served.runtime.fingerprint == embedder.fingerprint and \
                    served.runtime.precision == embedder.precision and \
                    served.info.preprocess.to_dict() == embedder.preprocess.to_dict():
                self.model = served
                break
        self.batcher: MicroBatcher[np.ndarray, np.ndarray] | None = None
        if self.model is not None:
            self.photos = self.model.photos
        else:
            self.batcher = MicroBatcher(self._vectors, executor, max_batch=settings.max_batch,
                                        max_wait_ms=settings.batch_wait_ms,
                                        name="catalog embedder")
            self.photos = PhotoPass(f"catalog embedder {embedder.fingerprint}",
                                    embedder.preprocess.resize_size, embedder.transform,
                                    self._submit, cache, settings.max_image_side)

    def _vectors(self, tensors: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.embedder.vectors(np.stack(tensors)))

    async def _submit(self, tensor: np.ndarray) -> Output:
        assert self.batcher is not None
        return Output({}, await self.batcher.submit(tensor))

    async def similar(self, data: bytes, name: str, **options: Any
                      ) -> tuple[PhotoResult, list]:
        """The uploaded photo's pass (its size) and the catalog's matches for its vector,
        best first; `options` are `Catalog.search`'s (k, filters, steer)."""
        result = await self.photos.output(data, name, need_vector=True)
        return result, await self.catalog.search(vector=result.output.vector, **options)


class CatalogService:
    """A catalog opened on, and only ever used from, its own thread."""

    def __init__(self, path: Path, runtime: str = "auto") -> None:
        self.path = path
        self.runtime = runtime
        self.executor = DaemonThreadExecutor("catalog")
        self.catalog: Catalog
        self.embedder: Embedder | None
        self.catalog, self.embedder = self.executor.submit(self._open).result()
        self.images_dir = (self.path / "images").resolve()

    def _open(self) -> tuple[Catalog, Embedder | None]:
        catalog = Catalog(self.path, runtime=self.runtime)
        try:
            return catalog, catalog.embedder()
        except ModelError:
            catalog.close()
            raise
        except FashionLensError as exc:
            # A catalog of imported vectors without their model: searchable by item only.
            log.warning("%s", exc)
            return catalog, None

    def call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.executor.submit(fn, *args, **kwargs).result()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args)` on the catalog thread without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def search(self, **options: Any) -> list:
        """`Catalog.search` on the catalog thread: matches for a `vector` or an `item`."""
        return await self.call(self.catalog.search, **options)

    @property
    def supports_steering(self) -> bool:
        return hasattr(self.catalog, "directions")

    def directions(self) -> list[str]:
        return list(self.catalog.directions()) if self.supports_steering else []

    def close(self, timeout: float | None = None) -> bool:
        """Close the catalog after the running job, waiting at most `timeout` seconds;
        queued jobs are cancelled. Returns whether it closed in time."""
        try:
            closing = self.executor.submit(self.catalog.close)
        except RuntimeError:  # closed before
            return True
        done = self.executor.shutdown(wait=True, cancel_futures=False, timeout=timeout)
        if not done:
            closing.cancel()
            log.warning("the catalog is still busy after %s s; leaving it to the process "
                        "exit (an unfinished write is rolled back)", timeout)
        return done


# --- the whole engine ----------------------------------------------------------------


def _model_name(model_dir: Path, info_name: str) -> str:
    if info_name:
        return info_name
    if model_dir.name == "model":  # a training run's folder: runs/NAME/model
        return model_dir.parent.name
    return model_dir.name


class Engine:
    """Models, catalog and executors of one running service."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        # One inference thread: a forward pass already uses every core.
        self.inference = DaemonThreadExecutor("inference")
        self.models: dict[str, ServedModel] = {}
        self.catalog: CatalogService | None = None
        self.query: PhotoSearch | None = None
        self._requery = asyncio.Lock()  # one rebuild of the query encoder at a time
        self.cache = OutputCache(settings.cache_entries)
        try:
            for spec in settings.model_specs():
                try:
                    self._load_model(spec)
                except FashionLensError as exc:
                    # A bundled model found, not asked for, must not stop the service.
                    if settings.models or spec == "default":
                        raise
                    log.warning("not serving the bundled model %s: %s", spec, exc)
            if not self.models:
                raise ModelError("none of the bundled models could be loaded (see the "
                                 "warnings above); name one with --model")
            self.default_model = next(iter(self.models))
            if settings.catalog:
                self.catalog = CatalogService(Path(settings.catalog).expanduser(),
                                              runtime=settings.runtime)
                if self.catalog.embedder is not None:
                    self._match_catalog_precision(self.catalog.embedder)
                    self.query = self._photo_search(self.catalog.embedder)
        except BaseException:
            self.close()
            raise

    def _load_model(self, spec: str) -> None:
        predictor = Predictor(spec, runtime=self.settings.runtime)
        model_dir = predictor.model_dir
        name = base = _model_name(model_dir, predictor.model_info.name)
        n = 2
        while name in self.models:
            name, n = f"{base}-{n}", n + 1
        self.models[name] = ServedModel(name, model_dir.resolve(), predictor, self.inference,
                                        self.settings, self.cache)
        log.info("serving model %s from %s", name, model_dir)

    def _match_catalog_precision(self, embedder: Embedder) -> None:
        """A served model that makes the catalog's vectors runs at the embedder's
        precision, so one pass answers classify and similar with vectors like the stored
        ones (under 'auto' a model may otherwise run int8, which embedders never do)."""
        for name, served in list(self.models.items()):
            if served.runtime.fingerprint == embedder.fingerprint and \
                    served.runtime.precision != embedder.precision:
                predictor = Predictor(str(served.model_dir), runtime=self.settings.runtime,
                                      precision=embedder.precision)
                self.models[name] = ServedModel(name, served.model_dir, predictor,
                                                self.inference, self.settings, self.cache)
                log.info("model %s runs %s like the catalog's embedder", name,
                         predictor.precision)

    def model(self, name: str | None) -> ServedModel:
        if not name:
            return self.models[self.default_model]
        if name not in self.models:
            raise ApiError(404, "unknown_model", f"unknown model '{name}'; served models: "
                                                 f"{', '.join(self.models)}")
        return self.models[name]

    def _photo_search(self, embedder: Embedder) -> PhotoSearch:
        assert self.catalog is not None
        return PhotoSearch(self.catalog, embedder, list(self.models.values()), self.inference,
                           self.settings, self.cache)

    def activity(self) -> int:
        """A number that grows with every photo handled (for the idle memory trim)."""
        count = self.cache.hits + self.cache.misses
        count += sum(m.batcher.items for m in self.models.values())
        if self.query is not None and self.query.batcher is not None:
            count += self.query.batcher.items
        return count

    def batching_stats(self) -> dict[str, dict]:
        """Requests and forward passes per batcher: how well micro-batching groups work."""
        batchers = [(f"model {name}", m.batcher) for name, m in self.models.items()]
        if self.query is not None and self.query.batcher is not None:
            batchers.append(("catalog embedder", self.query.batcher))
        stats = {name: {"requests": b.items, "batches": b.batches,
                        "mean_batch": round(b.mean_batch, 2)} for name, b in batchers}
        stats["output cache"] = {"capacity": self.cache.capacity, "hits": self.cache.hits,
                                 "misses": self.cache.misses}
        return stats

    def require_catalog(self) -> CatalogService:
        if self.catalog is None:
            raise ApiError(404, "no_catalog", "no catalog is served; start the service with "
                                              "--catalog FOLDER (or --demo)")
        return self.catalog

    def require_query(self) -> PhotoSearch:
        if self.query is None:
            raise ApiError(409, "no_photo_search",
                           "this catalog holds imported vectors without their model, so it "
                           "cannot embed photos; search by item instead")
        return self.query

    async def photo_search(self) -> PhotoSearch:
        """What answers a photo query, for the model the catalog holds vectors of now:
        when another process has re-embedded the catalog (`catalog reembed`), photo
        queries switch to its new model instead of comparing vectors of two models."""
        query = self.require_query()
        catalog = self.require_catalog()
        fingerprint = await catalog.call(catalog.catalog.model_fingerprint)
        if fingerprint is None or query.embedder.makes_vectors_of(fingerprint):
            return query
        async with self._requery:
            if self.query is not None and not self.query.embedder.makes_vectors_of(fingerprint):
                embedder = await catalog.call(catalog.catalog.embedder)
                log.info("the catalog now holds vectors of %s; photo queries follow",
                         embedder.spec)
                self.query = self._photo_search(embedder)
                catalog.embedder = embedder
        return self.require_query()

    def close(self, timeout: float | None = None) -> None:
        """Release the catalog and the inference thread, waiting at most `timeout`
        seconds (None: until the running jobs finish)."""
        self.inference.shutdown(wait=False, cancel_futures=True)
        if self.catalog is not None:
            self.catalog.close(timeout)

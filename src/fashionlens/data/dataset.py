"""A torch Dataset over labelled photos that survives unreadable files.

Decoding a 400-1000 px JPEG costs more than augmenting it, and a training run reads
every photo once per epoch; `preload` decodes each photo once, shrunk to just above
the training size, and keeps it in memory. Unreadable photos are skipped and listed.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..errors import ImageError
from .images import load_image, resize_short_side
from .preprocess import grouped_by_shape
from .sources import Sample

log = logging.getLogger(__name__)


class PhotoDataset(Dataset):
    """Photos only: an item is (tensor, index). Targets live with the tasks that read
    them (`tasks.Task.encode`), looked up by index, so one dataset serves any heads."""

    def __init__(self, samples: Sequence[Sample],
                 transform: Callable[[Image.Image], torch.Tensor],
                 cache_short_side: int | None = None, draft_size: int | None = None) -> None:
        """`cache_short_side` shrinks each decoded photo to that short side (a training
        run's memory); `draft_size` alone decodes JPEGs at reduced scale and keeps what
        the decoder gives, the pixels `predict` reads (`inference.photos.prepare_photo`):
        a second resampling moved one home photo's answer in 341."""
        self.samples = list(samples)
        self.transform = transform
        self.cache_short_side = cache_short_side
        self.draft_size = draft_size or cache_short_side
        self._cache: list[Image.Image | None] | None = None
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, path: Path) -> Image.Image:
        img = load_image(path, draft_size=self.draft_size)
        if self.cache_short_side:
            img = resize_short_side(img, self.cache_short_side)
        return img

    def preload(self, progress: Callable[[Iterable], Iterable] | None = None,
                threads: int = 2) -> None:
        """Decode every photo once; drop the unreadable ones (listed in `skipped`)."""

        def read(sample: Sample) -> Image.Image | ImageError:
            try:
                return self._read(sample.path)
            except ImageError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = pool.map(read, self.samples)
            if progress is not None:
                results = progress(results)
            loaded = list(results)
        kept, cache = [], []
        for sample, result in zip(self.samples, loaded, strict=True):
            if isinstance(result, ImageError):
                self.skipped[str(sample.path)] = result.reason
            else:
                kept.append(sample)
                cache.append(result)
        self.samples, self._cache = kept, cache

    def with_transform(self, transform: Callable[[Image.Image], torch.Tensor]) -> PhotoDataset:
        """The same photos (and decoded cache) seen through another transform."""
        twin = PhotoDataset(self.samples, transform, self.cache_short_side, self.draft_size)
        twin._cache = self._cache
        return twin

    def read_as_predict(self, draft_size: int) -> PhotoDataset:
        """The same photos, read afresh each time as `predict` reads them (decoded at
        reduced scale, resized once by the transform): the figures a run reports are
        then the ones `evaluate` gives on the same photos."""
        return PhotoDataset(self.samples, self.transform, draft_size=draft_size)

    def image(self, index: int) -> Image.Image:
        if self._cache is not None:
            return self._cache[index]
        return self._read(self.samples[index].path)

    def __getitem__(self, key: int | tuple[int, int]):
        """`key` is a row, or (row, seed) from `SeededEpochSampler`: then the photo's random
        augmentation is drawn from that seed alone."""
        if isinstance(key, tuple):
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self._item(index)
        return self._item(key)

    def _item(self, index: int):
        try:
            img = self.image(index)
        except ImageError as exc:
            # Found unreadable only now (no preload). Worker processes cannot update
            # `skipped` in the main process, so the failure travels with the batch.
            log.warning("skipping %s", exc)
            return exc
        return self.transform(img), index

    def record_skipped(self, errors: list[ImageError]) -> None:
        for exc in errors:
            self.skipped[exc.path] = exc.reason


def collate_skipping(batch: list):
    """Stack the readable photos; hand back the unreadable ones' errors beside them."""
    errors = [b for b in batch if isinstance(b, ImageError)]
    good = [b for b in batch if not isinstance(b, ImageError)]
    if not good:
        return None, errors
    images, indices = zip(*good, strict=True)
    return (torch.stack(images), torch.tensor(indices)), errors


def collate_by_shape(batch: list):
    """`collate_skipping` for photos of several input shapes (a model with canvases):
    a list of (images, indices) stacks, one per shape, beside the unreadable photos'
    errors. With one shape it is one stack, as `collate_skipping` gives."""
    errors = [b for b in batch if isinstance(b, ImageError)]
    good = [b for b in batch if not isinstance(b, ImageError)]
    images = [image for image, _ in good]
    stacks = [(torch.stack([images[k] for k in ks]), torch.tensor([good[k][1] for k in ks]))
              for ks in grouped_by_shape(images)]
    return stacks, errors


class SeededEpochSampler(Sampler):
    """Draws rows as `base` does, in an order and with augmentation seeds that depend only
    on (run seed, epoch, position): not on which worker process decodes a photo or how
    long it has lived. An interrupted run resumed at epoch k sees exactly the batches an
    uninterrupted one would."""

    def __init__(self, base: Sampler, generator: torch.Generator, seed: int) -> None:
        self.base, self.generator, self.seed = base, generator, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        for position, index in enumerate(self.base):
            yield int(index), (start + position) % (2**63 - 1)

    def __len__(self) -> int:
        return len(self.base)


class ShardedEpochSampler(Sampler):
    """One process's share of a `SeededEpochSampler`'s batches, for distributed training.

    Every process draws the same seeded order; global batch k is positions
    [k*batch_size, (k+1)*batch_size) of it, and process `rank` takes the rank-th of
    `world` equal slices of each (a DataLoader with batch_size // world then yields
    exactly those slices). Together the processes see the batches, and the augmentation
    seeds, that one process sees. With `drop_last` the incomplete last batch is dropped,
    as one process drops it; otherwise it is shared out as evenly as it allows."""

    def __init__(self, base: SeededEpochSampler, batch_size: int, drop_last: bool,
                 rank: int, world: int) -> None:
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not a multiple of {world} processes")
        self.base, self.batch_size, self.drop_last = base, batch_size, drop_last
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def _slices(self, total: int) -> Iterator[tuple[int, int]]:
        """(start, end) positions of this process's part of each global batch."""
        full, rest = divmod(total, self.batch_size)
        local = self.batch_size // self.world
        for batch in range(full):
            start = batch * self.batch_size + self.rank * local
            yield start, start + local
        if rest and not self.drop_last:
            start = full * self.batch_size
            yield (start + rest * self.rank // self.world,
                   start + rest * (self.rank + 1) // self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = list(self.base)
        for start, end in self._slices(len(order)):
            yield from order[start:end]

    def __len__(self) -> int:
        return sum(end - start for start, end in self._slices(len(self.base)))


def source_of(dataset, rows: np.ndarray) -> np.ndarray:
    """Which source each dataset row comes from (0 for a dataset of one source)."""
    starts = dataset.starts() if hasattr(dataset, "starts") else [0]
    return np.searchsorted(np.asarray(starts), rows, side="right") - 1


class SourcedDataset(Dataset):
    """Several sources' photos under one index, each source seen through its own
    transform (its input size and augmentation): a joint run's training set.

    Rows are numbered source after source, so that one targets array per task covers
    them all; `SourceBatchSampler` keeps each batch within one source (a batch is one
    tensor, and sources train at different sizes)."""

    def __init__(self, parts: Sequence[PhotoDataset], names: Sequence[str],
                 draws: Sequence[int | None] | None = None) -> None:
        self.parts, self.names = list(parts), list(names)
        self.draws = list(draws) if draws is not None else [None] * len(self.parts)

    @property
    def samples(self) -> list[Sample]:
        return [s for part in self.parts for s in part.samples]

    @property
    def skipped(self) -> dict[str, str]:
        return {k: v for part in self.parts for k, v in part.skipped.items()}

    def starts(self) -> list[int]:
        """The first global row of each source."""
        starts, total = [], 0
        for part in self.parts:
            starts.append(total)
            total += len(part)
        return starts

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def preload(self, progress: Callable[[Iterable], Iterable] | None = None,
                threads: int = 2) -> None:
        for part in self.parts:
            part.preload(progress, threads)

    def with_transform(self, transform: Callable[[Image.Image], torch.Tensor]) -> PhotoDataset:
        """Every source's photos (decoded caches shared) through one transform."""
        twin = PhotoDataset(self.samples, transform)
        if all(part._cache is not None for part in self.parts):
            twin._cache = [img for part in self.parts for img in part._cache]
        return twin

    def _locate(self, index: int) -> tuple[PhotoDataset, int, int]:
        """The source a global row belongs to, its row there, and the source's first row
        (from the parts' lengths now: preloading may have dropped unreadable photos)."""
        starts = self.starts()
        if not 0 <= index < len(self):
            raise IndexError(index)
        which = bisect.bisect_right(starts, index) - 1
        return self.parts[which], index - starts[which], starts[which]

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = key if isinstance(key, tuple) else (key, None)
        part, local, start = self._locate(int(index))
        item = part[(local, seed)] if seed is not None else part[local]
        if isinstance(item, ImageError):
            return item
        return item[0], start + item[1]

    def record_skipped(self, errors: list[ImageError]) -> None:
        """File each photo found unreadable in a batch under the source it belongs to."""
        for exc in errors:
            part = next((part for part in self.parts
                         if any(str(s.path) == exc.path for s in part.samples)), self.parts[0])
            part.record_skipped([exc])


class SourceBatchSampler(Sampler):
    """Batches of one source each, `draws[i]` photos of source i per epoch (all of them
    by default; more than it has repeats them), the batches of all sources shuffled
    together. The order and every photo's augmentation seed depend only on (run seed,
    epoch), as with `SeededEpochSampler`: a resumed run sees the same batches."""

    def __init__(self, sizes: Sequence[int], batch_size: int, seed: int,
                 draws: Sequence[int | None] | None = None, rank: int = 0,
                 world: int = 1) -> None:
        self.sizes, self.batch_size, self.seed = list(sizes), batch_size, seed
        self.draws = [d if d is not None else n for d, n in
                      zip(draws or [None] * len(sizes), sizes, strict=True)]
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _count(self, draws: int) -> int:
        """Batches a source drawing `draws` photos gives: full ones, or one smaller batch
        when it draws fewer than a batch."""
        return max(1, draws // self.batch_size)

    def _batches(self) -> list[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        start_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        batches: list[list[int]] = []
        offset = 0
        for size, draws in zip(self.sizes, self.draws, strict=True):
            if size and draws:
                rounds = -(-draws // size)
                order = np.concatenate([rng.permutation(size) for _ in range(rounds)])[:draws]
                for b in range(self._count(draws)):
                    batches.append((order[b * self.batch_size:(b + 1) * self.batch_size]
                                    + offset).tolist())
            offset += size
        rng.shuffle(batches)
        seeded, position = [], 0
        for batch in batches:
            seeded.append([(int(i), (start_seed + position + k) % (2**63 - 1))
                           for k, i in enumerate(batch)])
            position += len(batch)
        return seeded

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self._batches():
            share = -(-len(batch) // self.world)
            part = batch[self.rank * share:(self.rank + 1) * share]
            if part:
                yield part

    def __len__(self) -> int:
        return sum(self._count(draws) for size, draws in zip(self.sizes, self.draws, strict=True)
                   if size and draws)

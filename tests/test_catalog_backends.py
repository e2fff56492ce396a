"""Index backends: a second backend, registered by name, serves a catalog with no change
elsewhere; the query planner follows its capabilities."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fashionlens.errors import FashionLensError
from fashionlens.search import Catalog, ItemRecord
from fashionlens.search.backends import (
    IndexBackend,
    IndexCapabilities,
    backend_names,
    get_backend,
    register_backend,
)

from .test_catalog import clustered_vectors


class NumpyIndex:
    """Brute force over a dict of vectors, saved as .npz: exact, no range search."""

    kind = "numpy"
    capabilities = IndexCapabilities(exact=True, filtered=False, range_search=False)
    train_size = 0

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self.vectors: dict[int, np.ndarray] = {}
        self.searches = 0

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def ntotal(self) -> int:
        return len(self.vectors)

    def train(self, vectors) -> None:
        raise AssertionError("never trained")

    def add(self, vectors, keys) -> None:
        for key, vec in zip(np.asarray(keys).tolist(), np.asarray(vectors), strict=True):
            self.vectors[int(key)] = np.asarray(vec, dtype=np.float32)

    def remove(self, keys) -> None:
        for key in np.asarray(keys).reshape(-1).tolist():
            self.vectors.pop(int(key), None)

    def ids(self) -> np.ndarray:
        return np.array(sorted(self.vectors), dtype=np.int64)

    def search(self, queries, k, mask=None, excluded=(), share=None, exhaustive=False):
        assert mask is None  # not `filtered`: the planner ranks filtered searches itself
        self.searches += 1
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self._dim)
        keys = [key for key in sorted(self.vectors) if key not in set(excluded)]
        matrix = np.stack([self.vectors[key] for key in keys])
        sims = queries @ matrix.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(sims, order, axis=1),
                np.array(keys, dtype=np.int64)[order])

    def range_search(self, queries, threshold):
        raise AssertionError("not a capability of this backend")

    def needs_rebuild(self, size: int) -> bool:
        return False

    def describe(self) -> dict:
        return {"kind": self.kind, "vectors": self.ntotal}

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=self.ids(), dim=self._dim,
                     vectors=np.stack([self.vectors[k] for k in self.ids().tolist()])
                     if self.vectors else np.zeros((0, self._dim), np.float32))
        os.replace(tmp, path)


class NumpyFactory:
    file_name = "index.npz"

    def empty(self, dim: int, size: int) -> IndexBackend:
        return NumpyIndex(dim)

    def read(self, path: Path) -> IndexBackend:
        data = np.load(path)
        index = NumpyIndex(int(data["dim"]))
        index.add(data["vectors"], data["keys"])
        return index

    def suits(self, size: int, dim: int) -> str:
        return "numpy"


@pytest.fixture
def numpy_backend():
    register_backend("numpy-test", NumpyFactory())
    return "numpy-test"


def test_a_registered_backend_serves_a_catalog(tmp_path, numpy_backend):
    assert isinstance(NumpyIndex(4), IndexBackend)
    assert {"faiss", "numpy-test"} <= set(backend_names())
    vectors = clustered_vectors(40, 8, seed=2)
    records = [ItemRecord(f"n{i:02d}", None, category="Hat" if i % 2 else "Dress")
               for i in range(40)]
    with Catalog(tmp_path / "cat", create=True, dim=8, backend=numpy_backend) as cat:
        cat.add_vectors(records, vectors)
        assert (tmp_path / "cat" / "index.npz").is_file()
        assert not (tmp_path / "cat" / "index.faiss").exists()
        top = cat.search(vector=vectors[7], k=3)
        assert top[0].item.id == "n07" and cat.index.searches == 1
        exact = np.argsort(-(vectors @ vectors[7]))[:3]
        assert [m.item.id for m in top] == [f"n{i:02d}" for i in exact]
        hats = cat.search(vector=vectors[7], k=5, filters="category=Hat")
        assert len(hats) == 5 and all(m.item.category == "Hat" for m in hats)
        assert cat.index.searches == 1  # a filter is ranked exactly: no masked search
        cat.remove("n07")
        assert cat.info()["index_backend"] == numpy_backend and cat.index.ntotal == 39
        dupes = cat.near_duplicates(0.999)  # no range search: nearest neighbours instead
        assert dupes == []
    with Catalog(tmp_path / "cat") as again:  # the catalog remembers its backend
        assert not again.repaired and again.backend == numpy_backend
        assert again.search(item="n08", k=1)[0].item.id != "n08"
        meta = dict(again.store.db.execute("SELECT name, value FROM meta").fetchall())
        assert meta["index_backend"] == numpy_backend
        assert json.loads(json.dumps(again.info()))["index"] == "numpy"


def test_unknown_backends_are_refused_before_anything_is_made(tmp_path):
    with pytest.raises(FashionLensError, match="unknown index backend 'nope'; known: faiss"):
        Catalog(tmp_path / "cat", create=True, dim=4, backend="nope")
    assert not (tmp_path / "cat").exists()
    with Catalog(tmp_path / "plain", create=True, dim=4) as cat:  # the default: nothing stored
        assert cat.backend == "faiss" and cat.store.meta("index_backend") is None
        assert get_backend(None).file_name == "index.faiss"

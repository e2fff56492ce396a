"""Index backends: what the catalog needs from a vector index, and a registry of them.

The catalog keeps its items and float vectors in SQLite (the source of truth); an index
backend only ranks. The rest of the catalog talks to an index through `IndexBackend`
and decides by its `capabilities` (are its similarities exact, can it range-search,
does it filter by an id bitmap), never by a backend's name or kind, so another backend
(a GPU index, a vector database) is one class and one `register_backend` call.

    from fashionlens.search.backends import register_backend
    register_backend("mine", MyFactory())      # then Catalog(..., backend="mine")

A catalog records its backend in `meta` when it is not the default (`faiss`), so
catalogs made before backends were pluggable open unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .capabilities import IndexCapabilities

DEFAULT_BACKEND = "faiss"

__all__ = ["DEFAULT_BACKEND", "FaissFactory", "IndexBackend", "IndexCapabilities",
           "IndexFactory", "backend_names", "get_backend", "register_backend"]


@runtime_checkable
class IndexBackend(Protocol):
    """An index of unit vectors keyed by the items' int64 rowids."""

    kind: str  # shown in `info` (e.g. 'flat', 'ivf')

    @property
    def capabilities(self) -> IndexCapabilities: ...

    @property
    def dim(self) -> int: ...

    @property
    def ntotal(self) -> int: ...

    @property
    def train_size(self) -> int:
        """Vectors it wants to be trained on before `add` (0: none)."""

    def train(self, vectors: np.ndarray) -> None: ...

    def add(self, vectors: np.ndarray, keys) -> None: ...

    def remove(self, keys) -> None: ...

    def ids(self) -> np.ndarray: ...

    def search(self, queries: np.ndarray, k: int, mask: np.ndarray | None = None,
               excluded=(), share: float | None = None, exhaustive: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, ids) per query row, best first; -1 ids pad short rows."""

    def range_search(self, queries: np.ndarray, threshold: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def needs_rebuild(self, size: int) -> bool:
        """True when `size` items call for another index (kind or parameters)."""

    def describe(self) -> dict: ...

    def write(self, path: Path) -> None:
        """Write atomically (temporary file, then rename)."""


class IndexFactory(Protocol):
    """Makes and reads one backend's indexes."""

    file_name: str  # the index file in the catalog folder

    def empty(self, dim: int, size: int) -> IndexBackend:
        """An empty index suited to about `size` vectors (train it when `train_size`)."""

    def read(self, path: Path) -> IndexBackend: ...

    def suits(self, size: int, dim: int) -> str:
        """The kind of index `empty` makes for `size` vectors (for messages)."""


_REGISTRY: dict[str, IndexFactory] = {}


def register_backend(name: str, factory: IndexFactory) -> None:
    """Make an index backend available to catalogs under `name`."""
    _REGISTRY[name] = factory


def get_backend(name: str | None) -> IndexFactory:
    """The factory registered under `name` (None: the default)."""
    from ..errors import FashionLensError

    name = name or DEFAULT_BACKEND
    if name not in _REGISTRY and name == DEFAULT_BACKEND:
        _register_defaults()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FashionLensError(f"unknown index backend '{name}'; known: "
                               f"{', '.join(backend_names())}") from None


def backend_names() -> list[str]:
    _register_defaults()
    return sorted(_REGISTRY)


class FaissFactory:
    """FAISS: exact (flat) while that is fast enough, IVF with 8-bit codes past it
    (`index.py` says where the switch is and why)."""

    file_name = "index.faiss"

    def empty(self, dim: int, size: int) -> IndexBackend:
        from .index import VectorIndex

        return VectorIndex.empty(dim, VectorIndex.kind_for(size, dim), size)

    def read(self, path: Path) -> IndexBackend:
        from .index import VectorIndex

        return VectorIndex.read(path)

    def suits(self, size: int, dim: int) -> str:
        from .index import VectorIndex

        return VectorIndex.kind_for(size, dim)


def _register_defaults() -> None:
    _REGISTRY.setdefault(DEFAULT_BACKEND, FaissFactory())


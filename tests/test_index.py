"""The vector index on its own: kinds, the switch size, masks, removals, files."""

from __future__ import annotations

import numpy as np
import pytest

from fashionlens.search import index as index_module
from fashionlens.search.index import VectorIndex, exact_limit, nlist_for


def clustered(n: int, dim: int = 24, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    vectors = clustered(4000)
    return vectors, np.arange(4000, dtype=np.int64) * 3 + 5  # sparse ids, like rowids


@pytest.fixture(scope="module")
def ivf(data) -> VectorIndex:
    vectors, ids = data
    index = VectorIndex.empty(vectors.shape[1], "ivf", len(vectors))
    index.train(vectors)
    index.add(vectors, ids)
    return index


def exact_top(vectors, ids, query, k, allowed=None):
    sims = vectors @ query
    if allowed is not None:
        sims = np.where(allowed, sims, -np.inf)
    return ids[np.argsort(-sims)[:k]]


def test_switch_size_follows_the_dimension_with_hysteresis():
    assert exact_limit(1280) < exact_limit(256)
    assert exact_limit(1280) * 1280 <= index_module.EXACT_SCAN_VALUES
    assert exact_limit(10**9) == index_module.IVF_MIN_ITEMS
    limit = exact_limit(256)
    assert VectorIndex.kind_for(limit - 1, 256) == "flat"
    assert VectorIndex.kind_for(limit, 256) == "ivf"
    assert VectorIndex.kind_for(limit // 2 + 1, 256, current="ivf") == "ivf"
    assert VectorIndex.kind_for(limit // 2 - 1, 256, current="ivf") == "flat"


def test_nlist_grows_with_the_catalog_and_keeps_enough_training_points():
    sizes = [1, 50, 1000, 10_000, 100_000, 1_000_000, 10**8]
    lists = [nlist_for(n) for n in sizes]
    assert lists == sorted(lists) and lists[0] == 1 and lists[-1] == 4096
    for n, nlist in zip(sizes, lists, strict=True):
        assert nlist & (nlist - 1) == 0  # a power of two
        assert nlist == 1 or n // nlist >= index_module.IVF_TRAIN_PER_LIST


def test_ivf_finds_nearly_what_exact_search_finds(data, ivf):
    vectors, ids = data
    assert ivf.kind == "ivf" and ivf.nlist == nlist_for(4000) and ivf.nlist > 16
    queries = clustered(50, seed=9)
    hits = []
    for q in queries:
        _, found = ivf.search(q, 10)
        hits.append(len(set(found[0]) & set(exact_top(vectors, ids, q, 10))) / 10)
    assert np.mean(hits) >= 0.9
    assert set(np.unique(ivf.ids())) == set(ids) and ivf.describe()["bytes_per_vector"] == 24 + 8


def test_masks_and_exclusions_are_respected(data, ivf):
    vectors, ids = data
    flat = VectorIndex.empty(vectors.shape[1], "flat")
    flat.add(vectors, ids)
    rng = np.random.default_rng(1)
    mask = np.zeros(ids.max() + 1, dtype=bool)
    chosen = rng.choice(ids, 25, replace=False)
    mask[chosen] = True
    query = vectors[7]
    for index in (flat, ivf):
        # A selective mask: a plain IVF probe may find fewer, an exhaustive one finds all.
        _, found = index.search(query, 30, mask=mask, exhaustive=True)
        assert sorted(found[0][found[0] >= 0]) == sorted(chosen)
        _, found = index.search(query, 5, excluded=[ids[7]])
        assert ids[7] not in found[0] and len(found[0]) == 5 and (found[0] >= 0).all()
    short = mask[:ids[10]]  # ids past the end of the mask are not allowed
    _, found = flat.search(query, 30, mask=short)
    assert set(found[0][found[0] >= 0]) == {i for i in chosen if i < ids[10]}
    _, found = flat.search(query, 10, mask=mask)
    allowed = np.isin(ids, chosen)
    assert found[0].tolist() == exact_top(vectors, ids, query, 10, allowed).tolist()


def test_probes_grow_as_the_filter_narrows(data, ivf, monkeypatch):
    vectors, ids = data
    seen = []
    original = ivf.index.search

    def spy(queries, k, params=None):
        seen.append(params.nprobe)
        return original(queries, k, params=params)

    monkeypatch.setattr(ivf.index, "search", spy)
    mask = np.zeros(ids.max() + 1, dtype=bool)
    mask[ids[::10]] = True
    ivf.search(vectors[0], 10)
    ivf.search(vectors[0], 10, mask=mask)
    ivf.search(vectors[0], 10, mask=mask, exhaustive=True)
    base = min(index_module.IVF_NPROBE, ivf.nlist)
    assert seen[0] == base and base < seen[1] <= ivf.nlist and seen[2] == ivf.nlist


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_remove_write_read_round_trip(tmp_path, data, kind):
    vectors, ids = data
    index = VectorIndex.empty(vectors.shape[1], kind, len(vectors))
    if kind == "ivf":
        index.train(vectors)
    index.add(vectors[:1000], ids[:1000])
    index.remove(ids[:10])
    assert index.ntotal == 990 and not set(ids[:10]) & set(index.ids())
    _, found = index.search(vectors[3], 1, exhaustive=True)
    assert found[0][0] != ids[3]
    index.write(tmp_path / "index.faiss")
    again = VectorIndex.read(tmp_path / "index.faiss")
    assert again.kind == kind and again.ntotal == 990
    assert sorted(again.ids()) == sorted(ids[10:1000])
    np.testing.assert_array_equal(again.search(vectors[500], 5)[1],
                                  index.search(vectors[500], 5)[1])
    assert not list(tmp_path.glob(".*tmp"))


def test_rebuild_is_wanted_when_the_catalog_outgrows_the_index(data, ivf, monkeypatch):
    monkeypatch.setattr(index_module, "EXACT_SCAN_VALUES", 0)  # switch at IVF_MIN_ITEMS
    assert not ivf.needs_rebuild(4000)
    assert ivf.needs_rebuild(index_module.IVF_MIN_ITEMS // 2 - 1)  # back to flat
    assert ivf.needs_rebuild(100 * 4000)  # lists planned for 4,000 would be far too long
    flat = VectorIndex.empty(24, "flat")
    assert flat.needs_rebuild(index_module.IVF_MIN_ITEMS) and not flat.needs_rebuild(100)

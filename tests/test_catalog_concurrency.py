"""Several writers and readers on one catalog folder (issue 9): two processes adding at
once, a long-lived reader (the server) next to CLI writes, the write lock, and the photos
a killed writer leaves behind."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import sys
from pathlib import Path

import filelock
import numpy as np
import pytest

from fashionlens.errors import CatalogBusyError, ItemExistsError
from fashionlens.search import Catalog, Embedder, ItemRecord
from fashionlens.search import catalog as catalog_module
from fashionlens.search import index as index_module
from fashionlens.search.index import VectorIndex
from fashionlens.search.store import CatalogStore

from .helpers import pattern_photo, write_pattern_photo
from .test_catalog import clustered_vectors

DIM = 8

# Writers are spawned, never forked: this test process holds torch/OpenMP threads, and a
# child forked from it can hang (issue 18).
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(scope="module")
def embedder(embedding_model_dir) -> Embedder:
    return Embedder(embedding_model_dir, precision="fp32")


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    pattern_photo(seed, size=(24, 24)).save(buffer, format="PNG")
    return buffer.getvalue()


def _records(ids: list[str], seed: int) -> list[ItemRecord]:
    return [ItemRecord(item_id, _png(seed + i), category="Hat") for i, item_id in enumerate(ids)]


def _writer(path: str, ids: list[str], seed: int, barrier, results) -> None:
    """One `catalog add` in its own process: photos and vectors, 5 items per transaction."""
    try:
        vectors = clustered_vectors(len(ids), DIM, seed=seed)
        with Catalog(path) as cat:
            barrier.wait(timeout=30)
            report = cat.add_vectors(_records(ids, seed), vectors, batch_rows=5)
        results.put((seed, "ok", sorted(report.added), sorted(report.existing)))
    except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails on it
        results.put((seed, "error", f"{type(exc).__name__}: {exc}", []))


def _run_writers(path: Path, jobs: list[tuple[list[str], int]]) -> dict:
    ctx = SPAWN
    barrier = ctx.Barrier(len(jobs))
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), ids, seed, barrier, results))
             for ids, seed in jobs]
    for proc in procs:
        proc.start()
    outcomes = {}
    for _ in procs:
        seed, status, added, existing = results.get(timeout=120)
        assert status == "ok", added
        outcomes[seed] = (added, existing)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return outcomes


def _check_consistent(path: Path, expected_ids: set[str]) -> None:
    """Every item has its photo, no photo is unused, and the saved index is complete."""
    with Catalog(path) as cat:
        assert not cat.repaired  # the index file on disk already held every item
        items = list(cat.items())
        assert {item.id for item in items} == expected_ids
        for item in items:
            assert item.image is not None and item.image.is_file(), item.id
            assert item.image.read_bytes()[:4] == b"\x89PNG"
        photos = {p.name for p in (path / "images").iterdir()}
        assert photos == {item.image.name for item in items}
        assert VectorIndex.read(cat.index_path).ntotal == len(items)
        assert not (path / catalog_module.PENDING_FILE).exists()


def test_two_processes_adding_the_same_ids_lose_no_photo(tmp_path):
    path = tmp_path / "cat"
    Catalog(path, create=True, dim=DIM).close()
    ids = [f"item{i:02d}" for i in range(30)]
    outcomes = _run_writers(path, [(ids, 100), (ids, 200)])
    added = [set(a) for a, _ in outcomes.values()]
    existing = [set(e) for _, e in outcomes.values()]
    # Each id was added by exactly one writer; the other found it there.
    assert added[0] | added[1] == set(ids) and not added[0] & added[1]
    assert added[0] | existing[0] == set(ids) == added[1] | existing[1]
    _check_consistent(path, set(ids))


def test_two_processes_adding_different_ids_both_land(tmp_path):
    path = tmp_path / "cat"
    Catalog(path, create=True, dim=DIM).close()
    first = [f"a{i:02d}" for i in range(30)]
    second = [f"b{i:02d}" for i in range(30)]
    outcomes = _run_writers(path, [(first, 100), (second, 200)])
    assert sorted(outcomes[100][0]) == first and sorted(outcomes[200][0]) == second
    _check_consistent(path, set(first) | set(second))


def test_add_that_loses_a_race_for_its_ids_keeps_the_winners_photos(tmp_path, embedder):
    """`catalog add` A looks up its ids, then embeds; meanwhile B adds the same ids."""
    path = tmp_path / "cat"
    photos = [write_pattern_photo(tmp_path / f"p{i}.png", seed=i, fmt="PNG") for i in range(3)]
    winner = Catalog(path, create=True, embedder=embedder)
    loser = Catalog(path, embedder=embedder)

    class Racing:
        def __getattr__(self, name):
            return getattr(embedder, name)

        def embed(self, *args, **kwargs):  # B commits while A embeds
            assert sorted(winner.add(_records(["x0", "x1"], seed=50)).added) == ["x0", "x1"]
            return embedder.embed(*args, **kwargs)

    loser.embedder = lambda: Racing()
    report = loser.add([ItemRecord(f"x{i}", photo) for i, photo in enumerate(photos)])
    assert sorted(report.existing) == ["x0", "x1"] and report.added == ["x2"]
    for cat in (winner, loser):
        assert cat.get("x0").image.read_bytes() == _png(50)  # the winner's photo, kept
        assert cat.get("x2").image.read_bytes() == photos[2].read_bytes()
        assert len(cat.search(item="x0", k=10)) == 2
    assert len(list((path / "images").iterdir())) == 3
    winner.close()
    loser.close()


def test_a_writer_that_ignores_the_lock_gets_a_clear_error_and_deletes_nothing(
        tmp_path, embedder, monkeypatch):
    """Should the UNIQUE constraint still fire (a writer of an older version without the
    lock file): 'item id X already exists', and only files this write created go."""
    path = tmp_path / "cat"
    with Catalog(path, create=True, embedder=embedder) as cat:
        cat.add(_records(["x0"], seed=50))
        kept = cat.get("x0").image
        monkeypatch.setattr(CatalogStore, "existing", lambda self, ids: set())  # the stale look
        photo = write_pattern_photo(tmp_path / "p.png", seed=3, fmt="PNG")
        with pytest.raises(ItemExistsError, match="item id 'x0' already exists"):
            cat.add([ItemRecord("x0", photo)])
        with pytest.raises(ItemExistsError, match="item id 'x0' already exists"):
            cat.add_vectors([ItemRecord("x0", photo)], np.ones((1, cat.dim)))
        monkeypatch.undo()
        assert kept.read_bytes() == _png(50)
        assert [p.name for p in (path / "images").iterdir()] == [kept.name]
        assert len(cat) == 1 and cat.index.ntotal == 1


def test_cli_add_of_a_taken_id_exits_2_without_a_traceback(tmp_path, embedding_model_dir,
                                                           monkeypatch, capsys):
    from fashionlens.cli.main import main

    photo = write_pattern_photo(tmp_path / "p.png", seed=3, fmt="PNG")
    with Catalog(tmp_path / "cat", create=True, model=embedding_model_dir) as cat:
        cat.add([ItemRecord("shirt-1", photo)])
    monkeypatch.setattr(sys, "argv", ["fashionlens", "catalog", "add", str(photo), "--id",
                                      "shirt-1", "--catalog", str(tmp_path / "cat")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "item id 'shirt-1' already exists" in " ".join(captured.err.split())
    assert "Traceback" not in captured.err + captured.out


# --- a long-lived reader (the server) and another writer (the CLI) -------------------


def _vector_catalog(path: Path, n: int) -> tuple[Catalog, np.ndarray]:
    vectors = clustered_vectors(n, DIM, seed=7)
    cat = Catalog(path, create=True, dim=DIM)
    cat.add_vectors([ItemRecord(f"v{i:03d}", None, category="Hat" if i % 2 else "Dress",
                                price=float(i)) for i in range(n)], vectors)
    return cat, vectors


def _saved_ids(cat: Catalog) -> set[int]:
    return set(VectorIndex.read(cat.index_path).ids().tolist())


def _keys(cat: Catalog) -> set[int]:
    return {r[0] for r in cat.store.db.execute("SELECT key FROM items")}


def test_a_reader_sees_another_writers_changes_and_does_not_clobber_them(tmp_path):
    cli, vectors = _vector_catalog(tmp_path / "cat", 20)
    server = Catalog(tmp_path / "cat")
    assert len(server.search(item="v000", k=50)) == 19
    assert len(server.search(item="v000", k=50, filters="category=Hat")) == 10

    more = clustered_vectors(5, DIM, seed=8)
    cli.add_vectors([ItemRecord(f"new{i}", None, category="Hat") for i in range(5)], more)
    top = server.search(vector=more[3], k=1)
    assert top[0].item.id == "new3" and top[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert len(server.search(item="v000", k=50)) == 24
    assert len(server.search(item="v000", k=50, filters="category=Hat")) == 15
    assert server.index.ntotal == 25

    cli.remove(["v001", "v002"])
    cli.update("v003", category="Dress")
    found = server.search(item="v000", k=5)
    assert len(found) == 5 and not {"v001", "v002"} & {m.item.id for m in found}
    hats = server.search(item="v000", k=50, filters="category=Hat")
    assert {m.item.id for m in hats}.isdisjoint({"v001", "v003"}) and len(hats) == 13

    # The server's own write saves an index with the CLI's items in it, not its old view.
    server.add_vectors([ItemRecord("from-server", None)], clustered_vectors(1, DIM, seed=9))
    assert _saved_ids(server) == _keys(server) and len(_keys(server)) == 24
    assert cli.search(item="from-server", k=30) and cli.index.ntotal == 24
    server.update("v004", price=99)
    cli.remove("v005")
    server.remove("v006")
    assert _saved_ids(cli) == _keys(cli) and len(_keys(cli)) == 22
    with Catalog(tmp_path / "cat") as third:
        assert not third.repaired and third.index.ntotal == 22
    server.close()
    cli.close()


def test_a_reader_follows_another_writer_past_the_switch_to_ivf(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "IVF_MIN_ITEMS", 40)
    monkeypatch.setattr(index_module, "EXACT_SCAN_VALUES", 0)
    cli, _ = _vector_catalog(tmp_path / "cat", 20)
    server = Catalog(tmp_path / "cat")
    assert server.index.kind == "flat"
    more = clustered_vectors(60, DIM, seed=11)
    cli.add_vectors([ItemRecord(f"m{i:02d}", None) for i in range(60)], more)
    assert cli.index.kind == "ivf"
    assert server.search(vector=more[17], k=1)[0].item.id == "m17"
    assert server.index.kind == "ivf" and server.index.ntotal == 80
    server.close()
    cli.close()


# --- the write lock ----------------------------------------------------------------


def test_a_busy_catalog_waits_then_fails_naming_it_and_reads_go_on(tmp_path, caplog):
    cat, _ = _vector_catalog(tmp_path / "cat", 6)
    cat.close()
    other = filelock.FileLock(tmp_path / "cat" / catalog_module.LOCK_FILE)
    with other, Catalog(tmp_path / "cat", lock_timeout=0.3) as cat:  # another is writing
        assert len(cat.search(item="v000", k=3)) == 3 and cat.get("v001").price == 1.0
        with caplog.at_level(logging.WARNING, logger="fashionlens"), \
                pytest.raises(CatalogBusyError, match="catalog is busy") as busy:
            cat.update("v001", price=5)
        assert str(tmp_path / "cat") in str(busy.value)
        assert "catalog is busy (another process is writing); waiting..." in caplog.text
        assert cat.get("v001").price == 1.0
    with Catalog(tmp_path / "cat", lock_timeout=0.3) as cat:
        assert cat.update("v001", price=5).price == 5.0


# --- photos a killed writer leaves behind ---------------------------------------------


def _killed_writer(path: str) -> None:
    """Dies (no clean-up at all) once two photos of a batch are in images/, before the
    commit."""
    images = Path(path) / "images"
    replace = os.replace
    moved = []

    def killing_replace(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        if Path(dst).parent == images:
            moved.append(dst)
            if len(moved) == 2:
                os._exit(9)

    os.replace = killing_replace  # this child process only
    with Catalog(path) as cat:
        cat.add_vectors(_records(["k0", "k1", "k2"], seed=60),
                        clustered_vectors(3, DIM, seed=60))


def test_photos_of_a_killed_writer_are_removed_on_the_next_open(tmp_path):
    path = tmp_path / "cat"
    cat, _ = _vector_catalog(path, 0)
    cat.add_vectors(_records(["keep"], seed=1), clustered_vectors(1, DIM, seed=1))
    kept = cat.get("keep").image
    cat.close()
    proc = SPAWN.Process(target=_killed_writer, args=(str(path),))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 9
    left = {p.name for p in (path / "images").iterdir()} - {kept.name}
    assert len(left) == 2 and (path / catalog_module.PENDING_FILE).exists()

    holder = filelock.FileLock(path / catalog_module.LOCK_FILE)
    with holder:  # a live writer holds the lock: its files are not touched
        Catalog(path).close()
        assert len(list((path / "images").iterdir())) == 3
    with Catalog(path) as cat:
        assert [p.name for p in (path / "images").iterdir()] == [kept.name]
        assert not (path / catalog_module.PENDING_FILE).exists()
        assert kept.read_bytes() == _png(1) and list(cat.items())[0].id == "keep"
        report = cat.add_vectors(_records(["k0", "k1", "k2"], seed=60),
                                 clustered_vectors(3, DIM, seed=60))
        assert len(report.added) == 3


def test_pending_photos_still_in_use_are_kept(tmp_path):
    """A crash after a removal committed (its photos listed) or before an add committed:
    only files no item references are deleted, and only in images/."""
    cat, _ = _vector_catalog(tmp_path / "cat", 0)
    cat.add_vectors(_records(["a", "b"], seed=1), clustered_vectors(2, DIM, seed=1))
    in_use = cat.get("a").image
    removed = cat.get("b").image
    cat.store.db.execute("DELETE FROM items WHERE id = 'b'")  # committed, photo not yet deleted
    outside = tmp_path / "mine.png"
    outside.write_bytes(b"user file")
    stray = tmp_path / "cat" / "images" / "stray.png"  # not listed: left for `rebuild`
    stray.write_bytes(b"x")
    (tmp_path / "cat" / catalog_module.PENDING_FILE).write_text(json.dumps(
        {"photos": [in_use.name, removed.name, "../../mine.png", str(outside)]}))
    cat.close()
    with Catalog(tmp_path / "cat") as again:
        assert in_use.is_file() and not removed.exists()
        assert outside.read_bytes() == b"user file" and stray.exists()
        assert again.rebuild()["orphan_photos_removed"] == 1 and not stray.exists()

"""Issue 18, the catalog and search: a catalog whose database is gone is refused (nothing
deleted), writers racing the server's removals, overlapping `catalog add` runs, the
filter grammar, a failed or interrupted `catalog build`, and what must never end in a
traceback."""

from __future__ import annotations

import ast
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fashionlens.errors import FashionLensError
from fashionlens.search import Catalog, ItemRecord, parse_filters
from fashionlens.search.filters import split_filters
from fashionlens.search.ingest import Ingestor

from .helpers import folded, run_main, write_pattern_photo

DIM = 8
SRC = Path(__file__).resolve().parents[1] / "src" / "fashionlens"


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `fashionlens ARGS` as a user does (main(): the error handling included):
    (exit code, stdout and stderr with line breaks folded to spaces, stdout). An
    exception other than SystemExit (a traceback for a user) fails the test."""

    def run(*args):
        code, out, err = run_main(monkeypatch, capsys, *args)
        return code, folded(out, err), out

    return run


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def _vector_catalog(path: Path, ids: list[str], photos: bool = True) -> Path:
    """A catalog of precomputed vectors (no model), each item with a small photo."""
    import io

    from .helpers import pattern_photo

    def png(seed: int) -> bytes:
        buffer = io.BytesIO()
        pattern_photo(seed, size=(16, 16)).save(buffer, format="PNG")
        return buffer.getvalue()

    records = [ItemRecord(i, png(n) if photos else None, category="Hat", price=10.0 + n)
               for n, i in enumerate(ids)]
    with Catalog(path, create=True, dim=DIM) as cat:
        cat.add_vectors(records, _vectors(len(ids)))
    return path


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    for i in range(3):
        write_pattern_photo(root / "Hat" / f"h{i}.png", i)
    return root


@pytest.fixture
def model_catalog(tmp_path, embedding_model_dir) -> Path:
    path = tmp_path / "cat"
    Catalog(path, create=True, model=embedding_model_dir).close()
    return path


# -- item 3: a catalog that lost its database is refused, and nothing is changed ---------

def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != "write.lock"}


@pytest.mark.parametrize("damage", ["emptied", "missing", "garbage"])
@pytest.mark.parametrize("command", [["catalog", "info"], ["catalog", "add", "PHOTO"],
                                     ["search", "--item", "a0"], ["catalog", "build", "FOLDER"]])
def test_catalog_without_its_database_is_refused_and_nothing_changes(
        tmp_path, photo_folder, damage, command, cli):
    path = _vector_catalog(tmp_path / "cat", [f"a{i}" for i in range(20)])
    db = path / "catalog.sqlite"
    if damage == "emptied":
        db.write_bytes(b"")
    elif damage == "missing":
        db.unlink()
    else:
        db.write_bytes(b"not a database at all" * 10)
    before = _snapshot(path)
    args = [{"PHOTO": photo_folder / "Hat" / "h0.png", "FOLDER": photo_folder}.get(a, a)
            for a in command]
    code, message, _ = cli(*args, "--catalog", path)
    assert code == 2, message
    assert "index.faiss" in message and "images/ (20 photo file(s))" in message
    assert "Nothing was changed" in message
    assert _snapshot(path) == before  # the 20 vectors and photos are still there


def test_catalog_api_refuses_an_emptied_database(tmp_path):
    path = _vector_catalog(tmp_path / "cat", ["a0", "a1"])
    (path / "catalog.sqlite").write_bytes(b"")
    index = (path / "index.faiss").read_bytes()
    with pytest.raises(FashionLensError, match="catalog.sqlite is empty"):
        Catalog(path)
    with pytest.raises(FashionLensError, match="catalog.sqlite is empty"):
        Catalog(path, create=True)
    assert (path / "index.faiss").read_bytes() == index


def test_an_empty_database_alone_is_still_a_new_catalog(tmp_path):
    """Nothing to lose (no index, no photo): as before, the tables are made."""
    path = tmp_path / "cat"
    path.mkdir()
    (path / "catalog.sqlite").write_bytes(b"")
    with Catalog(path, dim=DIM) as cat:
        assert len(cat) == 0


# -- item 8: writers racing the server -------------------------------------------------

def _remove_after(monkeypatch, target, method: str, server: Catalog, item_id: str) -> list:
    """Make `target.METHOD` (of a store, or the CatalogStore class) remove `item_id`
    through `server` right after its first call: the moment between a reader's looking
    at the keys and its reading their vectors (readers take no lock)."""
    real = getattr(target, method)
    removed = []

    def then_removal(*args, **kwargs):
        result = real(*args, **kwargs)
        if not removed:
            removed.append(server.remove(item_id))
        return result

    monkeypatch.setattr(target, method, then_removal)
    return removed


def test_catching_up_while_another_process_removes_items(tmp_path, monkeypatch):
    """A CLI writer catches up with items the server added, and the server removes one of
    them between the writer's reading the keys and its reading their vectors (issue 18:
    KeyError in store.vectors_for)."""
    path = _vector_catalog(tmp_path / "cat", [f"a{i}" for i in range(5)])
    with Catalog(path, lock_timeout=5) as cli, Catalog(path, lock_timeout=5) as server:
        assert cli.index.ntotal == 5
        server.add_vectors([ItemRecord("n0"), ItemRecord("n1")], _vectors(2, seed=1))
        # After the new keys and the count are read, before their vectors are.
        removed = _remove_after(monkeypatch, cli.store, "count", server, "n0")
        cli.index_keeper.current()  # what `embedder()` and a search do, outside the lock
        monkeypatch.undo()
        assert removed
        assert sorted(m.item.id for m in cli.search(item="a0", k=10)) == \
            ["a1", "a2", "a3", "a4", "n1"]
        assert sorted(cli.index.ids().tolist()) == sorted(cli.store.keys().tolist())
        cli.update("a1", price=3)


def test_opening_while_another_process_removes_items(tmp_path, monkeypatch):
    """`catalog update` opens a catalog whose index file is behind (the server is between
    batches) while the server removes one of the items the file lacks."""
    path = _vector_catalog(tmp_path / "cat", [f"a{i}" for i in range(5)])
    behind = (path / "index.faiss").read_bytes()
    with Catalog(path, lock_timeout=5) as server:
        server.add_vectors([ItemRecord("n0"), ItemRecord("n1")], _vectors(2, seed=1))
        (path / "index.faiss").write_bytes(behind)
        from fashionlens.search.store import CatalogStore

        removed = _remove_after(monkeypatch, CatalogStore, "keys", server, "n0")
        with Catalog(path, lock_timeout=5) as cli:
            monkeypatch.undo()
            assert removed and cli.repaired
            cli.update("n1", price=3)
            assert sorted(cli.index.ids().tolist()) == sorted(cli.store.keys().tolist())
            assert "n0" not in cli and len(cli) == 6


def test_exact_ranking_skips_items_removed_meanwhile(tmp_path):
    path = _vector_catalog(tmp_path / "cat", [f"a{i}" for i in range(4)])
    with Catalog(path) as cat:
        keys = cat.store.keys()
        with Catalog(path) as other:
            other.remove("a2")
        found, vectors = cat.store.vectors_for(keys)
        assert len(found) == 3 and vectors.shape == (3, DIM)
        ranked, sims = cat.planner.exact(vectors[0], keys, 4)
        assert len(ranked) == 3


def test_overlapping_add_reports_the_ids_the_other_run_added(
        tmp_path, photo_folder, model_catalog, monkeypatch, cli):
    """`catalog add` A looks its ids up, then embeds; meanwhile B adds one of them with
    its own price. A must not drop its photo and price silently: exit 2 naming the id."""
    real_plan = Ingestor.plan
    raced = []

    def plan_then_other_adds(self, records, seen, image_root=None):
        planned = real_plan(self, records, seen, image_root)
        if not raced:
            raced.append(True)
            with Catalog(model_catalog) as other:
                other.add_vectors([ItemRecord("Hat/h1", category="Hat", price=99.0)],
                                  np.ones((1, other.dim), dtype=np.float32))
        return planned

    monkeypatch.setattr(Ingestor, "plan", plan_then_other_adds)
    code, text, _ = cli("catalog", "add", photo_folder, "--catalog", model_catalog)
    assert code == 2, text
    assert "item id 'Hat/h1' already exists" in text
    assert "1 id(s) were added by another process" in text and "NOT stored" in text
    with Catalog(model_catalog) as cat:
        assert sorted(i.id for i in cat.items()) == ["Hat/h0", "Hat/h1", "Hat/h2"]
        assert cat.get("Hat/h1").price == 99.0  # the winner's item is kept whole


# -- one filter grammar -------------------------------------------------------------

def test_filters_split_on_semicolons_in_one_place():
    assert split_filters("category=Dress; price<30;;") == ["category=Dress", "price<30"]
    assert split_filters('extra.note="a;b"; colour in (x;y)') == \
        ['extra.note="a;b"', "colour in (x;y)"]
    assert [str(f) for f in parse_filters(["category=Dress; price<30", "size=M"])] == \
        ["category=Dress", "price<30", "size=M"]


def test_cli_filter_takes_several_separated_by_semicolons(tmp_path, cli):
    path = _vector_catalog(tmp_path / "cat", [f"a{i}" for i in range(6)])
    code, text, stdout = cli("search", "--item", "a0", "--catalog", path, "--json",
                             "--filter", "category=Hat; price<13")
    assert code == 0, text
    ids = sorted(r["id"] for r in json.loads(stdout)["results"])
    assert ids == ["a1", "a2"]


# -- catalog build: failed, interrupted, another model -------------------------------

def test_failed_build_removes_only_what_it_created(tmp_path, embedding_model_dir, cli):
    empty = tmp_path / "nothing"
    empty.mkdir()
    target = tmp_path / "new" / "deeper" / "cat"
    code, text, _ = cli("catalog", "build", empty, "--catalog", target,
                        "--model", embedding_model_dir)
    assert code == 2 and "no image files" in text
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    code, text, _ = cli("catalog", "build", empty, "--catalog", kept,
                        "--model", embedding_model_dir)
    assert code == 2, text
    assert kept.is_dir() and not any(kept.iterdir())  # it existed (empty): left, empty


def test_interrupted_build_says_what_was_kept(tmp_path, photo_folder, embedding_model_dir,
                                              monkeypatch, cli):
    real_add_iter = Catalog.add_iter

    def add_then_interrupt(self, records, batch_size=32, image_root=None):
        for n, outcome in enumerate(real_add_iter(self, records, 1, image_root)):
            yield outcome
            if n == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(Catalog, "add_iter", add_then_interrupt)
    target = tmp_path / "cat"
    code, text, _ = cli("catalog", "build", photo_folder, "--catalog", target,
                        "--model", embedding_model_dir)
    assert code == 130, text
    assert "keeps the 2 items added so far" in text and "again to resume" in text
    with Catalog(target) as cat:
        assert len(cat) == 2
    monkeypatch.setattr(Catalog, "add_iter", real_add_iter)
    code, text, _ = cli("catalog", "build", photo_folder, "--catalog", target)
    assert code == 0 and "added 1, already in the catalog 2" in text, text


def test_build_on_an_existing_catalog_says_so(tmp_path, photo_folder, model_catalog, cli):
    code, text, _ = cli("catalog", "build", photo_folder, "--catalog", model_catalog)
    assert code == 0 and "the catalog exists" in text, text


# -- the house: no import circle in search/ -------------------------------------------

def _imports(path: Path) -> set[str]:
    """Modules of fashionlens.search a file imports, anywhere in it (also in functions
    and under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("lower, upper", [("index", "backends"), ("shards", "catalog")])
def test_search_modules_import_one_way(lower, upper):
    search = SRC / "search"
    assert lower in _imports(search / f"{upper}.py")
    assert upper not in _imports(search / f"{lower}.py")


def test_faiss_loader_is_quiet():
    code = ("import logging; logging.basicConfig(level=logging.INFO); "
            "import fashionlens.search.index")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Could not load library" not in done.stderr
    assert "ModuleNotFoundError" not in done.stderr


# -- no tracebacks ---------------------------------------------------------------------

def _damaged(tmp_path: Path, how: str) -> Path:
    path = _vector_catalog(tmp_path / "cat", [f"a{i}" for i in range(4)])
    with sqlite3.connect(path / "catalog.sqlite") as db:
        if how == "dim":
            db.execute("UPDATE meta SET value = 'abc' WHERE name = 'dim'")
        else:
            db.execute("UPDATE items SET embedding = x'00000000' WHERE id = 'a2'")
    return path


def _latin1_folder(tmp_path: Path) -> Path:
    root = tmp_path / "latin1"
    write_pattern_photo(root / "Hat" / "ok.png", 1)
    bad = bytes(root / "Hat") + b"/caf\xe9.png"
    with open(bad, "wb") as fh:
        fh.write((root / "Hat" / "ok.png").read_bytes())
    return root


CASES = {
    # name: (setup(tmp_path, model) -> args, exit code, words the message must hold)
    "non-utf8 file name in a photo folder": (
        lambda t, m: ["catalog", "build", _latin1_folder(t), "--catalog", t / "c",
                      "--model", m], 0, "Hat/caf\\udce9 │"),  # named, and the rest added
    "catalog path that cannot be created": (
        lambda t, m: ["catalog", "build", t, "--catalog", "/proc/cat", "--model", m], 2,
        "cannot create the catalog folder"),
    "meta dim is not a number (info)": (
        lambda t, m: ["catalog", "info", "--catalog", _damaged(t, "dim")], 2,
        "meta field 'dim' is 'abc'"),
    "meta dim is not a number (search)": (
        lambda t, m: ["search", "--item", "a0", "--catalog", _damaged(t, "dim")], 2,
        "meta field 'dim' is 'abc'"),
    "short embedding blob (search)": (
        lambda t, m: ["search", "--item", "a2", "--catalog", _damaged(t, "blob")], 2,
        "item 'a2': its stored embedding has 4 bytes"),
    "short embedding blob (rebuild)": (
        lambda t, m: ["catalog", "rebuild", "--catalog", _damaged(t, "blob")], 2,
        "item 'a2': its stored embedding has 4 bytes"),
    "short embedding blob (directions)": (
        lambda t, m: ["catalog", "directions", "--learn", "category", "--catalog",
                      _damaged(t, "blob")], 2, "its stored embedding has 4 bytes"),
    "directions --learn bogus": (
        lambda t, m: ["catalog", "directions", "--learn", "bogus", "--catalog",
                      _vector_catalog(t / "c", ["a0", "a1"])], 2,
        "cannot learn directions from 'bogus': no such field"),
    "empty .npy": (
        lambda t, m: ["catalog", "import-vectors", _file(t / "v.npy", b""),
                      _file(t / "m.csv", b"id\na\n"), "--catalog", t / "c"], 2,
        "v.npy: the file is empty"),
    "build --model another model on an existing catalog": (
        lambda t, m: ["catalog", "build", t, "--catalog", _vector_catalog(t / "c", ["a0"]),
                      "--model", m], 2, "the catalog holds 8-d vectors"),
}


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_traceback(case, tmp_path, embedding_model_dir, cli):
    """Each case ends in a message naming the problem (the exit code its case says),
    never in a traceback (`cli` fails the test on any exception)."""
    setup, expected, words = CASES[case]
    code, text, _ = cli(*setup(tmp_path, embedding_model_dir))
    assert "Traceback" not in text
    assert code == expected, text
    assert words in text, text

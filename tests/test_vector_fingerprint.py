"""The search vectors' own fingerprint: a refit of a scoring head leaves catalogs, vector
shards and text alignments valid; any change the vectors depend on does not; records made
before the split (the whole model's fingerprint) are still accepted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fashionlens.cli.main import app
from fashionlens.data.preprocess import Preprocess
from fashionlens.errors import FashionLensError
from fashionlens.models import load_model, read_info, save_model
from fashionlens.models.info import (
    fingerprint_of,
    same_vectors,
    tagger_fingerprint_of,
    update_info,
    vector_fingerprint_of,
    vector_names,
)
from fashionlens.search import Catalog, Embedder, ItemRecord
from fashionlens.search.alignment import (
    ALIGNMENT_FILE,
    TextAlignment,
    alignment_for,
    carry_alignment,
    read_alignment,
    valid_alignment,
)
from fashionlens.search.shards import write_shard

from .helpers import saved_model_with_every_output, write_pattern_photo

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def model(tmp_path) -> Path:
    return saved_model_with_every_output(tmp_path / "model", "vec-test")


def _changed(folder: Path, out: Path, change, half: bool = False) -> Path:
    """A copy of the model at `folder` with `change(network)` applied, saved to `out`."""
    network, info = load_model(folder)
    with torch.no_grad():
        change(network)
    return save_model(network, info, out, half=half)


def _names(folder: Path) -> tuple[str, str]:
    info = read_info(folder)
    return vector_fingerprint_of(folder, info), fingerprint_of(folder, info)


def _refit_tags(network) -> None:  # what `refit-heads --heads tags` changes
    network.task_heads["tags"].weight.add_(0.5)
    network.stage_terms["tags"].weight.add_(0.5)


def test_only_what_the_vector_reads_changes_its_fingerprint(model, tmp_path):
    vectors, whole = _names(model)
    assert vectors != whole and ":vectors:" in vectors
    refit = _changed(model, tmp_path / "refit", _refit_tags)
    assert _names(refit)[0] == vectors and _names(refit)[1] != whole
    # the class posterior is part of the vector: the backbone's own classifier counts
    classifier = _changed(model, tmp_path / "classifier",
                          lambda n: n.get_classifier().weight.add_(0.5))
    backbone = _changed(model, tmp_path / "backbone",
                        lambda n: n.conv_stem.weight.mul_(1.5))
    embedding = _changed(model, tmp_path / "embedding",
                         lambda n: next(n.embedding_head.parameters()).add_(0.5))
    changed = {_names(f)[0] for f in (classifier, backbone, embedding)}
    assert vectors not in changed and len(changed) == 3
    # how photos become inputs is part of it too
    shutil.copytree(model, tmp_path / "resized")
    info = read_info(tmp_path / "resized")
    info.preprocess = Preprocess(size=72)
    assert vector_fingerprint_of(tmp_path / "resized", info) != vectors


def test_the_same_values_stored_in_half_precision_digest_alike(model, tmp_path):
    halved = _changed(model, tmp_path / "half", lambda n: None, half=True)
    widened = _changed(halved, tmp_path / "widened", lambda n: None)  # fp32 again
    assert (halved / "model.safetensors").read_bytes() != \
        (widened / "model.safetensors").read_bytes()
    assert _names(halved)[0] == _names(widened)[0]


def test_same_vectors_accepts_either_name_of_one_model():
    names = ("arch:vectors:1", "arch:2")
    assert same_vectors("arch:2", "arch:vectors:1", names)
    assert same_vectors("x", "x")
    assert not same_vectors("arch:3", "arch:vectors:1", names)
    assert not same_vectors(None, "arch:2", names)


def _items(root: Path) -> list[ItemRecord]:
    return [ItemRecord(f"i{n}", write_pattern_photo(root / f"p{n}.png", seed=n))
            for n in range(4)]


def test_a_catalog_survives_a_head_refit_and_refuses_other_vectors(model, tmp_path):
    with Catalog(tmp_path / "cat", create=True, model=model) as cat:
        assert not cat.add(_items(tmp_path / "photos")).failed
        assert cat.model_fingerprint() == _names(model)[0]
        query = cat.vector("i1")
    refit = _changed(model, tmp_path / "refit", _refit_tags)
    with Catalog(tmp_path / "cat", model=refit) as cat:
        found = cat.search(image=tmp_path / "photos" / "p1.png", k=1)[0]
        assert found.item.id == "i1" and np.allclose(cat.vector("i1"), query)
    backbone = _changed(model, tmp_path / "backbone", lambda n: n.conv_stem.weight.mul_(1.5))
    with pytest.raises(FashionLensError, match="vectors of different models"), \
            Catalog(tmp_path / "cat", model=backbone) as cat:
        cat.search(image=tmp_path / "photos" / "p1.png", k=1)


def test_records_made_before_the_split_are_still_accepted(model, tmp_path):
    vectors, whole = _names(model)
    with Catalog(tmp_path / "cat", create=True, model=model) as cat:
        assert not cat.add(_items(tmp_path / "photos")).failed
        cat.store.set_meta({"model_fingerprint": whole})  # as an older version wrote it
    with Catalog(tmp_path / "cat", model=model) as cat:
        assert cat.search(image=tmp_path / "photos" / "p2.png", k=1)[0].item.id == "i2"
        assert cat.holds_vectors_of(vectors) and cat.holds_vectors_of(whole)
        assert not cat.holds_vectors_of("another:model")
        # a shard written under the vector fingerprint imports into it
        embedder = Embedder(model)
        vector = embedder.embed_one(tmp_path / "photos" / "p0.png")
        (tmp_path / "shards").mkdir()
        write_shard(tmp_path / "shards" / "shard-00000.parquet",
                    [{"id": "s0", "source": "elsewhere"}], vector[None],
                    embedder.vector_model)
        assert cat.import_shards(tmp_path / "shards")["added"] == 1
    # a text alignment trained before the split, for a catalog recorded after it
    weight = np.ones((384, embedder.dim), np.float32)
    TextAlignment(weight, {"model_fingerprint": whole}).save(model)
    assert alignment_for(model, vectors, embedder.dim, "vec-test").fingerprint == whole
    assert vector_names(model) == (vectors, whole)
    with pytest.raises(FashionLensError, match="trained for model"):
        alignment_for(model, "another:vectors:0", embedder.dim, "vec-test")


def test_a_text_alignment_is_carried_only_where_the_vectors_stay(model, tmp_path):
    vectors, whole = _names(model)
    weight = np.random.default_rng(0).normal(size=(384, 8)).astype(np.float32)
    TextAlignment(weight, {"model_fingerprint": whole, "encoder": "x"}).save(model)
    kept = valid_alignment(model)  # recorded before the split: re-recorded for the vectors
    assert kept is not None and kept.fingerprint == vectors and kept.meta["encoder"] == "x"
    refit = _changed(model, tmp_path / "refit", _refit_tags)
    assert carry_alignment(kept, refit)
    carried = read_alignment(refit)
    assert np.array_equal(carried.weight, weight) and carried.fingerprint == vectors
    backbone = _changed(model, tmp_path / "backbone", lambda n: n.conv_stem.weight.mul_(1.5))
    assert not carry_alignment(kept, backbone)
    assert not (backbone / ALIGNMENT_FILE).exists()
    # a stale alignment (another model's) or an unreadable one is not carried anywhere
    TextAlignment(weight, {"model_fingerprint": "another:vectors:0"}).save(model)
    assert valid_alignment(model) is None
    (model / ALIGNMENT_FILE).write_bytes(b"not safetensors")
    assert valid_alignment(model) is None and not carry_alignment(None, refit)


def test_a_catalog_says_when_its_tags_come_from_heads_refit_since(model, tmp_path):
    photos = _items(tmp_path / "photos")
    with Catalog(tmp_path / "cat", create=True, model=model) as cat:
        assert not cat.add(photos[:2]).failed
        summary = cat.tag_summary()
        assert summary["tags_model"] == _tagger(model) and summary["tags_current"] is True
        assert summary["tags_model"].startswith(_names(model)[1] + ":tags=")
    refit = _changed(model, tmp_path / "refit", _refit_tags)
    with Catalog(tmp_path / "cat", model=refit) as cat:
        assert cat.tag_summary()["tags_current"] is False  # the old heads' tags
        assert not cat.add(photos[2:]).failed  # the new heads tag these: two versions
        assert cat.tag_summary()["tags_model"] == "mixed"
        shown = CliRunner().invoke(app, ["catalog", "info", "--catalog", str(cat.path)])
        assert shown.exit_code == 0 and "earlier version of the model's heads" in \
            " ".join(shown.stdout.split())
        cat.retag()
        summary = cat.tag_summary()
        assert summary["tags_model"] == _tagger(refit) and summary["tags_current"] is True
        assert summary["tagged_items"] == 4
    # thresholds re-tuned in model.json alone (the weights as they were): other tags too
    info = read_info(refit)
    info.heads[1].thresholds = [0.9, 0.9, 0.9]
    update_info(refit, {"heads": [h.to_dict() for h in info.heads]})
    assert _names(refit)[1] == fingerprint_of(refit, read_info(refit))
    with Catalog(tmp_path / "cat", model=refit) as cat:
        assert cat.tag_summary()["tags_current"] is False
        # recorded by a version that noted the weights alone: not known either way
        cat.store.set_meta({"tags_model": _names(refit)[1]})
        assert cat.tag_summary()["tags_current"] is None


def _tagger(folder: Path) -> str:
    return tagger_fingerprint_of(folder, read_info(folder))


def test_a_catalog_tagged_before_taggers_were_recorded_stays_unknown(model, tmp_path):
    photos = _items(tmp_path / "photos")
    with Catalog(tmp_path / "cat", create=True, model=model) as cat:
        assert not cat.add(photos[:2]).failed
        with cat.store.transaction() as db:
            db.execute("DELETE FROM meta WHERE name = 'tags_model'")
        assert not cat.add(photos[2:]).failed
        summary = cat.tag_summary()
        assert summary["tags_model"] is None and summary["tags_current"] is None


def test_earlier_names_count_only_for_the_vectors_they_were_recorded_for(model, tmp_path):
    from fashionlens.errors import ModelError
    from fashionlens.models.info import update_info

    vectors, whole = _names(model)
    update_info(model, {"earlier_fingerprints": {"vectors": vectors,
                                                 "fingerprints": ["arch:old-bundle"]}})
    assert vector_names(model) == (vectors, whole, "arch:old-bundle")
    assert Embedder(model).makes_vectors_of("arch:old-bundle")
    # a model derived with other vectors inherits the field but not the names
    backbone = _changed(model, tmp_path / "backbone", lambda n: n.conv_stem.weight.mul_(1.5))
    assert read_info(backbone).earlier_fingerprints is not None
    assert "arch:old-bundle" not in vector_names(backbone)
    assert not Embedder(backbone).makes_vectors_of("arch:old-bundle")
    with pytest.raises(ModelError, match="earlier_fingerprints.fingerprints"):
        update_info(model, {"earlier_fingerprints": {"vectors": vectors, "fingerprints": 3}})


def test_a_catalog_built_with_an_earlier_default_keeps_its_model(tmp_path):
    """A catalog records `default` when built with the default model; when a release
    bundles another default, the catalog still finds the bundled model that made its
    vectors (by their fingerprint) and searches with it."""
    from fashionlens.models.resolve import DEFAULT_NAME, SAMPLE_PHOTOS

    earlier = "clothing10" if DEFAULT_NAME != "clothing10" else "fashion"
    photos = tmp_path / "photos"
    photos.mkdir()
    for kind, name in (("Hat", "hat-1"), ("Dress", "dress-1"), ("Shoes", "shoes-1")):
        shutil.copy(SAMPLE_PHOTOS / kind / f"{name}.jpg", photos / f"{name}.jpg")
    with Catalog(tmp_path / "old", create=True, model=earlier) as cat:
        assert not cat.add_source(photos).failed
        cat.store.set_meta({"model": "default"})  # as the release that bundled it wrote it
    with Catalog(tmp_path / "old") as cat:
        assert cat.model == earlier
        assert cat.search(image=photos / "dress-1.jpg", k=1)[0].item.id == "dress-1"
    with Catalog(tmp_path / "now", create=True) as cat:  # today's default records `default`
        assert not cat.add_source(photos).failed
        assert cat.model == "default"
        assert cat.search(image=photos / "hat-1.jpg", k=1)[0].item.id == "hat-1"
    with Catalog(tmp_path / "old") as cat:  # vectors no bundled model makes: said so
        cat.store.set_meta({"model_fingerprint": "efficientnet_lite0:vectors:elsewhere"})
        assert cat.model == "default"
        with pytest.raises(FashionLensError, match="reembed"):
            cat.search(image=photos / "hat-1.jpg", k=1)

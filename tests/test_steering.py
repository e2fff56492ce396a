"""Steering directions: learning them, parsing weights, moving queries, catalog search."""

from __future__ import annotations

import numpy as np
import pytest

from fashionlens.errors import FashionLensError
from fashionlens.search.steering import (
    learn_directions,
    parse_steering,
    pattern_of,
    steer,
)

from .test_catalog import catalog, embedder, shop  # noqa: F401 - fixtures


def labelled_cloud(seed: int = 0, n: int = 60, dim: int = 16):
    """Unit vectors where 'striped' items lean along axis 0 and 'solid' along axis 1."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    labels = ["striped" if i % 3 == 0 else "solid" if i % 3 == 1 else None for i in range(n)]
    for i, label in enumerate(labels):
        if label == "striped":
            vectors[i, 0] += 4
        elif label == "solid":
            vectors[i, 1] += 4
    return vectors, labels


@pytest.mark.parametrize("method", ["mean", "probe"])
def test_directions_point_at_the_labelled_group(method):
    vectors, labels = labelled_cloud()
    learned = {d.name: d for d in learn_directions(vectors, labels, field="extra.pattern",
                                                   method=method)}
    assert set(learned) == {"striped", "solid"}
    striped = learned["striped"]
    assert striped.positives == 20 and striped.negatives == 20  # unlabelled items excluded
    assert np.isclose(np.linalg.norm(striped.vector), 1.0, atol=1e-5)
    assert striped.vector[0] > 0.5 and striped.vector[1] < -0.3
    assert learned["solid"].vector[1] > 0.5


def test_too_few_examples_give_no_direction_or_a_clear_error():
    vectors, labels = labelled_cloud(n=12)  # 4 striped, 4 solid
    assert learn_directions(vectors, labels, field="pattern") == []
    with pytest.raises(FashionLensError, match="pattern=striped: 4 items carry it"):
        learn_directions(vectors, labels, field="pattern", values=["striped"])
    with pytest.raises(FashionLensError, match="unknown direction method"):
        learn_directions(vectors, labels, field="pattern", method="pca")


@pytest.mark.parametrize("spec", ["striped=0.5, solid=-0.3", "+0.5 striped, -0.3 solid",
                                  ["striped:0.5", "solid=-.3"],
                                  {"Striped": 0.5, "solid": "-0.3"}])
def test_steering_weights_parse_from_every_spelling(spec):
    assert parse_steering(spec) == pytest.approx({"striped": 0.5, "solid": -0.3})


@pytest.mark.parametrize("spec, message", [("striped", "cannot read the steering term"),
                                           ("striped=lots", "cannot read"),
                                           ({"striped": "x"}, "not a number"),
                                           ("striped=50", "between -10 and 10")])
def test_bad_steering_weights_are_refused(spec, message):
    with pytest.raises(FashionLensError, match=message):
        parse_steering(spec)


def test_steer_moves_toward_the_direction_and_stays_unit():
    directions = {"striped": np.array([1, 0, 0], dtype=np.float32)}
    query = np.array([0, 1, 0], dtype=np.float32)
    moved = [steer(query, directions, {"striped": w}) for w in (0.0, 0.5, 1.0, 2.0)]
    assert all(np.isclose(np.linalg.norm(m), 1.0) for m in moved)
    assert [round(float(m[0]), 3) for m in moved] == sorted(round(float(m[0]), 3)
                                                            for m in moved)
    assert moved[0] == pytest.approx(query)
    with pytest.raises(FashionLensError, match="unknown steering direction.*floral"):
        steer(query, directions, {"floral": 1.0})
    with pytest.raises(FashionLensError, match="cancel"):
        steer(np.array([1, 0, 0], dtype=np.float32), directions, {"striped": -1.0})


@pytest.mark.parametrize("name, pattern", [("Nike Men Striped Polo T-shirt", "striped"),
                                           ("Arrow Men Checked Shirt", "checked"),
                                           ("Printed Floral Dress", "floral"),
                                           ("Puma Men Solid Black Tshirt", "solid"),
                                           ("Levis Men Blue Jeans", None), (None, None)])
def test_pattern_of_product_names(name, pattern):
    assert pattern_of(name) == pattern


def test_catalog_steering_raises_the_share_of_the_attribute(catalog):  # noqa: F811
    learned = catalog.learn_directions("category", min_count=3)
    assert catalog.directions() == ["dress", "hat", "shirt"] == sorted(d.name for d in learned)
    assert {d["field"] for d in catalog.direction_info()} == {"category"}
    shares = []
    for weight in (0.0, 1.0, 3.0):
        shares.append(np.mean([
            sum(m.item.category == "Dress" for m in catalog.search(
                item=item.id, k=3, steer={"dress": weight}))
            for item in catalog.items("category!=Dress")]))
    assert shares[0] <= shares[1] <= shares[2] and shares[2] > shares[0]
    assert catalog.info()["directions"] == ["dress", "hat", "shirt"]
    with pytest.raises(FashionLensError, match="unknown steering direction"):
        catalog.search(item="item00", k=3, steer="floral=1")
    assert catalog.remove_directions(["hat"]) == ["hat"]
    assert catalog.directions() == ["dress", "shirt"]
    with pytest.raises(FashionLensError, match="cannot learn directions from 'price'"):
        catalog.learn_directions("price")
    with pytest.raises(FashionLensError, match="no value of extra.brand"):
        catalog.learn_directions("extra.brand", min_count=50)

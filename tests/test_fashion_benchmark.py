"""The pure helpers of benchmarks/fashion_model.py: how a prediction becomes a garment type
or a coarse colour, and how those are scored (no model, no ../shared/data)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fashionlens.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import fashion_model as fm  # noqa: E402

pytestmark = pytest.mark.timeout(60)

TAXONOMY = {"Shoes": "Shoes", "Casual Shoes": "Shoes", "Jeans": "Pants", "Pants": "Pants",
            "Other": None}
GROUPS = {"Navy Blue": "blue", "Black": "black", "Cream": "beige", "Multi": None}


def test_the_committed_mappings_read_and_cover_the_sets_labels():
    taxonomy = fm.read_mapping(fm.TAXONOMY, "garment type")
    groups = fm.read_mapping(fm.COLOUR_GROUPS, "colour group")
    for label in ("Dress", "Hat", "Longsleeve", "Outwear", "Pants", "Shirt", "Shoes",
                  "Shorts", "Skirt", "T-Shirt"):  # clothing's validation labels
        assert taxonomy[label] is not None
    assert taxonomy["Jeans"] == "Pants" and taxonomy["Heels"] == "Shoes"
    assert {g for g in groups.values() if g is not None} <= set(fm.COARSE)
    assert groups["Multi"] is None


def test_with_other_routes_leads_with_the_unified_head():
    figures = {"type": {"accuracy": 0.9, "photos": 10},
               "articleType": {"accuracy": 0.5, "photos": 10}}
    out = fm.with_other_routes(figures, "type")
    assert out["accuracy"] == 0.9 and out["from"] == "type"
    assert out["by_route"] == {"type": 0.9, "articleType -> taxonomy": 0.5}
    single = fm.with_other_routes({"baseColour": {"accuracy": 0.7}}, "colour")
    assert single == {"accuracy": 0.7, "from": "baseColour -> colour groups (top label)"}
    assert fm.with_other_routes({}, "type") is None


def test_to_type_maps_fine_labels_and_keeps_a_type_heads_answer():
    assert fm.to_type("Casual Shoes", "articleType", TAXONOMY) == "Shoes"
    assert fm.to_type("Backpacks", "articleType", TAXONOMY) is None  # not in the taxonomy
    assert fm.to_type("Other", "label", TAXONOMY) is None  # mapped to ~
    assert fm.to_type("Bag", "type", TAXONOMY) == "Bag"  # a type head's answer as is


def test_type_accuracy_counts_unmapped_predictions_wrong_and_skips_untyped_truth():
    result = fm.type_accuracy(["Shoes", None, "Pants", "Shoes"], ["Shoes", "Pants", None,
                                                                  "Pants"])
    assert result == {"accuracy": round(1 / 3, 4), "photos": 3, "no_type_true": 1,
                      "unmapped_predictions": 1}


def test_coarse_colour_from_either_head():
    assert fm.coarse_colour("Navy Blue", "baseColour", GROUPS) == "blue"
    assert fm.coarse_colour("Multi", "baseColour", GROUPS) is None
    assert fm.coarse_colour("other", "baseColour", GROUPS) is None
    assert fm.coarse_colour("Beige", "colour", GROUPS) == "beige"
    assert fm.coarse_colour("navy", "colour", GROUPS) is None  # not a group


def test_colour_accuracy_any_listed_group_is_right_and_none_is_skipped():
    truth = [frozenset({"blue", "white"}), frozenset({"black"}), None, frozenset({"grey"})]
    result = fm.colour_accuracy(["white", "blue", "red", None], truth)
    assert result == {"accuracy": round(1 / 3, 4), "photos": 3, "skipped_none": 1,
                      "no_group_predicted": 1}


def test_parse_colour_cell_and_its_errors():
    assert fm.parse_colour_cell("blue;white", "f, line 2") == {"blue", "white"}
    assert fm.parse_colour_cell(" None ", "f, line 2") is None
    with pytest.raises(DataError, match="f, line 3: unknown colour group.*navy"):
        fm.parse_colour_cell("navy;blue", "f, line 3")
    with pytest.raises(DataError, match="f, line 4: empty colours cell"):
        fm.parse_colour_cell("", "f, line 4")


def test_read_colour_fixture_names_the_file_and_column(tmp_path):
    good = tmp_path / "colours.csv"
    good.write_text("image,label,colours\na,Shirt,blue\nb,Pants,none\n")
    assert fm.read_colour_fixture(good) == {"a": frozenset({"blue"}), "b": None}
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label\na,Shirt\n")
    with pytest.raises(DataError, match="bad.csv: no column"):
        fm.read_colour_fixture(bad)
    with pytest.raises(DataError, match="missing.csv: colour fixture not found"):
        fm.read_colour_fixture(tmp_path / "missing.csv")


def test_the_committed_colour_fixture_reads():
    fixture = fm.read_colour_fixture(fm.COLOUR_FIXTURE)
    assert len(fixture) == 150
    assert sum(v is None for v in fixture.values()) == 10


def test_read_mapping_errors_name_the_file(tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        fm.read_mapping(listed, "garment type")
    with pytest.raises(ConfigError, match="nope.yaml: garment type file not found"):
        fm.read_mapping(tmp_path / "nope.yaml", "garment type")


def test_summed_groups_pool_fine_colours():
    classes = ["Navy Blue", "Black", "Cream", "Multi"]
    # Black is the top fine colour; once Cream counts as blue, navy and cream outweigh it.
    probs = np.array([[0.30, 0.35, 0.10, 0.25], [0.02, 0.10, 0.05, 0.83]])
    assert fm.summed_groups(probs, classes, GROUPS) == ["black", "black"]
    both_blue = {**GROUPS, "Cream": "blue"}
    assert fm.summed_groups(probs, classes, both_blue) == ["blue", "black"]


def test_attribute_right_credits_other_for_values_the_model_folded():
    classes = ["Casual", "Formal", "other"]
    assert fm.attribute_right("Casual", "Casual", classes)
    assert fm.attribute_right("other", "Travel", classes)  # folded into other in training
    assert not fm.attribute_right("other", "Casual", classes)
    assert not fm.attribute_right("other", "Travel", ["Casual", "Formal"])


@pytest.mark.parametrize("max_tags, parents", [(None, None), (2, [None, 0, 0, None, None])])
def test_crossfit_decisions_agree_with_tasks_multilabel(max_tags, parents):
    from fashionlens.tasks.multilabel import crossfit_micro_f1

    rng = np.random.default_rng(3)
    targets = (rng.random((80, 5)) < 0.3).astype(np.float32)
    if parents is not None:  # a child's photo shows its parent too
        targets[:, 0] = np.maximum(targets[:, 0], targets[:, 1:3].max(1))
    scores = np.clip(targets * 0.5 + rng.random((80, 5)) * 0.6, 0, 1)
    predicted, listed = fm.crossfit_decisions(scores, targets, "tag_f1", max_tags, parents)
    figures = fm.tag_figures(scores, targets, predicted, listed)
    expected = crossfit_micro_f1(scores, targets, list("abcde"), max_tags=max_tags,
                                 parents=parents)
    assert figures["micro_f1"] == round(expected, 4)
    assert 0 < figures["precision"] <= 1 and 0 < figures["recall"] <= 1
    assert listed.max() <= (max_tags or 5)
    assert figures["tags_per_photo"] <= figures["tags_per_photo_with_parents"]


def test_tag_figures_counts_and_skips_unknown_cells():
    scores = np.zeros((2, 3))
    targets = np.array([[1, 0, 1], [0, 1, np.nan]], dtype=np.float32)
    predicted = np.array([[1, 1, 0], [0, 1, 1]], dtype=bool)  # the NaN cell counts nothing
    result = fm.tag_figures(scores, targets, predicted, np.array([2, 2]))
    assert result["precision"] == round(2 / 3, 4) and result["recall"] == round(2 / 3, 4)
    assert result["micro_f1"] == round(2 / 3, 4)
    assert result["macro_f1_30"] is None and result["tags_per_photo"] == 2.0


def test_model_names_split_and_dedupe():
    assert fm.model_names(["clothing10,products", "outfits", "products"]) == [
        "clothing10", "products", "outfits"]


def test_the_benchmarks_say_whether_shipped_thresholds_are_held_out():
    from report import thresholds_origin

    refit = {"refit": {"tags": {"kept": True, "decisions": {
        "thresholds_from": "out-of-fold training scores (5 folds)"}}}}
    said = thresholds_origin(refit, "tags")
    assert said.startswith("out-of-fold training scores") and "not held out" not in said
    assert "not held out" in thresholds_origin({}, "tags")
    refit["refit"]["tags"]["kept"] = False  # the trained head, tuned on validation, stayed
    assert "not held out" in thresholds_origin(refit, "tags")


def test_tags_on_a_one_garment_photo_are_scored_against_its_own_tag():
    from fashionlens.models.info import HeadSpec

    head = HeadSpec("tags", "multilabel", ["jeans", "pants", "shoes", "sunglasses"],
                    thresholds=[0.5] * 4, parents={"jeans": "pants"})
    scores = np.array([[0.9, 0.2, 0.1, 0.1],    # jeans: its own (a child of pants)
                       [0.1, 0.1, 0.8, 0.7],    # a pants photo called shoes, sunglasses
                       [0.1, 0.1, 0.1, 0.9]])   # no one tag of its own: counted only
    figures = fm.single_garment_tags(head, scores, ["pants", "pants", None])
    assert figures["tags_per_photo"] == round(4 / 3, 3)
    assert figures["own_tag_listed"] == 0.5
    assert figures["listed_that_are_its_own"] == round(1 / 3, 4)
    assert figures["photos_with_one_tag_of_their_own"] == 2
    assert set(fm.read_mapping(fm.GARMENT_TAGS, "outfit tag").values()) - {None} <= {
        "t-shirt", "shirt", "blouse", "top", "blazer", "bodysuit", "dress", "skirt", "pants",
        "shorts", "shoes", "hat"}

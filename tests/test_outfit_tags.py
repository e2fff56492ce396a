"""Outfit tags a person can trust: tag parents (targets, masks, decoding), thresholds
tuned for the pooled F1, a cap on tags a photo, and model.json that says so (old ones
still decide as before). Tiny synthetic scores and labels only."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import fashionlens
from fashionlens.config import FieldError, TaskConfig, _apply
from fashionlens.data.sources import Sample
from fashionlens.errors import DataError, ModelError
from fashionlens.models.info import (
    HeadSpec,
    ModelInfo,
    check_description,
    decide_tags,
    describe_tags,
)
from fashionlens.search.tags import predictions_from_scores
from fashionlens.tasks.base import tasks_from_heads
from fashionlens.tasks.multilabel import (
    MultilabelTask,
    best_thresholds,
    choose_cap,
    crossfit_micro_f1,
    micro_thresholds,
    multilabel_scores,
    predicted_tags,
)

pytestmark = pytest.mark.timeout(60)

PARENTS = {"boots": "shoes", "heels": "shoes", "purse": "bag"}
CLASSES = ["bag", "boots", "dress", "heels", "purse", "shoes"]


def _samples(*cells: str) -> list[Sample]:
    return [Sample(path=Path(f"{i}.jpg"), label="", values={"tags": c})
            for i, c in enumerate(cells)]


def _task(**settings) -> MultilabelTask:
    config = TaskConfig(name="tags", kind="multilabel", parents=dict(PARENTS), **settings)
    return MultilabelTask(config, CLASSES)


def _column(task: MultilabelTask, row: np.ndarray) -> dict:
    return {c: (None if np.isnan(v) else float(v)) for c, v in zip(task.classes, row,
                                                                   strict=True)}


def test_a_child_brings_its_parent_and_a_parent_alone_leaves_its_children_open():
    task = _task()
    targets = task.encode(_samples("boots;dress", "shoes;purse", "dress", ""))
    boots, shoes_only, dress, empty = (_column(task, row) for row in targets)
    # boots says shoes; the other child is known absent
    assert boots == {"bag": 0.0, "boots": 1.0, "dress": 1.0, "heels": 0.0, "purse": 0.0,
                     "shoes": 1.0}
    # `shoes` alone does not say which: its children are unknown, not absent; purse says bag
    assert shoes_only == {"bag": 1.0, "boots": None, "dress": 0.0, "heels": None,
                          "purse": 1.0, "shoes": 1.0}
    # no footwear named at all: every shoe tag is absent
    assert dress["shoes"] == 0.0 and dress["boots"] == 0.0
    assert all(v is None for v in empty.values())
    assert task.present(targets).tolist() == [True, True, True, False]
    assert task.counts(targets)["shoes"] == 2


def test_without_parents_the_targets_are_as_before():
    task = MultilabelTask(TaskConfig(name="tags", kind="multilabel"), CLASSES)
    targets = task.encode(_samples("shoes", "boots"))
    assert not np.isnan(targets).any()
    assert targets[0].tolist() == [0, 0, 0, 0, 0, 1] and targets[1].tolist() == [0, 1, 0, 0, 0, 0]


def test_an_open_child_teaches_nothing_in_the_loss():
    task = _task(loss="bce")
    targets = torch.tensor(task.encode(_samples("shoes", "boots")))
    logits = torch.zeros(2, len(CLASSES), requires_grad=True)
    loss = task.loss(logits, targets)
    assert torch.isfinite(loss)
    loss.backward()
    grad = logits.grad
    open_cells = torch.isnan(targets)
    assert bool(open_cells.any())
    assert torch.all(grad[open_cells] == 0)
    assert torch.all(grad[~open_cells] != 0)
    # the masked loss equals the sum over the known cells only
    known = ~open_cells
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.zeros(2, len(CLASSES)), torch.nan_to_num(targets), reduction="none")
    assert float(loss.detach()) == pytest.approx(float((per * known).sum(1).mean()))


def test_bad_parents_and_settings_are_refused_by_name():
    train = _samples("boots", "shoes", "purse;bag", "dress")
    config = TaskConfig(name="tags", kind="multilabel", parents={"sneaker": "shoes"})
    with pytest.raises(DataError, match="sneaker"):
        MultilabelTask.from_data(config, train, train, "labels.csv")
    config = TaskConfig(name="tags", kind="multilabel", parents={"boots": "shoes",
                                                                 "shoes": "boots"})
    with pytest.raises(DataError, match="loop"):
        MultilabelTask.from_data(config, train, train, "labels.csv")
    for bad in (0, "most", True):
        config = TaskConfig(name="tags", kind="multilabel", max_tags=bad)
        with pytest.raises(DataError, match="max_tags"):
            MultilabelTask.from_data(config, train, train, "labels.csv")
    config = TaskConfig(name="tags", kind="multilabel", threshold_objective="macro")
    with pytest.raises(DataError, match="threshold_objective"):
        MultilabelTask.from_data(config, train, train, "labels.csv")


def test_from_data_learns_the_parents_as_tags():
    train = _samples("boots", "heels", "boots;purse", "heels;dress")
    config = TaskConfig(name="tags", kind="multilabel", parents=dict(PARENTS))
    task = MultilabelTask.from_data(config, train, train, "labels.csv")
    # shoes and bag are never written in the column, yet they are tags (from children)
    assert {"shoes", "bag"} <= set(task.classes)
    assert task.head_spec().parents == {"boots": "shoes", "heels": "shoes", "purse": "bag"}


def test_the_task_config_reads_parents_and_caps_from_yaml_values():
    config = TaskConfig()
    _apply(config, {"parents": {"boots": "shoes"}, "max_tags": "auto",
                    "threshold_objective": "micro_f1"}, "tasks[0]")
    assert config.parents == {"boots": "shoes"} and config.max_tags == "auto"
    _apply(config, {"max_tags": 4}, "tasks[0]")
    assert config.max_tags == 4
    with pytest.raises(FieldError, match="parents"):
        _apply(config, {"parents": ["boots"]}, "tasks[0]")


def test_decide_lists_a_parent_once_caps_and_orders_by_score():
    #          bag  boots dress heels purse shoes
    scores = [0.2, 0.8, 0.9, 0.1, 0.3, 0.95]
    limits = [0.5] * 6
    parents = [None, 5, None, 5, 0, None]
    assert decide_tags(scores, limits) == [5, 2, 1]  # before: shoes, dress, boots
    assert decide_tags(scores, limits, parents=parents) == [2, 1]  # boots says shoes
    assert decide_tags(scores, limits, max_tags=1, parents=parents) == [2]
    # a parent with no child over its threshold is listed itself
    assert decide_tags([0.2, 0.1, 0.9, 0.1, 0.3, 0.95], limits, parents=parents) == [5, 2]


def test_describe_shows_the_parent_on_the_child_and_old_heads_answer_as_before():
    scores = [0.2, 0.8, 0.9, 0.1, 0.3, 0.95]
    old = HeadSpec("tags", "multilabel", CLASSES, [0.5] * 6)
    assert [t["label"] for t in describe_tags(old, scores, 3)["tags"]] == [
        "shoes", "dress", "boots"]
    assert all("parent" not in t for t in describe_tags(old, scores, 3)["tags"])
    new = HeadSpec("tags", "multilabel", CLASSES, [0.5] * 6, max_tags=5, parents=PARENTS)
    answer = describe_tags(new, scores, 3)
    assert answer["tags"] == [{"label": "dress", "probability": 0.9},
                              {"label": "boots", "probability": 0.8, "parent": "shoes"}]
    assert len(answer["scores"]) == 6
    capped = HeadSpec("tags", "multilabel", CLASSES, [0.5] * 6, max_tags=1)
    assert [t["label"] for t in describe_tags(capped, scores, 3)["tags"]] == ["shoes"]
    # an explicit threshold replaces the thresholds, not the cap
    assert len(describe_tags(capped, scores, 3, threshold=0.0)["tags"]) == 1


def test_the_catalog_stores_the_same_tags_and_the_parents_they_imply():
    scores = {"tags": np.array([0.2, 0.8, 0.9, 0.1, 0.3, 0.6])}
    head = HeadSpec("tags", "multilabel", CLASSES, [0.5] * 6, parents=PARENTS)
    found = {(p.label, round(p.probability, 2)) for p in predictions_from_scores([head], scores)}
    assert found == {("dress", 0.9), ("boots", 0.8), ("shoes", 0.8)}
    capped = HeadSpec("tags", "multilabel", CLASSES, [0.5] * 6, max_tags=1, parents=PARENTS)
    assert [p.label for p in predictions_from_scores([capped], scores)] == ["dress"]


def _model_dict(head: dict) -> dict:
    return {"architecture": "efficientnet_lite0", "heads": [head],
            "preprocess": {"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}}


def test_model_json_keeps_the_new_fields_and_old_ones_load_unchanged():
    head = HeadSpec("tags", "multilabel", CLASSES, [0.4] * 6, column="tags", max_tags=4,
                    parents=PARENTS)
    text = json.dumps(_model_dict(head.to_dict()))
    info = ModelInfo.from_dict(json.loads(text), "model.json")
    assert info.heads[0].max_tags == 4 and info.heads[0].parents == PARENTS
    old = {"name": "tags", "kind": "multilabel", "classes": CLASSES, "thresholds": [0.4] * 6}
    info = ModelInfo.from_dict(_model_dict(old), "model.json")
    assert info.heads[0].max_tags is None and info.heads[0].parents is None
    assert "max_tags" not in info.heads[0].to_dict() and "parents" not in info.heads[0].to_dict()


@pytest.mark.parametrize("field, value, message", [
    ("max_tags", 0, "max_tags"),
    ("max_tags", "3", "max_tags"),
    ("max_tags", 10 ** 9, "max_tags"),
    ("parents", ["boots"], "parents"),
    ("parents", {"boots": 3}, "parents"),
    ("parents", {"boots": "slippers"}, "slippers"),
    ("parents", {"boots": "shoes", "shoes": "boots"}, "loop"),
])
def test_model_json_bounds_refuse_bad_cap_and_parents(field, value, message):
    head = {"name": "tags", "kind": "multilabel", "classes": CLASSES, field: value}
    with pytest.raises(ModelError, match=message):
        check_description(_model_dict(head), "model.json")
        ModelInfo.from_dict(_model_dict(head), "model.json")


def _ranked_photos(n: int = 120, tags: int = 8, true: int = 2, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose level shifts from photo to photo (a bright photo scores every tag
    high): no per-tag threshold separates the true tags, the ranking within a photo
    does. Every photo has `true` tags."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.0, 0.5, (n, 1))
    scores = level + rng.uniform(0.0, 0.4, (n, tags))
    targets = np.zeros((n, tags), np.float32)
    for row in range(n):
        chosen = rng.choice(tags, true, replace=False)
        targets[row, chosen] = 1.0
        scores[row, chosen] = level[row, 0] + 0.45
    return scores, targets


def test_the_cap_is_chosen_by_cross_fitting_and_helps_where_ranking_does():
    scores, targets = _ranked_photos()
    cap = choose_cap(scores, targets)
    assert cap == 2
    names = [str(i) for i in range(scores.shape[1])]
    assert crossfit_micro_f1(scores, targets, names, max_tags=2) > \
        crossfit_micro_f1(scores, targets, names) + 0.1
    # a task with max_tags: auto keeps what tuning chose, and model.json carries it
    task = MultilabelTask(TaskConfig(name="tags", kind="multilabel", max_tags="auto"), names)
    task.tune(scores, targets)
    assert task.max_tags == 2 and task.head_spec().max_tags == 2
    metrics = task.metrics(scores, targets)
    assert metrics["max_tags"] == 2 and metrics["tags_per_photo"] <= 2.0
    # a saved model scored again decides with its cap
    (again,) = tasks_from_heads([task.head_spec()])
    assert again.max_tags == 2


def test_a_saved_head_scored_without_its_run_config_keeps_its_parents():
    head = HeadSpec("tags", "multilabel", CLASSES, [0.5] * 6, column="tags", parents=PARENTS)
    (task,) = tasks_from_heads([head])
    (row,) = task.encode(_samples("shoes"))
    assert _column(task, row)["boots"] is None and _column(task, row)["shoes"] == 1.0


def test_no_cap_is_chosen_where_it_would_cost_recall():
    rng = np.random.default_rng(1)
    targets = (rng.uniform(size=(80, 6)) < 0.5).astype(np.float32)
    scores = np.clip(targets * 0.6 + rng.uniform(0, 0.35, targets.shape), 0, 1)
    cap = choose_cap(scores, targets)
    assert cap is None or cap >= 4
    names = [str(i) for i in range(6)]
    assert crossfit_micro_f1(scores, targets, names, max_tags=cap) == pytest.approx(
        crossfit_micro_f1(scores, targets, names))


def test_micro_thresholds_pool_the_tags_and_never_lose_to_per_tag_f1_in_sample():
    rng = np.random.default_rng(2)
    targets = np.zeros((200, 5), np.float32)
    targets[:, 0] = rng.uniform(size=200) < 0.5  # a common, well-scored tag
    targets[:, 1:] = rng.uniform(size=(200, 4)) < 0.04  # rare tags the model barely knows
    scores = np.where(targets > 0.5, rng.uniform(0.4, 1.0, targets.shape),
                      rng.uniform(0.0, 0.6, targets.shape))
    scores[:, 1:] = rng.uniform(0.0, 1.0, (200, 4)) * 0.5 + targets[:, 1:] * 0.2
    names = list("abcde")
    per_tag = best_thresholds(scores, targets)
    pooled = micro_thresholds(scores, targets)
    f1_per_tag = multilabel_scores(scores, targets, per_tag, names)
    f1_pooled = multilabel_scores(scores, targets, pooled, names)
    assert f1_pooled["micro_f1"] >= f1_per_tag["micro_f1"]
    assert f1_pooled["micro_precision"] > f1_per_tag["micro_precision"]
    assert f1_pooled["tags_per_photo"] < f1_per_tag["tags_per_photo"]


def test_scores_skip_open_cells_and_count_implied_parents():
    task = _task()
    targets = task.encode(_samples("shoes", "boots"))
    #                  bag  boots dress heels purse shoes
    scores = np.array([[0.1, 0.9, 0.1, 0.8, 0.1, 0.2],   # heels/boots on a `shoes` photo
                       [0.1, 0.9, 0.1, 0.1, 0.1, 0.2]])  # boots, shoes only implied
    thresholds = np.full(6, 0.5)
    predicted = predicted_tags(scores, thresholds, None, task.parent_index)
    assert predicted[1, CLASSES.index("shoes")]  # implied by boots
    result = multilabel_scores(scores, targets, thresholds, CLASSES, predicted)
    # photo 0: boots/heels are open (neither right nor wrong), shoes right; photo 1 exact
    assert result["micro_precision"] == 1.0 and result["micro_recall"] == 1.0
    assert result["per_tag"]["heels"]["support"] == 0


def test_a_tag_mapped_to_nothing_is_dropped_before_the_parents():
    config = TaskConfig(name="tags", kind="multilabel", mapping={"accessories": None,
                                                                 "pumps": "heels"},
                        parents=dict(PARENTS))
    task = MultilabelTask(config, CLASSES)
    (row,) = task.encode(_samples("accessories;pumps"))
    assert _column(task, row) == {"bag": 0.0, "boots": 0.0, "dress": 0.0, "heels": 1.0,
                                  "purse": 0.0, "shoes": 1.0}


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the web app's JS")
def test_the_web_app_decides_tags_as_the_model_does():
    """The try page re-decides tags when a person moves the threshold: its `decideTags`
    must give what `decide_tags` gives (the same thresholds, parents and cap)."""
    script = (Path(fashionlens.__file__).parent / "service" / "web" / "try.js").read_text()
    match = re.search(r"^function decideTags\(.*?^}\n", script, re.S | re.M)
    assert match, "try.js has no decideTags"
    rng = np.random.default_rng(3)
    cases = []
    for case in range(20):
        scores = rng.uniform(size=len(CLASSES)).round(4).tolist()
        limits = rng.uniform(0.2, 0.8, len(CLASSES)).round(3).tolist()
        cap = [None, 1, 2, 4][case % 4]
        parents = PARENTS if case % 2 else {}
        expected = [CLASSES[i] for i in decide_tags(
            scores, limits, cap, [CLASSES.index(parents[c]) if c in parents else None
                                  for c in CLASSES] if parents else None)]
        cases.append({"scores": scores, "limits": limits, "cap": cap, "parents": parents,
                      "expected": expected})
    program = match.group(0) + """
const cases = JSON.parse(process.argv[1]);
const tags = JSON.parse(process.argv[2]);
const out = cases.map((c) => {
  const pairs = tags.map((t, i) => [t, c.scores[i]]).sort((a, b) => b[1] - a[1]);
  const limit = (t) => c.limits[tags.indexOf(t)];
  const task = c.cap ? { parents: c.parents, max_tags: c.cap } : { parents: c.parents };
  return decideTags(pairs, limit, task).map(([t]) => t);
});
console.log(JSON.stringify(out));
"""
    done = subprocess.run(["node", "-e", program, json.dumps(cases), json.dumps(CLASSES)],
                          capture_output=True,
                          text=True, timeout=30, check=True)
    assert json.loads(done.stdout) == [c["expected"] for c in cases]


def test_the_api_answer_gives_the_cap_and_parents_only_where_the_model_has_them():
    from fashionlens.service.tasks import task_answer

    scores = [0.2, 0.8, 0.9, 0.1, 0.3, 0.95]
    new = HeadSpec("tags", "multilabel", CLASSES, [0.5] * 6, max_tags=3, parents=PARENTS)
    answer = task_answer(new, scores, 3, None)
    assert answer["max_tags"] == 3 and answer["parents"] == PARENTS
    assert [t["label"] for t in answer["tags"]] == ["dress", "boots"]
    old = task_answer(HeadSpec("tags", "multilabel", CLASSES, [0.5] * 6), scores, 3, None)
    assert "max_tags" not in old and "parents" not in old
    assert [t["label"] for t in old["tags"]] == ["shoes", "dress", "boots"]


@pytest.mark.timeout(300)
def test_a_trained_tag_head_keeps_its_parents_and_cap_in_model_json(tmp_path):
    """End to end on tiny two-colour photos: `red` on some rows, only its parent `warm`
    on others; the saved model lists `warm` as a tag, knows red -> warm and its cap."""
    import csv

    import yaml
    from PIL import Image

    from fashionlens import load_config, train
    from fashionlens.models import read_info

    from .helpers import COLOURS, TINY_TRAIN

    rows = []
    names = sorted(COLOURS)
    for n, (top, bottom, k) in enumerate((t, b, k) for t in names for b in names
                                         for k in range(4)):
        arr = np.zeros((40, 48, 3), np.uint8)
        arr[:20], arr[20:] = COLOURS[top], COLOURS[bottom]
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(arr, "RGB").save(tmp_path / "images" / f"{n}.png")
        tags = {top, bottom}
        if "red" in tags and k % 2:
            tags = (tags - {"red"}) | {"warm"}  # named only by the parent
        rows.append({"id": n, "tags": ";".join(sorted(tags)),
                     "split": "validation" if k == 0 else "train"})
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"path": str(tmp_path / "labels.csv"), "image_column": "id",
                 "image_dir": "images", "image_extension": ".png", "split_column": "split"},
        "tasks": [{"name": "tags", "kind": "multilabel", "parents": {"red": "warm"},
                   "max_tags": "auto", "threshold_objective": "micro_f1"}]}))
    run = train(load_config(config, overrides=[*TINY_TRAIN, f"output.dir={tmp_path / 'runs'}",
                                               "output.name=m"]))
    head = read_info(run.model_dir).head("tags")
    assert head.classes == ["blue", "green", "red", "warm"]
    assert head.parents == {"red": "warm"}
    summary = json.loads((run.output_dir / "metrics.json").read_text())
    figures = summary["metrics"]
    figures = figures.get("tasks", {}).get("tags", figures)
    assert figures["max_tags"] == head.max_tags
    assert head.max_tags is None or 1 <= head.max_tags <= 4
    # a red photo is told `red` with its parent, not `warm` a second time
    at_half = HeadSpec(head.name, head.kind, head.classes, [0.5] * 4, max_tags=head.max_tags,
                       parents=head.parents)
    answer = describe_tags(at_half, [0.1, 0.1, 0.9, 0.95], 3)
    assert answer["tags"] == [{"label": "red", "probability": 0.9, "parent": "warm"}]


def test_the_model_card_says_the_cap_and_the_parents():
    from fashionlens.models.card import card_text

    head = HeadSpec("tags", "multilabel", CLASSES, [0.4] * 6, max_tags=4, parents=PARENTS)
    text = card_text(ModelInfo.from_dict(_model_dict(head.to_dict()), "model.json"))
    assert "at most 4 tags" in text and "boots → shoes" in text
    old = HeadSpec("tags", "multilabel", CLASSES, [0.4] * 6)
    text = card_text(ModelInfo.from_dict(_model_dict(old.to_dict()), "model.json"))
    assert "at most" not in text and "→" not in text


def test_the_model_card_says_where_the_tag_thresholds_were_tuned():
    from fashionlens.models.card import card_text

    head = HeadSpec("tags", "multilabel", CLASSES, [0.4] * 6)
    info = ModelInfo.from_dict(_model_dict(head.to_dict()), "model.json")
    assert "tuned on the validation photos" in card_text(info)  # by training's last step
    info.metrics = {"refit": {"tags": {"kept": True, "decisions": {
        "thresholds_from": "out-of-fold training scores (5 folds, 60 photos)"}}}}
    text = card_text(info)
    assert "tuned on out-of-fold training scores (5 folds, 60 photos)" in text
    assert "tuned on the validation photos; from" not in text
    info.metrics["refit"]["tags"]["kept"] = False  # the trained head (and its thresholds) kept
    assert "tuned on the validation photos" in card_text(info)

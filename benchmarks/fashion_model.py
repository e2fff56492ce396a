"""Benchmark: fashion models on each kind of photo a shop has (issue 19); JSON.

    python benchmarks/fashion_model.py --model clothing10,products,outfits \\
        --out benchmarks/results-fashion-baseline.json      # today's three baselines
    python benchmarks/fashion_model.py --model fashion      # the joint model
    python benchmarks/fashion_model.py --model fashion --limit 60   # a quick look
    python benchmarks/fashion_model.py --model runs/X/model,fashion --runtime torch \
        --precision fp32                 # a run's model beside the bundle, both in fp32

Every figure comes from validation photos of ../shared/data, read in place:

- home photos (`clothing` validation, 341): garment type through the one taxonomy
  (configs/taxonomy/garment-types.yaml). A model with a `type` head answers with it; otherwise
  `label` (clothing10) or `articleType` (products) is mapped through the taxonomy, and a
  prediction the taxonomy has no type for counts wrong. Colour on the hand-labelled
  fixture (benchmarks/fixtures/clothing-colours.csv): right when the predicted coarse
  group is one of the photo's groups; photos labelled `none` are skipped. A `colour`
  head answers directly; a `baseColour` head through configs/taxonomy/colour-groups.yaml. A model
  with both kinds of head (the joint one) is scored by its unified head, and `by_route`
  gives each head's accuracy beside it. Outfit tags (a model with a `tags` head): a home
  photo shows one garment, so the tags it gets are scored against that garment's own tag
  (configs/taxonomy/garment-tags.yaml): tags per photo, whether its own is listed, and the
  share of listed tags that are it. The same on studio shots, through
  configs/taxonomy/article-tags.yaml.
- studio shots (`products` validation, 4,498): accuracy of articleType, baseColour,
  season, usage and gender against the raw labels (a model that folds rare values into
  `other` is right to say `other` for a value it has no class for, as its training
  metric counts it), over all shots and over fashion only (no cosmetics, gifts, sports
  gear: what configs/fashion.yaml trains on); garment type through the taxonomy (shots
  whose articleType has no type, e.g. cosmetics, are not scored); coarse colour against
  baseColour's group.
- people (`outfits`, the seeded 80/20 validation split of configs/outfits.yaml, made by
  the functions training uses): tags read as the model's own task reads them (its
  mapping), micro-F1 / precision / recall with thresholds cross-fitted (tuned on one half,
  scored on the other, and back: `tasks.multilabel`), macro-F1 over tags with >= 30
  photos, tags per photo; also with the thresholds the model ships (held out where
  `refit-heads` tuned them on out-of-fold training scores: `model_thresholds_tuned_on`).
- speed: `Predictor.predict_paths` (what `predict` runs: every head, the "not a garment"
  score, JPEG decoding included) on the same clothing validation photos, every model in
  one process on one runtime (all in fp32 when `auto` would give some int8 and some
  not), in turns, best of `--repeats` (3);
  `clothing10` is always measured as the reference.

Figures are null where a model has no head for them.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from report import emit, thresholds_origin  # noqa: E402

from fashionlens.errors import ConfigError, DataError, FashionLensError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
TAXONOMY = ROOT / "configs" / "taxonomy" / "garment-types.yaml"
COLOUR_GROUPS = ROOT / "configs" / "taxonomy" / "colour-groups.yaml"
COLOUR_FIXTURE = ROOT / "benchmarks" / "fixtures" / "clothing-colours.csv"
GARMENT_TAGS = ROOT / "configs" / "taxonomy" / "garment-tags.yaml"
ARTICLE_TAGS = ROOT / "configs" / "taxonomy" / "article-tags.yaml"
OUTFITS_CONFIG = ROOT / "configs" / "outfits.yaml"
REFERENCE = "clothing10"  # the speed reference: the small classic model
COARSE = ("black", "white", "grey", "blue", "red", "pink", "green", "yellow", "brown",
          "beige", "purple", "orange")
ATTRIBUTES = ("articleType", "baseColour", "season", "usage", "gender")
# Which head names a garment type, best first: the joint model's own, else a fine label
# mapped through the taxonomy.
TYPE_HEADS = ("type", "label", "articleType")
COLOUR_HEADS = ("colour", "baseColour")  # the same for a coarse colour
# products' masterCategory values that are not fashion (configs/fashion.yaml leaves them
# out of training): studio figures are also given without them.
NOT_FASHION = frozenset({"Personal Care", "Free Items", "Sporting Goods", "Home"})
SPEED_PHOTOS = 300
BATCH = 32


# --- pure helpers (tests/test_fashion_benchmark.py) -------------------------------------

def read_mapping(path: Path, what: str) -> dict[str, str | None]:
    """A flat YAML mapping raw value -> class (`~`: no class), as task configs read them."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc})") from None
    if not isinstance(loaded, dict) or not all(
            isinstance(k, str | int | float) and (v is None or isinstance(v, str | int | float))
            for k, v in loaded.items()):
        raise ConfigError(f"{path}: expected a mapping of raw values to {what} names")
    return {str(k): (None if v is None else str(v)) for k, v in loaded.items()}


def to_type(label: str | None, head: str, taxonomy: dict[str, str | None]) -> str | None:
    """A prediction as a taxonomy type: a `type` head's label as is, a fine label mapped
    (None when the taxonomy gives it no type: that prediction counts wrong)."""
    if label is None:
        return None
    return label if head == "type" else taxonomy.get(label)


def parse_colour_cell(cell: str, where: str) -> frozenset[str] | None:
    """A fixture cell as coarse groups; None for `none` (multi-coloured: not scored)."""
    text = (cell or "").strip().lower()
    if not text:
        raise DataError(f"{where}: empty colours cell (write 'none' for a multi-coloured "
                        "garment)")
    if text == "none":
        return None
    groups = frozenset(g.strip() for g in text.split(";") if g.strip())
    unknown = sorted(groups - set(COARSE))
    if unknown:
        raise DataError(f"{where}: unknown colour group(s) {', '.join(unknown)}; groups are "
                        f"{', '.join(COARSE)}")
    return groups


def read_colour_fixture(path: Path) -> dict[str, frozenset[str] | None]:
    """Image id -> its coarse groups (None: labelled `none`)."""
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"image", "colours"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path}: no column(s) {', '.join(sorted(missing))}; columns "
                                f"are: {', '.join(reader.fieldnames or [])}")
            return {row["image"].strip(): parse_colour_cell(row["colours"],
                                                           f"{path}, line {line}")
                    for line, row in enumerate(reader, start=2)}
    except FileNotFoundError:
        raise DataError(f"{path}: colour fixture not found") from None


def coarse_colour(label: str | None, head: str,
                  groups: dict[str, str | None]) -> str | None:
    """A colour prediction as a coarse group: a `colour` head's label as is (when it is a
    group), a baseColour mapped (None for Multi, `other` or an unmapped value)."""
    if label is None:
        return None
    if head == "colour":
        return label.lower() if label.lower() in COARSE else None
    return groups.get(label)


def summed_groups(probabilities: np.ndarray, classes: Sequence[str],
                  groups: dict[str, str | None]) -> list[str | None]:
    """Per photo, the coarse group with the most baseColour probability summed over its
    fine colours (None when no class maps to a group)."""
    columns = {g: [i for i, c in enumerate(classes) if groups.get(c) == g] for g in COARSE}
    columns = {g: idx for g, idx in columns.items() if idx}
    if not columns:
        return [None] * len(probabilities)
    names = list(columns)
    mass = np.stack([probabilities[:, idx].sum(1) for idx in columns.values()], axis=1)
    return [names[i] for i in mass.argmax(1)]


def colour_accuracy(predicted: Sequence[str | None],
                    truth: Sequence[frozenset[str] | None]) -> dict:
    """Share of photos whose predicted group is one of theirs; `none` photos skipped."""
    scored = [(p, t) for p, t in zip(predicted, truth, strict=True) if t is not None]
    right = sum(p is not None and p in t for p, t in scored)
    return {"accuracy": round(right / len(scored), 4) if scored else None,
            "photos": len(scored), "skipped_none": len(truth) - len(scored),
            "no_group_predicted": sum(p is None for p, _ in scored)}


def attribute_right(predicted: str, truth: str, classes: Sequence[str],
                    other: str = "other") -> bool:
    """Right when equal, or when the model says `other` for a value it has no class for
    (the values its training folded into `other`)."""
    return predicted == truth or (predicted == other and other in classes
                                  and truth not in classes)


def type_accuracy(predicted: Sequence[str | None], truth: Sequence[str | None]) -> dict:
    """Accuracy over photos with a true type; a prediction without a type counts wrong."""
    scored = [(p, t) for p, t in zip(predicted, truth, strict=True) if t is not None]
    right = sum(p == t for p, t in scored)
    return {"accuracy": round(right / len(scored), 4) if scored else None,
            "photos": len(scored), "no_type_true": len(truth) - len(scored),
            "unmapped_predictions": sum(p is None for p, _ in scored)}


def crossfit_decisions(scores: np.ndarray, targets: np.ndarray, objective: str = "tag_f1",
                       max_tags: int | None = None, parents: list[int | None] | None = None,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's tags decided with thresholds tuned on the other half of the photos:
    the halves, tuning and decision of `tasks.multilabel.crossfit_micro_f1`, kept per
    photo (implied parents included) with how many tags each photo lists."""
    from fashionlens.tasks import multilabel as ml

    predicted = np.zeros(scores.shape, dtype=bool)
    listed = np.zeros(len(scores), dtype=int)
    for fit_rows, score_rows in (pair := ml.halves(len(scores), seed), pair[::-1]):
        thresholds = ml.tune_thresholds(scores[fit_rows], targets[fit_rows], objective)
        decided = ml.decide(scores[score_rows], thresholds, max_tags, parents)
        predicted[score_rows] = ml.implied(decided, (len(score_rows), scores.shape[1]), None,
                                           parents)
        listed[score_rows] = [len(tags) for tags in decided]
    return predicted, listed


def tag_figures(scores: np.ndarray, targets: np.ndarray, predicted: np.ndarray,
                listed: np.ndarray) -> dict:
    """Micro-F1, precision, recall and macro-F1 over tags with >= 30 photos of one
    decision (`tasks.multilabel.multilabel_scores`: unknown cells count for nothing), and
    the tags a photo lists (a parent its child already says is not listed again)."""
    from fashionlens.tasks.multilabel import multilabel_scores

    names = [str(j) for j in range(scores.shape[1])]
    found = multilabel_scores(scores, targets, np.full(len(names), np.nan), names, predicted)
    return {
        "micro_f1": round(found["micro_f1"], 4),
        "precision": round(found["micro_precision"], 4),
        "recall": round(found["micro_recall"], 4),
        "macro_f1_30": None if found["macro_f1_30"] is None else round(found["macro_f1_30"], 4),
        "tags_with_30": found["tags_with_30"],
        "tags_per_photo": round(float(np.mean(listed)), 2) if len(listed) else None,
        "tags_per_photo_with_parents": round(float(predicted.sum(1).mean()), 2)
        if len(predicted) else None,
    }


# --- data -----------------------------------------------------------------------------

def read_rows(path: Path, split: str) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("split") == split]
    except FileNotFoundError:
        raise DataError(f"{path}: not found (--data names the folder holding clothing/, "
                        "products/ and outfits/)") from None
    if not rows:
        raise DataError(f"{path}: no rows with split == {split}")
    return rows


def outfits_validation(data: Path):
    """The outfits validation photos exactly as a training run of configs/outfits.yaml
    splits them (the same reader and split function, the config's seed)."""
    from fashionlens.config import load_config
    from fashionlens.data.splits import split_train_val
    from fashionlens.training.inputs import read_run_data

    config = load_config(OUTFITS_CONFIG,
                         values={"data": {"path": str(data / "outfits" / "labels.csv")}})
    labelled = read_run_data(config)
    _, val = split_train_val(labelled, config.data, config.seed,
                             drop_unseen=not bool(config.tasks))
    return val.samples


# --- running a model ------------------------------------------------------------------

def head_scores(predictor, paths: Sequence[Path], heads: Sequence[str]
                ) -> tuple[dict[str, np.ndarray], list[int]]:
    """Each named head's scores for every readable photo, and those photos' rows."""
    from fashionlens.inference.photos import decoded_batches, prepare_photo

    parts: dict[str, list[np.ndarray]] = {h: [] for h in heads}
    rows: list[int] = []
    preprocess = predictor.info.preprocess
    for start, decoded in zip(range(0, len(paths), BATCH), decoded_batches(
            list(paths), lambda p: prepare_photo(p, preprocess), BATCH, predictor.threads),
            strict=True):
        if not decoded.groups:
            continue
        out = decoded.map(lambda batch: predictor.runtime.run(batch, list(heads)))
        for h in heads:
            parts[h].append(out[h])
        rows += [start + r for r in decoded.rows]
    return {h: np.concatenate(v) if v else np.zeros((0, 0)) for h, v in parts.items()}, rows


def labels_of(head, scores: np.ndarray) -> list[str]:
    return [head.classes[i] for i in scores.argmax(1)]


def route_name(head: str, kind: str) -> str:
    if kind == "type":
        return head if head == "type" else f"{head} -> taxonomy"
    return head if head == "colour" else f"{head} -> colour groups (top label)"


def with_other_routes(figures: dict[str, dict], kind: str) -> dict | None:
    """The first route's figures, and every route's accuracy when a model has several
    (the joint model's `type` beside its `articleType` mapped, `colour` beside
    `baseColour`): whether the unified head beats the fine one mapped."""
    if not figures:
        return None
    first = next(iter(figures))
    out = {**figures[first], "from": route_name(first, kind)}
    if len(figures) > 1:
        out["by_route"] = {route_name(h, kind): f["accuracy"] for h, f in figures.items()}
    return out


def outfit_tags_head(heads: dict):
    """The model's outfit `tags` head (multilabel), if it has one."""
    head = heads.get("tags")
    return head if head is not None and head.kind == "multilabel" else None


def single_garment_tags(head, scores: np.ndarray, garments: Sequence[str | None]) -> dict:
    """Outfit tags on photos of one garment: how many the model lists, whether the
    garment's own tag (`GARMENT_TAGS`; a child of it counts, e.g. jeans for pants) is
    among them, and the share of listed tags that are it. Photos whose garment has no
    one tag count for the first figure only."""
    from fashionlens.models.info import ancestors, decide

    parents = head.parent_indices()
    listed_counts, found, right = [], [], []
    decided = decide(scores, np.asarray(head.threshold_list()), head.max_tags, parents)
    for listed, garment in zip(decided, garments, strict=True):
        listed_counts.append(len(listed))
        if garment is None or garment not in head.classes:
            continue
        own = head.classes.index(garment)
        hits = [i == own or (parents is not None and own in ancestors(parents, i))
                for i in listed]
        found.append(any(hits))
        right.extend(hits)
    return {"photos": len(listed_counts), "tags_per_photo": round(float(np.mean(
                listed_counts)), 3) if listed_counts else None,
            "photos_with_one_tag_of_their_own": len(found),
            "own_tag_listed": round(float(np.mean(found)), 4) if found else None,
            "listed_that_are_its_own": round(float(np.mean(right)), 4) if right else None,
            "tags_listed": len(right)}


def home_photos(predictor, taxonomy, groups, data: Path, limit: int | None) -> dict | None:
    heads = {h.name: h for h in predictor.heads}
    type_routes = [h for h in TYPE_HEADS if h in heads]
    colour_routes = [h for h in COLOUR_HEADS if h in heads]
    tag_head = outfit_tags_head(heads)
    if not type_routes and not colour_routes and tag_head is None:
        return None
    every = read_rows(data / "clothing" / "labels.csv", "validation")
    rows = every[:limit]
    fixture = read_colour_fixture(COLOUR_FIXTURE)
    fixture_ids = list(fixture)[:limit]
    label_of = {r["image"]: r["label"] for r in every}
    missing = [i for i in fixture_ids if i not in label_of]
    if missing:
        raise DataError(f"{COLOUR_FIXTURE}: images not in the clothing validation split: "
                        f"{', '.join(missing[:3])}")
    ids = list(dict.fromkeys([r["image"] for r in rows] + fixture_ids))
    paths = [data / "clothing" / "images" / f"{i}.jpg" for i in ids]
    scores, readable = head_scores(predictor, paths, [*type_routes, *colour_routes,
                                                      *(["tags"] if tag_head else [])])
    at = {ids[r]: k for k, r in enumerate(readable)}
    typed = [r["image"] for r in rows if r["image"] in at]
    tags = None
    if tag_head is not None:
        garment_tags = read_mapping(GARMENT_TAGS, "outfit tag")
        tags = single_garment_tags(tag_head, scores["tags"][[at[i] for i in typed]],
                                   [garment_tags.get(label_of[i]) for i in typed])
    truth_types = [taxonomy.get(label_of[i]) for i in typed]
    types = {}
    for head in type_routes:
        labels = labels_of(heads[head], scores[head][[at[i] for i in typed]])
        types[head] = type_accuracy([to_type(p, head, taxonomy) for p in labels], truth_types)
    coloured = [i for i in fixture_ids if i in at]
    truth_colours = [fixture[i] for i in coloured]
    colours = {}
    for head in colour_routes:
        probs = scores[head][[at[i] for i in coloured]]
        colours[head] = colour_accuracy(
            [coarse_colour(c, head, groups) for c in labels_of(heads[head], probs)],
            truth_colours)
        if head == "baseColour":
            colours[head]["accuracy_summed_groups"] = colour_accuracy(
                summed_groups(probs, heads[head].classes, groups), truth_colours)["accuracy"]
    return {"photos_unreadable": len(ids) - len(readable),
            "type": with_other_routes(types, "type"),
            "colour": with_other_routes(colours, "colour"),
            "outfit_tags": tags}


def studio_shots(predictor, taxonomy, groups, data: Path, limit: int | None) -> dict | None:
    heads = {h.name: h for h in predictor.heads}
    type_routes = [h for h in TYPE_HEADS if h in heads]
    colour_routes = [h for h in COLOUR_HEADS if h in heads]
    attributes = [a for a in ATTRIBUTES if a in heads]
    tag_head = outfit_tags_head(heads)
    wanted = list(dict.fromkeys([*attributes, *type_routes, *colour_routes,
                                 *(["tags"] if tag_head else [])]))
    if not wanted:
        return None
    rows = read_rows(data / "products" / "styles.csv", "validation")[:limit]
    paths = [data / "products" / "images" / f"{r['id']}.jpg" for r in rows]
    scores, readable = head_scores(predictor, paths, wanted)
    kept = [rows[r] for r in readable]
    predicted = {h: labels_of(heads[h], scores[h]) for h in wanted if h != "tags"}
    out: dict = {"photos": len(kept), "photos_unreadable": len(rows) - len(kept)}
    if tag_head is not None:
        article_tags = read_mapping(ARTICLE_TAGS, "outfit tag")
        out["outfit_tags"] = single_garment_tags(
            tag_head, scores["tags"], [article_tags.get(r["articleType"].strip()) for r in kept])
    for attribute in ATTRIBUTES:
        if attribute not in heads:
            out[attribute] = None
            continue
        classes = heads[attribute].classes
        right = [(attribute_right(p, r[attribute].strip(), classes),
                  r["masterCategory"].strip() not in NOT_FASHION)
                 for p, r in zip(predicted[attribute], kept, strict=True)
                 if r[attribute].strip()]
        fashion = [ok for ok, is_fashion in right if is_fashion]
        out[attribute] = {
            "accuracy": round(sum(ok for ok, _ in right) / len(right), 4) if right else None,
            "photos": len(right),
            "accuracy_fashion_only": round(sum(fashion) / len(fashion), 4) if fashion
            else None,
            "photos_fashion_only": len(fashion)}
    truth_types = [taxonomy.get(r["articleType"].strip()) for r in kept]
    out["type"] = with_other_routes(
        {h: type_accuracy([to_type(p, h, taxonomy) for p in predicted[h]], truth_types)
         for h in type_routes}, "type")
    truth_colours = [None if groups.get(r["baseColour"].strip()) is None
                     else frozenset([groups[r["baseColour"].strip()]]) for r in kept]
    out["colour_coarse"] = with_other_routes(
        {h: colour_accuracy([coarse_colour(p, h, groups) for p in predicted[h]],
                            truth_colours) for h in colour_routes}, "colour")
    if out["colour_coarse"] is not None:
        out["colour_coarse"]["truth"] = "baseColour -> colour groups (Multi, NA: skipped)"
    return out


def tag_task(info, head):
    """The model's own reading of the outfits tags (its task config: mapping, parents,
    cap, threshold objective), on the outfits CSV's `tags` column."""
    import dataclasses

    from fashionlens.config import TaskConfig
    from fashionlens.tasks.multilabel import MultilabelTask

    saved = next((t for t in (info.config or {}).get("tasks", [])
                  if isinstance(t, dict) and t.get("name") == head.name), {})
    fields = {f.name for f in dataclasses.fields(TaskConfig)}
    config = TaskConfig(**{k: v for k, v in saved.items() if k in fields})
    config = dataclasses.replace(config, name=head.name, kind="multilabel", column="tags")
    task = MultilabelTask(config, list(head.classes), head.thresholds)
    task.adopt(head)  # the cap and parents the model decides with
    return task


def people(predictor, data: Path, limit: int | None) -> dict | None:
    from fashionlens.data.sources import split_tags
    from fashionlens.tasks import multilabel as ml

    heads = {h.name: h for h in predictor.heads}
    if "tags" not in heads or heads["tags"].kind != "multilabel":
        return None
    head = heads["tags"]
    samples = outfits_validation(data)[:limit]
    scores, readable = head_scores(predictor, [s.path for s in samples], ["tags"])
    task = tag_task(predictor.info, head)
    kept = [samples[r] for r in readable]
    targets = task.encode(kept)
    labelled = task.present(targets)
    probs, targets = scores["tags"][labelled], targets[labelled]
    kept = [s for s, keep in zip(kept, labelled, strict=True) if keep]
    objective, parents = task.config.threshold_objective, task.parent_index
    predicted, listed = crossfit_decisions(probs, targets, objective, task.max_tags, parents)
    crossfit = tag_figures(probs, targets, predicted, listed)
    reference = ml.crossfit_micro_f1(probs, targets, list(head.classes), objective=objective,
                                     max_tags=task.max_tags, parents=parents)
    if reference is not None and abs(round(reference, 4) - crossfit["micro_f1"]) > 1e-4:
        raise FashionLensError(f"cross-fitted micro-F1 {crossfit['micro_f1']} disagrees with "
                               f"tasks.multilabel's {reference:.4f}")
    shipped = ml.decide(probs, np.asarray(head.threshold_list()), task.max_tags, parents)
    raw = [len(split_tags(s.values.get("tags", ""), task.config.separator)) for s in kept]
    return {
        "photos": len(kept), "photos_unreadable": len(samples) - len(readable),
        "split": "configs/outfits.yaml: seeded 80/20 (training's split_train_val)",
        "tags_learned": len(head.classes), "max_tags": task.max_tags,
        "parents": len(task.parents), "threshold_objective": objective,
        "crossfit": crossfit,
        "model_thresholds": tag_figures(
            probs, targets, ml.implied(shipped, probs.shape, None, parents),
            np.array([len(tags) for tags in shipped])),
        "model_thresholds_tuned_on": thresholds_origin(predictor.info.metrics, head.name),
        "true_tags_per_photo": round(float((targets > 0.5).sum(1).mean()), 2),
        "true_tags_per_photo_raw": round(float(np.mean(raw)), 2),
    }


def speed(predictors: dict, paths: list[Path], repeats: int = 3) -> dict:
    """images/s of `predict_paths`, models in turns (so a busy machine slows each alike)."""
    seconds: dict[str, list[float]] = {name: [] for name in predictors}
    for predictor in predictors.values():
        list(predictor.predict_paths(paths[:BATCH], batch_size=BATCH))  # warm-up
    for _ in range(repeats):
        for name, predictor in predictors.items():
            start = time.perf_counter()
            results = list(predictor.predict_paths(paths, batch_size=BATCH))
            seconds[name].append(time.perf_counter() - start)
            errors = [r for r in results if r.error]
            if errors:
                raise DataError(f"{errors[0].path}: {errors[0].error}")
    out = {}
    for name, predictor in predictors.items():
        best = len(paths) / min(seconds[name])
        out[name] = {"images_per_s": round(best, 1),
                     "images_per_s_median": round(len(paths) / statistics.median(seconds[name]),
                                                  1),
                     "ran_on": predictor.runtime.backend,
                     "precision": getattr(predictor.runtime, "precision", "fp32"),
                     "outputs": list(predictor.outputs),
                     "input": describe_input(predictor.info.preprocess)}
    base = out[REFERENCE]["images_per_s"] if REFERENCE in out else None
    for row in out.values():
        row[f"vs_{REFERENCE}"] = round(row["images_per_s"] / base, 3) if base else None
    return out


def describe_input(preprocess) -> str:
    if getattr(preprocess, "fit", "crop") == "crop":
        return f"crop {preprocess.size}x{preprocess.size}"
    return f"{preprocess.fit} {preprocess.height}x{preprocess.width}"


def model_names(values: Sequence[str]) -> list[str]:
    """`--model a,b --model c` -> [a, b, c], each once, in order."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[],
                        help="model name or folder; repeatable or comma-separated "
                             "(default: clothing10,products,outfits)")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                        help="the runtime's precision for every model (default: the "
                             "runtime's own choice, e.g. bf16 for torch on a CPU with "
                             "native bf16); fp32 compares models trained here alike")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many photos of each set (a quick run)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes per model for the speed (best is reported); "
                             "more steadies the ratio on a busy machine")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    names = model_names(args.model or ["clothing10,products,outfits"])

    from fashionlens.inference.predictor import Predictor
    from fashionlens.precision import cpu_description

    started = time.perf_counter()
    try:
        taxonomy = read_mapping(TAXONOMY, "garment type")
        groups = read_mapping(COLOUR_GROUPS, "colour group")
        predictors = {name: Predictor(name, runtime=args.runtime, precision=args.precision)
                      for name in names}
        models = {}
        for name, predictor in predictors.items():
            begun = time.perf_counter()
            models[name] = {
                "heads": [h.name for h in predictor.info.heads],
                "ran_on": predictor.runtime.backend,
                "precision": getattr(predictor.runtime, "precision", "fp32"),
                "input": describe_input(predictor.info.preprocess),
                "home_photos": home_photos(predictor, taxonomy, groups, args.data,
                                           args.limit),
                "studio_shots": studio_shots(predictor, taxonomy, groups, args.data,
                                             args.limit),
                "people": people(predictor, args.data, args.limit),
            }
            models[name]["seconds"] = round(time.perf_counter() - begun, 1)
            print(f"{name}: {models[name]['seconds']} s", file=sys.stderr, flush=True)
        timed = dict(predictors)
        if REFERENCE not in timed:
            timed = {REFERENCE: Predictor(REFERENCE, runtime=args.runtime,
                                          precision=args.precision), **timed}
        if len({p.runtime.backend for p in timed.values()}) > 1:
            # `auto` took int8 for the models whose int8 export measured faster here and
            # fp32 for the others (seen: clothing10 on openvino-int8, fashion on openvino):
            # the ratio must compare one runtime, so all are timed in fp32
            timed = {name: Predictor(name, runtime=args.runtime, precision="fp32")
                     for name in timed}
        rows = read_rows(args.data / "clothing" / "labels.csv", "validation")
        count = min(SPEED_PHOTOS, args.limit or SPEED_PHOTOS)
        photos = [args.data / "clothing" / "images" / f"{r['image']}.jpg" for r in rows][:count]
        speeds = speed(timed, photos, args.repeats)
    except FashionLensError as exc:
        sys.exit(f"error: {exc}")
    report = {
        "benchmark": "benchmarks/fashion_model.py",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "models": models,
        "speed": {"photos": len(photos), "set": "clothing validation (first by CSV order)",
                  "batch": BATCH, "repeats": args.repeats,
                  "measure": f"Predictor.predict_paths, decoding included, best of "
                             f"{args.repeats} (models in turns)", "models": speeds},
        "runtime": args.runtime,
        "precision": args.precision or "the runtime's choice",
        "limit": args.limit,
        "taxonomy": str(TAXONOMY.relative_to(ROOT)),
        "colour_groups": str(COLOUR_GROUPS.relative_to(ROOT)),
        "colour_fixture": str(COLOUR_FIXTURE.relative_to(ROOT)),
        "data": str(args.data),
        "cpu": cpu_description(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "python": sys.version.split()[0],
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()

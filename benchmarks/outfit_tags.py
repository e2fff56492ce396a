"""Outfit tags a person can trust: how each decode rule changes the tags a street photo
gets, on the `outfits` validation photos; JSON to stdout and
`benchmarks/results-outfit-tags.json`.

    nice -n 10 python benchmarks/outfit_tags.py                  # bundled `outfits`
    nice -n 10 python benchmarks/outfit_tags.py --model fashion  # the joint model's `tags`

The validation photos are the ones the model never trained on: the seeded split its own
run config made of `../shared/data/outfits/labels.csv` (for a joint model, the split of
its source reading that file). Their scores are computed once per model weights and
pre-processing and kept in /tmp (FASHIONLENS_OUTFIT_TAGS_CACHE), so trying another rule
costs no forward pass.

Every figure is cross-fitted: the photos are cut in two halves; whatever a rule tunes
(thresholds, the cap) is tuned on one half and scored on the other, and the other way
round; the counts of both halves are pooled. That is repeated over REPEATS random cuts
and the figures averaged (one cut moves micro-F1 by about a point). Rules, each on top
of the one before:

- `stored`: the thresholds in model.json (tuned on these very photos by training:
  flattering, not cross-fitted, shown for reference; held out where `refit-heads` tuned
  them on out-of-fold training scores: `stored_thresholds_tuned_on`);
- `at_0.5`: every tag at 0.5;
- `tag_f1`: per-tag thresholds, each maximising its tag's F1 (today's training);
- `micro_f1`: per-tag thresholds maximising the pooled (micro) F1;
- `micro_f1+cap`: ... and at most `max_tags` tags a photo, the cap chosen by an inner
  cross-fit on the tuning half;
- `micro_f1+cap+parents`: ... and the tag parents (`PARENTS`): truth and predictions
  gain the parents of their tags, a photo whose label only names a parent is not scored
  on that parent's children, and a parent is listed once when a child already says it.

The first rules are scored on the model's own tags (as its metrics.json is); the parent
rule on the canonical tags (with the parents), so its figures are shown next to the
same rules re-scored there (`canonical`), which is the fair comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

import numpy as np  # noqa: E402
from report import thresholds_origin  # noqa: E402

from fashionlens.models.info import read_info  # noqa: E402
from fashionlens.models.resolve import resolve_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "outfits" / "labels.csv"
RESULTS = ROOT / "benchmarks" / "results-outfit-tags.json"
CACHE = Path(os.environ.get("FASHIONLENS_OUTFIT_TAGS_CACHE", "/tmp/fashionlens-outfit-tags"))
REPEATS = 5

# The canonical tag parents (child -> parent), decided from labels.csv: the image-level
# and pixel-level annotations name footwear, bags, eyewear, trousers and hosiery at
# different depths (pixel-level photos mostly say `shoes`, image-level ones mostly
# `heels`, `sandals`, `boots`...), and within one photo the parent and its child are
# (almost) never both named: one thing, two names. Used when the model has none.
PARENTS = {
    "boots": "shoes", "clogs": "shoes", "flats": "shoes", "heels": "shoes",
    "loafers": "shoes", "pumps": "shoes", "sandals": "shoes", "sneakers": "shoes",
    "wedges": "shoes",
    "purse": "bag", "wallet": "bag",
    "sunglasses": "glasses",
    "jeans": "pants", "leggings": "pants",
    "tights": "stockings",
}


def validation_rows(config: dict, csv_path: Path) -> list:
    """The validation samples of the model's own run (its split of `csv_path`)."""
    from fashionlens.config import RunConfig, _apply
    from fashionlens.data.sources import DataSpec, load_labelled
    from fashionlens.data.splits import split_train_val

    run = RunConfig()
    spec_dict = None
    data = config.get("data") or {}
    if data.get("path") and Path(data["path"]).name == csv_path.name \
            and Path(data["path"]).parent.name == csv_path.parent.name:
        spec_dict = data
    for source in config.get("sources") or []:
        path = (source.get("data") or {}).get("path") or ""
        if Path(path).name == csv_path.name and Path(path).parent.name == csv_path.parent.name:
            spec_dict = source["data"]
    if spec_dict is None:
        raise SystemExit(f"the model's run config reads no {csv_path.parent.name}/"
                         f"{csv_path.name}: its validation photos are unknown")
    spec = DataSpec()
    _apply(spec, {k: v for k, v in spec_dict.items() if hasattr(spec, k)}, "data")
    spec.path = str(csv_path)
    _apply(run, {"seed": config.get("seed", 0)}, "")
    data_set = load_labelled(spec, task_columns=["tags"], label_column=None)
    _, val = split_train_val(data_set, spec, run.seed, drop_unseen=False)
    return val.samples


def cached_scores(model: str, head_name: str, csv_path: Path) -> tuple[list[str], np.ndarray,
                                                                     list[str]]:
    """(photo ids, scores photos x tags, annotation kinds), computed once per weights and
    pre-processing."""
    from fashionlens.data.sources import read_csv_rows
    from fashionlens.models.info import weights_digest

    ref = resolve_model(model)
    info = read_info(ref.folder)
    preprocess = json.dumps(info.preprocess.to_dict(), sort_keys=True)  # canvases too
    key = hashlib.sha256(f"{weights_digest(ref.folder)}:{head_name}:{csv_path}:{preprocess}"
                         .encode()).hexdigest()[:16]
    path = CACHE / f"{ref.name}-{key}.npz"
    if path.is_file():
        cached = np.load(path, allow_pickle=False)
        return list(cached["ids"]), cached["scores"], list(cached["kinds"])
    samples = validation_rows(info.config, csv_path)
    _, rows = read_csv_rows(csv_path)
    kinds_by_id = {r["image"].strip(): (r.get("annotation") or "").strip() for r in rows}
    from fashionlens.inference.loading import load_runtime
    from fashionlens.inference.photos import decoded_batches, prepare_photo

    runtime = load_runtime(model, precision="fp32")
    ids, parts = [], []
    for decoded in decoded_batches([s.path for s in samples],
                                   lambda path: prepare_photo(path, info.preprocess), 32, 2):
        if decoded.errors:
            raise SystemExit(f"{decoded.sources[min(decoded.errors)]}: unreadable")
        parts.append(decoded.map(lambda batch: runtime.run(batch, (head_name,))[head_name]))
        ids += [path.stem for path in decoded.sources]
    scores = np.concatenate(parts).astype(np.float32)
    kinds = [kinds_by_id.get(i, "") for i in ids]
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, ids=np.array(ids), scores=scores, kinds=np.array(kinds))
    return ids, scores, kinds


def evidence(csv_path: Path, parents: dict[str, str]) -> dict:
    """Per parent and annotation kind, photos naming the parent only, a child only, or
    both: where `both` is near zero, the two annotations name one thing at two depths."""
    from fashionlens.data.sources import read_csv_rows

    _, rows = read_csv_rows(csv_path)
    children: dict[str, set[str]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, set()).add(child)
    out: dict = {}
    for parent, kids in sorted(children.items()):
        entry: dict = {"children": sorted(kids)}
        for kind in sorted({(r.get("annotation") or "").strip() for r in rows}):
            tags = [set((r.get("tags") or "").split(";")) for r in rows
                    if (r.get("annotation") or "").strip() == kind]
            entry[kind or "unknown"] = {
                "photos": len(tags),
                "parent_only": sum(parent in t and not t & kids for t in tags),
                "child_only": sum(parent not in t and bool(t & kids) for t in tags),
                "both": sum(parent in t and bool(t & kids) for t in tags),
                "per_child": {k: sum(k in t for t in tags) for k in sorted(kids)},
            }
        out[parent] = entry
    return out


def truth(classes: list[str], cells: list[str], parents: dict[str, str] | None) -> np.ndarray:
    """Targets as training encodes them (the package's `MultilabelTask.encode`): with
    `parents`, rows gain their tags' parents and a parent-only photo's children are NaN."""
    from fashionlens.config import TaskConfig
    from fashionlens.data.sources import Sample
    from fashionlens.tasks.multilabel import MultilabelTask

    task = MultilabelTask(TaskConfig(name="tags", kind="multilabel", parents=parents or {}),
                          classes)
    return task.encode([Sample(path=Path(f"{i}.jpg"), label="", values={"tags": c})
                        for i, c in enumerate(cells)])


def crossfit(scores: np.ndarray, targets: np.ndarray, objective: str, cap: str | None,
             parents: list[int | None] | None, seeds: range, kinds: np.ndarray) -> dict:
    """Pooled cross-fitted figures of one rule (see the module docstring)."""
    from fashionlens.models.info import decide_tags  # noqa: F401  (the rule decide applies)
    from fashionlens.tasks.multilabel import (
        choose_cap,
        decide,
        halves,
        implied,
        tune_thresholds,
    )

    n_tags = scores.shape[1]
    tp, fp, fn = (np.zeros(n_tags) for _ in range(3))
    by_kind: dict = {}
    listed_total = implied_total = photos = 0
    caps = []
    for seed in seeds:
        pair = halves(len(scores), seed)
        for fit_rows, score_rows in (pair, pair[::-1]):
            thresholds = (np.full(n_tags, 0.5) if objective == "at_0.5"
                          else tune_thresholds(scores[fit_rows], targets[fit_rows], objective))
            chosen = (choose_cap(scores[fit_rows], targets[fit_rows], objective, parents)
                      if cap == "auto" else None)
            caps.append(chosen)
            listed = decide(scores[score_rows], thresholds, chosen, parents)
            predicted = implied(listed, (len(score_rows), n_tags), None, parents)
            known = ~np.isnan(targets[score_rows])
            true = targets[score_rows] > 0.5
            predicted &= known
            tp += (predicted & true).sum(0)
            fp += (predicted & ~true).sum(0)
            fn += (~predicted & true).sum(0)
            listed_total += sum(len(t) for t in listed)
            implied_total += int(predicted.sum())
            photos += len(score_rows)
            for kind in sorted(set(kinds.tolist())):
                rows = kinds[score_rows] == kind
                counts = by_kind.setdefault(kind, np.zeros(3))
                counts += ((predicted[rows] & true[rows]).sum(), (predicted[rows] & ~true[rows]
                                                                   ).sum(),
                           (~predicted[rows] & true[rows]).sum())
    return summary(tp, fp, fn, targets, listed_total / photos, implied_total / photos,
                   by_kind, caps)


def summary(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, targets: np.ndarray,
            listed: float, implied: float, by_kind: dict, caps: list | None) -> dict:
    def f1(a: float, b: float, c: float) -> float:
        return 2 * a / max(2 * a + b + c, 1)

    common = np.nansum(targets > 0.5, 0) >= 30
    per_tag = np.array([f1(a, b, c) for a, b, c in zip(tp, fp, fn, strict=True)])
    out = {
        "micro_f1": round(f1(tp.sum(), fp.sum(), fn.sum()), 4),
        "precision": round(float(tp.sum() / max(tp.sum() + fp.sum(), 1)), 4),
        "recall": round(float(tp.sum() / max(tp.sum() + fn.sum(), 1)), 4),
        "macro_f1_30": round(float(per_tag[common].mean()), 4) if common.any() else None,
        "tags_listed_per_photo": round(listed, 2),
        "tags_scored_per_photo": round(implied, 2),
        "by_annotation": {kind: {"micro_f1": round(f1(*c), 4),
                                 "precision": round(float(c[0] / max(c[0] + c[1], 1)), 4),
                                 "recall": round(float(c[0] / max(c[0] + c[2], 1)), 4)}
                          for kind, c in by_kind.items()},
    }
    if caps is not None and any(c is not None for c in caps):
        out["caps_chosen"] = dict(sorted(
            {str(c): caps.count(c) for c in set(caps)}.items()))
    return out


def stored(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray,
           kinds: np.ndarray) -> dict:
    """The model's own thresholds on the photos they were tuned on (not cross-fitted)."""
    predicted = (scores >= thresholds[None, :]) & ~np.isnan(targets)
    true = targets > 0.5
    by_kind = {kind: np.array([(predicted[r] & true[r]).sum(), (predicted[r] & ~true[r]).sum(),
                               (~predicted[r] & true[r]).sum()], float)
               for kind in sorted(set(kinds.tolist())) if (r := kinds == kind).any()}
    rate = float(predicted.sum(1).mean())
    return summary((predicted & true).sum(0), (predicted & ~true).sum(0),
                   (~predicted & true).sum(0), targets, rate, rate, by_kind, None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="outfits", help="a model name or folder")
    parser.add_argument("--head", default=None, help="its multilabel head (default: the "
                                                     "first one)")
    parser.add_argument("--data", type=Path, default=DATA, help="the outfits labels.csv")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help="where the JSON goes ('-': stdout only)")
    args = parser.parse_args(argv)
    from fashionlens.data.sources import read_csv_rows
    from fashionlens.models.info import parent_indices, weights_digest
    from fashionlens.precision import cpu_description
    from fashionlens.tasks.multilabel import choose_cap, tune_thresholds

    started = time.perf_counter()
    ref = resolve_model(args.model)
    info = read_info(ref.folder)
    heads = [h for h in info.scored_heads if h.kind == "multilabel"
             and (args.head is None or h.name == args.head)]
    if not heads:
        raise SystemExit(f"{args.model}: no multilabel head"
                         + (f" named {args.head}" if args.head else ""))
    head = heads[0]
    ids, scores, kinds = cached_scores(args.model, head.name, args.data)
    _, rows = read_csv_rows(args.data)
    cell = {r["image"].strip(): r.get("tags") or "" for r in rows}
    cells = [cell[i] for i in ids]
    kinds_array = np.array(kinds)
    classes = list(head.classes)
    parents = dict(head.parents) if head.parents else {
        c: p for c, p in PARENTS.items() if c in classes and p in classes}
    index = parent_indices(classes, parents)
    seeds = range(args.repeats)
    raw = truth(classes, cells, None)
    canonical = truth(classes, cells, parents)
    rules: dict = {"own_tags": {}, "canonical": {}}
    thresholds = np.asarray(head.threshold_list())
    for space, targets in (("own_tags", raw), ("canonical", canonical)):
        rules[space]["stored"] = stored(scores, targets, thresholds, kinds_array)
        for name, objective, cap in (("at_0.5", "at_0.5", None), ("tag_f1", "tag_f1", None),
                                     ("tag_f1+cap", "tag_f1", "auto"),
                                     ("micro_f1", "micro_f1", None),
                                     ("micro_f1+cap", "micro_f1", "auto")):
            rules[space][name] = crossfit(scores, targets, objective, cap, None, seeds,
                                          kinds_array)
    for name, objective, cap in (("tag_f1+parents", "tag_f1", None),
                                 ("tag_f1+cap+parents", "tag_f1", "auto"),
                                 ("micro_f1+parents", "micro_f1", None),
                                 ("micro_f1+cap+parents", "micro_f1", "auto")):
        rules["canonical"][name] = crossfit(scores, canonical, objective, cap, index, seeds,
                                            kinds_array)
    # What training would store for this head on all of these photos (`tune`).
    chosen = {objective: choose_cap(scores, canonical, objective, index)
              for objective in ("tag_f1", "micro_f1")}
    micro = tune_thresholds(scores, canonical, "micro_f1")
    result = {
        "benchmark": "outfit_tags",
        "model": args.model, "head": head.name, "weights": weights_digest(ref.folder),
        "scored_by": "load_runtime(model, precision='fp32'), runtime auto",
        "cpu": cpu_description()["model"],
        "photos": len(ids),
        "photos_by_annotation": {k: int((kinds_array == k).sum())
                                 for k in sorted(set(kinds))},
        "true_tags_per_photo": {"own_tags": round(float(np.nansum(raw > 0.5, 1).mean()), 2),
                                "canonical": round(float(np.nansum(canonical > 0.5, 1).mean()),
                                                   2)},
        "masked_cells": int(np.isnan(canonical).sum()),
        "repeats": args.repeats,
        "parents": parents,
        "rules": rules,
        "stored_thresholds_tuned_on": thresholds_origin(info.metrics, head.name),
        "max_tags_on_all_photos": chosen,
        "micro_f1_thresholds_on_all_photos": dict(zip(classes, micro.round(3).tolist(),
                                                      strict=True)),
        "parents_evidence": evidence(args.data, PARENTS),
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if str(args.output) != "-":
        args.output.write_text(text + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

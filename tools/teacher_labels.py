"""Label a CSV's photos with a teacher model's head, for a joint run where a source lacks
that label (distillation from a specialist).

    python tools/teacher_labels.py ../shared/data/clothing/labels.csv --image-dir images \\
        --image-extension .jpg --model products --head baseColour --splits train,extra \\
        --groups configs/taxonomy/colour-groups.yaml --min-probability 0.5 \\
        --out configs/teacher/clothing-colour.csv

Writes a copy of the CSV (every row and column as it was) with two columns added,
`teacher_<head>` and `teacher_probability`, filled only for rows of `--splits` whose answer
is at least `--min-probability` sure: validation rows stay unlabelled, so the teacher never
sees a photo the joint model is judged on. With `--groups` (a mapping file as task configs
use) the probability is summed over each group's classes and the answer is the most
probable class of the most probable group, so the task's own mapping turns it into that
group. The input CSV is never written to; `--out` must be another file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from fashionlens.atomic import write_bytes_atomic
from fashionlens.errors import FashionLensError
from fashionlens.inference.photos import decoded_batches, prepare_photo
from fashionlens.inference.predictor import Predictor

BATCH = 32


def group_answers(probabilities: np.ndarray, classes: list[str],
                  groups: dict[str, str | None] | None) -> tuple[list[str], np.ndarray]:
    """Per photo: the answer and how sure it is (summed over the group with `groups`)."""
    if groups is None:
        best = probabilities.argmax(1)
        return [classes[i] for i in best], probabilities[np.arange(len(best)), best]
    names = sorted({g for c in classes if (g := groups.get(c)) is not None})
    if not names:
        raise FashionLensError("--groups maps none of the head's classes")
    members = [[i for i, c in enumerate(classes) if groups.get(c) == g] for g in names]
    mass = np.stack([probabilities[:, idx].sum(1) for idx in members], axis=1)
    top = mass.argmax(1)
    answers = []
    for row, g in enumerate(top):
        inside = members[g]
        answers.append(classes[inside[int(probabilities[row, inside].argmax())]])
    return answers, mass[np.arange(len(top)), top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--image-dir", default="")
    parser.add_argument("--image-extension", default="")
    parser.add_argument("--split-column", default="split")
    parser.add_argument("--splits", required=True, help="comma-separated splits to label")
    parser.add_argument("--model", required=True)
    parser.add_argument("--head", required=True)
    parser.add_argument("--groups", type=Path)
    parser.add_argument("--min-probability", type=float, default=0.5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.resolve() == args.csv.resolve():
        parser.error("--out must not be the input CSV (it is never written to)")
    try:
        groups = None
        if args.groups is not None:
            loaded = yaml.safe_load(args.groups.read_text())
            groups = {str(k): None if v is None else str(v) for k, v in loaded.items()}
        with args.csv.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
        for needed in (args.image_column, args.split_column):
            if needed not in columns:
                parser.error(f"{args.csv}: no column '{needed}'")
        wanted = set(args.splits.split(","))
        chosen = [i for i, r in enumerate(rows) if r[args.split_column] in wanted]
        base = args.csv.parent / args.image_dir
        paths = [base / f"{rows[i][args.image_column]}{args.image_extension}" for i in chosen]
        predictor = Predictor(args.model)
        head = next((h for h in predictor.heads if h.name == args.head), None)
        if head is None:
            parser.error(f"--head {args.head}: {args.model} has the heads "
                         f"{', '.join(h.name for h in predictor.heads)}")
        answer_column, sure_column = f"teacher_{args.head}", "teacher_probability"
        for row in rows:
            row[answer_column] = row[sure_column] = ""
        labelled = unreadable = 0
        preprocess = predictor.info.preprocess
        for start, decoded in zip(range(0, len(paths), BATCH), decoded_batches(
                paths, lambda p: prepare_photo(p, preprocess), BATCH, predictor.threads),
                strict=True):
            if not decoded.groups:
                unreadable += min(BATCH, len(paths) - start)
                continue
            unreadable += min(BATCH, len(paths) - start) - len(decoded.rows)
            scores = decoded.map(lambda batch: predictor.runtime.run(batch, [args.head])
                                 )[args.head]
            answers, sure = group_answers(scores, list(head.classes), groups)
            for r, answer, p in zip(decoded.rows, answers, sure, strict=True):
                if p >= args.min_probability:
                    row = rows[chosen[start + r]]
                    row[answer_column], row[sure_column] = answer, f"{p:.3f}"
                    labelled += 1
    except (FashionLensError, OSError, yaml.YAMLError) as exc:
        sys.exit(f"error: {exc}")
    text = io.StringIO()
    writer = csv.DictWriter(text, columns + [answer_column, sure_column], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(args.out, text.getvalue().encode())
    print(json.dumps({"rows": len(rows), "asked": len(paths), "labelled": labelled,
                      "unreadable": unreadable, "model": args.model, "head": args.head,
                      "min_probability": args.min_probability, "out": str(args.out)}))


if __name__ == "__main__":
    main()

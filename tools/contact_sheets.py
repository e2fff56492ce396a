"""Contact sheets for labelling photos by eye: a seeded draw of a CSV's rows, 20 photos a
sheet (5 x 4 tiles of about 214 px, each with its index drawn on it).

    python tools/contact_sheets.py ../shared/data/clothing/labels.csv --image-dir images \\
        --split train --count 300 --seed 34 --exclude-label "Not sure,Skip,Other" \\
        --out runs/sheets

Writes OUT/pick.csv (index, image, label: what each tile number is) and OUT/sheetNNN.png.
`--skip` names a pick.csv of an earlier draw whose photos are left out, so that a second
batch of labels adds new photos (configs/teacher/README.md says how the hand colours were
drawn). The rows are sorted by image id before the draw, so the draw does not depend on
the CSV's order. The CSV and the photos are only read.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

TILE = 220
COLUMNS, ROWS = 5, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--image-dir", default="images")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--image-extension", default=".jpg")
    parser.add_argument("--split", default="train")
    parser.add_argument("--exclude-label", default="", help="comma-separated labels left out")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", type=Path, help="an earlier pick.csv whose photos are left out")
    parser.add_argument("--start", type=int, default=0, help="index of the first tile")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    excluded = {x.strip() for x in args.exclude_label.split(",") if x.strip()}
    skipped = set()
    if args.skip is not None:
        with args.skip.open(newline="") as f:
            skipped = {row["image"] for row in csv.DictReader(f)}
    try:
        with args.csv.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {args.image_column, args.label_column, "split"} - set(reader.fieldnames or [])
            if missing:
                raise SystemExit(f"{args.csv}: no column {', '.join(sorted(missing))}")
            rows = [r for r in reader if r["split"] == args.split
                    and r[args.label_column] not in excluded
                    and r[args.image_column] not in skipped]
    except OSError as exc:
        raise SystemExit(f"{args.csv}: cannot read it ({exc.strerror})") from None
    rows.sort(key=lambda r: r[args.image_column])
    if args.count > len(rows):
        raise SystemExit(f"{args.csv}: {len(rows)} rows to draw from, fewer than --count "
                         f"{args.count}")
    pick = random.Random(args.seed).sample(rows, args.count)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "pick.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "image", "label"])
        for i, row in enumerate(pick, args.start):
            writer.writerow([i, row[args.image_column], row[args.label_column]])
    images = args.csv.parent / args.image_dir
    font = ImageFont.load_default(size=28)
    per_sheet = COLUMNS * ROWS
    for first in range(0, len(pick), per_sheet):
        sheet = Image.new("RGB", (COLUMNS * TILE, ROWS * TILE), "white")
        draw = ImageDraw.Draw(sheet)
        for k, row in enumerate(pick[first:first + per_sheet]):
            path = images / f"{row[args.image_column]}{args.image_extension}"
            try:
                with Image.open(path) as photo:
                    tile = ImageOps.exif_transpose(photo).convert("RGB")
            except (OSError, ValueError) as exc:
                raise SystemExit(f"{path}: cannot read this photo ({exc})") from None
            tile.thumbnail((TILE - 6, TILE - 6))
            x, y = (k % COLUMNS) * TILE, (k // COLUMNS) * TILE
            sheet.paste(tile, (x + 3, y + 3))
            draw.rectangle((x, y, x + 44, y + 32), fill="black")
            draw.text((x + 3, y + 1), str(args.start + first + k), fill="yellow", font=font)
        sheet.save(args.out / f"sheet{args.start + first:03d}.png")


if __name__ == "__main__":
    main()

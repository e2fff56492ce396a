"""A datasheet for a labelled photo set, after "Datasheets for Datasets" (Gebru et al.).

What can be measured is measured: photos per class, split and group, the imbalance,
image sizes and formats, unreadable and missing files, exact and near-duplicate groups,
and the duplicates and groups that straddle train and validation (leakage). What only a
person knows (why the set was made, how it was collected, consent, who maintains it) is
left as marked placeholders; a person's text there is read back from the previous
Markdown and kept when the datasheet is regenerated. One section model renders to
Markdown (plots as PNG files beside it) and to a self-contained HTML page (plots as
data URIs).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import TRAIN, VALIDATION, CurationSet
from .duplicates import DuplicateGroup, leaks
from .scan import Scan

# A person's text sits between these markers; everything else is regenerated.
_BEGIN = "<!-- person:{key} begin (your text between these markers is kept on regeneration) -->"
_END = "<!-- person:{key} end -->"
_PERSON = re.compile(r"<!-- person:([\w-]+) begin[^>]*-->\n?(.*?)\n?<!-- person:\1 end -->",
                     re.S)
LISTED = 20  # rows of a long table shown (groups, duplicate groups)

# (heading, [(key, question placeholder)]) in the order of the paper's sections.
SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Motivation", [("motivation", "For what purpose was the dataset created? Who created "
                     "it, on behalf of whom, and who funded it?")]),
    ("Composition", [("composition", "What does each photo show, and what do the labels "
                      "mean? Is anything missing, or does the set hold sensitive content "
                      "(faces, people's homes)?")]),
    ("Collection process", [("collection", "How were the photos collected, by whom, over "
                             "what time? Did the people photographed or photographing "
                             "consent, and to what use?")]),
    ("Preprocessing, cleaning and labelling", [("labelling", "Who labelled the photos and "
                                                "how? What was cleaned or removed, and "
                                                "is the raw data kept?")]),
    ("Uses", [("uses", "What has the dataset been used for? What should it not be used "
               "for?")]),
    ("Distribution", [("distribution", "Who may use it, under which licence? How is it "
                       "shared?")]),
    ("Maintenance", [("maintenance", "Who maintains the dataset, how are errors reported, "
                      "and will it be updated?")]),
]


@dataclass
class Plot:
    name: str
    alt: str
    png: bytes


@dataclass
class Section:
    heading: str
    blocks: list[tuple] = field(default_factory=list)  # ("p", text) | ("table", head, rows)
    # | ("plot", Plot) | ("person", key, text)


def read_person_text(path: Path) -> dict[str, str]:
    """The person-written blocks of an earlier datasheet (key -> text); {} without one."""
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: the previous datasheet cannot be read ({exc}); move it "
                        "aside to write a new one") from exc
    return {m.group(1): m.group(2).strip("\n") for m in _PERSON.finditer(text)}


def _placeholder(question: str) -> str:
    return f"_To be written by a person: {question}_"


def is_placeholder(text: str) -> bool:
    return text.startswith("_To be written by a person:")


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _plots(data: CurationSet, scan: Scan) -> list[Plot]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    splits = sorted({str(p.split) for p in data.photos})
    counts = {s: Counter(label for p in data.photos if str(p.split) == s for label in p.labels)
              for s in splits}
    classes = data.classes
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(classes) + 1)))
    left = np.zeros(len(classes))
    for split in splits:
        values = np.array([counts[split][c] for c in classes], dtype=float)
        ax.barh(classes, values, left=left, label=split)
        left += values
    ax.invert_yaxis()
    ax.set_xlabel("photos")
    ax.set_title("Photos per class and split")
    ax.legend(fontsize=8)
    plots.append(Plot("classes", "Bar chart: photos per class, stacked by split", _png(fig)))
    ok = scan.readable
    if ok.any():
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(scan.width[ok], scan.height[ok], s=6, alpha=0.4)
        ax.set_xlabel("width (px)")
        ax.set_ylabel("height (px)")
        ax.set_title("Image sizes")
        plots.append(Plot("sizes", "Scatter plot: width and height of each photo", _png(fig)))
    groups = Counter(p.group for p in data.photos if p.group)
    if groups:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(list(groups.values()), bins=min(40, max(5, len(set(groups.values())))))
        ax.set_xlabel("photos per group")
        ax.set_ylabel("groups")
        ax.set_title(f"Photos per '{data.spec.group_column}'")
        plots.append(Plot("groups", "Histogram: photos per group", _png(fig)))
    return plots


def _stats(values: np.ndarray) -> str:
    if not len(values):
        return "-"
    return f"{int(values.min())} / {int(np.median(values))} / {int(values.max())}"


def measure(data: CurationSet, scan: Scan, groups: list[DuplicateGroup]) -> dict:
    """The datasheet's figures as one JSON-ready dict (also the CLI's --json output)."""
    photos = data.photos
    splits = [p.split for p in photos]
    per_class = Counter(label for p in photos for label in p.labels)
    per_split = Counter(str(p.split) for p in photos)
    ok = scan.readable
    exact = [g for g in groups if g.exact and all(p.exact for p in g.pairs)]
    leaking = [g for g in groups if leaks(g, splits, {TRAIN}, {VALIDATION})]
    by_group: dict[str, set[str]] = {}
    for p in photos:
        if p.group:
            by_group.setdefault(p.group, set()).add(str(p.split))
    straddling = sorted(g for g, s in by_group.items() if {TRAIN, VALIDATION} <= s)
    counts = [per_class[c] for c in data.classes]
    return {
        "photos": len(photos), "classes": len(data.classes), "multilabel": data.multilabel,
        "per_class": dict(sorted(per_class.items())), "per_split": dict(sorted(per_split.items())),
        "imbalance_ratio": round(max(counts) / max(1, min(counts)), 2) if counts else None,
        "groups": len(by_group), "groups_in_both_splits": straddling,
        "unreadable": [photos[i].id for i in np.flatnonzero(~ok)],
        "missing_files": [str(p) for p in data.missing],
        "formats": dict(Counter(f for f, good in zip(scan.formats, ok, strict=True) if good)),
        "width_min_median_max": _stats(scan.width[ok]),
        "height_min_median_max": _stats(scan.height[ok]),
        "duplicate_groups": len(groups),
        "photos_in_duplicate_groups": sum(len(g.members) for g in groups),
        "exact_duplicate_groups": len(exact),
        "leaking_groups": len(leaking),
        "leaking_photos": sum(1 for g in leaking for i in g.members
                              if photos[i].split == VALIDATION),
        "split_note": data.split_note, "embeddings": scan.model,
    }


def _group_rows(group: DuplicateGroup, data: CurationSet) -> list[str]:
    photos = data.photos
    members = ", ".join(f"{photos[i].id} ({photos[i].split}, "
                        f"{'/'.join(photos[i].labels)})" for i in group.members[:6])
    if len(group.members) > 6:
        members += f", ... ({len(group.members)} photos)"
    evidence = max(group.pairs, key=lambda p: p.confidence).evidence()
    return [members, evidence]


def build_sections(data: CurationSet, scan: Scan, groups: list[DuplicateGroup],
                   facts: dict, person: dict[str, str]) -> list[Section]:
    """The datasheet, section by section; `person` is the kept person-written text."""
    photos = data.photos
    plots = {p.name: p for p in _plots(data, scan)}
    measured: dict[str, list[tuple]] = {heading: [] for heading, _ in SECTIONS}
    comp = measured["Composition"]
    kind = ("tags (several per photo) from column" if data.multilabel
            else "one class per photo, from")
    comp.append(("p", f"**{facts['photos']} photos**, {facts['classes']} "
                      f"{'tags' if data.multilabel else 'classes'}: {kind} "
                      f"'{data.label_column}'. Splits: {data.split_note}. Imbalance ratio "
                      f"(largest class / smallest): **{facts['imbalance_ratio']}**."))
    splits = sorted(facts["per_split"])
    by = {s: Counter(label for p in photos if str(p.split) == s for label in p.labels)
          for s in splits}
    rows = [[c, *[str(by[s][c]) for s in splits], str(facts["per_class"].get(c, 0))]
            for c in data.classes]
    rows.append(["**all**", *[str(facts["per_split"][s]) for s in splits], str(len(photos))])
    comp.append(("table", ["class", *splits, "total"], rows))
    comp.append(("plot", plots["classes"]))
    if data.spec.group_column:
        sizes = Counter(p.group for p in photos if p.group)
        head = [[g, str(n)] for g, n in sizes.most_common(10)]
        comp.append(("p", f"Groups ('{data.spec.group_column}'): {facts['groups']}; photos "
                          f"per group min / median / max "
                          f"{_stats(np.array(list(sizes.values())))}. Largest groups:"))
        comp.append(("table", [data.spec.group_column, "photos"], head))
        if "groups" in plots:
            comp.append(("plot", plots["groups"]))
        both = facts["groups_in_both_splits"]
        comp.append(("p", f"**Groups in both train and validation: {len(both)}**"
                          + (f" ({', '.join(both[:LISTED])}{', ...' if len(both) > LISTED else ''})"
                             if both else "")
                          + "." + (" A group's photos on both sides flatter validation scores."
                                   if both else "")))
    fmt = ", ".join(f"{k} {v}" for k, v in sorted(facts["formats"].items())) or "none"
    comp.append(("p", f"Image formats: {fmt}. Width min / median / max: "
                      f"{facts['width_min_median_max']} px; height: "
                      f"{facts['height_min_median_max']} px."))
    if "sizes" in plots:
        comp.append(("plot", plots["sizes"]))
    unreadable = [(photos[i].id, scan.errors[i] or "") for i in np.flatnonzero(~scan.readable)]
    comp.append(("p", f"Unreadable files: **{len(unreadable)}**. Rows whose file is "
                      f"missing: **{len(facts['missing_files'])}**."))
    if unreadable:
        comp.append(("table", ["photo", "why"], [list(u) for u in unreadable[:LISTED]]))
    if facts["missing_files"]:
        comp.append(("table", ["missing file"], [[m] for m in facts["missing_files"][:LISTED]]))
    how = ("identical bytes, perceptual hashes (imagehash pHash) and embedding similarity"
           f" ({scan.model})" if scan.model else "identical bytes and perceptual hashes")
    comp.append(("p", f"Duplicate groups (found by {how}): **{facts['duplicate_groups']}** "
                      f"holding {facts['photos_in_duplicate_groups']} photos; "
                      f"{facts['exact_duplicate_groups']} of them byte-identical."))
    splits_of = [p.split for p in photos]
    leaking = [g for g in groups if leaks(g, splits_of, {TRAIN}, {VALIDATION})]
    comp.append(("p", f"**Leakage: {len(leaking)} duplicate groups straddle train and "
                      f"validation** ({facts['leaking_photos']} validation photos)."
                      + (" The validation score partly measures memory of these." if leaking
                         else "")))
    if leaking:
        comp.append(("table", ["photos (split, label)", "evidence"],
                     [_group_rows(g, data) for g in leaking[:LISTED]]))
    others = [g for g in groups if g not in leaking]
    if others:
        comp.append(("p", f"Other duplicate groups (first {min(LISTED, len(others))}):"))
        comp.append(("table", ["photos (split, label)", "evidence"],
                     [_group_rows(g, data) for g in others[:LISTED]]))
    measured["Preprocessing, cleaning and labelling"].append(
        ("p", "Measured, not judged: `fashionlens review DATA` lists likely mislabels, "
              "duplicates, off-topic photos, outliers and unreadable files for a person to "
              "decide on."))
    measured["Distribution"].append(("p", f"Source: `{data.source}`."))
    sections = []
    for heading, questions in SECTIONS:
        section = Section(heading)
        for key, question in questions:
            section.blocks.append(("person", key, person.get(key) or _placeholder(question)))
        section.blocks.extend(measured[heading])
        sections.append(section)
    return sections


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: list[Section], plot_dir: str) -> str:
    """Markdown; plots are referenced as `plot_dir/NAME.png` (written by `write`)."""
    lines = [f"# Datasheet: {title}", "",
             f"_Generated by `fashionlens datasheet` on "
             f"{dt.date.today().isoformat()}. Measured figures are regenerated; text between "
             "`person:` markers is yours and is kept._", ""]
    for section in sections:
        lines += [f"## {section.heading}", ""]
        for block in section.blocks:
            if block[0] == "p":
                lines += [block[1], ""]
            elif block[0] == "person":
                lines += [_BEGIN.format(key=block[1]), block[2], _END.format(key=block[1]), ""]
            elif block[0] == "table":
                head, rows = block[1], block[2]
                lines.append("| " + " | ".join(_md_cell(h) for h in head) + " |")
                lines.append("|" + "|".join("---" for _ in head) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
                lines.append("")
            elif block[0] == "plot":
                lines += [f"![{block[1].alt}]({plot_dir}/{block[1].name}.png)", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    """Escaped text with the Markdown this module writes (**bold**, _italic_, `code`)."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"<em>\1</em>", out)


def render_html(title: str, sections: list[Section]) -> str:
    """One self-contained page: no external file, plots as data URIs."""
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>Datasheet: {html.escape(title)}</title>",
             "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
             "padding:0 1rem;color:#222}table{border-collapse:collapse;margin:.5rem 0 1rem}"
             "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}"
             "img{max-width:100%}.person{background:#fff8e1;border-left:4px solid #f0b400;"
             "padding:.3rem .8rem}</style></head><body>",
             f"<h1>Datasheet: {html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        for block in section.blocks:
            if block[0] == "p":
                parts.append(f"<p>{_inline(block[1])}</p>")
            elif block[0] == "person":
                paras = [t for t in re.split(r"\n\s*\n", block[2]) if t.strip()]
                parts.append('<div class="person">' + "".join(
                    f"<p>{_inline(t)}</p>" for t in paras) + "</div>")
            elif block[0] == "table":
                head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
                body = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r)
                               + "</tr>" for r in block[2])
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
                             "</table>")
            elif block[0] == "plot":
                data = base64.b64encode(block[1].png).decode()
                parts.append(f'<p><img alt="{html.escape(block[1].alt)}" '
                             f'src="data:image/png;base64,{data}"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def datasheet_target(markdown: Path) -> Path:
    """The Markdown path, checked before anything is measured: a .md file in a folder
    that exists or can be made; DataError naming it otherwise."""
    markdown = Path(markdown).expanduser()
    if markdown.suffix.lower() != ".md":
        raise DataError(f"{markdown}: the datasheet is written as Markdown; give a .md path")
    return check_output(markdown, "the datasheet")


def check_output(path: Path, what: str) -> Path:
    """`path`, once its folder exists (made if need be) and takes a new file: a command
    says so before its work, not with a traceback after it. DataError naming it."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give the file name for {what}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise DataError(f"{path}: cannot write {what} there: folder {path.parent} cannot "
                        f"be made or written to ({exc.strerror or exc})") from exc
    return path


def write_datasheet(data: CurationSet, scan: Scan, groups: list[DuplicateGroup],
                    markdown: Path, title: str | None = None) -> dict:
    """Write `markdown`, its `.html` twin and its plots; returns the measured figures and
    the paths written. Person-written text of an earlier `markdown` is kept."""
    markdown = datasheet_target(markdown)
    try:
        return _write(data, scan, groups, markdown, title)
    except OSError as exc:
        where = exc.filename or markdown
        raise DataError(f"{where}: cannot write the datasheet there "
                        f"({exc.strerror or exc})") from exc


def _write(data: CurationSet, scan: Scan, groups: list[DuplicateGroup], markdown: Path,
           title: str | None) -> dict:
    from ..atomic import write_bytes_atomic

    person = read_person_text(markdown)
    facts = measure(data, scan, groups)
    title = title or Path(data.source).name
    sections = build_sections(data, scan, groups, facts, person)
    plot_dir = markdown.with_name(markdown.stem + "-plots")
    written = []
    for section in sections:
        for block in section.blocks:
            if block[0] == "plot":
                path = plot_dir / f"{block[1].name}.png"
                write_bytes_atomic(path, block[1].png)
                written.append(path)
    write_bytes_atomic(markdown, render_markdown(title, sections, plot_dir.name).encode())
    page = markdown.with_suffix(".html")
    write_bytes_atomic(page, render_html(title, sections).encode())
    kept = sorted(k for k, v in person.items() if not is_placeholder(v))
    return {"facts": facts, "markdown": markdown, "html": page, "plots": written,
            "kept": kept}

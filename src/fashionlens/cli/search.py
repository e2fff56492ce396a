"""`fashionlens search [IMAGE] [--item ID] --catalog DIR`: similar items from a catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from ..errors import FashionLensError
from .common import CatalogModelName, RuntimeName, out

if TYPE_CHECKING:
    from ..search.catalog import Item, Match

CatalogOption = Annotated[
    Path,
    typer.Option("--catalog", "-c", envvar="FASHIONLENS_CATALOG",
                 help="Catalog folder (or set FASHIONLENS_CATALOG)."),
]


def _price(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


# Columns that give way, first to last, when a table is wider than the terminal (80 columns
# when output is piped); id, category, status and the similarity always stay.
DROPPABLE = ("photo", "size", "colour", "price")


def item_table(title: str | None, items: list[Item], matches: list[Match] | None = None,
               width: int | None = None) -> Table:
    """Items (or search matches, with their cosine similarity: 1 for the same photo, higher
    is closer) as a Rich table.

    Metadata columns that no listed item fills are left out, and so are the least useful
    ones (photo first) when the table would be wider than `width` (default: the terminal's),
    so that headers stay whole and the category column stays.
    """
    cells = {
        "id": [item.id for item in items],
        "category": [item.category or "" for item in items],
        "colour": [item.colour or "" for item in items],
        "size": [item.size or "" for item in items],
        "price": [_price(item.price) for item in items],
        "status": [item.status if item.status == "available" else f"[yellow]{item.status}[/]"
                   for item in items],
        # The stored photo's file name; --json gives the full path.
        "photo": [Path(item.image).name if item.image else "" for item in items],
    }
    if matches is not None:
        cells = {"#": [str(rank) for rank in range(1, len(items) + 1)],
                 "similarity": [f"{m.similarity:.4f}" for m in matches], **cells}
    shown = [name for name, values in cells.items()
             if name in ("#", "similarity", "id", "category", "status") or any(values)]

    def natural(name: str) -> int:
        longest = max((Text.from_markup(v).cell_len for v in cells[name]), default=0)
        return max(len(name), min(longest, 28 if name == "photo" else longest))

    width = width if width is not None else out.width
    for name in DROPPABLE:
        if sum(natural(n) + 3 for n in shown) + 1 <= width:
            break
        if name in shown:
            shown.remove(name)
    table = Table(title=title, title_justify="left")
    for name in shown:
        if name == "photo":
            table.add_column(name, overflow="ellipsis", no_wrap=True, max_width=28)
        elif name == "id":  # long ids wrap rather than squeeze the other columns out
            table.add_column(name, overflow="fold", min_width=len(name))
        else:
            table.add_column(name, justify="right" if name in ("#", "similarity", "price")
                             else "left", no_wrap=True, min_width=len(name))
    for row in range(len(items)):
        if matches is not None and matches[row].weak and (row == 0 or not matches[row - 1].weak):
            table.add_section()  # where good matches end (see `weak_note`)
        table.add_row(*(cells[name][row] for name in shown),
                      style="dim" if matches is not None and matches[row].weak else None)
    return table


def weak_note(matches: list[Match], floor: float | None,
              source: str = "this catalog's relevance floor") -> str | None:
    """The line under a table of matches that holds weak ones (below the catalog's floor,
    or for a search by words the model's text alignment's)."""
    weak = sum(m.weak for m in matches)
    if not weak or floor is None:
        return None
    return (f"{weak} weak match{'es' if weak > 1 else ''} below the line (similarity < "
            f"{floor:.4f}, {source}; --min-similarity cuts them)")


def search(
    catalog: CatalogOption,
    image: Annotated[
        Path | None,
        typer.Argument(help="A photo to find similar items for."),
    ] = None,
    item: Annotated[
        str | None,
        typer.Option("--item", help="Find items similar to this catalog item instead."),
    ] = None,
    text: Annotated[
        str | None,
        typer.Option("--text", "-t",
                     help="Search by words instead, e.g. 'red striped summer shirt': words "
                          "naming the catalog's values become conditions, the rest ranks "
                          "by meaning (needs the `text` extra)."),
    ] = None,
    like: Annotated[
        list[str] | None,
        typer.Option("--like", metavar="ID",
                     help="More like these: an item the shopper liked (repeatable)."),
    ] = None,
    unlike: Annotated[
        list[str] | None,
        typer.Option("--unlike", metavar="ID",
                     help="With --like: less like this item (repeatable)."),
    ] = None,
    min_similarity: Annotated[
        float | None,
        typer.Option("--min-similarity", min=-1.0, max=1.0,
                     help="Leave out matches less similar than this (see the weak matches "
                          "a search marks)."),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="How many items.")] = 10,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", "-f",
                     help="Only items matching, e.g. 'category=Dress', 'price<30', "
                          "'colour in (red,blue)', 'status=available' (repeatable)."),
    ] = None,
    steer: Annotated[
        list[str] | None,
        typer.Option("--steer", "-s",
                     help="Move the query along a learned direction: 'striped=0.5', "
                          "'solid=-0.3' (repeatable; see `catalog directions`)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    model: CatalogModelName = None,
    runtime: RuntimeName = "auto",
) -> None:
    """Find the catalog items that look most like a photo, or like another item."""
    from ..search.catalog import Catalog
    from ..search.steering import parse_steering

    if unlike and not like:
        raise FashionLensError("--unlike needs at least one --like ID")
    if sum(x is not None for x in (image, item, like or None, text)) != 1:
        raise FashionLensError("give a photo to search with, --item ID, --like ID or "
                               "--text WORDS (one of them)")
    words = None
    with Catalog(catalog, model=model, runtime=runtime) as cat:
        weights = parse_steering(steer)
        if text is not None:
            from ..search.text_query import text_search

            matches, words = text_search(cat, text, k=k, filters=filters, steer=weights,
                                         min_similarity=min_similarity)
        else:
            matches = cat.search(image, item=item, k=k, filters=filters, steer=weights,
                                 like=like, unlike=unlike, min_similarity=min_similarity)
        floor = words.weak_below if words is not None else cat.relevance_floor()
    if as_json:
        query = (words.to_dict() if words is not None else
                 {"image": str(image)} if image is not None else {"item": item}
                 if item is not None else {"like": list(like or []),
                                           "unlike": list(unlike or [])})
        results = [{"rank": rank, **m.to_dict()} for rank, m in enumerate(matches, start=1)]
        print(json.dumps({"query": query, "k": k, "filters": list(filters or []),
                          "steer": weights, "min_similarity": min_similarity,
                          "weak_below": floor, "results": results}))
        return
    what = (f"items matching '{words.plan.text}'" if words is not None else
            f"items like {image}" if image is not None else f"items like item {item}"
            if item is not None else "more like " + ", ".join(like or [])
            + (" and less like " + ", ".join(unlike) if unlike else ""))
    if words is not None and words.conditions:
        what += "; " + ", ".join(f"{w['word']}: {w['filter']}" for w in words.plan.words
                                 if w["used_as"] == "condition")
    if filters:
        what += f" ({', '.join(filters)})"
    if weights:
        what += " steered " + ", ".join(f"{w:+g} {n}" for n, w in weights.items())
    # A line of its own: as the table's title it would wrap at the table's width.
    out.print(what, highlight=False)
    out.print(item_table(None, [m.item for m in matches], matches))
    note = weak_note(matches, floor) if words is None else \
        weak_note(matches, floor, "the text alignment's floor for words")
    if note:
        out.print(note, highlight=False)
    if not matches:
        out.print("no matching items")

"""Progress bars on stderr, so stdout stays clean for tables and JSON."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
console = Console(stderr=True)


def enabled() -> bool:
    return (os.environ.get("FASHIONLENS_PROGRESS", "1") != "0"
            and not os.environ.get("PYTEST_CURRENT_TEST"))


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if not enabled() or not console.is_terminal:  # no live bar to draw: no blank lines
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)


class StepBar:
    """A bar whose trailing text (loss, accuracy) the caller updates."""

    def __init__(self, description: str, total: int) -> None:
        self._progress = None
        if enabled() and console.is_terminal:  # piped: a bar would print its last frame
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                      console=console)
            self._progress.start()
            self._task = self._progress.add_task(description, total=total, info="")

    def advance(self, info: str = "", steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=steps, info=info)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Human tables (rich), progress displays and stable JSON for the CLI. rich is imported only when
a table or a progress display is shown."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


_MIN_FOLDED = 8  # the narrowest a folded column gets before the table outgrows the terminal


def _is_id(column: str) -> bool:
    return column == "id" or column.endswith("_id")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """A table that fits the terminal by folding long values, except ids (``id``, ``*_id``): an
    operator copies those into the next command, so they keep one line and their full width."""
    from rich.console import Console
    from rich.table import Table

    cells = [["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    table = Table(title=title, title_justify="left")
    needed = 1  # the left border; each column adds its padding and a border
    for index, column in enumerate(columns):
        heading = column.replace("_", " ")
        if _is_id(column):
            widest = max([len(heading), *(len(line[index]) for line in cells)])
            table.add_column(heading, no_wrap=True, overflow="ignore", min_width=widest)
            needed += widest + 3
        else:
            table.add_column(heading, overflow="fold")
            needed += _MIN_FOLDED + 3
    for line in cells:
        table.add_row(*line)
    console = Console()
    # A terminal too narrow for the ids gets a wider table (its lines wrap on screen, but each id
    # stays one string) rather than ids cut or other columns squeezed to nothing.
    console.width = max(console.width, needed)
    console.print(table)


@contextmanager
def stderr_progress(*columns: ProgressColumn | str, enabled: bool = True) -> Iterator[Progress]:
    """A rich progress display for long work: on stderr, gone when done, and shown only on a
    terminal (a pipe or a log file gets the command's output and nothing else)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    shown = enabled and console.is_terminal
    with Progress(*columns, console=console, transient=True, disable=not shown) as bar:
        yield bar

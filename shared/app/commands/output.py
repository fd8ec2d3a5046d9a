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


def _needed_width(column: str, values: Sequence[str]) -> int:
    """Columns' share of the table's width: ids their widest value, others the folded minimum
    (each column adds its padding and a border)."""
    if _is_id(column):
        return max([len(column), *(len(value) for value in values)]) + 3
    return _MIN_FOLDED + 3


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    optional: Sequence[str] = (),
) -> None:
    """A table that fits the terminal by folding long values, except ids (``id``, ``*_id``): an
    operator copies those into the next command, so they keep one line and their full width.

    ``optional`` columns, in the order they give way, are left out while the table would not fit
    otherwise; a note on stderr names them (``--json`` has every field).
    """
    from rich.console import Console
    from rich.table import Table

    cells = {c: ["" if row.get(c) is None else str(row.get(c)) for row in rows] for c in columns}
    console = Console()
    shown = list(columns)
    hidden: list[str] = []
    for column in optional:
        if 1 + sum(_needed_width(c, cells[c]) for c in shown) <= console.width:
            break
        if column in shown:
            shown.remove(column)
            hidden.append(column)
    table = Table(title=title, title_justify="left")
    for column in shown:
        heading = column.replace("_", " ")
        if _is_id(column):
            table.add_column(
                heading, no_wrap=True, overflow="ignore", min_width=_needed_width(column, cells[column]) - 3
            )
        else:
            table.add_column(heading, overflow="fold")
    for index in range(len(rows)):
        table.add_row(*(cells[c][index] for c in shown))
    # A terminal too narrow even for the ids gets a wider table (its lines wrap on screen, but
    # each id stays one string) rather than ids cut or other columns squeezed to nothing.
    console.width = max(console.width, 1 + sum(_needed_width(c, cells[c]) for c in shown))
    console.print(table)
    if hidden:
        names = ", ".join(c.replace("_", " ") for c in hidden)
        print(f"({names} left out to fit the terminal; a wider one or --json shows them)", file=sys.stderr)


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

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


def print_table(title: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console().print(table)


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

"""How a configuration problem is named: a field path, its line, and ``file:line: path: message``."""

from __future__ import annotations

from dataclasses import dataclass

PathPart = str | int
FieldPath = tuple[PathPart, ...]


@dataclass(frozen=True)
class Position:
    """Where a value sits in the file: the line of its key (or list item) and its scalar text."""

    line: int
    text: str | None = None


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration file; ``str()`` is the ``file:line: path: message`` form."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; the message lists every problem, one per line."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigProblem]]]:
        # Rebuild from the problems, not the message, so the error survives pickling (worker pools).
        return (type(self), (self.problems,))


def format_path(path: FieldPath) -> str:
    """``("targets", 0, "branches")`` → ``targets[0].branches`` (odd keys quoted: ``build_args['A B']``)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out

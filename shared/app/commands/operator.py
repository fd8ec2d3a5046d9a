"""What ``slipway rerun`` and ``slipway cancel`` share: a command on one request, its options
(``--reason``, ``--actor``, ``--dry-run``, ``--json``), who the operator is, and the answer."""

from __future__ import annotations

import argparse
import getpass
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from shared.app.commands.output import print_json, print_table


def default_actor() -> str:
    """The OS user and host, as ``slipway replay`` records them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def add_operator_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    id_help: str,
    default_reason: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """``slipway <name> ID`` with the operator options; ``default_reason`` is what the ledger
    records when ``--reason`` is not given."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.add_argument("id", help=id_help)
    add_operator_options(parser, default_reason=default_reason)
    parser.set_defaults(handler=handler)
    return parser


def add_operator_options(parser: argparse.ArgumentParser, *, default_reason: str) -> None:
    parser.add_argument("--reason", default=default_reason, help="why, recorded in the ledger")
    parser.add_argument("--actor", help="who, recorded in the ledger (default: OS user@host)")
    parser.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    parser.add_argument("--json", action="store_true", help="stable JSON for scripts")


def actor_of(args: argparse.Namespace) -> str:
    """``--actor`` (printable, at most 100 characters) or the default."""
    from shared.app.cli import CliError

    if args.actor is None:
        return default_actor()
    actor = "".join(c for c in args.actor if c.isprintable()).strip()[:100]
    if not actor:
        raise CliError("--actor must not be empty")
    return actor


@contextmanager
def refused_as_cli_error(refusal: type[Exception]) -> Iterator[None]:
    """The domain's refusal (a pending request rerun, a finished one cancelled) as one CLI line."""
    from shared.app.cli import CliError

    try:
        yield
    except refusal as exc:
        raise CliError(str(exc)) from None


def print_answer(
    args: argparse.Namespace,
    answer: Mapping[str, Any],
    title: str,
    columns: Sequence[str],
    row: Mapping[str, Any],
) -> int:
    """``answer`` as JSON with ``--json``, else ``row`` as a one-row table; the exit code."""
    if args.json:
        print_json(answer)
    else:
        print_table(title, columns, [row])
    return 0

"""What ``slipway rerun`` and ``slipway cancel`` share: who the operator is, and the options."""

from __future__ import annotations

import argparse
import getpass
import socket


def default_actor() -> str:
    """The OS user and host, as ``slipway replay`` records them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


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

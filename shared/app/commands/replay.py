"""``slipway replay``: move dead-lettered build requests back to the build queue.

Each replayed request gets a new message id ``<request id>-r<N>`` and its ledger record says
who replayed it, when and why. Dead letters that need no replay (their request already ran, or
another dead letter of it is replayed) are settled: completed, nothing sent. ``--dry-run`` shows
what would be replayed and settled, and changes nothing.
"""

from __future__ import annotations

import argparse
import getpass
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from shared.app.commands.output import print_json, print_table, stderr_progress


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("replay", help="send dead-lettered build requests back to the queue")
    parser.add_argument("--id", action="append", default=[], help="message or request id (repeatable)")
    parser.add_argument(
        "--reason",
        help="only dead letters whose reason contains this text (any case): the reason Slipway "
        "recorded in the ledger when it refused the request (RunRejected, UnknownTarget, ...), or "
        "the dead letter's own reason when the ledger has none. Service Bus and slipway serve "
        "dead-letter every refusal as MaxDeliveryCountExceeded: the ledger has the real reason",
    )
    parser.add_argument("--target", help="only requests for this target")
    parser.add_argument("--since", help="only messages enqueued within this duration (e.g. 2h, 1d)")
    parser.add_argument(
        "--limit", type=int, default=100, help="replay at most this many requests (default 100)"
    )
    parser.add_argument("--note", default="replayed by an operator", help="why, recorded in the ledger")
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be replayed and settled, change nothing"
    )
    parser.add_argument("--json", action="store_true", help="stable JSON for scripts")
    parser.set_defaults(handler=replay_command)


@contextmanager
def _progress(*, enabled: bool, dry_run: bool) -> Iterator[Callable[[int], None]]:
    """A spinner with the count on stderr, on a terminal only: each replay writes the ledger and
    the queue, so a hundred take a while against Service Bus."""
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    verb = "planned" if dry_run else "done"
    columns = (SpinnerColumn(), TextColumn(f"{{task.completed}} dead letter(s) {verb}"), TimeElapsedColumn())
    with stderr_progress(*columns, enabled=enabled) as bar:
        task = bar.add_task("replay", total=None)
        yield lambda count: bar.update(task, completed=count)


def replay_command(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from shared.app.cli import CliError
    from shared.app.runtime import runtime
    from shared.dispatch.replay import DeadLetterQueue, Replayer, ReplaySelection
    from shared.model.durations import parse_duration
    from shared.platform.queue.port import QueueError

    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    try:
        since = parse_duration(args.since) if args.since else None
    except ValueError as exc:
        raise CliError(f"--since: {exc}") from None
    selection = ReplaySelection(
        ids=tuple(args.id), reason=args.reason, target=args.target, since=since, limit=args.limit
    )
    rt = runtime()
    queue = rt.queue()
    if not isinstance(queue, DeadLetterQueue):
        raise CliError("the configured queue cannot replay dead letters")
    replayer = Replayer(queue, rt.ledger(), clock=lambda: datetime.now(UTC))
    actor = f"{getpass.getuser()}@{socket.gethostname()}"
    try:
        with _progress(enabled=not args.json, dry_run=args.dry_run) as advance:
            report = replayer.replay(
                selection, actor=actor, note=args.note, dry_run=args.dry_run, progress=advance
            )
    except QueueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(report.as_json())
        return 0
    rows: list[dict[str, Any]] = [vars(item) for item in report.items]
    verb = "would replay" if report.dry_run else "replayed"
    print_table(
        f"{verb} {len(rows)} dead letter(s)",
        ["message_id", "new_message_id", "target", "failure_reason", "dead_letter_reason", "ledger"],
        rows,
    )
    if report.settled:
        verb = "would settle" if report.dry_run else "settled"
        print_table(
            f"{verb} {len(report.settled)} dead letter(s): completed, nothing sent",
            ["message_id", "request_id", "target", "dead_letter_reason", "note"],
            [vars(item) for item in report.settled],
        )
    return 0

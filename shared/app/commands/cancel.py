"""``slipway cancel ID``: stop a running request's ACR run, or a pending request before it starts.

Recorded in the ledger (``cancelled``, who and why); the Git host hears ``error``, "cancelled by
<actor>". A finished request is refused; cancelling twice is fine. ``--dry-run`` changes nothing.
"""

from __future__ import annotations

import argparse

from shared.app.commands.operator import actor_of, add_operator_options
from shared.app.commands.output import print_json, print_table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cancel",
        help="cancel a running request's ACR run, or a pending request",
        description="Cancel a request: its ACR run (runs.cancel) when it is running, or the request itself "
        "when it is pending (the dispatcher then settles it without starting a run). A finished request "
        "is refused; a cancelled one is left as it is.",
    )
    parser.add_argument("id", help="the request id (see `slipway runs list` or `slipway queue list`)")
    add_operator_options(parser, default_reason="cancelled by an operator")
    parser.set_defaults(handler=cancel_command)


def cancel_command(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from shared.app.cli import CliError
    from shared.app.runtime import runtime
    from shared.dispatch.cancel import Canceller, CancelRefused
    from shared.platform.queue.port import QueueBrowser

    actor = actor_of(args)
    rt = runtime()
    queue = rt.queue()
    canceller = Canceller(
        rt.ledger(),
        rt.backend(),
        queue=queue if isinstance(queue, QueueBrowser) else None,
        notifier=None if args.dry_run else rt.status_notifier(),
        clock=lambda: datetime.now(UTC),
    )
    try:
        report = canceller.cancel(args.id, actor=actor, reason=args.reason, dry_run=args.dry_run)
    except CancelRefused as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(report.as_json())
        return 0
    print_table(
        f"{report.request_id}: {report.action.replace('_', ' ')}",
        ["request_id", "previous_status", "run_id", "run_status", "commit_status", "note"],
        [report.as_json()],
    )
    return 0

"""``slipway cancel ID``: stop a running request's ACR run, or a pending request before it starts.

Recorded in the ledger (``cancelled``, who and why); the Git host hears ``error``, "cancelled by
<actor>". A finished request is refused; cancelling twice is fine. ``--dry-run`` changes nothing.
"""

from __future__ import annotations

import argparse

from shared.app.commands.operator import actor_of, add_operator_command, print_answer, refused_as_cli_error


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_operator_command(
        subparsers,
        "cancel",
        help="cancel a running request's ACR run, or a pending request",
        description="Cancel a request: its ACR run (runs.cancel) when it is running, or the request itself "
        "when it is pending (the dispatcher then settles it without starting a run). A finished request "
        "is refused; a cancelled one is left as it is.",
        id_help="the request id (see `slipway runs list` or `slipway queue list`)",
        default_reason="cancelled by an operator",
        handler=cancel_command,
    )


def cancel_command(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

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
    with refused_as_cli_error(CancelRefused):
        report = canceller.cancel(args.id, actor=actor, reason=args.reason, dry_run=args.dry_run)
    return print_answer(
        args,
        report.as_json(),
        f"{report.request_id}: {report.action.replace('_', ' ')}",
        ["request_id", "previous_status", "run_id", "run_status", "commit_status", "note"],
        report.as_json(),
    )

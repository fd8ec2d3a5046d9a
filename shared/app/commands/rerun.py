"""``slipway rerun ID``: build a finished request again, as a new request ``<ID>-r<N>``.

Same commit, tags and target, through the build queue; who and why go to the ledger (on the
original's history and in the new request's trigger). ``--dry-run`` shows what would be queued.
"""

from __future__ import annotations

import argparse

from shared.app.commands.operator import actor_of, add_operator_options
from shared.app.commands.output import print_json, print_table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rerun",
        help="queue a finished request again as <id>-r<N> (same commit, tags, target)",
        description="Queue a completed, failed, superseded or cancelled request again, as a new request "
        "<ID>-r<N> for the same commit, tags and target. A pending or running request is refused.",
    )
    parser.add_argument("id", help="the request id (see `slipway runs list`)")
    add_operator_options(parser, default_reason="rerun by an operator")
    parser.set_defaults(handler=rerun_command)


def rerun_command(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from shared.app.cli import CliError
    from shared.app.runtime import runtime
    from shared.dispatch.rerun import Rerunner, RerunRefused

    actor = actor_of(args)
    rt = runtime()
    rerunner = Rerunner(rt.ledger(), rt.queue(), clock=lambda: datetime.now(UTC))
    try:
        plan = rerunner.rerun(args.id, actor=actor, reason=args.reason, dry_run=args.dry_run)
    except RerunRefused as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(plan.as_json())
        return 0
    row = {**plan.as_json(), "tags": ", ".join(plan.tags)}
    verb = "would queue" if plan.dry_run else "queued"
    print_table(
        f"{verb} {plan.new_request_id}",
        ["request_id", "new_request_id", "target", "ref", "commit", "tags", "original_status"],
        [row],
    )
    return 0

"""``slipway rerun ID``: build a finished request again, as a new request ``<ID>-r<N>``.

Same commit, tags and target, through the build queue; who and why go to the ledger (on the
original's history and in the new request's trigger). ``--dry-run`` shows what would be queued.
"""

from __future__ import annotations

import argparse

from shared.app.commands.operator import actor_of, add_operator_command, print_answer, refused_as_cli_error


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_operator_command(
        subparsers,
        "rerun",
        help="queue a finished request again as <id>-r<N> (same commit, tags, target)",
        description="Queue a completed, failed, superseded or cancelled request again, as a new request "
        "<ID>-r<N> for the same commit, tags and target. A pending or running request is refused.",
        id_help="the request id (see `slipway runs list`)",
        default_reason="rerun by an operator",
        handler=rerun_command,
    )


def rerun_command(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from shared.app.runtime import runtime
    from shared.dispatch.rerun import Rerunner, RerunRefused

    actor = actor_of(args)
    rt = runtime()
    rerunner = Rerunner(rt.ledger(), rt.queue(), clock=lambda: datetime.now(UTC))
    with refused_as_cli_error(RerunRefused):
        plan = rerunner.rerun(args.id, actor=actor, reason=args.reason, dry_run=args.dry_run)
    verb = "would queue" if plan.dry_run else "queued"
    return print_answer(
        args,
        plan.as_json(),
        f"{verb} {plan.new_request_id}",
        ["request_id", "new_request_id", "target", "ref", "commit", "tags", "original_status"],
        {**plan.as_json(), "tags": ", ".join(plan.tags)},
    )

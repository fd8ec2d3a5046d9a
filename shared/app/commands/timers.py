"""``slipway schedules list`` and ``slipway polls list``: what the timers remember, from the state store.

The same store the timers use (a local folder, or Blob when ``AzureWebJobsStorage`` is set),
read only: an operator can see when each schedule fires next and what it last queued, and which
base image digest each poll last saw, without opening Storage Explorer.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from shared.app.commands.output import print_json, print_table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schedules = subparsers.add_parser("schedules", help="scheduled rebuilds: next slot, last queued")
    sub = schedules.add_subparsers(dest="schedules_command", metavar="COMMAND", required=True)
    listing = sub.add_parser("list", help="every target with a schedule, and its state")
    listing.add_argument("--json", action="store_true", help="stable JSON for scripts")
    listing.set_defaults(handler=list_schedules)

    polls = subparsers.add_parser("polls", help="base-image digest polling: last digest, failures")
    sub = polls.add_subparsers(dest="polls_command", metavar="COMMAND", required=True)
    listing = sub.add_parser("list", help="every polled base image, and registries backed off")
    listing.add_argument("--json", action="store_true", help="stable JSON for scripts")
    listing.set_defaults(handler=list_polls)


def _times(row: dict[str, Any], *, table: bool) -> dict[str, Any]:
    """Times as ISO 8601 for JSON; to the minute for a table (whose title says UTC)."""
    return {
        key: (value.strftime("%Y-%m-%d %H:%M") if table else value.isoformat())
        if isinstance(value, datetime)
        else value
        for key, value in row.items()
    }


def list_schedules(args: argparse.Namespace) -> int:
    from shared.app.runtime import runtime
    from shared.intake.schedules import schedule_status

    rt = runtime()
    statuses = schedule_status(rt.config(), rt.state(), now=datetime.now(UTC))
    rows: list[dict[str, Any]] = []
    for s in statuses:
        r = s.record
        rows.append(
            {
                "target": s.target,
                "schedule": s.schedule,
                "next_slot": s.next_slot,
                "last_slot": r.last_slot if r else None,
                "request_id": r.request_id if r else None,
                "queued_at": r.queued_at if r else None,
                "pending": r is not None and r.pending is not None,
                "evaluated_at": r.evaluated_at if r else None,
                "since": r.since if r else None,
                "note": s.note,
            }
        )
    if args.json:
        print_json({"schedules": [_times(row, table=False) for row in rows]})
        return 0
    columns = ["target", "schedule", "next_slot", "last_slot", "note"]  # --json has every field
    table = [_times(row, table=True) for row in rows]
    print_table(f"{len(rows)} scheduled target(s), times in UTC", columns, table)
    return 0


def list_polls(args: argparse.Namespace) -> int:
    from shared.app.runtime import runtime
    from shared.intake.digest_poll import poll_status

    rt = runtime()
    images, backoffs = poll_status(rt.config(), rt.state(), now=datetime.now(UTC))
    image_rows = [r.model_dump() for r in images]
    backoff_rows = [b.model_dump() for b in backoffs]
    if args.json:
        print_json(
            {
                "images": [_times(row, table=False) for row in image_rows],
                "backoffs": [_times(row, table=False) for row in backoff_rows],
            }
        )
        return 0
    images_table = [_times(row, table=True) for row in image_rows]
    for row in images_table:
        row["digest"] = (row["digest"] or "")[:19] or None  # sha256: and 12 hex: enough to compare
    columns = ["image", "digest", "checked_at", "changed_at", "error"]
    print_table(f"{len(image_rows)} polled base image(s), times in UTC", columns, images_table)
    if backoff_rows:
        backoffs_table = [_times(row, table=True) for row in backoff_rows]
        print_table(
            "registries backed off (429 Retry-After)", ["registry", "until", "reason"], backoffs_table
        )
    return 0

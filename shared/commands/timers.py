"""``slipway schedules list`` and ``slipway polls list``: what the timers remember, from the state store.

The same store the timers use (a local folder, or Blob when ``AzureWebJobsStorage`` is set),
read only: an operator can see when each schedule fires next and what it last queued, and which
base image digest each poll last saw, without opening Storage Explorer.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from shared.commands.output import print_json, print_table


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


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _short_times(row: dict[str, Any]) -> dict[str, Any]:
    """Tables show minutes (the title says UTC); JSON keeps the full ISO times."""
    short = dict(row)
    for key, value in row.items():
        if isinstance(value, str) and len(value) >= 16 and value[10:11] == "T" and value[:4].isdigit():
            short[key] = datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")
    return short


def list_schedules(args: argparse.Namespace) -> int:
    from shared.runtime import runtime
    from shared.schedules import schedule_status

    rt = runtime()
    statuses = schedule_status(rt.config(), rt.state(), now=datetime.now(UTC))
    rows: list[dict[str, Any]] = []
    for s in statuses:
        r = s.record
        rows.append(
            {
                "target": s.target,
                "schedule": s.schedule,
                "next_slot": _time(s.next_slot),
                "last_slot": _time(r.last_slot) if r else None,
                "request_id": r.request_id if r else None,
                "queued_at": _time(r.queued_at) if r else None,
                "pending": r is not None and r.pending is not None,
                "evaluated_at": _time(r.evaluated_at) if r else None,
                "since": _time(r.since) if r else None,
                "note": s.note,
            }
        )
    if args.json:
        print_json({"schedules": rows})
        return 0
    rows = [_short_times(row) for row in rows]
    columns = ["target", "schedule", "next_slot", "last_slot", "note"]  # --json has every field
    print_table(f"{len(rows)} scheduled target(s), times in UTC", columns, rows)
    return 0


def list_polls(args: argparse.Namespace) -> int:
    from shared.digest_poll import poll_status
    from shared.runtime import runtime

    rt = runtime()
    images, backoffs = poll_status(rt.config(), rt.state(), now=datetime.now(UTC))
    image_rows: list[dict[str, Any]] = [
        {
            "image": r.image,
            "digest": r.digest,
            "previous_digest": r.previous_digest,
            "first_seen_at": _time(r.first_seen_at),
            "changed_at": _time(r.changed_at),
            "checked_at": _time(r.checked_at),
            "error": r.error,
            "error_at": _time(r.error_at),
        }
        for r in images
    ]
    backoff_rows = [{"registry": b.registry, "until": _time(b.until), "reason": b.reason} for b in backoffs]
    if args.json:
        print_json({"images": image_rows, "backoffs": backoff_rows})
        return 0
    image_rows = [_short_times(row) for row in image_rows]
    backoff_rows = [_short_times(row) for row in backoff_rows]
    for row in image_rows:
        row["digest"] = (row["digest"] or "")[:19] or None  # sha256: and 12 hex: enough to compare
    columns = ["image", "digest", "checked_at", "changed_at", "error"]
    print_table(f"{len(image_rows)} polled base image(s), times in UTC", columns, image_rows)
    if backoff_rows:
        print_table("registries backed off (429 Retry-After)", ["registry", "until", "reason"], backoff_rows)
    return 0

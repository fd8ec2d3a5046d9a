"""``slipway runs``: what the dispatcher started, from the ledger (local folder or Blob)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shared.app.commands.output import print_json, print_table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("runs", help="list and show dispatched runs (the ledger)")
    sub = parser.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    listing = sub.add_parser("list", help="every request the dispatcher claimed, newest first")
    listing.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")
    listing.add_argument(
        "--before",
        metavar="CURSOR",
        help="the next page: the cursor the previous page printed (runs older than its last one)",
    )
    listing.add_argument("--json", action="store_true", help="stable JSON for scripts")
    listing.set_defaults(handler=list_runs)
    show = sub.add_parser("show", help="one request: status, run id, task YAML and run request")
    show.add_argument("id", help="request id (or ACR run id)")
    show.add_argument("--json", action="store_true", help="stable JSON for scripts")
    show.set_defaults(handler=show_run)


def _summary(record: Any) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "target": record.target,
        "status": str(record.status),
        "backend": record.backend,
        "run_id": record.run_id,
        "run_status": record.run_status,
        "ref": record.request.get("source", {}).get("ref"),
        "commit": record.request.get("source", {}).get("commit"),
        "correlation_id": record.correlation_id,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "error": record.error,
        "run_started_at": record.run_started_at.isoformat() if record.run_started_at else None,
        "run_finished_at": record.run_finished_at.isoformat() if record.run_finished_at else None,
        "run_error": record.run_error,
        "following": record.following,
        "commit_status": record.commit_status,
    }


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def list_runs(args: argparse.Namespace) -> int:
    """One page, newest first; ``--before`` continues from the cursor the previous page printed.

    The ledger reads its small index and then only this page's records, so a page costs the
    same whatever the history."""
    from shared.app.runtime import runtime
    from shared.platform.ledger import format_cursor, parse_cursor

    try:
        before = parse_cursor(args.before) if args.before else None
    except ValueError as exc:
        print(f"error: --before: {exc}", file=sys.stderr)
        return 2
    records = list(runtime().ledger().list(limit=args.limit, before=before))
    records.sort(key=lambda r: (r.created_at, r.request_id), reverse=True)
    rows = [_summary(r) for r in records]
    cursor = format_cursor(records[-1]) if records and len(records) == args.limit else None
    if args.json:
        print_json({"runs": rows, "next": cursor})
        return 0
    for row in rows:
        row["commit"] = (row["commit"] or "")[:12]
    print_table(
        f"{len(rows)} run(s)",
        ["request_id", "target", "status", "run_id", "ref", "commit", "created_at"],
        rows,
    )
    if cursor is not None:
        print(f"more: slipway runs list --limit {args.limit} --before {cursor}")
    return 0


def show_run(args: argparse.Namespace) -> int:
    from shared.app.runtime import runtime

    ledger = runtime().ledger()
    found = ledger.get(args.id)
    if found is None:
        # An ACR run id: find its request from the summaries (a Blob ledger answers from one
        # listing instead of downloading every record), then read that one record.
        from datetime import UTC, datetime

        every = ledger.list_summaries(since=datetime(1970, 1, 1, tzinfo=UTC))
        match = next((s for s in every if s.run_id == args.id), None)
        found = ledger.get(match.request_id) if match is not None else None
    record = found[0] if found else None
    if record is None:
        print(f"error: no run with request id or run id {args.id!r}", file=sys.stderr)
        return 1
    detail = {
        **_summary(record),
        "attempts": record.attempts,
        "history": record.history,
        "request": record.request,
        "task_yaml": record.task_yaml,
        "run_request": record.run_request,
    }
    if args.json:
        print_json(detail)
        return 0
    from rich.console import Console
    from rich.syntax import Syntax

    console = Console()
    for key in (
        "request_id",
        "target",
        "status",
        "backend",
        "run_id",
        "run_status",
        "ref",
        "commit",
        "correlation_id",
        "created_at",
        "updated_at",
        "run_started_at",
        "run_finished_at",
        "attempts",
        "error",
        "run_error",
        "commit_status",
    ):
        if detail.get(key) is not None:
            console.print(f"[bold]{key.replace('_', ' ')}[/bold]: {detail[key]}")
    for event in record.history:
        console.print(f"  {event.get('at')}  {event.get('event')}  {event.get('detail') or ''}")
    if record.task_yaml:
        console.rule("task YAML")
        console.print(Syntax(record.task_yaml, "yaml"))
    if record.run_request:
        import json

        console.rule("run request (secret values redacted)")
        console.print(Syntax(json.dumps(record.run_request, indent=2, default=str), "json"))
    return 0

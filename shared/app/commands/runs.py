"""``slipway runs``: what the dispatcher started, from the ledger (local folder or Blob), and the
ACR runs behind it (``logs``, ``watch``: ``_runs_logs``, ``_runs_watch``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shared.app.commands.output import print_json, print_table

LEDGER_STATUSES = "dispatching, dispatched, retrying, failed, superseded"
RUN_STATUSES = "Queued, Started, Running, Succeeded, Failed, Canceled, Error, Timeout, DryRun"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from shared.app.commands import _runs_logs, _runs_watch

    parser = subparsers.add_parser("runs", help="list, show, follow and watch dispatched runs (the ledger)")
    sub = parser.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    listing = sub.add_parser(
        "list",
        help="every request the dispatcher claimed, newest first",
        description="One page of the ledger, newest first. Filters apply while paging: a page reads at "
        "most 500 records, and --before continues a filtered listing as it does a plain one.",
    )
    listing.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")
    listing.add_argument(
        "--before",
        metavar="CURSOR",
        help="the next page: the cursor the previous page printed (runs older than its last one)",
    )
    listing.add_argument("--target", help="only this target")
    listing.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help=f"only these statuses (repeat or comma-separate): the ledger's ({LEDGER_STATUSES}) or "
        f"ACR's ({RUN_STATUSES}), any case",
    )
    listing.add_argument("--ref", help="only this Git ref (refs/heads/main, or main for a branch or tag)")
    listing.add_argument(
        "--since", metavar="WHEN", help="only requests created since: a duration back (2h, 3d) or an ISO time"
    )
    listing.add_argument("--json", action="store_true", help="stable JSON for scripts")
    listing.set_defaults(handler=list_runs)
    show = sub.add_parser("show", help="one request: status, run id, the whole task YAML, portal link")
    show.add_argument("id", help="request id (or ACR run id)")
    show.add_argument("--json", action="store_true", help="stable JSON for scripts")
    show.set_defaults(handler=show_run)
    _runs_logs.register(sub)
    _runs_watch.register(sub)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def list_runs(args: argparse.Namespace) -> int:
    """One page, newest first; ``--before`` continues from the cursor the previous page printed.

    Unfiltered, the ledger reads its small index and then only this page's records, so a page
    costs the same whatever the history; filtered, at most ``SCAN_LIMIT`` records per page."""
    from shared.app.commands._runs_records import (
        RunFilter,
        parse_since,
        select,
        status_values,
        summary,
        utcnow,
    )
    from shared.app.runtime import runtime
    from shared.platform.ledger import format_cursor, parse_cursor

    now = utcnow()
    try:
        before = parse_cursor(args.before) if args.before else None
    except ValueError as exc:
        print(f"error: --before: {exc}", file=sys.stderr)
        return 2
    try:
        since = parse_since(args.since, now) if args.since else None
    except ValueError as exc:
        print(f"error: --since: {exc}", file=sys.stderr)
        return 2
    try:
        statuses = status_values(args.status)
    except ValueError as exc:
        print(f"error: --status: {exc}", file=sys.stderr)
        return 2
    where = RunFilter(target=args.target, statuses=statuses, ref=args.ref, since=since)
    page = select(runtime().ledger(), where, limit=args.limit, before=before)
    rows = [summary(r, now) for r in page.records]
    cursor = format_cursor(page.after) if page.after is not None else None
    if args.json:
        print_json({"runs": rows, "next": cursor})
        return 0
    from datetime import UTC

    from shared.app.commands._runs_records import duration_text

    for row, record in zip(rows, page.records, strict=True):
        # Compact cells so the table fits beside the ids (which never fold): --json has them whole.
        row["commit"] = (row["commit"] or "")[:12]
        row["ref"] = str(row["ref"] or "").removeprefix("refs/heads/").removeprefix("refs/tags/")
        row["created_at"] = record.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        row["duration"] = duration_text(record, now)
        row["acr_status"] = row["run_status"]
    print_table(
        f"{len(rows)} run(s)",
        [
            "request_id",
            "target",
            "status",
            "run_id",
            "acr_status",
            "trigger",
            "ref",
            "commit",
            "created_at",
            "duration",
        ],
        rows,
        optional=["created_at", "commit", "duration", "acr_status", "ref", "trigger"],
    )
    if cursor is not None:
        more = f"slipway runs list --limit {args.limit} --before {cursor}"
        if page.scan_limited:
            print(f"read {page.scanned} records without filling the page; more: {more} (same filters)")
        else:
            print(f"more: {more}")
    return 0


def show_run(args: argparse.Namespace) -> int:
    from shared.app.commands._runs_records import portal_link, require_record, summary, utcnow
    from shared.app.runtime import runtime

    rt = runtime()
    record = require_record(rt.ledger(), args.id)
    detail: dict[str, Any] = {
        **summary(record, utcnow()),
        "portal_url": portal_link(rt.settings, record),
        "attempts": record.attempts,
        "history": record.history,
        "request": record.request,
        "task_yaml": record.task_yaml,
        "run_request": record.run_request,
    }
    if args.json:
        print_json(detail)
        return 0
    _print_detail(detail)
    return 0


_SHOWN = (
    "request_id",
    "target",
    "status",
    "backend",
    "run_id",
    "run_status",
    "trigger",
    "ref",
    "commit",
    "correlation_id",
    "created_at",
    "updated_at",
    "run_started_at",
    "run_finished_at",
    "duration_seconds",
    "attempts",
    "error",
    "run_error",
    "commit_status",
    "portal_url",
)


def _print_detail(detail: dict[str, Any]) -> None:
    """Fields, history, then the whole task YAML and run request: on a terminal highlighted and
    wrapped (never cropped), otherwise as plain text that copies and diffs as it is."""
    import json

    from rich.console import Console
    from rich.syntax import Syntax

    console = Console(soft_wrap=True, highlight=False)
    for key in _SHOWN:
        if detail.get(key) is not None:
            # A link or an id must stay one string: soft wrap leaves long words to the terminal.
            console.print(f"[bold]{key.replace('_', ' ')}[/bold]: ", end="")
            console.print(str(detail[key]), markup=False)
    for event in detail["history"]:
        console.print(f"  {event.get('at')}  {event.get('event')}  {event.get('detail') or ''}", markup=False)
    blocks = []
    if detail["task_yaml"]:
        blocks.append(("task YAML", detail["task_yaml"], "yaml"))
    if detail["run_request"]:
        request = json.dumps(detail["run_request"], indent=2, default=str)
        blocks.append(("run request (secret values redacted)", request, "json"))
    for title, text, lexer in blocks:
        if console.is_terminal:
            console.rule(title)
            console.print(Syntax(text, lexer, word_wrap=True))
        else:
            sys.stdout.write(f"--- {title}\n{text.rstrip()}\n")
            sys.stdout.flush()

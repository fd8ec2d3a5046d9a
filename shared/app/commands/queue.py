"""``slipway queue``: look at the build queue and its dead-letter sub-queue, send a request.

Works on the local queue, or on Service Bus when ``ServiceBusConnection`` (or its identity-based
form) is set: the same settings the function app reads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from shared.app.commands.output import print_json, print_table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("queue", help="inspect the build queue, send a build request")
    sub = parser.add_subparsers(dest="queue_command", metavar="COMMAND", required=True)

    listing = sub.add_parser("list", help="peek at queued (or dead-lettered) messages without taking them")
    listing.add_argument("--dead-letter", action="store_true", help="the dead-letter sub-queue")
    listing.add_argument("--limit", type=int, default=100, help="at most this many messages (default 100)")
    listing.add_argument("--json", action="store_true", help="stable JSON for scripts")
    listing.set_defaults(handler=list_messages)

    send = sub.add_parser("send", help="validate a BuildRequest JSON file and enqueue it")
    send.add_argument("file", type=Path, help="BuildRequest v1 JSON file ('-' for stdin)")
    send.add_argument("--json", action="store_true", help="print the result as JSON")
    send.set_defaults(handler=send_request, creates_state=True)


def _message_row(message: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        body = json.loads(message.body)
    return {
        "message_id": message.message_id,
        "sequence_number": message.sequence_number,
        "state": str(getattr(message, "state", "active")),
        "enqueued_time": message.enqueued_time.isoformat(),
        "scheduled_enqueue_time": (
            message.scheduled_enqueue_time.isoformat() if message.scheduled_enqueue_time else None
        ),
        "delivery_count": message.delivery_count,
        "correlation_id": message.correlation_id,
        "subject": message.subject,
        "target": body.get("target") if isinstance(body, dict) else None,
        "dead_letter_reason": message.dead_letter_reason,
        "dead_letter_description": message.dead_letter_description,
    }


def list_messages(args: argparse.Namespace) -> int:
    from shared.app.runtime import runtime

    queue = runtime().queue()
    rows = [_message_row(m) for m in queue.peek(dead_letter=args.dead_letter, max_count=args.limit)]  # type: ignore[attr-defined]
    if args.json:
        print_json({"dead_letter": args.dead_letter, "messages": rows})
        return 0
    for row in rows:
        # A scheduled message (a delayed retry, a wait) is not there yet: say when it will be.
        if row["state"] == "scheduled" and row["scheduled_enqueue_time"]:
            row["time_utc"] = f"scheduled for {row['scheduled_enqueue_time']}"
        else:
            row["time_utc"] = f"enqueued {row['enqueued_time']}"
    columns = ["message_id", "target", "state", "delivery_count", "time_utc"]
    if args.dead_letter:
        columns += ["dead_letter_reason", "dead_letter_description"]
    title = "dead-letter queue" if args.dead_letter else "build queue"
    print_table(f"{title}: {len(rows)} message(s)", columns, rows)
    return 0


def send_request(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from shared.app.runtime import runtime
    from shared.intake.rebuild_queue import request_message
    from shared.model.build_request import BuildRequest
    from shared.platform.queue.port import QueueError

    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
        request = BuildRequest.from_json(text)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"error: {args.file} is not a valid BuildRequest v1:", file=sys.stderr)
        for error in exc.errors():
            print(f"  {'.'.join(str(p) for p in error['loc']) or '(body)'}: {error['msg']}", file=sys.stderr)
        return 1
    from shared.platform.queue.local import LocalQueue
    from shared.platform.queue.port import QUEUE_DUPLICATE_DETECTION_WINDOW

    window = int(QUEUE_DUPLICATE_DETECTION_WINDOW.total_seconds() // 60)
    try:
        queue = runtime().queue()
        # The local queue can say whether its duplicate detection will drop this id; Service Bus
        # drops a duplicate without telling the sender, so there it is "unknown" (None).
        dropped = queue.duplicate_held(request.id) if isinstance(queue, LocalQueue) else None
        queue.send([request_message(request, subject=request.trigger.kind)])
    except QueueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print_json({"sent": request.id, "duplicate_dropped": dropped})
    elif dropped:
        print(
            f"not queued: {request.id} was sent within the last {window} minutes, so duplicate detection "
            "dropped this copy (send it with a new id to queue it again)"
        )
    elif dropped is None:
        print(
            f"sent {request.id} (Service Bus drops it without saying so if the same id was sent within "
            "the queue's duplicate-detection window)"
        )
    else:
        print(f"sent {request.id}")
    return 0

"""What every receiver shares: its context, correlation ids, and enqueueing the routed requests."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.intake.rebuild_queue import send_requests
from shared.intake.routing import RouteResult
from shared.model.config import SlipwayConfig
from shared.platform.http import HttpResponse, RequestRejected
from shared.platform.logs import log_event
from shared.platform.queue.port import QueueError, QueueSender

if TYPE_CHECKING:
    from shared.model.build_request import BuildRequest
    from shared.platform.state import StateStore

_SAFE_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
logger = logging.getLogger("slipway.webhooks")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReceiverContext:
    """Everything a receiver needs, built once by the composition root (or a test)."""

    settings: Mapping[str, str]
    config: Callable[[], SlipwayConfig]
    queue: Callable[[], QueueSender]
    clock: Callable[[], datetime] = field(default=_utcnow)
    # Where the dispatcher records each target's last build (base-image rebuilds read it).
    # None: nothing is known, so rebuilds build branch heads.
    state: Callable[[], StateStore] | None = None


def safe_delivery_id(value: str | None) -> str | None:
    """A sender's delivery id, only if it is harmless to log and to use as an id."""
    return value if value and _SAFE_ID_RE.match(value) else None


def new_correlation_id(delivery_id: str | None) -> str:
    return delivery_id or uuid.uuid4().hex


def load_config(ctx: ReceiverContext) -> SlipwayConfig:
    """The configuration; a broken file is the operator's problem, answered 503, never 500."""
    try:
        return ctx.config()
    except Exception as exc:
        logger.error("configuration cannot be loaded: %s", exc)
        raise RequestRejected(
            503, "configuration_invalid", "Slipway's configuration cannot be loaded"
        ) from exc


def enqueue(
    result: RouteResult,
    ctx: ReceiverContext,
    *,
    correlation_id: str,
    subject: str,
    scheduled: Mapping[str, datetime] | None = None,
) -> HttpResponse:
    """Send every accepted request, then answer with the spine's response shape.

    202 when something was queued, 200 otherwise. A queue failure answers 503 so the sender
    retries; the deterministic message ids make that retry harmless. ``scheduled`` maps request
    ids to the time they become receivable (a spread-out fan-out); their accepted entries then
    carry ``scheduled_at``.
    """
    when = scheduled or {}
    if result.accepted:
        try:
            send_requests(
                ctx.queue(),
                result.accepted,
                correlation_id=correlation_id,
                subject=subject,
                scheduled=when,
                logger=logger,
            )
        except QueueError as exc:
            log_event(
                logger, "enqueue_failed", correlation_id=correlation_id, error=str(exc), level=logging.ERROR
            )
            return HttpResponse(
                503,
                {"error": "queue_unavailable", "reason": "the build queue cannot be reached; retry later"},
                {"Retry-After": "30"},
            )
    for item in result.ignored:
        log_event(
            logger, "build_ignored", correlation_id=correlation_id, target=item.target, reason=item.reason
        )
    body: dict[str, object] = {
        "correlation_id": correlation_id,
        "accepted": [_accepted_entry(r, when.get(r.id)) for r in result.accepted],
        "ignored": [{"target": i.target, "reason": i.reason} for i in result.ignored],
    }
    if result.notes:
        body["notes"] = result.notes
    return HttpResponse(202 if result.accepted else 200, body)


def _accepted_entry(request: BuildRequest, scheduled_at: datetime | None) -> dict[str, object]:
    entry: dict[str, object] = {"id": request.id, "target": request.target, "tags": request.image.tags}
    if scheduled_at is not None:
        entry["scheduled_at"] = scheduled_at.isoformat()
    return entry

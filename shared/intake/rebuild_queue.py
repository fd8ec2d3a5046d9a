"""Sending build requests to the queue: one message per request, its id the request id.

Webhook receivers (``shared.intake.receivers.answers.enqueue``, which turns a failure into a 503 for the
sender) and timers (schedules, base-image polling, which retry on their next tick) both send
through here. Message ids are the request ids, so a second send of the same request (a
redelivery, a double fire, a second instance) is absorbed by duplicate detection.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from shared.model.build_request import BuildRequest
from shared.platform.logs import log_event
from shared.platform.queue.port import OutgoingMessage, QueueSender

_timers = logging.getLogger("slipway.timers")


def send_requests(
    queue: QueueSender,
    requests: Sequence[BuildRequest],
    *,
    correlation_id: str,
    subject: str,
    scheduled: Mapping[str, datetime] | None = None,
    logger: logging.Logger = _timers,
) -> None:
    """Send every request in one batch (all or nothing); raises ``QueueError`` when it fails.

    ``scheduled`` maps request ids to the time they become receivable (a spread-out fan-out);
    each sent request is logged as ``build_queued`` on ``logger``.
    """
    if not requests:
        return
    when = scheduled or {}
    queue.send(
        [
            request_message(
                request, subject=subject, correlation_id=correlation_id, scheduled=when.get(request.id)
            )
            for request in requests
        ]
    )
    if not logger.isEnabledFor(logging.INFO):
        return
    for request in requests:
        log_event(
            logger,
            "build_queued",
            correlation_id=correlation_id,
            request_id=request.id,
            target=request.target,
            trigger=request.trigger.kind,
            ref=request.source.ref,
            commit=request.source.commit,
            scheduled_at=when[request.id].isoformat() if request.id in when else None,
        )


def request_message(
    request: BuildRequest,
    *,
    subject: str,
    message_id: str | None = None,
    correlation_id: str | None = None,
    scheduled: datetime | None = None,
    properties: Mapping[str, str | int] | None = None,
) -> OutgoingMessage:
    """The message carrying ``request``: its id is the request id unless this is a copy
    (a delayed retry ``<id>-a<N>``, a wait ``<id>-w<T>``, a replay ``<id>-r<N>``)."""
    mirrored = request.application_properties()
    return OutgoingMessage(
        message_id=message_id or request.id,
        body=request.to_json_bytes(),
        subject=subject,
        correlation_id=correlation_id or request.trigger.correlation_id,
        application_properties={**mirrored, **properties} if properties else mirrored,
        scheduled_enqueue_time=scheduled,
    )

"""How a delivery's events become the answer: route them, queue what was accepted, say what was not.

``Pushes`` is the answer of every Git host's spec; the registry senders route image pushes
through ``shared.intake.receivers.image_push``. Both end in ``enqueue``, so every sender answers
in the same shape (202 when something was queued, 200 otherwise, 503 when the queue is down).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic

from shared.intake.rebuild_queue import send_requests
from shared.intake.receivers.checks import repository_conflict
from shared.intake.receivers.pipeline import Delivery, PayloadT, ReceiverContext, ignored_response
from shared.intake.routing import Ignored, RouteResult, route_push
from shared.platform.http import HttpResponse, RequestRejected
from shared.platform.logs import log_event
from shared.platform.queue.port import QueueError

if TYPE_CHECKING:
    from shared.model.build_request import BuildRequest
    from shared.model.config import SlipwayConfig
    from shared.model.events import PushEvent

logger = logging.getLogger("slipway.webhooks")
# (payload, delivery id, received at): the pushes, and what was ignored on the way.
Normalise = Callable[[PayloadT, str | None, datetime], tuple[Sequence["PushEvent"], Sequence[Ignored]]]


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


def conflict_response(
    reason: str, ctx: ReceiverContext, *, correlation_id: str, subject: str = "push"
) -> HttpResponse:
    """200 with ``reason`` ignored, logged like any other ignored push; nothing is queued."""
    return enqueue(
        RouteResult(ignored=[Ignored(None, reason)]), ctx, correlation_id=correlation_id, subject=subject
    )


def route_events(
    events: Sequence[PushEvent],
    ctx: ReceiverContext,
    *,
    correlation_id: str,
    received_at: datetime,
    ignored: Iterable[Ignored] = (),
) -> HttpResponse:
    """Route every push of one delivery and answer once with the merged result.

    With several pushes (Azure DevOps ref updates, Bitbucket changes) each ignore reason names
    its ref, so the sender's delivery log says which ref was skipped and why.
    """
    skipped = list(ignored)
    if len(events) == 1 and not skipped:
        # One push: its result as routed (nothing to merge, prefix or deduplicate).
        merged = route_push(
            events[0], load_config(ctx), correlation_id=correlation_id, received_at=received_at
        )
    else:
        merged = _merged(events, ctx, correlation_id=correlation_id, received_at=received_at, ignored=skipped)
    subject = "tag" if events and all(e.tag is not None for e in events) else "push"
    return enqueue(merged, ctx, correlation_id=correlation_id, subject=subject)


def _merged(
    events: Sequence[PushEvent],
    ctx: ReceiverContext,
    *,
    correlation_id: str,
    received_at: datetime,
    ignored: list[Ignored],
) -> RouteResult:
    merged = RouteResult(ignored=ignored)
    if events:
        config = load_config(ctx)
        for event in events:
            result = route_push(event, config, correlation_id=correlation_id, received_at=received_at)
            prefix = f"{event.ref}: " if len(events) > 1 else ""
            merged.accepted.extend(result.accepted)
            merged.ignored.extend(Ignored(i.target, prefix + i.reason) for i in result.ignored)
            merged.notes.extend(result.notes)
    return RouteResult(
        accepted=list({r.id: r for r in merged.accepted}.values()),
        ignored=list(dict.fromkeys(merged.ignored)),
        notes=list(dict.fromkeys(merged.notes)),
    )


def _nothing(payload: object) -> str | None:
    return None


@dataclass(frozen=True)
class Pushes(Generic[PayloadT]):
    """A Git host's answer: its payload as pushes, each routed, one merged answer.

    In order: a payload with nothing to build is ignored (``nothing_to_build`` says why), one
    whose repository URLs contradict each other is ignored, the rest is normalised
    (``normalise``) and routed. The URLs compared are ``compared_urls`` of the payload, checked
    before normalising, or (None) those the pushes carry.
    """

    normalise: Normalise[PayloadT]
    compared_urls: Callable[[PayloadT], tuple[str, ...]] | None = None
    nothing_to_build: Callable[[PayloadT], str | None] = _nothing

    def __call__(self, payload: PayloadT, ctx: ReceiverContext, delivery: Delivery) -> HttpResponse:
        correlation_id = delivery.correlation_id
        if (reason := self.nothing_to_build(payload)) is not None:
            return ignored_response(correlation_id, reason)
        if self.compared_urls is not None and (conflict := repository_conflict(self.compared_urls(payload))):
            return conflict_response(conflict, ctx, correlation_id=correlation_id)
        received_at = ctx.clock()
        events, ignored = self.normalise(payload, delivery.delivery_id, received_at)
        if self.compared_urls is None and (conflict := repository_conflict(_carried_urls(events))):
            return conflict_response(conflict, ctx, correlation_id=correlation_id)
        return route_events(
            events, ctx, correlation_id=correlation_id, received_at=received_at, ignored=ignored
        )


def _carried_urls(events: Sequence[PushEvent]) -> tuple[str, ...]:
    return events[0].repo_urls if len(events) == 1 else tuple(u for e in events for u in e.repo_urls)

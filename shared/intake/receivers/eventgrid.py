"""Azure Event Grid: container registry events from a registry's system topic.

Event Grid delivers either schema a subscription asks for:

* **Event Grid schema**: ``application/json``, always a JSON array of events
  (``id``, ``eventType``, ``subject``, ``data``, ...). Before the first delivery, Event Grid
  validates the endpoint with one ``Microsoft.EventGrid.SubscriptionValidationEvent``; the answer
  is 200 ``{"validationResponse": <data.validationCode>}``.
* **CloudEvents 1.0**: ``application/cloudevents+json`` (one event) or
  ``application/cloudevents-batch+json`` (an array), with ``type`` instead of ``eventType``.
  Validation is the CloudEvents abuse-protection handshake: an ``OPTIONS`` request carrying
  ``WebHook-Request-Origin``, answered 200 with ``WebHook-Allowed-Origin`` (and
  ``WebHook-Allowed-Rate``).

A plain webhook subscription cannot sign deliveries, so the endpoint URL carries a token:
``/api/hooks/eventgrid?token=<EVENTGRID_WEBHOOK_TOKEN>``. It is checked, in constant time,
before anything else, handshakes included: an endpoint that answered the handshake for anyone
would let anyone subscribe it to their own topics. The URL is never logged.

``Microsoft.ContainerRegistry.ImagePushed`` (also under the short name ``ImagePushed`` of the
2018 documentation) triggers base-image rebuilds; every other event type is ignored with a
reason. One malformed event does not sink its batch: it is reported, the others are routed.
Event Grid delivers at least once, so the rebuild ids are keyed on the pushed digest.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError

from shared.intake.receivers.acr import AcrEvent
from shared.intake.receivers.checks import PayloadModel, describe_error, query_token, shown
from shared.intake.receivers.image_push import ImageNameError, image_pushed, route_and_enqueue
from shared.intake.receivers.pipeline import (
    Delivery,
    ReceiverContext,
    Sender,
    ignored_response,
    safe_delivery_id,
)
from shared.intake.routing import Ignored
from shared.model.events import ImagePushedEvent
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected

TOKEN_SETTING = "EVENTGRID_WEBHOOK_TOKEN"
PROVIDER = "eventgrid"
EVENT_GRID_JSON = "application/json"
CLOUD_EVENT = "application/cloudevents+json"
CLOUD_EVENT_BATCH = "application/cloudevents-batch+json"
MEDIA_TYPES = (EVENT_GRID_JSON, CLOUD_EVENT, CLOUD_EVENT_BATCH)
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
IMAGE_PUSHED = frozenset({"Microsoft.ContainerRegistry.ImagePushed", "ImagePushed"})
_DELETED = "an image was deleted: nothing to rebuild"
IGNORED_TYPES = {
    "Microsoft.ContainerRegistry.ImageDeleted": _DELETED,
    "ImageDeleted": _DELETED,
    "Microsoft.ContainerRegistry.ChartPushed": "a Helm chart push does not change any base image",
    "Microsoft.ContainerRegistry.ChartDeleted": "a Helm chart was deleted: nothing to rebuild",
    "Microsoft.EventGrid.SubscriptionDeletedEvent": "the subscription was deleted",
}
# The origin is echoed in a response header: a host name, nothing that could break the header.
_ORIGIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_MAX_VALIDATION_CODE = 256
logger = logging.getLogger("slipway.webhooks.eventgrid")


class EventGridEvent(PayloadModel):
    id: str = Field(min_length=1)
    eventType: str  # Event Grid's field name
    subject: str | None = None
    data: Any = None


class CloudEvent(PayloadModel):
    id: str = Field(min_length=1)
    type: str
    source: str | None = None
    subject: str | None = None
    specversion: str | None = None
    data: Any = None


@dataclass(frozen=True)
class _Event:
    """What both schemas have in common."""

    id: str
    type: str
    data: Any


_EVENT_GRID_BATCH = TypeAdapter(list[EventGridEvent])
_CLOUD_EVENT_BATCH = TypeAdapter(list[CloudEvent])


def answer(events: list[_Event], ctx: ReceiverContext, delivery: Delivery) -> HttpResponse:
    """The validation handshake, or each image push routed; other events are ignored with why."""
    if not events:
        return ignored_response(delivery.correlation_id, "the delivery holds no events")
    delivery.identify(events[0].id)

    validation = next((e for e in events if e.type == VALIDATION_EVENT), None)
    if validation is not None:
        return _validation_response(validation)

    pushes: list[ImagePushedEvent] = []
    ignored: list[Ignored] = []
    notes: list[str] = []
    for event in events:
        label = f"event {shown(event.id)}"
        if event.type not in IMAGE_PUSHED:
            reason = IGNORED_TYPES.get(event.type, "only image pushes trigger rebuilds")
            ignored.append(Ignored(None, f"{label} ({shown(event.type)}): {reason}"))
            continue
        try:
            pushes.append(_image_pushed(event, ctx, notes))
        except (ValidationError, ImageNameError) as exc:
            problem = (
                describe_error(exc, what="data", whole="data")
                if isinstance(exc, ValidationError)
                else str(exc)
            )
            ignored.append(Ignored(None, f"{label}: malformed ImagePushed event: {problem}"))
    return route_and_enqueue(pushes, ctx, delivery, logger=logger, ignored=ignored, notes=notes)


def _parse(body: bytes, media_type: str) -> list[_Event]:
    try:
        if media_type == EVENT_GRID_JSON:
            return [_Event(e.id, e.eventType, e.data) for e in _EVENT_GRID_BATCH.validate_json(body)]
        if media_type == CLOUD_EVENT_BATCH:
            cloud_events = _CLOUD_EVENT_BATCH.validate_json(body)
        else:
            cloud_events = [CloudEvent.model_validate_json(body)]
    except ValidationError as exc:
        raise RequestRejected(400, "bad_request", describe_error(exc, what="events")) from None
    for event in cloud_events:
        if event.specversion is not None and event.specversion != "1.0":
            raise RequestRejected(400, "bad_request", f"CloudEvents specversion {shown(event.specversion)}")
    return [_Event(e.id, e.type, e.data) for e in cloud_events]


def _image_pushed(event: _Event, ctx: ReceiverContext, notes: list[str]) -> ImagePushedEvent:
    data = AcrEvent.model_validate(event.data)
    target = data.target
    return image_pushed(
        provider=PROVIDER,
        delivery_id=safe_delivery_id(event.id),
        received_at=ctx.clock(),
        registry=data.request.host if data.request else None,
        repository=target.repository if target else None,
        tag=target.tag if target else None,
        digest=target.digest if target else None,
        pushed_at=data.timestamp,
        notes=notes,
    )


def _validation_response(event: _Event) -> HttpResponse:
    """The synchronous handshake: echo the validation code, and nothing else."""
    code = event.data.get("validationCode") if isinstance(event.data, dict) else None
    if not isinstance(code, str) or not code or len(code) > _MAX_VALIDATION_CODE or not code.isprintable():
        raise RequestRejected(400, "bad_request", "the validation event has no usable data.validationCode")
    return HttpResponse(200, {"validationResponse": code})


def _abuse_protection(req: HttpRequest, delivery: Delivery) -> HttpResponse:
    """CloudEvents 1.0 webhook validation: allow the origin that asked (it knows the token)."""
    origin = (req.header("WebHook-Request-Origin") or "").strip()
    if not origin:
        raise RequestRejected(400, "bad_request", "WebHook-Request-Origin is missing")
    if not _ORIGIN_RE.match(origin):
        raise RequestRejected(400, "bad_request", "WebHook-Request-Origin is not a host name")
    return HttpResponse(
        200,
        {"correlation_id": delivery.correlation_id, "status": "webhook_allowed", "origin": origin},
        {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST, OPTIONS"},
    )


SENDER = Sender(
    provider=PROVIDER,
    logger=logger,
    media_types=MEDIA_TYPES,
    authenticate=query_token(TOKEN_SETTING),
    handshake=_abuse_protection,
    parse=_parse,
    answer=answer,
)


def receive_eventgrid(req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
    """``POST`` and ``OPTIONS /api/hooks/eventgrid``: never raises; every outcome is a JSON response."""
    return SENDER.receive(req, ctx)

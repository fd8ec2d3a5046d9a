"""Azure Container Registry webhooks: image pushes trigger base-image rebuilds.

ACR signs nothing. A webhook can only carry custom headers, so it is configured with
``Authorization: Bearer <token>`` and the token is compared, in constant time, with the setting
``ACR_WEBHOOK_TOKEN`` before the body is parsed.

ACR sends ``push``, ``delete``, ``chart_push``, ``chart_delete`` and ``quarantine`` actions (and
an undocumented body for ``az acr webhook ping``). Only ``push`` can trigger a rebuild; every
other action is answered 200 with the reason it is ignored. A ``push`` without a tag is a
platform manifest or attestation of a multi-arch image (or a push by digest): it is ignored too,
so that a multi-arch base image rebuilds its dependents once, on the tagged push of its index
(see ``shared.intake.base_images``).
"""

from __future__ import annotations

import logging
from datetime import datetime

from shared.intake.receivers.checks import PayloadModel, json_body, required_setting, shown
from shared.intake.receivers.image_push import ImageNameError, image_pushed, route_and_enqueue
from shared.intake.receivers.pipeline import (
    Delivery,
    ReceiverContext,
    Sender,
    ignored_response,
    pong_response,
)
from shared.intake.receivers.signatures import tokens_equal
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected

TOKEN_SETTING = "ACR_WEBHOOK_TOKEN"
PROVIDER = "acr"
logger = logging.getLogger("slipway.webhooks.acr")

_IGNORED_ACTIONS = {
    "delete": "an image was deleted: nothing to rebuild",
    "chart_push": "a Helm chart push does not change any base image",
    "chart_delete": "a Helm chart was deleted: nothing to rebuild",
    "quarantine": "a quarantined image is not a base to build on",
}


class AcrTarget(PayloadModel):
    mediaType: str | None = None  # ACR's field name
    digest: str | None = None
    repository: str | None = None
    tag: str | None = None


class AcrRequestInfo(PayloadModel):
    id: str | None = None
    host: str | None = None


class AcrEvent(PayloadModel):
    """The body of an ACR webhook, and the ``data`` of an Event Grid container registry event."""

    id: str | None = None
    timestamp: datetime | None = None
    action: str | None = None
    target: AcrTarget | None = None
    request: AcrRequestInfo | None = None


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme is case-insensitive)."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate(req: HttpRequest, ctx: ReceiverContext) -> None:
    expected = required_setting(ctx, TOKEN_SETTING)
    header = req.header("Authorization")
    if header is None:
        raise RequestRejected(401, "unauthorized", "Authorization is missing")
    if not tokens_equal(expected, bearer_token(header)):
        raise RequestRejected(401, "unauthorized", "Authorization is not the configured bearer token")


def answer(event: AcrEvent, ctx: ReceiverContext, delivery: Delivery) -> HttpResponse:
    """A tagged push is routed to rebuilds; every other action is answered with why it is not."""
    delivery.identify(event.id)
    action = (event.action or "").strip()
    if action != "push":
        if not action:
            return ignored_response(delivery.correlation_id, "the event names no action")
        if action == "ping":
            return pong_response(delivery.correlation_id)
        reason = _IGNORED_ACTIONS.get(action, "only image pushes trigger rebuilds")
        return ignored_response(delivery.correlation_id, f"action {shown(action)}: {reason}")

    notes: list[str] = []
    target = event.target or AcrTarget()
    try:
        pushed = image_pushed(
            provider=PROVIDER,
            delivery_id=delivery.delivery_id,
            received_at=ctx.clock(),
            registry=event.request.host if event.request else None,
            repository=target.repository,
            tag=target.tag,
            digest=target.digest,
            pushed_at=event.timestamp,
            notes=notes,
        )
    except ImageNameError as exc:
        raise RequestRejected(400, "bad_request", f"ACR push event: {exc}") from None
    return route_and_enqueue([pushed], ctx, delivery, logger=logger, notes=notes)


SENDER = Sender(
    provider=PROVIDER,
    logger=logger,
    authenticate=authenticate,
    parse=json_body(AcrEvent, what="ACR event"),
    answer=answer,
)


def receive_acr(req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
    """``POST /api/hooks/acr``: never raises; every outcome is a JSON response."""
    return SENDER.receive(req, ctx)

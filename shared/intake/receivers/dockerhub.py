"""Docker Hub webhooks: a push to a Docker Hub repository you own triggers base-image rebuilds.

Docker Hub signs nothing and sends no secret header, so the webhook URL carries a token:
``/api/hooks/dockerhub?token=<DOCKERHUB_WEBHOOK_TOKEN>``, compared in constant time before the
body is parsed. The URL is never logged.

Even authenticated, the payload is a **hint**. It names the repository, the tag and the time of
the push, but no digest (``push_data.images`` is usually empty), and nothing in it can be
verified. So Slipway trusts no digest from it: the rebuild's id is keyed on the repository, the
tag and ``pushed_at``. A retried delivery of the same push is therefore the same request and
builds once, and a later push of the same tag is a new update. ``callback_url`` is not called:
it is optional, undocumented today, and would let the payload choose a URL Slipway requests.

Whoever holds the URL could send a new ``pushed_at`` as often as they like, so each image may
cause at most ``DOCKERHUB_REBUILD_LIMIT`` distinct updates per window (``shared.intake.rebuild_limit``;
default 6 per hour); the rest are answered 200 with the reason and logged as
``rebuild_rate_limited``.

Docker Hub only offers webhooks on repositories you own, so official images (``python``,
``node``) cannot be followed this way; their updates need a digest poll.
"""

from __future__ import annotations

import logging
from datetime import datetime

from shared.intake.rebuild_limit import DOCKERHUB_SETTING, admit, limit_from_settings
from shared.intake.receivers.checks import PayloadModel, json_body, query_token
from shared.intake.receivers.image_push import ImageNameError, image_pushed, route_and_enqueue
from shared.intake.receivers.pipeline import Delivery, ReceiverContext, Sender, ignored_response
from shared.model.events import ImagePushedEvent
from shared.model.image_refs import DOCKER_HUB
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected
from shared.platform.logs import log_event

TOKEN_SETTING = "DOCKERHUB_WEBHOOK_TOKEN"
PROVIDER = "dockerhub"
logger = logging.getLogger("slipway.webhooks.dockerhub")


class DockerHubPushData(PayloadModel):
    pushed_at: datetime  # seconds since the epoch
    pusher: str | None = None
    tag: str | None = None


class DockerHubRepository(PayloadModel):
    repo_name: str
    namespace: str | None = None
    name: str | None = None


class DockerHubPush(PayloadModel):
    push_data: DockerHubPushData
    repository: DockerHubRepository


def answer(push: DockerHubPush, ctx: ReceiverContext, delivery: Delivery) -> HttpResponse:
    """The push routed to rebuilds, unless the image's update ceiling is reached."""
    notes = ["Docker Hub deliveries are unsigned hints: no digest is taken from them"]
    try:
        pushed = image_pushed(
            provider=PROVIDER,
            delivery_id=None,  # Docker Hub sends no delivery id
            received_at=ctx.clock(),
            registry=DOCKER_HUB,
            repository=push.repository.repo_name,
            tag=push.push_data.tag,
            digest=None,
            pushed_at=push.push_data.pushed_at,
            notes=notes,
        )
    except ImageNameError as exc:
        raise RequestRejected(400, "bad_request", f"Docker Hub push: {exc}") from None
    refused = _over_limit(pushed, ctx)
    if refused is not None:
        return ignored_response(delivery.correlation_id, refused)
    return route_and_enqueue([pushed], ctx, delivery, logger=logger, notes=notes)


def _over_limit(pushed: ImagePushedEvent, ctx: ReceiverContext) -> str | None:
    """Why this update is not built (the image's ceiling is reached), or None to go on.

    Without a state store (a bare test context) there is nowhere to count, and nothing is limited.
    """
    try:
        limit = limit_from_settings(ctx.settings, DOCKERHUB_SETTING)
    except ValueError as exc:
        logger.error("%s is invalid: %s", DOCKERHUB_SETTING, exc)
        raise RequestRejected(503, "configuration_invalid", f"{DOCKERHUB_SETTING} is invalid") from None
    if limit is None or ctx.state is None:
        return None
    image = f"{pushed.repository}:{pushed.tag or 'latest'}"
    when = pushed.pushed_at.isoformat() if pushed.pushed_at else "unknown"
    try:
        admitted = admit(
            ctx.state(),
            provider=PROVIDER,
            image=image,
            update_id=f"{image}@{when}",
            limit=limit,
            now=ctx.clock(),
        )
    except Exception as exc:
        log_event(logger, "state_unavailable", level=logging.ERROR, error=str(exc))
        raise RequestRejected(
            503, "state_unavailable", "the state store cannot be written; retry later"
        ) from exc
    if admitted:
        return None
    log_event(logger, "rebuild_rate_limited", level=logging.WARNING, image=image, limit=str(limit))
    return f"{image}: more than {limit} updates in the window ({DOCKERHUB_SETTING}); not built"


SENDER = Sender(
    provider=PROVIDER,
    logger=logger,
    authenticate=query_token(TOKEN_SETTING),
    parse=json_body(DockerHubPush, what="Docker Hub push"),
    answer=answer,
)


def receive_dockerhub(req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
    """``POST /api/hooks/dockerhub``: never raises; every outcome is a JSON response."""
    return SENDER.receive(req, ctx)

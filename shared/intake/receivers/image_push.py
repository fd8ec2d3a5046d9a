"""What the registry receivers (ACR webhooks, Event Grid, Docker Hub) share.

None of these senders signs its deliveries: each is authenticated by a shared token, compared in
constant time before the body is parsed. Their payloads describe an image push in slightly
different shapes; each receiver keeps only that mapping, and everything after it (checking the
image names, reading the last builds, routing, spreading the fan-out, enqueueing) lives here so
the three answer alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from shared.intake.base_images import LastBuildLookup, route_image_pushes
from shared.intake.receivers.answers import enqueue, load_config
from shared.intake.receivers.pipeline import Delivery, ReceiverContext, ignored_response
from shared.intake.routing import Ignored
from shared.model.events import ImagePushedEvent
from shared.model.image_refs import (
    DOMAIN_RE,
    MAX_NAME_LENGTH,
    PATH_RE,
    TAG_RE,
    is_digest,
    normalize_registry,
    normalize_repository,
)
from shared.platform.http import HttpResponse, RequestRejected
from shared.platform.logs import log_event
from shared.runs.last_build import LastBuild, read_last_build

_MAX_HOST_CHARS = 259  # a DNS name and a port


class ImageNameError(ValueError):
    """A registry, repository, tag or digest that does not fit its grammar."""


def image_pushed(
    *,
    provider: str,
    delivery_id: str | None,
    received_at: datetime,
    registry: str | None,
    repository: str | None,
    tag: str | None,
    digest: str | None,
    pushed_at: datetime | None,
    notes: list[str],
) -> ImagePushedEvent:
    """Check every name against its grammar, normalise it, and build the event.

    A malformed digest is not fatal: the digest only identifies the update, and the push time
    does that as well. The answer's notes say so (Microsoft's published samples carry "xxxx"
    placeholders in their digests).
    """
    if not registry or len(registry) > _MAX_HOST_CHARS or not DOMAIN_RE.match(registry.strip()):
        raise ImageNameError("the registry host is missing or malformed")
    host = normalize_registry(registry)
    if not repository or len(repository) > MAX_NAME_LENGTH or not PATH_RE.match(repository):
        raise ImageNameError("the repository is missing or not a repository path")
    if tag is not None and not TAG_RE.match(tag):
        raise ImageNameError("the tag is not a valid tag")
    trusted_digest = digest if is_digest(digest) else None
    if digest and trusted_digest is None:
        notes.append(f"{host}/{repository}: the reported digest is malformed; the push time identifies it")
    return ImagePushedEvent(
        provider=provider,
        delivery_id=delivery_id,
        received_at=received_at,
        registry=host,
        repository=normalize_repository(host, repository),
        tag=tag or None,
        digest=trusted_digest,
        pushed_at=pushed_at,
    )


def last_build_lookup(ctx: ReceiverContext, logger: logging.Logger) -> LastBuildLookup:
    """Reads a dependent target's last build from the state store (``route_image_pushes`` asks
    once per target).

    A store that cannot be read answers 503 so the sender retries: rebuilding the branch head
    instead would quietly build a commit that was never built before.
    """
    if ctx.state is None:
        return lambda _target: None
    state_factory = ctx.state

    def lookup(target: str) -> LastBuild | None:
        try:
            return read_last_build(state_factory(), target)
        except Exception as exc:
            log_event(logger, "state_unavailable", level=logging.ERROR, target=target, error=str(exc))
            raise RequestRejected(
                503, "state_unavailable", "the state store cannot be read; retry later"
            ) from exc

    return lookup


def route_and_enqueue(
    events: Sequence[ImagePushedEvent],
    ctx: ReceiverContext,
    delivery: Delivery,
    *,
    logger: logging.Logger,
    ignored: Iterable[Ignored] = (),
    notes: Iterable[str] = (),
) -> HttpResponse:
    """Route the delivery's pushes to rebuild requests and queue them (scheduled past the burst)."""
    if not events:
        result_ignored = list(ignored) or [Ignored(None, "the delivery holds no image push")]
        return ignored_response(delivery.correlation_id, *(i.reason for i in result_ignored))
    config = load_config(ctx)
    result = route_image_pushes(
        events,
        config,
        last_builds=last_build_lookup(ctx, logger),
        correlation_id=delivery.correlation_id,
        now=ctx.clock(),
    )
    result.ignored[:0] = list(ignored)
    result.notes[:0] = list(dict.fromkeys(notes))
    return enqueue(
        result, ctx, correlation_id=delivery.correlation_id, subject="base-image", scheduled=result.scheduled
    )

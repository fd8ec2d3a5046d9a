"""What the registry receivers (ACR webhooks, Event Grid, Docker Hub) share.

None of these senders signs its deliveries: each is authenticated by a shared token, compared in
constant time before the body is parsed. Their payloads describe an image push in slightly
different shapes; each receiver keeps only that mapping, and everything after it (checking the
image names, reading the last builds, routing, spreading the fan-out, enqueueing) lives here so
the three answer alike.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.intake.base_images import LastBuildLookup, route_image_pushes
from shared.intake.receivers.base import ReceiverContext, enqueue, load_config
from shared.intake.receivers.common import Delivery, required_setting
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
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected, is_too_deep, too_deep
from shared.platform.logs import log_event
from shared.runs.last_build import LastBuild, read_last_build

ModelT = TypeVar("ModelT", bound=BaseModel)
_REASON_CHARS = 64
_MAX_HOST_CHARS = 259  # a DNS name and a port
_SHAPE_ERRORS = ("json_type", "model_type", "model_attributes_type", "list_type")
_UTF8_BOM = b"\xef\xbb\xbf"


class PayloadModel(BaseModel):
    """Unknown fields are ignored: senders add fields freely."""

    model_config = ConfigDict(extra="ignore")


def tokens_match(expected: str, presented: str | None) -> bool:
    """Constant-time comparison of the whole token (any text a header or query can carry)."""
    if presented is None:
        return False
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass")
    )


def check_query_token(req: HttpRequest, ctx: ReceiverContext, setting: str) -> None:
    """``?token=`` must equal the setting (Event Grid and Docker Hub cannot send a secret header)."""
    expected = required_setting(ctx, setting)
    presented = req.query.get("token")
    if presented is None:
        raise RequestRejected(401, "unauthorized", "the token query parameter is missing")
    if not tokens_match(expected, presented):
        raise RequestRejected(401, "unauthorized", "the token query parameter is wrong")


def parse_json(model: type[ModelT], body: bytes, *, what: str) -> ModelT:
    """Parse and validate in one pass; any problem is the sender's: 400 saying where."""
    try:
        return model.model_validate_json(body.removeprefix(_UTF8_BOM))
    except ValidationError as exc:
        raise RequestRejected(400, "bad_request", describe_error(exc, what=what)) from None


def describe_error(exc: ValidationError, *, what: str, whole: str = "body") -> str:
    """The first problem, located: ``<what>: <field path>: <message>``, or ``<whole>`` is the wrong shape."""
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return too_deep().reason if is_too_deep(first["msg"]) else f"{whole} is not valid JSON"
    if first["type"] in _SHAPE_ERRORS and not first["loc"]:
        return f"{whole} is not a JSON {'array' if first['type'] == 'list_type' else 'object'}"
    where = ".".join(str(p) for p in first["loc"])
    return f"{what}: {where}: {first['msg']}"[:300]


def shown(value: str) -> str:
    """A sender's word (an event type, an action) as it may appear in an answer: short and quoted."""
    return repr(value[:_REASON_CHARS])


def ignored_response(correlation_id: str, reasons: Iterable[str]) -> HttpResponse:
    """200: authenticated, understood, deliberately not built."""
    return HttpResponse(
        200,
        {
            "correlation_id": correlation_id,
            "accepted": [],
            "ignored": [{"target": None, "reason": reason} for reason in reasons],
        },
    )


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
        return ignored_response(delivery.correlation_id, [i.reason for i in result_ignored])
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

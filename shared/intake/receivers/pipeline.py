"""The one path every webhook delivery takes, driven by its sender's spec (``Sender``).

Each sender module declares how its sender authenticates, which events it acts on, which model
parses the body and how that becomes events; ``Sender.receive`` runs the steps in one order for
all of them: method, size cap, content type, authentication (before the body is parsed), triage,
parsing, answer (a sender with an OPTIONS handshake, Event Grid, authenticates first). A
``RequestRejected`` raised by any step becomes the JSON error answer, logged once as
``webhook_rejected``. What the answer does with the events (route, enqueue) is in
``shared.intake.receivers.answers``.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from shared.intake.receivers.checks import JSON_MEDIA_TYPES, require_json_object, shown
from shared.platform.http import (
    HttpRequest,
    HttpResponse,
    RequestRejected,
    check_media_type,
    check_method,
    check_size,
    max_body_bytes,
    too_deep,
)
from shared.platform.logs import log_event

if TYPE_CHECKING:
    from shared.model.config import SlipwayConfig
    from shared.platform.queue.port import QueueSender
    from shared.platform.state import StateStore

PayloadT = TypeVar("PayloadT")
_SAFE_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


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


@dataclass
class Delivery:
    """One HTTP delivery being handled; the correlation id may be refined once the body is read."""

    provider: str
    delivery_id: str | None
    correlation_id: str

    def identify(self, delivery_id: str | None) -> None:
        """Adopt an id found in the (authenticated) body, for senders that send no delivery header."""
        safe = safe_delivery_id(delivery_id)
        if safe and self.delivery_id is None:
            self.delivery_id = safe
            self.correlation_id = safe


Handler = Callable[[HttpRequest, ReceiverContext, Delivery], HttpResponse]
# Raises RequestRejected (503 unset setting, 401 missing or wrong credential); returns on success.
Authenticate = Callable[[HttpRequest, ReceiverContext], None]
# An answer that needs the context (the clock, the configuration): what a triage returns for an
# event the spec's ``parse``/``answer`` do not handle but another part of the sender does
# (pull requests, ``shared.intake.receivers.pull_requests``).
Deferred = Callable[["ReceiverContext"], HttpResponse]
# (request, media type, delivery): an answer for a delivery not taken on by ``parse``/``answer``
# (now, or deferred), or None to go on.
Triage = Callable[[HttpRequest, str, Delivery], HttpResponse | Deferred | None]


def _no_delivery_id(req: HttpRequest) -> str | None:
    return None


def run_receiver(
    handler: Handler,
    req: HttpRequest,
    ctx: ReceiverContext,
    *,
    provider: str,
    delivery_id: str | None,
    logger: logging.Logger,
    challenge: str | None = None,
) -> HttpResponse:
    """Call ``handler``; a ``RequestRejected`` becomes the JSON error answer, logged once.

    ``challenge`` is the ``WWW-Authenticate`` value sent with a 401 (HTTP Basic senders).
    """
    delivery = Delivery(provider, delivery_id, new_correlation_id(delivery_id))
    try:
        try:
            return handler(req, ctx, delivery)
        except RecursionError:
            # The last guard: bodies are parsed with a depth limit (``JSON_MAX_DEPTH``), but a
            # nested value that still exhausted the stack is the sender's doing, not a 500.
            raise too_deep() from None
    except RequestRejected as rejected:
        log_event(
            logger,
            "webhook_rejected",
            level=logging.WARNING,
            provider=provider,
            correlation_id=delivery.correlation_id,
            status=rejected.status,
            reason=rejected.reason,
        )
        response = rejected.response(correlation_id=delivery.correlation_id)
        if challenge and rejected.status == 401:
            return HttpResponse(response.status, response.body, {"WWW-Authenticate": challenge})
        return response


@dataclass(frozen=True)
class Sender(Generic[PayloadT]):
    """One sender's spec: how it authenticates, what it acts on, how its body parses and is answered."""

    provider: str
    logger: logging.Logger
    authenticate: Authenticate
    # (body, media type) -> the payload; raises RequestRejected (400) saying where it is wrong.
    parse: Callable[[bytes, str], PayloadT]
    answer: Callable[[PayloadT, ReceiverContext, Delivery], HttpResponse]
    triage: Triage | None = None
    delivery_id: Callable[[HttpRequest], str | None] = _no_delivery_id
    media_types: tuple[str, ...] = JSON_MEDIA_TYPES
    # WWW-Authenticate sent with a 401 (HTTP Basic senders).
    challenge: str | None = None
    # The answer to an OPTIONS handshake. A sender with one is authenticated before anything
    # else: an endpoint that answered the handshake for anyone could be subscribed by anyone.
    handshake: Callable[[HttpRequest, Delivery], HttpResponse] | None = None

    def receive(self, req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
        """Never raises; every outcome is a JSON response."""
        return run_receiver(
            self._steps,
            req,
            ctx,
            provider=self.provider,
            delivery_id=self.delivery_id(req),
            logger=self.logger,
            challenge=self.challenge,
        )

    def _steps(self, req: HttpRequest, ctx: ReceiverContext, delivery: Delivery) -> HttpResponse:
        if self.handshake is not None:
            self.authenticate(req, ctx)
            check_method(req, ("POST", "OPTIONS"))
            if req.method.upper() == "OPTIONS":
                return self.handshake(req, delivery)
        else:
            check_method(req)
        check_size(req, max_body_bytes(ctx.settings))
        media_type = check_media_type(req, self.media_types)
        if self.handshake is None:
            self.authenticate(req, ctx)
        if self.triage is not None and (early := self.triage(req, media_type, delivery)) is not None:
            return early if isinstance(early, HttpResponse) else early(ctx)
        return self.answer(self.parse(req.body, media_type), ctx, delivery)


def first_header(req: HttpRequest, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` present with a non-blank value, stripped."""
    for name in names:
        value = (req.header(name) or "").strip()
        if value:
            return value
    return None


def first_delivery_id(*names: str) -> Callable[[HttpRequest], str | None]:
    """A spec's ``delivery_id``: the first of the headers ``names`` that holds a safe id."""

    def delivery_id(req: HttpRequest) -> str | None:
        for name in names:
            if (found := safe_delivery_id(req.header(name))) is not None:
                return found
        return None

    return delivery_id


@dataclass(frozen=True)
class EventHeader:
    """A Git host's triage by event header: pushes go on, a ping is answered pong, the rest ignored.

    A delivery that is not acted on must still be well-formed (``well_formed``), as for pushes.
    ``others`` hands other events to their own triage (pull requests), as ``(event, triage)``.
    """

    names: tuple[str, ...]
    pushes: frozenset[str]
    ping: str | None = None
    well_formed: Callable[[bytes, str], object] = require_json_object
    others: tuple[tuple[str, Triage], ...] = ()

    def __call__(
        self, req: HttpRequest, media_type: str, delivery: Delivery
    ) -> HttpResponse | Deferred | None:
        event = first_header(req, self.names)
        if event is None:
            missing = f"{self.names[0]} is missing" if len(self.names) == 1 else None
            raise RequestRejected(400, "bad_request", missing or f"no event header ({', '.join(self.names)})")
        if event in self.pushes:
            return None
        for name, other in self.others:
            if event == name:
                return other(req, media_type, delivery)
        self.well_formed(req.body, media_type)
        if event == self.ping:
            return pong_response(delivery.correlation_id)
        return event_not_handled(delivery.correlation_id, event)


def ignored_response(correlation_id: str, *reasons: str) -> HttpResponse:
    """200: understood, authenticated, and deliberately not built."""
    return HttpResponse(
        200,
        {
            "correlation_id": correlation_id,
            "accepted": [],
            "ignored": [{"target": None, "reason": reason} for reason in reasons],
        },
    )


def event_not_handled(correlation_id: str, event: str) -> HttpResponse:
    return ignored_response(correlation_id, f"event {shown(event)} is not handled")


def pong_response(correlation_id: str) -> HttpResponse:
    return HttpResponse(
        200, {"correlation_id": correlation_id, "status": "pong", "accepted": [], "ignored": []}
    )

"""Replay: move dead-lettered build requests back to the queue, and say who did it and why.

Each chosen dead letter is re-sent as a copy with a new message id ``<request id>-r<N>`` (N is
one more than the replays it already went through): a re-send under the same id inside the
duplicate-detection window would be dropped silently. The copy's body is the request with
``attempt`` reset and ``replay_of`` naming the dead letter. Before the copy is sent, the ledger
record of the request is marked ``retrying`` with a ``replayed`` history entry (who, when, why),
so the dispatcher claims it again; a request with no record yet (refused before any claim, e.g.
an unknown target) gets one. Then the dead letter is completed. A copy refused again (the cause
is not fixed) settles the record ``failed`` once more, with the copy as its dead letter, whether
ACR refused the run or the request was refused before its claim (``claims.refuse_unclaimed``).
A crash between send and complete leaves the dead letter in place; replaying it again is
absorbed by the ledger.

Works on any queue adapter with ``peek`` and ``resend_dead_letters`` (local, Service Bus).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.dispatch.claims import new_record, reopened
from shared.dispatch.failures import replay_message_id
from shared.model.build_request import BuildRequest
from shared.model.durations import Duration
from shared.model.validation import problems
from shared.platform.ledger import ConflictError, Ledger, RunStatus
from shared.platform.logs import log_event
from shared.platform.queue.port import OutgoingMessage, ReceivedMessage

if TYPE_CHECKING:
    from shared.platform.http import HttpRequest, HttpResponse

logger = logging.getLogger("slipway.replay")

REPLAY_COUNT_PROPERTY = "replay_count"
# How many dead letters one replay looks at (the limit counts the ones replayed).
SCAN_LIMIT = 1000


@runtime_checkable
class DeadLetterQueue(Protocol):
    def peek(self, *, dead_letter: bool = False, max_count: int = 100) -> list[ReceivedMessage]: ...

    def resend_dead_letters(
        self, choose: Callable[[ReceivedMessage], OutgoingMessage | None], *, max_count: int = 1000
    ) -> list[tuple[ReceivedMessage, OutgoingMessage]]: ...


def refusal_reason(message: ReceivedMessage, failure_reason: str | None) -> str | None:
    """Why a dead letter is there: the reason Slipway recorded in the ledger, else the queue's own.

    The function trigger cannot dead-letter with a reason (see ``handlers/dispatch.py``): in
    Azure, and under ``slipway serve``, every refused request reaches the dead-letter queue as
    ``MaxDeliveryCountExceeded``, and only the ledger (``failure_reason``) says ``RunRejected``,
    ``UnknownTarget``... A dead letter with no ledger reason (not a BuildRequest, an id reused for
    another build, or one dead-lettered by another tool with its own reason) keeps the queue's.
    """
    return failure_reason or message.dead_letter_reason


@dataclass(frozen=True)
class ReplaySelection:
    """Which dead letters: every given filter must match. ``ids`` match message or request ids."""

    ids: tuple[str, ...] = ()
    reason: str | None = None  # substring of refusal_reason(), case-insensitive
    target: str | None = None
    since: timedelta | None = None  # enqueued no longer ago than this
    limit: int = 100

    def matches(
        self,
        message: ReceivedMessage,
        request: BuildRequest | None,
        now: datetime,
        failure_reason: Callable[[], str | None] = lambda: None,
    ) -> bool:
        """``failure_reason`` reads the ledger's reason; called last, only when ``reason`` is set."""
        if (
            self.ids
            and message.message_id not in self.ids
            and (request is None or request.id not in self.ids)
        ):
            return False
        if (
            self.target
            and (request.target if request else message.application_properties.get("target")) != self.target
        ):
            return False
        if self.since is not None and message.enqueued_time < now - self.since:
            return False
        return not (
            self.reason
            and self.reason.lower() not in (refusal_reason(message, failure_reason()) or "").lower()
        )


@dataclass
class ReplayItem:
    message_id: str
    new_message_id: str
    request_id: str | None
    target: str | None
    dead_letter_reason: str | None  # the queue's (in Azure: MaxDeliveryCountExceeded)
    failure_reason: str | None  # the ledger's: why Slipway refused the request
    ledger: str  # what happened to the ledger record


@dataclass
class ReplayReport:
    dry_run: bool
    actor: str
    note: str
    items: list[ReplayItem] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "actor": self.actor,
            "note": self.note,
            "replayed": [asdict(i) for i in self.items],
        }


def _request(message: ReceivedMessage) -> BuildRequest | None:
    try:
        return BuildRequest.from_json(message.body)
    except (ValidationError, ValueError):
        return None


def _replay_number(message: ReceivedMessage) -> int:
    try:
        return int(message.application_properties.get(REPLAY_COUNT_PROPERTY, 0)) + 1
    except (TypeError, ValueError):
        return 1


def _copy(message: ReceivedMessage, request: BuildRequest | None, actor: str) -> OutgoingMessage:
    number = _replay_number(message)
    properties = {**message.application_properties, REPLAY_COUNT_PROPERTY: number, "replayed_by": actor[:100]}
    if request is None:  # not a BuildRequest: re-send the body as it is (the dispatcher will say why)
        return OutgoingMessage(
            message_id=replay_message_id(message.message_id[:100], number),
            body=message.body,
            content_type=message.content_type or "application/json",
            subject="replay",
            correlation_id=message.correlation_id,
            application_properties=properties,
        )
    replayed = request.model_copy(update={"attempt": 0, "replay_of": message.message_id})
    return OutgoingMessage(
        message_id=replay_message_id(request.id, number),
        body=replayed.to_json().encode(),
        subject="replay",
        correlation_id=request.trigger.correlation_id,
        application_properties={**request.application_properties(), **properties},
    )


class Replayer:
    def __init__(self, queue: DeadLetterQueue, ledger: Ledger, *, clock: Callable[[], datetime]) -> None:
        self._queue = queue
        self._ledger = ledger
        self._clock = clock

    def replay(
        self,
        selection: ReplaySelection,
        *,
        actor: str,
        note: str,
        dry_run: bool,
        progress: Callable[[int], None] | None = None,
    ) -> ReplayReport:
        """Replay what ``selection`` picks; ``progress`` hears how many so far after each one."""
        report = ReplayReport(dry_run=dry_run, actor=actor, note=note)
        now = self._clock()

        def choose(message: ReceivedMessage) -> OutgoingMessage | None:
            if len(report.items) >= selection.limit:
                return None
            request = _request(message)
            looked_up: list[str | None] = []

            def failure_reason() -> str | None:
                if not looked_up:
                    looked_up.append(self._failure_reason(request))
                return looked_up[0]

            if not selection.matches(message, request, now, failure_reason):
                return None
            copy = _copy(message, request, actor)
            reason = refusal_reason(message, failure_reason())
            ledger = "not a BuildRequest: no ledger record" if request is None else "would be marked retrying"
            if not dry_run and request is not None:
                ledger = self._record(request, message, reason, copy.message_id, actor, note, now)
            report.items.append(
                ReplayItem(
                    message_id=message.message_id,
                    new_message_id=copy.message_id,
                    request_id=request.id if request else None,
                    target=request.target if request else None,
                    dead_letter_reason=message.dead_letter_reason,
                    failure_reason=failure_reason(),
                    ledger=ledger,
                )
            )
            if progress is not None:
                progress(len(report.items))
            return copy

        if dry_run:
            for message in self._queue.peek(dead_letter=True, max_count=SCAN_LIMIT):
                choose(message)
        else:
            self._queue.resend_dead_letters(choose, max_count=SCAN_LIMIT)
        for item in report.items:
            log_event(
                logger,
                "request_replayed" if not dry_run else "request_replay_planned",
                request_id=item.request_id,
                message_id=item.message_id,
                new_message_id=item.new_message_id,
                actor=actor,
                note=note,
            )
        return report

    def _failure_reason(self, request: BuildRequest | None) -> str | None:
        """The reason the ledger holds for ``request`` (None: no request, no record, or no reason)."""
        if request is None:
            return None
        try:
            found = self._ledger.get(request.id)
        except ValidationError:  # an unreadable record has no reason to offer; the queue's stands
            return None
        return found[0].failure_reason if found is not None else None

    def _record(
        self,
        request: BuildRequest,
        message: ReceivedMessage,
        reason: str | None,
        new_id: str,
        actor: str,
        note: str,
        now: datetime,
    ) -> str:
        """Mark the request claimable again and note who replayed it, when and why."""
        detail = (
            f"by {actor}: {note} (dead letter {message.message_id}, "
            f"{reason or 'no reason'}; sent as {new_id})"
        )
        for _ in range(5):
            found = self._ledger.get(request.id)
            if found is None:
                if self._ledger.create(new_record(request, RunStatus.RETRYING, now, "replayed", detail)):
                    return "created, retrying"
                continue
            existing, etag = found
            settled = existing.status in (RunStatus.DISPATCHED, RunStatus.SUPERSEDED, RunStatus.CANCELLED)
            updated = (
                existing.with_event(now, "replayed", detail) if settled else reopened(existing, now, detail)
            )
            try:
                self._ledger.replace(updated, etag)
            except ConflictError:
                continue
            return (
                f"already {existing.status.value}: the replay completes as a duplicate"
                if settled
                else (f"{existing.status.value} -> retrying")
            )
        return "ledger busy: not recorded"


class ReplayRequest(BaseModel):
    """The ops endpoint's JSON body (the CLI's options)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(default_factory=list)
    reason: str | None = Field(
        default=None,
        description="Text in the reason Slipway recorded in the ledger when it refused the request "
        "(RunRejected, UnknownTarget...), or in the dead letter's own reason when the ledger has none.",
    )
    target: str | None = None
    since: Duration | None = None
    limit: int = Field(default=100, ge=1, le=SCAN_LIMIT)
    note: str = "replayed through the ops endpoint"
    dry_run: bool = False


# A replay request is a few ids and filters: anything bigger is not one.
MAX_REPLAY_BODY_BYTES = 64 * 1024


# App Service authentication ("Easy Auth") puts the signed-in caller in X-MS-CLIENT-PRINCIPAL-*
# headers, and "external requests aren't allowed to set these headers, so they're present only if
# set by App Service" (Learn, "Work with user identities in Azure App Service authentication",
# https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities), which
# holds only while that module is on. The platform says so with WEBSITE_AUTH_ENABLED=True
# (AzureAD/microsoft-identity-web, AppServicesAuthenticationInformation.cs). Without it, the
# header is whatever the caller typed, so the only identity known is the master key itself.
EASY_AUTH_SETTING = "WEBSITE_AUTH_ENABLED"
_PRINCIPAL_HEADER = "x-ms-client-principal-name"
_MASTER_KEY_ACTOR = "http:master-key"


def authenticated_actor(req: HttpRequest, settings: Mapping[str, str]) -> str:
    """Who called the ops endpoint, as far as the platform vouches for it (recorded in the ledger)."""
    if (settings.get(EASY_AUTH_SETTING) or "").strip().lower() != "true":
        return _MASTER_KEY_ACTOR
    name = "".join(c for c in (req.header(_PRINCIPAL_HEADER) or "") if c.isprintable()).strip()[:100]
    return f"http:{name}" if name else _MASTER_KEY_ACTOR


@dataclass(frozen=True)
class ReplaySources:
    """What the ops endpoint replays with. The adapters are built on first use, once the request
    is known to be valid: a malformed request never opens the queue or the ledger."""

    queue: Callable[[], object]  # replays only if it is a DeadLetterQueue
    ledger: Callable[[], Ledger]
    settings: Mapping[str, str]  # EASY_AUTH_SETTING: whether the caller's principal header holds


def receive_replay(req: HttpRequest, sources: ReplaySources) -> HttpResponse:
    """``POST /api/ops/replay``; the host has checked the master key before this runs.

    The same guards as the webhooks: method, size, content type, then the body; every outcome a
    JSON answer, 400 for the caller's mistakes, 503 when the queue cannot be reached.
    """
    from datetime import UTC

    from shared.platform.http import HttpResponse, RequestRejected, check_media_type, check_method, check_size
    from shared.platform.queue.port import QueueError

    try:
        check_method(req)
        check_size(req, MAX_REPLAY_BODY_BYTES)
        if req.body:
            check_media_type(req, ("application/json",))
        try:
            options = ReplayRequest.model_validate_json(req.body or b"{}")
        except ValidationError as exc:
            raise RequestRejected(400, "invalid_request", problems(exc)) from None
    except RequestRejected as rejected:
        return rejected.response()
    selection = ReplaySelection(
        ids=tuple(options.ids),
        reason=options.reason,
        target=options.target,
        since=options.since,
        limit=options.limit,
    )
    queue = sources.queue()
    if not isinstance(queue, DeadLetterQueue):
        return HttpResponse(503, {"error": "queue_unavailable", "reason": "this queue cannot replay"})
    replayer = Replayer(queue, sources.ledger(), clock=lambda: datetime.now(UTC))
    actor = authenticated_actor(req, sources.settings)
    try:
        report = replayer.replay(selection, actor=actor, note=options.note, dry_run=options.dry_run)
    except QueueError as exc:
        return HttpResponse(503, {"error": "queue_unavailable", "reason": str(exc)}, {"Retry-After": "30"})
    return HttpResponse(200, report.as_json())

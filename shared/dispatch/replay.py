"""Replay: move dead-lettered build requests back to the queue, and say who did it and why.

A replay works on requests (``shared.dispatch.dead_letters``): the dead letters are peeked and
grouped by request, and the ledger, read once per request before anything changes, decides for
all of a request's dead letters. Already run or needing no run (``dispatched``, ``superseded``,
``cancelled``): each is *settled*, completed with nothing sent and noted ("already dispatched as
run X") in the log and the record's history, whatever ``reason`` says (``ids``, ``target`` and
``since`` still bound what is looked at). Selected (one of its dead letters matches): its first
dead letter is re-sent, and its others are settled once that copy is sent; one copy is enough,
the ledger would make a second a duplicate, and one left behind would stay forever. Otherwise
they stay. So a request that has not run is always in the queue or its dead-letter queue.

The copy has a new message id ``<request id>-r<N>`` (N: one more than the replays any of its
dead letters went through): a re-send under the same id inside the duplicate-detection window
would be dropped silently. Its body is the request with ``attempt`` reset and ``replay_of``
naming the dead letter. Before it is sent, the ledger record is marked ``retrying`` with a
``replayed`` history entry (who, when, why), so the dispatcher claims it again; a request with no
record yet (refused before any claim, e.g. an unknown target) gets one. Then the dead letter is
completed. A copy refused again (the cause is not fixed) settles the record ``failed`` once more,
with the copy as its dead letter, whether ACR refused the run or the request was refused before
its claim (``claims.refuse_unclaimed``). A crash between send and complete leaves the dead letter
in place; replaying it again is absorbed by the ledger.

Works on any queue adapter with ``peek`` and ``settle_dead_letters`` (local, Service Bus).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.dispatch.claims import build_fingerprint, new_record, reopened
from shared.dispatch.dead_letters import (
    ALREADY_SETTLED,
    REPLAY_COUNT_PROPERTY,
    DeadRequest,
    Plan,
    by_request,
)
from shared.dispatch.failures import replay_message_id
from shared.model.build_request import BuildRequest
from shared.model.durations import Duration
from shared.model.validation import problems
from shared.platform.ledger import ConflictError, Ledger, LedgerRecord, RunStatus
from shared.platform.logs import log_event
from shared.platform.queue.port import DeadLetterAction, DeadLetterChoice, OutgoingMessage, ReceivedMessage

if TYPE_CHECKING:
    from shared.platform.http import HttpRequest, HttpResponse

logger = logging.getLogger("slipway.replay")

# How many dead letters one replay looks at (the limit counts the requests replayed).
SCAN_LIMIT = 1000


@runtime_checkable
class DeadLetterQueue(Protocol):
    def peek(self, *, dead_letter: bool = False, max_count: int = 100) -> list[ReceivedMessage]: ...

    def settle_dead_letters(
        self, choose: Callable[[ReceivedMessage], DeadLetterChoice], *, max_count: int = 1000
    ) -> list[tuple[ReceivedMessage, OutgoingMessage | None]]: ...


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
    """Which dead letters: every given filter must match. ``ids`` match message or request ids.

    ``ids``, ``target`` and ``since`` say which dead letters are looked at (``in_scope``),
    ``reason`` which of those are replayed; a request that already ran is settled whatever it says.
    """

    ids: tuple[str, ...] = ()
    reason: str | None = None  # substring of refusal_reason(), case-insensitive
    target: str | None = None
    since: timedelta | None = None  # enqueued no longer ago than this
    limit: int = 100  # requests replayed

    def in_scope(self, message: ReceivedMessage, request: BuildRequest | None, now: datetime) -> bool:
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
        return self.since is None or message.enqueued_time >= now - self.since

    def reason_matches(self, message: ReceivedMessage, failure_reason: str | None) -> bool:
        """``failure_reason``: the ledger's for the dead letter's request (None: it has none)."""
        if not self.reason:
            return True
        return self.reason.lower() in (refusal_reason(message, failure_reason) or "").lower()


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
class SettledItem:
    """A dead letter completed with no copy sent: its request needs nothing more (``note``: why)."""

    message_id: str
    request_id: str | None
    target: str | None
    dead_letter_reason: str | None
    note: str


@dataclass
class ReplayReport:
    dry_run: bool
    actor: str
    note: str
    items: list[ReplayItem] = field(default_factory=list)
    settled: list[SettledItem] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "actor": self.actor,
            "note": self.note,
            "replayed": [asdict(i) for i in self.items],
            "settled": [asdict(s) for s in self.settled],
        }

    def add_replayed(
        self, dead: DeadRequest, message: ReceivedMessage, copy: OutgoingMessage, ledger: str
    ) -> None:
        self.items.append(
            ReplayItem(
                message_id=message.message_id,
                new_message_id=copy.message_id,
                request_id=dead.request_id,
                target=dead.target,
                dead_letter_reason=message.dead_letter_reason,
                failure_reason=dead.failure_reason,
                ledger=ledger,
            )
        )

    def add_settled(self, dead: DeadRequest, message: ReceivedMessage, note: str) -> None:
        self.settled.append(
            SettledItem(message.message_id, dead.request_id, dead.target, message.dead_letter_reason, note)
        )


def _copy(message: ReceivedMessage, request: BuildRequest | None, actor: str, number: int) -> OutgoingMessage:
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


NO_RECORD = "not a BuildRequest: no ledger record"


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
        """Replay what ``selection`` picks, settle what needs no replay; ``progress`` hears how many
        dead letters so far after each one."""
        report = ReplayReport(dry_run=dry_run, actor=actor, note=note)
        now = self._clock()
        plan = self._plan(selection, now)

        def advance() -> None:
            if progress is not None:
                progress(len(report.items) + len(report.settled))

        if dry_run:
            for dead in plan:
                self._report_plan(dead, report, advance)
        else:
            by_sequence = {m.sequence_number: dead for dead in plan for m in dead.messages}

            def choose(message: ReceivedMessage) -> DeadLetterChoice:
                dead = by_sequence.get(message.sequence_number)
                if dead is None or not dead.holds(message):
                    return None  # dead-lettered since the plan was made: the next replay sees it
                choice = self._act(dead, message, report, now)
                advance()
                return choice

            self._queue.settle_dead_letters(choose, max_count=SCAN_LIMIT)
        _log(report)
        return report

    def _plan(self, selection: ReplaySelection, now: datetime) -> list[DeadRequest]:
        """The requests with dead letters in scope, and what becomes of each one's."""
        plan: list[DeadRequest] = []
        replays = 0
        for dead in by_request(self._queue.peek(dead_letter=True, max_count=SCAN_LIMIT)):
            if not any(selection.in_scope(m, dead.request, now) for m in dead.messages):
                continue
            dead.record = self._record_of(dead.request)
            if dead.record is not None and dead.record.status in ALREADY_SETTLED:
                dead.settle(dead.record)
            elif replays < selection.limit and any(
                selection.reason_matches(m, dead.failure_reason) for m in dead.messages
            ):
                dead.plan = Plan.REPLAY
                replays += 1
            else:
                continue
            plan.append(dead)
        return plan

    def _record_of(self, request: BuildRequest | None) -> LedgerRecord | None:
        """The ledger record of ``request``'s build (None: no request, no record, an unreadable one,
        or another build's under a reused id, whose reason is not this dead letter's)."""
        if request is None:
            return None
        try:
            found = self._ledger.get(request.id)
        except ValidationError:  # an unreadable record has no reason to offer; the queue's stands
            return None
        if found is None or found[0].payload_hash != build_fingerprint(request):
            return None
        return found[0]

    def _report_plan(self, dead: DeadRequest, report: ReplayReport, advance: Callable[[], None]) -> None:
        """A dry run: what the plan would do with ``dead``'s dead letters."""
        messages = dead.messages
        if dead.plan is Plan.REPLAY:
            first, *messages = messages
            copy = _copy(first, dead.request, report.actor, dead.replay_number)
            report.add_replayed(
                dead, first, copy, NO_RECORD if dead.request is None else "would be marked retrying"
            )
            advance()
            dead.note = dead.sibling_note((first.message_id, copy.message_id))
        for message in messages:
            report.add_settled(dead, message, dead.note)
            advance()

    def _act(
        self, dead: DeadRequest, message: ReceivedMessage, report: ReplayReport, now: datetime
    ) -> DeadLetterChoice:
        """What becomes of one locked dead letter of ``dead``; the ledger is written first."""
        if dead.plan is Plan.REPLAY and dead.sent is not None:  # the request's copy is sent
            report.add_settled(dead, message, dead.sibling_note(dead.sent))
            return DeadLetterAction.COMPLETE
        if dead.plan is Plan.REPLAY:
            copy = _copy(message, dead.request, report.actor, dead.replay_number)
            ledger, ran = NO_RECORD, None
            if dead.request is not None:
                ledger, ran = self._reopen(dead, message, copy.message_id, report, now)
            if ran is None:
                dead.sent = (message.message_id, copy.message_id)
                report.add_replayed(dead, message, copy, ledger)
                return copy
            dead.settle(ran)  # it ran since the plan was made
        if not dead.noted:
            dead.noted = True
            self._note_settled(dead, report, now)
        report.add_settled(dead, message, dead.note)
        return DeadLetterAction.COMPLETE

    def _reopen(
        self, dead: DeadRequest, message: ReceivedMessage, new_id: str, report: ReplayReport, now: datetime
    ) -> tuple[str, LedgerRecord | None]:
        """Mark the request claimable again, noting who replayed it, when and why; what happened to
        the record. Or the record, untouched, when the request has run since the plan was made."""
        assert dead.request is not None
        request = dead.request
        reason = refusal_reason(message, dead.failure_reason)
        others = ", ".join(m.message_id for m in dead.messages if m.message_id != message.message_id)
        detail = (
            f"by {report.actor}: {report.note} (dead letter {message.message_id}, {reason or 'no reason'}; "
            f"sent as {new_id}{f'; its other dead letters {others} are completed' if others else ''})"
        )
        for _ in range(5):
            found = self._ledger.get(request.id)
            if found is None:
                if self._ledger.create(new_record(request, RunStatus.RETRYING, now, "replayed", detail)):
                    return "created, retrying", None
                continue
            existing, etag = found
            if existing.payload_hash != build_fingerprint(request):
                return "another build's record (IdConflict): left as it is", None
            if existing.status in ALREADY_SETTLED:
                return "", existing
            try:
                self._ledger.replace(reopened(existing, now, detail), etag)
            except ConflictError:
                continue
            return f"{existing.status.value} -> retrying", None
        return "ledger busy: not recorded", None

    def _note_settled(self, dead: DeadRequest, report: ReplayReport, now: datetime) -> None:
        """Best effort: the record's history says who settled which dead letters, and why."""
        if dead.request is None:
            return
        ids = ", ".join(m.message_id for m in dead.messages)
        detail = (
            f"by {report.actor}: {report.note} (dead letters {ids}: {dead.note}; completed, not replayed)"
        )
        for _ in range(5):
            found = self._ledger.get(dead.request.id)
            if found is None:
                return
            try:
                self._ledger.replace(found[0].with_event(now, "dead_letters_settled", detail), found[1])
            except ConflictError:
                continue
            return


def _log(report: ReplayReport) -> None:
    """One line a dead letter: replayed (with its copy's id) or settled (with why)."""
    done = not report.dry_run
    replayed = "request_replayed" if done else "request_replay_planned"
    settled = "dead_letter_settled" if done else "dead_letter_settle_planned"
    lines: list[tuple[str, str | None, str, str | None, str | None]]
    lines = [(replayed, i.request_id, i.message_id, i.new_message_id, None) for i in report.items]
    lines += [(settled, s.request_id, s.message_id, None, s.note) for s in report.settled]
    for event, request_id, message_id, new_message_id, why in lines:
        log_event(
            logger,
            event,
            request_id=request_id,
            message_id=message_id,
            new_message_id=new_message_id,  # None (settled): left out of the line
            settled=why,
            actor=report.actor,
            note=report.note,
        )


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

"""The dead-letter queue read by request, for replay: which dead letters stand for one request,
and whether the ledger says that request still needs a run.

One request can sit in the dead-letter queue more than once: a retry copy ``<id>-a<N>`` and the
original its dying host never completed can both be refused (``DispatchInterrupted``) until
dead-lettered. Replay decides per request, from one reading of the ledger taken before it changes
anything, so the copies are handled alike: replaying one and leaving the other behind would keep
a dead letter forever for a request that runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import ValidationError

from shared.dispatch.claims import build_fingerprint
from shared.model.build_request import BuildRequest
from shared.platform.ledger import LedgerRecord, RunStatus
from shared.platform.queue.port import ReceivedMessage

REPLAY_COUNT_PROPERTY = "replay_count"
# Requests the dispatcher completes every further copy of without a run (``Claims.settled``):
# their dead letters stand for nothing left to do.
ALREADY_SETTLED = (RunStatus.DISPATCHED, RunStatus.SUPERSEDED, RunStatus.CANCELLED)


class Plan(StrEnum):
    """What a replay does with a request's dead letters."""

    LEAVE = "leave"  # not selected
    REPLAY = "replay"  # one copy sent; the request's other dead letters settled once it is
    SETTLE = "settle"  # completed, nothing sent: the request already ran, or needs no run


def settled_note(record: LedgerRecord) -> str:
    """Why a dead letter of ``record``'s request needs no replay: "already dispatched as run X"."""
    if record.status is RunStatus.DISPATCHED:
        return f"already dispatched as run {record.run_id}"
    return f"already {record.status.value} ({f'run {record.run_id}' if record.run_id else 'no run'})"


def parse_request(message: ReceivedMessage) -> BuildRequest | None:
    try:
        return BuildRequest.from_json(message.body)
    except (ValidationError, ValueError):
        return None


def replay_number(message: ReceivedMessage) -> int:
    """The number of this dead letter's next replay: one more than the replays it went through."""
    try:
        return int(message.application_properties.get(REPLAY_COUNT_PROPERTY, 0)) + 1
    except (TypeError, ValueError):
        return 1


@dataclass
class DeadRequest:
    """The dead letters of one request (one build: the same id and fingerprint), in queue order.

    A dead letter that is not a BuildRequest stands alone. ``record`` is the request's ledger
    record when it is this build's (under a reused id it is another build's: ``IdConflict``).
    """

    request: BuildRequest | None
    messages: list[ReceivedMessage] = field(default_factory=list)
    record: LedgerRecord | None = None
    plan: Plan = Plan.LEAVE
    note: str = ""  # SETTLE: why (settled_note)
    sent: tuple[str, str] | None = None  # REPLAY, once sent: (the dead letter, its copy's id)
    noted: bool = False  # SETTLE: the ledger's history says so

    @property
    def request_id(self) -> str | None:
        return self.request.id if self.request else None

    @property
    def target(self) -> str | None:
        return self.request.target if self.request else None

    @property
    def failure_reason(self) -> str | None:
        return self.record.failure_reason if self.record else None

    @property
    def replay_number(self) -> int:
        """Past every replay of any of its dead letters, so the copy's id is new."""
        return max(replay_number(m) for m in self.messages)

    def holds(self, message: ReceivedMessage) -> bool:
        return any(
            (m.sequence_number, m.message_id) == (message.sequence_number, message.message_id)
            for m in self.messages
        )

    def settle(self, record: LedgerRecord) -> None:
        self.plan, self.note = Plan.SETTLE, settled_note(record)

    def sibling_note(self, sent: tuple[str, str]) -> str:
        """Why another dead letter of a replayed request is completed rather than replayed too."""
        return f"same request as dead letter {sent[0]}, replayed as {sent[1]}"


def by_request(messages: Iterable[ReceivedMessage]) -> list[DeadRequest]:
    """``messages`` grouped by request, in the order each request first appears."""
    groups: dict[tuple[str, str], DeadRequest] = {}
    for message in messages:
        request = parse_request(message)
        key = (request.id, build_fingerprint(request)) if request else ("", str(message.sequence_number))
        groups.setdefault(key, DeadRequest(request)).messages.append(message)
    return list(groups.values())

"""What Slipway knows of a pull request's life per target: open or closed, since when, and when a
fork's trust label was last removed (issue #20.6).

The close of a pull request must cancel its pending and running builds and expire its cache, but
the webhook that reports it should stay cheap and the cancellation must not be best effort. So the
receiver only records the close, durably, as one small document per target and request in the
state store (``pull-requests/<target>/pr-<number>.json``), and answers; the readers act on it:

* the dispatcher settles any pull-request request of a closed request as ``cancelled`` before it
  claims it (``shared.dispatch.pr_closed``), whichever copy or redelivery brings it;
* the reconcile timer cancels a running build of a closed request (the same module), once per
  tick until ACR says the run ended;
* the cache collector expires the request's cache (``<target>-pr-<number>``).

A request received before the last close is of that closed request, even once the request is
reopened (the reopening queues a build of its own). ``closes`` counts the closes recorded: it is
part of the id of every build asked for after a reopening, so a reopened request whose head is the
head of the build its close cancelled builds again instead of being taken for that build (whose
ledger record says ``cancelled``), while the same delivery retried still has the same id. A close
delivery already applied (by its delivery id) changes nothing, so a retried close that arrives
after a reopening does not close the request again. The document is never deleted: it is what
keeps the ids of a reopened request apart (a few hundred bytes per request ever closed).

The removal of a fork's trust label (``forks: label``) is recorded the same way and read by the
same readers: every fork build of the request received before the last removal
(``withdrawn_at``) is cancelled, pending or running. ``withdrawals`` counts the removals: it is
part of the id of every fork build asked for after one, so the label added again to the same head
builds again; a removal delivery already applied changes nothing. A close outranks a removal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.platform.state import StateStore, update, validate_key

KEY_PREFIX = "pull-requests"
# Close and label-removal deliveries remembered per request: a retry comes soon after the first.
REMEMBERED_DELIVERIES = 10


def state_key(target: str, number: int) -> str:
    return validate_key(f"{KEY_PREFIX}/{target}/pr-{number}.json")


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class PullRequestState:
    """One target's view of one pull request; ``closed_at`` is the last close, even once reopened."""

    target: str
    number: int
    closed: bool = False
    closed_at: datetime | None = None
    head: str | None = None  # the head commit when it was closed, when the host said it in full
    merged: bool = False
    closes: int = 0
    reopened_at: datetime | None = None
    deliveries: tuple[str, ...] = field(default_factory=tuple)
    withdrawals: int = 0  # removals of a fork's trust label recorded
    withdrawn_at: datetime | None = None
    withdrawn_label: str | None = None

    @classmethod
    def from_document(cls, value: Mapping[str, Any]) -> PullRequestState:
        return cls(
            target=str(value["target"]),
            number=int(value["number"]),
            closed=bool(value.get("closed", False)),
            closed_at=_time(value.get("closed_at")),
            head=value.get("head"),
            merged=bool(value.get("merged", False)),
            closes=int(value.get("closes", 0)),
            reopened_at=_time(value.get("reopened_at")),
            deliveries=tuple(str(d) for d in value.get("deliveries") or ()),
            withdrawals=int(value.get("withdrawals", 0)),
            withdrawn_at=_time(value.get("withdrawn_at")),
            withdrawn_label=value.get("withdrawn_label"),
        )

    def as_document(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "number": self.number,
            "closed": self.closed,
            "closed_at": None if self.closed_at is None else self.closed_at.isoformat(),
            "head": self.head,
            "merged": self.merged,
            "closes": self.closes,
            "reopened_at": None if self.reopened_at is None else self.reopened_at.isoformat(),
            "deliveries": list(self.deliveries),
            "withdrawals": self.withdrawals,
            "withdrawn_at": None if self.withdrawn_at is None else self.withdrawn_at.isoformat(),
            "withdrawn_label": self.withdrawn_label,
        }

    def closed_for(self, received_at: datetime) -> str | None:
        """Why a build asked for at ``received_at`` is of a closed request; None when it is not."""
        if self.closed_at is None:
            return None
        if self.closed or received_at <= self.closed_at:
            return f"pull request #{self.number} was closed at {self.closed_at.isoformat()}"
        return None

    def withdrawn_for(self, received_at: datetime, *, fork: bool) -> str | None:
        """Why a fork's build asked for at ``received_at`` lost its trust; None when it did not."""
        if not fork or self.withdrawn_at is None or received_at > self.withdrawn_at:
            return None
        return f"trust withdrawn: label {self.withdrawn_label!r} removed at {self.withdrawn_at.isoformat()}"


def read_state(store: StateStore, target: str, number: int) -> PullRequestState | None:
    """The document, or None when the request was never closed nor its label removed."""
    found = store.get(state_key(target, number))
    return None if found is None else PullRequestState.from_document(found.value)


def record_close(
    store: StateStore,
    target: str,
    number: int,
    *,
    at: datetime,
    head: str | None,
    merged: bool,
    delivery_id: str | None,
) -> PullRequestState:
    """Record that the request closed at ``at``; a close already recorded (closed, or the same
    delivery) changes nothing. Raises ``StateConflict`` (or the store's error) when it cannot."""

    def close(known: PullRequestState, deliveries: tuple[str, ...]) -> PullRequestState | None:
        if known.closed:
            return None
        return replace(
            known,
            closed=True,
            closed_at=at if known.closed_at is None else max(at, known.closed_at),
            head=head,
            merged=merged,
            closes=known.closes + 1,
            deliveries=deliveries,
        )

    return _record_delivery(store, target, number, delivery_id, close)


def record_open(store: StateStore, target: str, number: int, *, at: datetime) -> PullRequestState | None:
    """A sign of life at ``at`` (opened, reopened, a new head): a request closed before is open again.

    Reads only, unless the request is recorded closed before ``at``; None when nothing is recorded.
    """
    key = state_key(target, number)
    result: list[PullRequestState | None] = [None]

    def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
        known = None if current is None else PullRequestState.from_document(current)
        result[0] = known
        if known is None or not known.closed or known.closed_at is None or at <= known.closed_at:
            return None
        reopened = replace(known, closed=False, reopened_at=at)
        result[0] = reopened
        return reopened.as_document()

    update(store, key, change)
    return result[0]


def record_withdrawal(
    store: StateStore, target: str, number: int, *, at: datetime, label: str, delivery_id: str | None
) -> PullRequestState:
    """Record that a fork's trust ``label`` was removed at ``at``; the same delivery again changes
    nothing. Raises ``StateConflict`` (or the store's error) when it cannot."""

    def withdraw(known: PullRequestState, deliveries: tuple[str, ...]) -> PullRequestState:
        return replace(
            known,
            withdrawals=known.withdrawals + 1,
            withdrawn_at=at if known.withdrawn_at is None else max(at, known.withdrawn_at),
            withdrawn_label=label,
            deliveries=deliveries,
        )

    return _record_delivery(store, target, number, delivery_id, withdraw)


def _record_delivery(
    store: StateStore,
    target: str,
    number: int,
    delivery_id: str | None,
    apply: Callable[[PullRequestState, tuple[str, ...]], PullRequestState | None],
) -> PullRequestState:
    """One conditional update of the request's document by a delivery: a delivery already recorded
    changes nothing, nor does ``apply`` returning None; ``apply`` gets the deliveries to keep."""
    result: list[PullRequestState] = []

    def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
        result.clear()
        known = (
            PullRequestState(target, number) if current is None else PullRequestState.from_document(current)
        )
        result.append(known)
        if delivery_id is not None and delivery_id in known.deliveries:
            return None
        deliveries = known.deliveries if delivery_id is None else (*known.deliveries, delivery_id)
        changed = apply(known, deliveries[-REMEMBERED_DELIVERIES:])
        if changed is None:
            return None
        result[0] = changed
        return changed.as_document()

    update(store, state_key(target, number), change)
    return result[0]

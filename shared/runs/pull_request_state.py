"""What Slipway knows of a pull request's life per target: open or closed, since when, and when a
fork's trust label was last granted and removed (issue #20.6).

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

**Trust is recorded too** (``record_trust``): each delivery that trusts a fork (a ``labeled``
event that adds the label) is one conditional update, keyed by its delivery id, that records the
*epoch* it trusts under (the ``withdrawals`` recorded when it came: the ``trust-<n>`` of its id).
Without it a trusting delivery delivered again after the removal (a host's retry, a manual
"Redeliver", which keeps GitHub's ``X-GitHub-Delivery``) would trust the fork again under the new
epoch: only removals were remembered. The verdict, in order:

1. the request is closed: nothing recorded (the caller refuses it as closed);
2. the delivery is recorded: under the current epoch it is the same trust again (an at-least-once
   duplicate before any removal): the same epoch, so the same request id, and nothing written;
   under an older epoch a removal came after it: refused;
3. the host's own time of the event (``event_at``: the payload's ``updated_at``, which a
   redelivery keeps and which a label change moves) is not after the host's time of the last
   removal (``withdrawn_event_at``): the delivery is of a label added before that removal (a late
   or redelivered one whose id was forgotten or differs): refused. Equal times are refused too
   (the payloads give seconds): a maintainer whose label was refused adds it again;
4. otherwise it is a new trust: recorded under the current epoch.

Why this order is sound. Delivery ids are not ordered on every host (GitHub's and Gitea's are
random UUIDs), and ``received_at`` is when *we* got a delivery, which a redelivery moves. The
payload's ``updated_at`` is the host's order of the request's changes; where a host leaves it out,
the order the document records is used: a delivery id already seen says which epoch it came
under, and an unknown one is taken as new (the only case a late, never-seen, undated label
delivery could trust again; GitHub, GitLab and Gitea all date it). Every update is conditional
(``shared.platform.state.update``: read, change, write if unchanged, retry), so trusts and
removals are totally ordered in the document. A removal covers every trust recorded before it:
``withdrawn_at`` is at least that trust's ``trusted_at`` (the ``received_at`` of its build), so
the dispatcher cancels that build even when the removal was received first by a clock that runs
behind. A trust recorded after a removal has its build received after ``withdrawn_at``
(``trusted_received_at``), so a removal never cancels a trust that came after it. A removal is
always recorded, even one delivered late: the safe side (the maintainer labels again).

``trusted`` says whether a trust was recorded since the last removal. A removal the host does not
spell out (Gitea's ``label_updated``, which carries only the new label set, and ``label_cleared``)
is recorded only then (``only_if_trusted``): otherwise any label change on a fork request without
the label would count as a removal and move the epoch of the next trust's id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.platform.state import StateStore, update, validate_key

KEY_PREFIX = "pull-requests"
# Close and label-removal deliveries remembered per request: a retry comes soon after the first.
REMEMBERED_DELIVERIES = 10
# Trusting label deliveries remembered per request, with the epoch each came under. One forgotten
# is still refused by its payload time when a removal came after it (see above).
REMEMBERED_TRUSTS = 20
# The least step of time: a trust recorded after a removal is received after it.
_TICK = timedelta(microseconds=1)


def state_key(target: str, number: int) -> str:
    return validate_key(f"{KEY_PREFIX}/{target}/pr-{number}.json")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


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
    withdrawn_event_at: datetime | None = None  # the host's time of the last removal, when dated
    trusts: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # (delivery, epoch) recorded
    trust_epoch: int | None = None  # the epoch of the last trust recorded
    trusted_at: datetime | None = None  # when the build of the last trust recorded was received

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
            withdrawn_event_at=_time(value.get("withdrawn_event_at")),
            trusts=tuple((str(d), int(n)) for d, n in (value.get("trusts") or {}).items()),
            trust_epoch=None if value.get("trust_epoch") is None else int(value["trust_epoch"]),
            trusted_at=_time(value.get("trusted_at")),
        )

    def as_document(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "number": self.number,
            "closed": self.closed,
            "closed_at": _iso(self.closed_at),
            "head": self.head,
            "merged": self.merged,
            "closes": self.closes,
            "reopened_at": _iso(self.reopened_at),
            "deliveries": list(self.deliveries),
            "withdrawals": self.withdrawals,
            "withdrawn_at": _iso(self.withdrawn_at),
            "withdrawn_label": self.withdrawn_label,
            "withdrawn_event_at": _iso(self.withdrawn_event_at),
            "trusts": dict(self.trusts),
            "trust_epoch": self.trust_epoch,
            "trusted_at": _iso(self.trusted_at),
        }

    @property
    def trusted(self) -> bool:
        """A trust was recorded since the last removal (or ever, when none was removed)."""
        return self.trust_epoch is not None and self.trust_epoch == self.withdrawals

    def trusted_received_at(self, received_at: datetime) -> datetime:
        """When a build trusted now counts as received: after the last removal recorded, so that
        removal (received first by a clock that runs ahead, say) never cancels it."""
        if self.withdrawn_at is None or received_at > self.withdrawn_at:
            return received_at
        return self.withdrawn_at + _TICK

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
    """The document, or None when the request was never closed, nor a fork's label added or removed."""
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
    store: StateStore,
    target: str,
    number: int,
    *,
    at: datetime,
    label: str,
    delivery_id: str | None,
    event_at: datetime | None = None,
    only_if_trusted: bool = False,
) -> PullRequestState | None:
    """Record that a fork's trust ``label`` was removed at ``at`` (the host's ``event_at``); the same
    delivery again changes nothing. ``only_if_trusted``: the event does not say the label was
    there (Gitea), so it is recorded only when a trust is (``trusted``); None when it was not.
    Raises ``StateConflict`` (or the store's error) when it cannot."""
    untrusted: list[bool] = []

    def withdraw(known: PullRequestState, deliveries: tuple[str, ...]) -> PullRequestState | None:
        untrusted.clear()
        if only_if_trusted and not known.trusted:
            untrusted.append(True)
            return None
        # It covers every trust recorded before it, even one whose build was received later.
        covered = [t for t in (at, known.withdrawn_at, known.trusted_at) if t is not None]
        dated = [t for t in (event_at, known.withdrawn_event_at) if t is not None]
        return replace(
            known,
            withdrawals=known.withdrawals + 1,
            withdrawn_at=max(covered),
            withdrawn_label=label,
            withdrawn_event_at=max(dated) if dated else None,
            deliveries=deliveries,
        )

    state = _record_delivery(store, target, number, delivery_id, withdraw)
    return None if untrusted else state


@dataclass(frozen=True)
class TrustVerdict:
    """What ``record_trust`` found: the ``epoch`` a trusting delivery builds under (the
    ``trust-<n>`` of its id), or why it is ``refused``; both None when the request is closed."""

    state: PullRequestState
    epoch: int | None = None
    refused: str | None = None


def record_trust(
    store: StateStore,
    target: str,
    number: int,
    *,
    at: datetime,
    delivery_id: str | None,
    event_at: datetime | None,
) -> TrustVerdict:
    """Record that the delivery ``delivery_id`` (received ``at``, dated ``event_at`` by the host)
    trusts a fork's head: one conditional update; see the module's docstring for the verdict and
    why its order is sound. Raises ``StateConflict`` (or the store's error) when it cannot."""
    verdict: list[TrustVerdict] = []

    def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
        verdict.clear()
        known = _known(target, number, current)
        verdict.append(TrustVerdict(known))
        if known.closed:
            return None
        epoch = dict(known.trusts).get(delivery_id) if delivery_id is not None else None
        if epoch is not None:
            if epoch < known.withdrawals:
                verdict[0] = TrustVerdict(known, refused=_refusal(known, "this delivery came again after"))
            else:
                verdict[0] = TrustVerdict(known, epoch=epoch)
            return None
        if (
            event_at is not None
            and known.withdrawn_event_at is not None
            and event_at <= known.withdrawn_event_at
        ):
            why = f"its event, dated {event_at.isoformat()}, is not after"
            verdict[0] = TrustVerdict(known, refused=_refusal(known, why))
            return None
        received = known.trusted_received_at(at)
        trusts = known.trusts if delivery_id is None else (*known.trusts, (delivery_id, known.withdrawals))
        trusted = replace(
            known,
            trusts=trusts[-REMEMBERED_TRUSTS:],
            trust_epoch=known.withdrawals,
            trusted_at=received if known.trusted_at is None else max(received, known.trusted_at),
        )
        verdict[0] = TrustVerdict(trusted, epoch=known.withdrawals)
        return trusted.as_document()

    update(store, state_key(target, number), change)
    return verdict[0]


def _known(target: str, number: int, current: Mapping[str, Any] | None) -> PullRequestState:
    """The state a document holds; a request with no document yet is open and untouched."""
    return PullRequestState(target, number) if current is None else PullRequestState.from_document(current)


def _refusal(known: PullRequestState, why: str) -> str:
    when = known.withdrawn_event_at or known.withdrawn_at
    shown = "" if when is None else f" at {when.isoformat()}"
    return (
        f"trust refused: {why} the removal of the label {known.withdrawn_label!r}{shown}; "
        "nothing is built: add the label again to trust the head"
    )


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
        known = _known(target, number, current)
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

"""Coalescing: of several requests on one coalesce key (target + ref), one build serves them all.

A request waits its quiet period (the dispatcher reschedules it until ``received_at`` + quiet
period), then asks two questions before it claims anything:

* Is a request that outranks it still *pending* in the queue (active or scheduled)? The queue
  adapter answers (``PendingRequests``): the local queue with one query over its messages,
  Service Bus by peeking the queue, scheduled messages included. Nothing extra is written when a
  webhook sends, so the ingest path pays nothing for coalescing.
* Has a run that serves it already *started*? The dispatcher keeps one small state document per
  key (``coalesce/<target>/<hash>``), written only when a run starts.

Two kinds of request share a key. A *push* (any trigger naming the commit a sender reported)
builds that commit; a *rebuild* (base-image update or schedule slot) rebuilds whatever the branch
last built, only for a reason outside the repository. So:

* Between pushes, the one received last wins (then the request id, so two requests never
  supersede each other), as before: it names the branch's newest commit.
* A push is never superseded by a rebuild, pending or started: the rebuild's commit is at best
  the one the push replaces.
* A rebuild is served by any pending push (that push's run starts after the rebuild's reason
  arose, and builds the newest commit). The dispatcher lets it wait until that push has started,
  then supersedes it and records the rebuild's reason on the push's ledger record.
* A rebuild is served by any run on its key that started after the rebuild was received; a run
  that started before cannot contain an update that came later, so the rebuild builds.
* Between pending rebuilds, the one received last wins.

A *rerun* (``slipway rerun``) stands apart: an operator asked for that exact build again (often
of an older commit), so it is never superseded, never supersedes another request and is not
remembered on its key (it would otherwise pass for the newest push and cancel the runs of newer
commits).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import ValidationError

from shared.model.build_request import HEAD_BUILD_TRIGGERS, BuildRequest
from shared.platform.logs import log_event

if TYPE_CHECKING:
    from shared.platform.state import StateStore

logger = logging.getLogger("slipway.coalesce")
STATE_PREFIX = "coalesce"


@runtime_checkable
class PendingRequests(Protocol):
    """Bodies of the messages still in the queue (active or scheduled) carrying ``coalesce_key``."""

    def pending_with_coalesce_key(self, coalesce_key: str) -> list[bytes]: ...


def is_rebuild(request: BuildRequest) -> bool:
    """A base-image or scheduled rebuild: it builds the branch's last build, not a pushed commit."""
    return request.trigger.kind in HEAD_BUILD_TRIGGERS


def is_rerun(request: BuildRequest) -> bool:
    """An operator's rerun of a finished request: outside coalescing (see above)."""
    return request.trigger.kind == "rerun"


def _order(request: BuildRequest) -> tuple[datetime, str]:
    return request.trigger.received_at, request.id


def outranks(other: BuildRequest, request: BuildRequest) -> bool:
    """Whether pending ``other`` builds instead of ``request``: a push before any rebuild, then
    the one received last (then the id)."""
    return (not is_rebuild(other), *_order(other)) > (not is_rebuild(request), *_order(request))


@dataclass(frozen=True)
class Started:
    """A request that started a run on a key, as the state document keeps it.

    ``started_at`` is None in documents written before it was kept.
    """

    request_id: str
    received_at: datetime
    run_id: str | None
    started_at: datetime | None = None

    @classmethod
    def from_document(cls, value: Mapping[str, Any] | None) -> Started | None:
        """The document's request, or None when it is not one."""
        if not isinstance(value, Mapping):
            return None
        try:
            started_at = value.get("started_at")
            return cls(
                str(value["request_id"]),
                _aware(datetime.fromisoformat(str(value["received_at"]))),
                value.get("run_id"),
                None if started_at is None else _aware(datetime.fromisoformat(str(started_at))),
            )
        except (KeyError, ValueError):
            return None

    @property
    def order(self) -> tuple[datetime, str]:
        return self.received_at, self.request_id

    def as_document(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "received_at": self.received_at.isoformat(),
            "run_id": self.run_id,
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
        }

    def serves_rebuild(self, request: BuildRequest) -> bool:
        """Whether this run serves rebuild ``request``: it started after the rebuild was received.

        ``started_at`` is taken after the run started and the branch's last build was recorded,
        so a rebuild routed from the last build before that record moved is served by this run.
        """
        if self.started_at is None:  # an older document: by the time received, as it was kept
            return self.order > _order(request)
        return self.started_at > request.trigger.received_at


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StartedOnKey:
    """The state document: the newest push and the newest rebuild that started a run on a key."""

    push: Started | None
    rebuild: Started | None

    @classmethod
    def from_document(cls, value: Mapping[str, Any]) -> StartedOnKey:
        if "push" in value or "rebuild" in value:
            return cls(Started.from_document(value.get("push")), Started.from_document(value.get("rebuild")))
        # Written before pushes and rebuilds were told apart: the newest request of either kind.
        return cls(Started.from_document(value), None)

    def as_document(self, key: str) -> dict[str, Any]:
        return {
            "coalesce_key": key,
            "push": None if self.push is None else self.push.as_document(),
            "rebuild": None if self.rebuild is None else self.rebuild.as_document(),
        }


@dataclass(frozen=True)
class Newer:
    """What serves a request instead of it: ``request_id``, a push or not, pending or started."""

    request_id: str
    push: bool
    pending: bool
    received_at: datetime


def state_key(request: BuildRequest) -> str:
    digest = hashlib.sha256(request.coalesce_key.encode()).hexdigest()[:32]
    return f"{STATE_PREFIX}/{request.target}/{digest}"


class Coalescer:
    """Answers "is this request served by another?" and remembers which requests started per key."""

    def __init__(self, *, pending: PendingRequests | None, state: StateStore | None) -> None:
        self._pending = pending
        self._state = state

    def superseded_by(
        self, request: BuildRequest, *, buildable: Callable[[BuildRequest], bool] | None = None
    ) -> Newer | None:
        """The request that builds instead of ``request`` (pending or started), or None.

        ``buildable`` says whether a pending request will be built at all: one that the
        dispatcher will refuse (a forged or stale message) must not supersede one it would build.
        A pending push wins over a pending rebuild, whichever was received first.
        """
        if is_rerun(request):
            return None
        if self._pending is not None:
            for body in self._pending.pending_with_coalesce_key(request.coalesce_key):
                try:
                    other = BuildRequest.from_json(body)
                except ValidationError:
                    continue
                if (
                    other.id != request.id
                    and not is_rerun(other)
                    and other.coalesce_key == request.coalesce_key
                    and outranks(other, request)
                    and (buildable is None or buildable(other))
                ):
                    return Newer(other.id, not is_rebuild(other), True, other.trigger.received_at)
        started = self.last_started(request)
        if started is None:
            return None
        if not is_rebuild(request):
            push = started.push
            if push is not None and push.request_id != request.id and push.order > _order(request):
                return Newer(push.request_id, True, False, push.received_at)
            return None  # a rebuild's run never supersedes a push
        for entry, by_push in ((started.push, True), (started.rebuild, False)):
            if entry is not None and entry.request_id != request.id and entry.serves_rebuild(request):
                return Newer(entry.request_id, by_push, False, entry.received_at)
        return None

    def last_started(self, request: BuildRequest) -> StartedOnKey | None:
        if self._state is None:
            return None
        found = self._state.get(state_key(request))
        return None if found is None else StartedOnKey.from_document(found.value)

    def record_started(self, request: BuildRequest, run_id: str, *, now: datetime) -> list[Started]:
        """Remember ``request``'s run as started at ``now``; the older runs it makes moot.

        A push makes moot the push it replaces and a rebuild asked for before it started; a
        rebuild only the rebuild it replaces (never a push's run). Best effort: the run has
        started, so a failure here is logged, never retried.
        """
        if self._state is None or is_rerun(request):
            return []
        from shared.platform.state import update

        key = state_key(request)
        mine = Started(request.id, request.trigger.received_at, run_id, now)
        rebuild = is_rebuild(request)
        replaced: list[Started] = []

        def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
            replaced.clear()
            known = StartedOnKey(None, None) if current is None else StartedOnKey.from_document(current)
            previous = known.rebuild if rebuild else known.push
            if previous is not None and previous.order >= mine.order:
                return None  # a newer one of this kind started already: keep it
            if previous is not None:
                replaced.append(previous)
            if rebuild:
                return StartedOnKey(known.push, mine).as_document(request.coalesce_key)
            if known.rebuild is not None and known.rebuild.received_at <= now:
                replaced.append(known.rebuild)
            return StartedOnKey(mine, known.rebuild).as_document(request.coalesce_key)

        try:
            update(self._state, key, change)
        except Exception as exc:
            log_event(
                logger, "coalesce_not_recorded", level=logging.WARNING, request_id=request.id, error=str(exc)
            )
            return []
        return replaced

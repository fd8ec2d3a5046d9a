"""Coalescing: of several requests on one coalesce key (target + ref), only the newest builds.

A request waits its quiet period (the dispatcher reschedules it until ``received_at`` + quiet
period), then asks two questions before it claims anything:

* Is a newer request on the same key still *pending* in the queue (active or scheduled)? The
  queue adapter answers (``PendingRequests``): the local queue with one query over its messages,
  Service Bus by peeking the queue, scheduled messages included. Nothing extra is written when a
  webhook sends, so the ingest path pays nothing for coalescing.
* Has a newer request on the key already *started*? The dispatcher keeps one small state
  document per key (``coalesce/<target>/<hash>``), written only when a run starts.

"Newer" orders by the time the request was received, then by request id, so two requests can
never supersede each other.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import ValidationError

from shared.build_request import BuildRequest
from shared.logs import log_event

if TYPE_CHECKING:
    from shared.state import StateStore

logger = logging.getLogger("slipway.coalesce")
STATE_PREFIX = "coalesce"


@runtime_checkable
class PendingRequests(Protocol):
    """Bodies of the messages still in the queue (active or scheduled) carrying ``coalesce_key``."""

    def pending_with_coalesce_key(self, coalesce_key: str) -> list[bytes]: ...


@dataclass(frozen=True)
class Started:
    """The newest request that started a run on a key, as the state document keeps it."""

    request_id: str
    received_at: datetime
    run_id: str | None

    @classmethod
    def from_document(cls, value: Mapping[str, Any]) -> Started | None:
        """The state document's request, or None when the document is not one."""
        try:
            return cls(
                str(value["request_id"]),
                datetime.fromisoformat(str(value["received_at"])),
                value.get("run_id"),
            )
        except (KeyError, ValueError):
            return None

    @property
    def order(self) -> tuple[datetime, str]:
        return self.received_at, self.request_id

    def as_document(self, key: str) -> dict[str, Any]:
        return {
            "coalesce_key": key,
            "request_id": self.request_id,
            "received_at": self.received_at.isoformat(),
            "run_id": self.run_id,
        }


def _order(request: BuildRequest) -> tuple[datetime, str]:
    return request.trigger.received_at, request.id


def state_key(request: BuildRequest) -> str:
    digest = hashlib.sha256(request.coalesce_key.encode()).hexdigest()[:32]
    return f"{STATE_PREFIX}/{request.target}/{digest}"


class Coalescer:
    """Answers "is this request superseded?" and remembers which request started last per key."""

    def __init__(self, *, pending: PendingRequests | None, state: StateStore | None) -> None:
        self._pending = pending
        self._state = state

    def superseded_by(
        self, request: BuildRequest, *, buildable: Callable[[BuildRequest], bool] | None = None
    ) -> str | None:
        """The id of a newer request on the same key (pending or started), or None.

        ``buildable`` says whether a pending request will be built at all: one that the
        dispatcher will refuse (a forged or stale message) must not supersede one it would build.
        """
        mine = _order(request)
        if self._pending is not None:
            for body in self._pending.pending_with_coalesce_key(request.coalesce_key):
                try:
                    other = BuildRequest.from_json(body)
                except ValidationError:
                    continue
                if (
                    other.id != request.id
                    and other.coalesce_key == request.coalesce_key
                    and _order(other) > mine
                    and (buildable is None or buildable(other))
                ):
                    return other.id
        started = self.last_started(request)
        if started is not None and started.request_id != request.id and started.order > mine:
            return started.request_id
        return None

    def last_started(self, request: BuildRequest) -> Started | None:
        if self._state is None:
            return None
        found = self._state.get(state_key(request))
        return None if found is None else Started.from_document(found.value)

    def record_started(self, request: BuildRequest, run_id: str) -> Started | None:
        """Remember ``request`` as the newest started on its key; the older one it replaced, if any.

        Best effort: the run has started, so a failure here is logged, never retried.
        """
        if self._state is None:
            return None
        from shared.state import update

        key = state_key(request)
        replaced: list[Started] = []

        def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
            replaced.clear()
            previous = None if current is None else Started.from_document(current)
            if previous is not None:
                if previous.order >= _order(request):
                    return None  # a newer one started already: keep it
                replaced.append(previous)
            return Started(request.id, request.trigger.received_at, run_id).as_document(request.coalesce_key)

        try:
            update(self._state, key, change)
        except Exception as exc:
            log_event(
                logger, "coalesce_not_recorded", level=logging.WARNING, request_id=request.id, error=str(exc)
            )
            return None
        return replaced[0] if replaced else None

"""Builds of a closed pull request, or of a fork whose trust label was removed: cancelled before
they start, and cancelled while they run.

The receiver records a close as a small state document (``shared.runs.pull_request_state``) and
does nothing else. Two paths read it, so that a close cancels every build of the request at least
once, whichever way the build is at the time:

* **pending** (a message in the queue, a copy waiting for its quiet period, a retry, the budget):
  the dispatcher asks ``settle`` before it claims a pull-request request. A request received
  before the last close (or any request while the request stays closed) is recorded ``cancelled``
  ("by the close of pull request #<n>") and its message completed: no run starts, and every other
  copy or redelivery finds the record and is settled the same way.
* **running** (``dispatched``, ACR not finished): the reconcile timer hands each run it follows to
  ``cancel_if_closed``, which cancels the run at ACR (``shared.dispatch.cancel``) and records
  ``cancelled``. A cancel that fails (ACR unreachable, the claim still being recorded) leaves the
  run followed, and the next tick tries again: a running build is cancelled within one reconcile
  interval of the close (``SLIPWAY_RECONCILE_SCHEDULE``, every minute by default) once ACR answers.
  A run recorded as ended (a dry run is, once recorded) has nothing to cancel and is left alone.

The removal of a fork's trust label (``forks: label``) is recorded in the same document and
cancels the same way: a fork build received before the last removal is settled ``cancelled``
("trust withdrawn: label <x> removed") before it starts, or cancelled by the timer while it runs.
A close outranks it (its reason is the one recorded). Builds of a request from the base
repository are never cancelled by a label.

A cancel that fails is logged ``closed_cancel_failed`` after a close and ``withdrawn_cancel_failed``
after a removal of the label, so an alert on one tells which.

A state store that cannot be read does not stop a dispatch (the run would be cancelled by the
timer), and one tick's failure is retried by the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from pydantic import ValidationError

from shared.acr.run_backend import RunBackend
from shared.dispatch.cancel import Canceller, CancelRefused
from shared.dispatch.claims import new_record
from shared.dispatch.outcome import DispatchResult, cancelled, retry_now
from shared.dispatch.rerun import finished
from shared.model.build_request import BuildRequest
from shared.platform.ledger import ConflictError, Ledger, LedgerRecord, RunStatus
from shared.platform.logs import log_event
from shared.platform.state import StateStore
from shared.runs.pull_request_state import read_state

logger = logging.getLogger("slipway.pull_requests")


def closed_by(number: int) -> str:
    """Who cancelled, as the ledger's ``cancelled_by`` and the commit status say it."""
    return f"the close of pull request #{number}"


def withdrawn_by(number: int, label: str | None) -> str:
    """Who cancelled a fork's build when its trust label was removed."""
    return f"the removal of the label {label!r} from pull request #{number}"


class Cancellation(NamedTuple):
    """Who cancels a pull request's build and why, and the log event of a cancel that fails."""

    actor: str
    why: str
    failure_event: str


class ClosedPullRequests:
    """Cancels the builds of closed pull requests, as recorded in ``state``."""

    def __init__(
        self, ledger: Ledger, backend: RunBackend, state: StateStore | None, clock: Callable[[], datetime]
    ) -> None:
        self._ledger = ledger
        self._backend = backend
        self._state = state
        self._clock = clock

    def closed_reason(self, request: BuildRequest) -> Cancellation | None:
        """Who cancels ``request`` and why: its pull request closed, or (a fork) its trust label
        was removed; None when neither (or it is no PR build)."""
        pr = request.pull_request
        if pr is None or self._state is None:
            return None
        state = read_state(self._state, request.target, pr.number)
        if state is None:
            return None
        received = request.trigger.received_at
        if (closed := state.closed_for(received)) is not None:
            return Cancellation(closed_by(pr.number), closed, "closed_cancel_failed")
        if (withdrawn := state.withdrawn_for(received, fork=pr.fork)) is not None:
            actor = withdrawn_by(pr.number, state.withdrawn_label)
            return Cancellation(actor, withdrawn, "withdrawn_cancel_failed")
        return None

    def settle(
        self, request: BuildRequest, found: tuple[LedgerRecord, str] | None, message_id: str | None
    ) -> DispatchResult | None:
        """Before a claim: a request of a closed pull request (or a fork's whose trust label was
        removed) is recorded ``cancelled``; None: go on.

        ``found`` is the request's record (None, or ``retrying``).
        """
        if request.pull_request is None:
            return None
        try:
            verdict = self.closed_reason(request)
        except Exception as exc:  # the timer cancels the run should the request be closed
            log_event(
                logger, "state_unavailable", level=logging.WARNING, request_id=request.id, error=str(exc)
            )
            return None
        if verdict is None:
            return None
        actor, why, _ = verdict
        detail = f"by {actor}: {why} (before it was dispatched, message {message_id})"
        now = self._clock()
        if found is None:
            record = new_record(
                request,
                RunStatus.CANCELLED,
                now,
                "cancelled",
                detail,
                backend=self._backend.name,
                following=False,
                cancelled_by=actor,
            )
            if not self._ledger.create(record):
                return retry_now(request, "the ledger record changed while cancelling a pull request's build")
        else:
            existing, etag = found
            updated = existing.with_event(
                now, "cancelled", detail, status=RunStatus.CANCELLED, following=False, cancelled_by=actor
            )
            try:
                self._ledger.replace(updated, etag)
            except ConflictError:
                return retry_now(request, "the ledger record changed while cancelling a pull request's build")
        return cancelled(request, f"cancelled by {actor}: {why}")

    def cancel_if_closed(self, record: LedgerRecord) -> bool:
        """The reconcile timer's hook: cancel ``record``'s run if its pull request closed (or, a
        fork's, its trust label was removed).

        True when it was cancelled now; False otherwise (not a PR build, open, trusted, or the cancel
        failed: logged, and the next tick tries again).
        """
        if (record.request.get("trigger") or {}).get("kind") != "pull-request":
            return False
        if finished(record) is not None:  # nothing left to cancel (a dry run is over once recorded)
            return False
        try:
            request = BuildRequest.model_validate(record.request)
            verdict = self.closed_reason(request)
        except (ValidationError, ValueError) as exc:
            log_event(
                logger,
                "closed_check_failed",
                level=logging.WARNING,
                request_id=record.request_id,
                error=str(exc),
            )
            return False
        except Exception as exc:
            log_event(
                logger,
                "state_unavailable",
                level=logging.WARNING,
                request_id=record.request_id,
                error=str(exc),
            )
            return False
        if verdict is None:
            return False
        actor, why, failure_event = verdict
        canceller = Canceller(self._ledger, self._backend, queue=None, notifier=None, clock=self._clock)
        try:
            canceller.cancel(record.request_id, actor=actor, reason=why, dry_run=False)
        except CancelRefused as exc:
            log_event(
                logger,
                failure_event,
                level=logging.WARNING,
                request_id=record.request_id,
                error=str(exc),
            )
            return False
        return True

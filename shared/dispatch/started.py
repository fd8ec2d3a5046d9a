"""What follows a started run (or one adopted after a crash): everything recorded after it.

The run exists from here on, so nothing below may turn into a retry (which could start a second
run): the claim is settled ``dispatched``; a default-branch push becomes the target's last build
(what base-image updates rebuild); the run is remembered on its coalesce key, and the older runs
it supersedes are cancelled when the target asks (always for a pull request's: its older head is
moot); the Git host hears ``pending``. Each of these
is best effort: a failure is logged, and the answer stays ``dispatched``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from shared.acr.run_backend import PermanentBackendError, RunBackend, RunHandle, TransientBackendError
from shared.dispatch.claims import Claims
from shared.dispatch.coalesce import Coalescer, Started
from shared.dispatch.outcome import DispatchResult, Outcome, logger
from shared.model.build_request import BuildRequest
from shared.model.config import Target
from shared.platform.ledger import ConflictError, Ledger, LedgerRecord, RunStatus
from shared.platform.logs import log_event

if TYPE_CHECKING:
    from shared.platform.state import StateStore
    from shared.runs.build_status import BuildStatusNotifier


class StartedRuns:
    """Records a started run; ``state`` and ``notifier`` as the ``Dispatcher`` takes them."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        backend: RunBackend,
        clock: Callable[[], datetime],
        claims: Claims,
        coalescer: Coalescer,
        state: StateStore | None,
        notifier: BuildStatusNotifier | None,
    ) -> None:
        self._ledger = ledger
        self._backend = backend
        self._clock = clock
        self._claims = claims
        self._coalescer = coalescer
        self._state = state
        self._notifier = notifier

    def record(
        self,
        request: BuildRequest,
        target: Target,
        record: LedgerRecord,
        etag: str,
        handle: RunHandle,
        delivery_count: int,
        event: str = "run_started",
    ) -> DispatchResult:
        """``handle`` runs for ``request``, whose claim is ``record`` (``etag``): record it all.

        ``event`` names how: ``run_started``, or ``run_recovered`` for a run a dead claim started.
        """
        correlation_id = request.trigger.correlation_id
        dispatched = self._claims.settle(
            record,
            etag,
            status=RunStatus.DISPATCHED,
            run_id=handle.run_id,
            run_status=handle.status,
            event=event,
            detail=handle.run_id,
        )
        log_event(
            logger,
            event,
            correlation_id=correlation_id,
            request_id=request.id,
            target=request.target,
            backend=handle.backend,
            run_id=handle.run_id,
            delivery_count=delivery_count,
        )
        self._record_last_build(request, target)
        # After the last build: a rebuild routed from the record before it moved is served by this run.
        self._supersede_older_runs(request, target, handle.run_id)
        if dispatched is not None:
            self._post_pending(*dispatched)
        return DispatchResult(Outcome.DISPATCHED, request.id, handle.run_id)

    def _post_pending(self, record: LedgerRecord, etag: str) -> None:
        """Tell the Git host the build is under way; best effort, after the run is safely recorded.

        When the host cannot be reached, reconciliation posts ``pending`` (or the outcome) later.
        """
        from shared.runs.commit_status import CommitState

        if self._notifier is None or not self._notifier.notify(record, CommitState.PENDING):
            return
        try:
            self._ledger.replace(record.model_copy(update={"commit_status": CommitState.PENDING.value}), etag)
        except Exception as exc:  # reconciliation posts it again, which is harmless
            log_event(
                logger,
                "ledger_update_failed",
                level=logging.WARNING,
                request_id=record.request_id,
                error=str(exc),
            )

    def _record_last_build(self, request: BuildRequest, target: Target) -> None:
        """Remember a default-branch push as the commit that base-image updates rebuild.

        The run has started: a failure here is logged and never turns into a retry, which could
        start a second run. The next default-branch push records again.
        """
        if self._state is None:
            return
        from shared.runs.last_build import is_default_branch_push, record_last_build

        if not is_default_branch_push(request, target.default_branch):
            return
        try:
            recorded = record_last_build(self._state, request, now=self._clock())
        except Exception as exc:
            log_event(
                logger,
                "last_build_not_recorded",
                level=logging.ERROR,
                correlation_id=request.trigger.correlation_id,
                request_id=request.id,
                target=request.target,
                error=str(exc),
            )
            return
        log_event(
            logger,
            "last_build_recorded",
            correlation_id=request.trigger.correlation_id,
            request_id=request.id,
            target=request.target,
            commit=recorded.commit if recorded else None,
            kept_newer=recorded is not None and recorded.request_id != request.id,
        )

    def _supersede_older_runs(self, request: BuildRequest, target: Target, run_id: str) -> None:
        """Remember this run as started on its key; cancel the older ones if the target asks.

        A pull request's older build is always cancelled: nobody merges its older head, and it
        holds a run (and writes the request's cache) for nothing. Its key is the request's own
        (``<target>:pr-<n>``, checked by ``request_check``), so only that request's builds are.
        """
        cancel = target.cancel_superseded or request.pull_request is not None
        for previous in self._coalescer.record_started(request, run_id, now=self._clock()):
            if previous.run_id is not None and previous.run_id != run_id and cancel:
                self._cancel_superseded(request, previous)

    def _cancel_superseded(self, request: BuildRequest, previous: Started) -> None:
        cancel = getattr(self._backend, "cancel", None)
        if cancel is None or previous.run_id is None:
            return
        try:
            if self._backend.get(previous.run_id).finished:
                return
            cancel(previous.run_id)
        except (TransientBackendError, PermanentBackendError) as exc:
            log_event(
                logger,
                "cancel_failed",
                level=logging.WARNING,
                request_id=previous.request_id,
                run_id=previous.run_id,
                error=str(exc),
            )
            return
        log_event(
            logger,
            "run_cancelled",
            request_id=previous.request_id,
            run_id=previous.run_id,
            superseded_by=request.id,
        )
        found = self._ledger.get(previous.request_id)
        if found is not None:
            record, etag = found
            cancelled = record.with_event(self._clock(), "cancelled", f"superseded by {request.id}")
            with contextlib.suppress(ConflictError):  # reconciliation records the Canceled status anyway
                self._ledger.replace(cancelled, etag)

"""Cancel: stop a running request's ACR run, or a pending request before it starts one.

* A request whose run is going (``dispatched``, ACR not finished): ``runs.cancel`` on its run,
  then the record becomes ``cancelled`` (who and why in ``cancelled_by`` and its history) and
  stays followed by reconciliation until ACR says the run ended.
* A pending request (``retrying``: claimed earlier, waiting for a retry or budget; or only in the
  queue, with no record yet): the record becomes (or is created) ``cancelled``. Whenever its
  message, a waiting copy or a redelivery reaches the dispatcher, the ledger settles it as
  cancelled (``Claims.settled``) and no run starts. Both writes are conditional (ETags, or a
  create that fails if the dispatcher claimed first), so a cancel never races a claim into an
  orphan run: a request being dispatched this very moment (``dispatching``) is refused, to be
  cancelled again once its run has started.
* The Git host hears ``error``, "cancelled by <actor>" (``shared.runs.build_status.describe``).

Cancelling a cancelled request again changes nothing and succeeds; a finished one is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shared.acr.run_backend import (
    PermanentBackendError,
    RunBackend,
    RunCanceller,
    RunHandle,
    TransientBackendError,
)
from shared.dispatch.claims import new_record
from shared.dispatch.rerun import finished
from shared.model.build_request import BuildRequest
from shared.platform.ledger import ConflictError, Ledger, LedgerRecord, RunStatus
from shared.platform.logs import log_event
from shared.platform.queue.port import QueueBrowser, QueueError

if TYPE_CHECKING:
    from shared.runs.build_status import BuildStatusNotifier

logger = logging.getLogger("slipway.cancel")
# How many queued messages a cancel looks through for a request the ledger does not know yet.
# On Service Bus a queue's peek includes locked, deferred and scheduled messages (a retry waiting
# for its time is one), but not dead-lettered ones: Microsoft Learn, "Message browsing", table of
# the message types Peek returns ("Scheduled messages: Yes for queues").
QUEUE_SCAN_LIMIT = 1000


class CancelRefused(Exception):
    """The request cannot be cancelled; the message is one line for the operator."""


@dataclass(frozen=True)
class CancelReport:
    """What a cancel did (or would do, on a dry run)."""

    request_id: str
    action: str  # run_cancelled | pending_cancelled | already_cancelled (+ would_ on a dry run)
    previous_status: str  # the ledger status before, or "queued" (no record yet)
    run_id: str | None
    run_status: str | None  # ACR's, read after the cancel (None: not read)
    commit_status: str | None  # what the Git host was told (None: no status applies, or not sent)
    actor: str
    reason: str
    dry_run: bool
    note: str | None = None

    def as_json(self) -> dict[str, object]:
        return asdict(self)


class Canceller:
    """Cancels requests recorded in ``ledger``, their runs on ``backend``; ``queue`` finds a
    request not recorded yet, ``notifier`` tells the Git host (none: no statuses)."""

    def __init__(
        self,
        ledger: Ledger,
        backend: RunBackend,
        *,
        queue: QueueBrowser | None,
        notifier: BuildStatusNotifier | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._ledger = ledger
        self._backend = backend
        self._queue = queue
        self._notifier = notifier
        self._clock = clock

    def cancel(self, request_id: str, *, actor: str, reason: str, dry_run: bool) -> CancelReport:
        for _ in range(5):
            found = self._ledger.get(request_id)
            if found is None:
                report = self._cancel_queued(request_id, actor, reason, dry_run)
            else:
                report = self._cancel_recorded(*found, actor, reason, dry_run)
            if report is not None:
                if not dry_run and report.action != "already_cancelled":
                    log_event(
                        logger,
                        "request_cancelled",
                        request_id=request_id,
                        action=report.action,
                        run_id=report.run_id,
                        actor=actor,
                        note=reason,
                    )
                return report
        raise CancelRefused(f"the ledger record of {request_id} kept changing: try again")

    def _report(self, record: LedgerRecord, action: str, previous: str, **fields: object) -> CancelReport:
        values: dict[str, object] = {
            "request_id": record.request_id,
            "action": action,
            "previous_status": previous,
            "run_id": record.run_id,
            "run_status": record.run_status,
            "commit_status": None,
            "actor": "",
            "reason": "",
            "dry_run": False,
        }
        values.update(fields)
        return CancelReport(**values)  # type: ignore[arg-type]

    def _cancel_queued(self, request_id: str, actor: str, reason: str, dry_run: bool) -> CancelReport | None:
        """A request only in the queue: create its record as ``cancelled`` (None: raced, look again)."""
        request = self._queued_request(request_id)
        if request is None:
            raise CancelRefused(f"no request {request_id} in the ledger or the queue")
        now = self._clock()
        record = new_record(
            request,
            RunStatus.CANCELLED,
            now,
            "cancelled",
            f"by {actor}: {reason} (before it was dispatched)",
            backend=self._backend.name,
            following=False,
            cancelled_by=actor,
        )
        extra = {"actor": actor, "reason": reason, "dry_run": dry_run}
        if dry_run:
            return self._report(record, "would_cancel_pending", "queued", **extra)
        created = self._ledger.create_versioned(record)
        if created is None:
            return None  # the dispatcher claimed it meanwhile: decide on its record
        return self._report(
            record, "pending_cancelled", "queued", commit_status=self._post(record, created), **extra
        )

    def _queued_request(self, request_id: str) -> BuildRequest | None:
        if self._queue is None:
            return None
        try:
            messages = self._queue.peek(max_count=QUEUE_SCAN_LIMIT)
        except QueueError as exc:
            raise CancelRefused(
                f"{request_id} is not in the ledger and the queue cannot be read: {exc}"
            ) from None
        for message in messages:
            try:
                request = BuildRequest.from_json(message.body)
            except (ValidationError, ValueError):
                continue
            if request.id == request_id:
                return request
        return None

    def _cancel_recorded(
        self, record: LedgerRecord, etag: str, actor: str, reason: str, dry_run: bool
    ) -> CancelReport | None:
        """Cancel a recorded request (None: its record changed meanwhile, look again)."""
        extra = {"actor": actor, "reason": reason, "dry_run": dry_run}
        previous = record.status.value
        if record.status is RunStatus.CANCELLED:
            return self._report(record, "already_cancelled", previous, **extra)
        if record.status is RunStatus.DISPATCHING:
            raise CancelRefused(
                f"{record.request_id} is being dispatched right now: run `slipway cancel` again in a "
                "few seconds, once its run has started"
            )
        state = finished(record)
        if state is not None:
            raise CancelRefused(f"{record.request_id} is already {state}: nothing to cancel")
        now = self._clock()
        detail = f"by {actor}: {reason}"
        if record.status is RunStatus.RETRYING:
            if dry_run:
                return self._report(record, "would_cancel_pending", previous, **extra)
            note = None
            if record.start_uncertain_at is not None:
                note = (
                    "an earlier start got no answer, so ACR may hold a run for it: check the "
                    "registry's runs for this request id"
                )
            updated = record.with_event(
                now,
                "cancelled",
                f"{detail} (before it started)",
                status=RunStatus.CANCELLED,
                following=False,
                cancelled_by=actor,
            )
            try:
                new_etag = self._ledger.replace(updated, etag)
            except ConflictError:
                return None
            posted = self._post(updated, new_etag)
            return self._report(
                updated, "pending_cancelled", previous, commit_status=posted, note=note, **extra
            )
        return self._cancel_run(record, etag, detail, extra)

    def _cancel_run(
        self, record: LedgerRecord, etag: str, detail: str, extra: dict[str, object]
    ) -> CancelReport | None:
        """A dispatched request whose run is going: cancel it at ACR, then record it."""
        assert record.run_id is not None
        previous = record.status.value
        if record.backend != self._backend.name:
            raise CancelRefused(
                f"{record.request_id}'s run {record.run_id} is on the {record.backend} backend, but this "
                f"configuration uses {self._backend.name}: run cancel where the run was started"
            )
        cancel = getattr(self._backend, "cancel", None)
        if cancel is None:
            raise CancelRefused(f"the {self._backend.name} backend cannot cancel runs")
        canceller: RunCanceller = self._backend  # type: ignore[assignment]
        if extra["dry_run"]:
            return self._report(record, "would_cancel_run", previous, **extra)
        try:
            canceller.cancel(record.run_id)
        except (TransientBackendError, PermanentBackendError) as exc:
            raise CancelRefused(f"ACR did not cancel run {record.run_id}: {exc}") from None
        handle: RunHandle | None
        try:
            handle = self._backend.get(record.run_id)
        except (TransientBackendError, PermanentBackendError):
            handle = None  # reconciliation reads it later
        if handle is not None and handle.finished and handle.status != "Canceled":
            # It ended before the cancel reached it: its outcome stands, reconciliation records it.
            raise CancelRefused(f"run {record.run_id} had already ended ({handle.status}): nothing cancelled")
        changes: dict[str, object] = {"status": RunStatus.CANCELLED, "cancelled_by": extra["actor"]}
        if handle is not None:
            changes["run_status"] = handle.status
        updated = record.with_event(self._clock(), "cancelled", f"{detail} (run {record.run_id})", **changes)
        try:
            new_etag = self._ledger.replace(updated, etag)
        except ConflictError:
            # Reconciliation wrote meanwhile; the run is cancelled at ACR: record it on the new version.
            found = self._ledger.get(record.request_id)
            if found is None:
                return None
            fresh, fresh_etag = found
            updated = fresh.with_event(
                self._clock(), "cancelled", f"{detail} (run {record.run_id})", **changes
            )
            try:
                new_etag = self._ledger.replace(updated, fresh_etag)
            except ConflictError:
                return None
        posted = self._post(updated, new_etag)
        return self._report(updated, "run_cancelled", previous, commit_status=posted, **extra)

    def _post(self, record: LedgerRecord, etag: str) -> str | None:
        """Tell the Git host (``error``, "cancelled by ..."); note it on the record. Best effort."""
        if self._notifier is None:
            return None
        from shared.runs.commit_status import CommitState

        if not self._notifier.notify(record, CommitState.ERROR):
            return None
        try:
            self._ledger.replace(record.model_copy(update={"commit_status": CommitState.ERROR.value}), etag)
        except Exception as exc:  # the status went out; only the note lags
            log_event(
                logger,
                "ledger_update_failed",
                level=logging.WARNING,
                request_id=record.request_id,
                error=str(exc),
            )
        return CommitState.ERROR.value

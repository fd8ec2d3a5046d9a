"""Run reconciliation: follow every dispatched run to its end and tell the Git host.

A timer calls ``Reconciler.run``. It walks the ledger's active records, back to ``horizon`` (runs
are at most 8 hours long, so 24 hours is ample), and for each record it still follows it asks
ACR for the run (``runs.get``) and records status, times and error. When the run ends it posts
the final commit status and stops following. A run that has not ended long after its own
timeout (the run's timeout plus ``grace``) is given up on, said so in the ledger and on the
commit, and not asked about again.

Safe to run twice at once: every ledger write is conditional on the ETag it read, and the loser
of a race skips the record; a status posted twice says the same thing twice. A commit status
that could not be posted leaves the record followed, so the next tick posts it again.

With a retention (``SLIPWAY_LEDGER_RETENTION``), each pass then expires the records not written
for that long (``Ledger.expire``), so the ledger stops growing with history.

``cancel_if`` sees every running (``dispatched``) record first and may cancel its run: the builds
of a closed pull request (``shared.dispatch.pr_closed``). What it cancelled is then followed as
any cancelled run, to ACR's ``Canceled``; what it could not cancel is offered again next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.acr.run_backend import PermanentBackendError, RunHandle, RunReader, TransientBackendError
from shared.platform.ledger import ConflictError, Ledger, LedgerRecord, RecordSummary, RunStatus
from shared.platform.logs import log_event
from shared.runs.build_status import BuildStatusNotifier, describe, state_for_run
from shared.runs.commit_status import CommitState

logger = logging.getLogger("slipway.reconcile")

DEFAULT_HORIZON = timedelta(hours=24)
DEFAULT_GRACE = timedelta(hours=1)
DEFAULT_RUN_TIMEOUT_S = 3600


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReconcileReport:
    """What one pass did, for the timer's log line and the tests."""

    checked: int = 0
    changed: int = 0
    finished: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    statuses_posted: int = 0
    errors: list[str] = field(default_factory=list)
    throttled_for: float | None = None
    expired: int = 0
    cancelled: list[str] = field(default_factory=list)

    def as_log(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "changed": self.changed,
            "finished": len(self.finished),
            "abandoned": len(self.abandoned),
            "statuses_posted": self.statuses_posted,
            "errors": len(self.errors),
            "throttled_for": self.throttled_for,
            "expired": self.expired,
            "cancelled": len(self.cancelled),
        }


class Reconciler:
    def __init__(
        self,
        *,
        ledger: Ledger,
        backend: RunReader,
        notifier: BuildStatusNotifier | None = None,
        clock: Callable[[], datetime] = _utcnow,
        horizon: timedelta = DEFAULT_HORIZON,
        grace: timedelta = DEFAULT_GRACE,
        on_finished: Callable[[LedgerRecord, RunHandle], LedgerRecord] | None = None,
        retention: timedelta | None = None,
        export: Path | None = None,
        cancel_if: Callable[[LedgerRecord], bool] | None = None,
    ) -> None:
        """``on_finished`` sees each run once it ended (gates, quarantine) and may amend its record;
        ``cancel_if`` each running one first, and says whether it cancelled it (see above).

        ``retention``: after each pass, records not written for that long are deleted (copied to
        ``export`` first when given); None keeps them forever.
        """
        self._ledger = ledger
        self._backend = backend
        self._notifier = notifier
        self._clock = clock
        self._horizon = horizon
        self._grace = grace
        self._on_finished = on_finished
        self._retention = retention
        self._export = export
        self._cancel_if = cancel_if

    def run(self) -> ReconcileReport:
        report = ReconcileReport()
        now = self._clock()
        # The active summaries (an index of O(active runs)) say which runs are still followed;
        # only those records are read, and the ETag of that read is what the update is
        # conditional on. Followed records are active (``ledger.is_active``).
        for summary in self._ledger.list_active():
            if summary.created_at < now - self._horizon or not self._follows(summary):
                continue
            found = self._ledger.get(summary.request_id)
            if found is None or not self._follows(found[0]):
                continue  # gone, or settled by someone else since the listing
            listed, etag = found
            report.checked += 1
            try:
                if self._cancel(listed, report):
                    found = self._ledger.get(listed.request_id)
                    if found is None:
                        continue
                    listed, etag = found
                self._reconcile(listed, etag, now, report)
            except TransientBackendError as exc:
                report.errors.append(f"{listed.request_id}: {exc}")
                if exc.status_code == 429:
                    # ACR asks us to slow down: stop this pass, the next tick carries on.
                    report.throttled_for = exc.retry_after
                    break
            except Exception as exc:  # one bad record must not stop the others being followed
                report.errors.append(f"{listed.request_id}: {type(exc).__name__}: {exc}")
                log_event(
                    logger,
                    "reconcile_failed",
                    level=logging.ERROR,
                    request_id=listed.request_id,
                    correlation_id=listed.correlation_id,
                    error=str(exc),
                )
        if self._retention is not None:
            try:
                report.expired = len(self._ledger.expire(before=now - self._retention, export=self._export))
            except Exception as exc:  # expiry is housekeeping: the pass itself succeeded
                report.errors.append(f"expiry: {type(exc).__name__}: {exc}")
        log_event(logger, "reconcile_pass", **report.as_log())
        return report

    def _cancel(self, record: LedgerRecord, report: ReconcileReport) -> bool:
        """Whether ``cancel_if`` cancelled this running record's run now (then read it again)."""
        if self._cancel_if is None or record.status is not RunStatus.DISPATCHED:
            return False
        if not self._cancel_if(record):
            return False
        report.cancelled.append(record.request_id)
        return True

    def _follows(self, record: LedgerRecord | RecordSummary) -> bool:
        return (
            record.following
            and record.status in (RunStatus.DISPATCHED, RunStatus.CANCELLED)
            and record.run_id is not None
            and record.backend == self._backend.name
        )

    def _reconcile(self, record: LedgerRecord, etag: str, now: datetime, report: ReconcileReport) -> None:
        assert record.run_id is not None
        try:
            handle = self._backend.get(record.run_id)
        except PermanentBackendError as exc:
            handle = RunHandle(record.run_id, record.run_status or "Unknown", self._backend.name)
            updated = self._give_up(record, now, f"ACR does not answer for the run: {exc}")
        else:
            updated = self._observe(record, handle, now)
        ended, abandoned = handle.finished, not handle.finished and not updated.following
        wanted = (
            state_for_run(handle.status) if ended else CommitState.ERROR if abandoned else CommitState.PENDING
        )
        if self._notifier is not None and updated.commit_status != wanted.value:
            if self._notifier.notify(updated, wanted):
                report.statuses_posted += 1
                updated = updated.model_copy(update={"commit_status": wanted.value})
            elif (ended or abandoned) and self._notifier.status_for(updated, wanted) is not None:
                # Keep following until the outcome reached the commit (bounded by the horizon).
                updated = updated.model_copy(update={"following": True})
        if updated == record:
            return
        try:
            self._ledger.replace(updated.model_copy(update={"updated_at": now}), etag)
        except ConflictError:
            return  # changed under us (the dispatcher, or a second pass): the next tick looks again
        report.changed += 1
        if (ended or abandoned) and record.following and not updated.following:
            (report.finished if ended else report.abandoned).append(record.request_id)
            log_event(
                logger,
                "run_finished" if ended else "run_abandoned",
                correlation_id=record.correlation_id,
                request_id=record.request_id,
                target=record.target,
                run_id=record.run_id,
                run_status=updated.run_status,
                error=updated.run_error,
            )

    def _observe(self, record: LedgerRecord, handle: RunHandle, now: datetime) -> LedgerRecord:
        changes: dict[str, Any] = {}
        if handle.status != record.run_status:
            changes["run_status"] = handle.status
        if handle.started_at and handle.started_at != record.run_started_at:
            changes["run_started_at"] = handle.started_at
        if handle.finished_at and handle.finished_at != record.run_finished_at:
            changes["run_finished_at"] = handle.finished_at
        if handle.error_message and handle.error_message != record.run_error:
            changes["run_error"] = handle.error_message
        if handle.finished:
            changes["following"] = False
        updated = record.model_copy(update=changes)
        if handle.finished and self._on_finished is not None:
            updated = self._on_finished(updated, handle)
        if "run_status" in changes:
            updated = updated.with_event(now, "run_status", handle.status)
        if handle.finished:
            return updated.with_event(now, "run_finished", describe(updated))
        if now - record.created_at > self._deadline(record):
            return self._give_up(updated, now, f"no outcome {self._deadline(record)} after dispatch")
        return updated

    def _deadline(self, record: LedgerRecord) -> timedelta:
        timeout = (record.run_request or {}).get("timeout") or DEFAULT_RUN_TIMEOUT_S
        return timedelta(seconds=int(timeout)) + self._grace

    @staticmethod
    def _give_up(record: LedgerRecord, now: datetime, why: str) -> LedgerRecord:
        error = f"{why}; last known status {record.run_status or 'unknown'}"
        return record.with_event(now, "stopped_following", why, following=False, run_error=error)

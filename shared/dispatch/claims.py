"""The idempotency lifecycle of a request over the ledger: claim, settle, reclaim, adopt.

A request starts at most one run because its id is claimed in the ledger with a conditional
create (or a conditional replace of the record an earlier attempt left) before any run starts: a
redelivered or duplicated message finds the claim and starts nothing. A claim is then settled
(``dispatched``, ``failed``, ``retrying``); a ``retrying`` record is reclaimed by the next attempt;
a claim whose holder died (older than ``CLAIM_LEASE``), or a start that got no answer, is
recovered: its run adopted if one can be found (``shared.dispatch.run_recovery``), else claimed
afresh, else left to an operator. A replay reopens a failed record (``reopened``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.acr.run_backend import PermanentBackendError, RunBackend, RunHandle, TransientBackendError
from shared.acr.task import RunSpec
from shared.dispatch import failures
from shared.dispatch.failures import RetryPolicy
from shared.dispatch.outcome import (
    DispatchResult,
    cancelled,
    dead_letter,
    duplicate,
    ledger_failed,
    retry_now,
)
from shared.dispatch.retry import Rescheduler
from shared.model.build_request import BuildRequest
from shared.platform.ledger import ConflictError, Ledger, LedgerRecord, RunStatus

# Longer than any invocation can run (host.json functionTimeout is 5 minutes): a claim older than
# this belongs to an attempt that died.
CLAIM_LEASE = timedelta(minutes=10)


def build_fingerprint(request: BuildRequest) -> str:
    """Hash of what the build does, so that a retry with a new timestamp is the same build but a
    different build under a reused id is caught."""
    essential = request.model_dump(
        mode="json", include={"target", "source", "image", "platforms", "build_args", "cache"}
    )
    return hashlib.sha256(json.dumps(essential, sort_keys=True).encode()).hexdigest()


def new_record(
    request: BuildRequest, status: RunStatus, now: datetime, event: str, detail: str, **fields: Any
) -> LedgerRecord:
    """A request's first ledger record: ``status`` since ``now``, one history entry, and ``fields``."""
    return LedgerRecord(
        request_id=request.id,
        target=request.target,
        status=status,
        created_at=now,
        updated_at=now,
        correlation_id=request.trigger.correlation_id,
        payload_hash=build_fingerprint(request),
        request=json.loads(request.to_json()),
        history=[{"at": now.isoformat(), "event": event, "detail": detail}],
        **fields,
    )


def reopened(record: LedgerRecord, now: datetime, detail: str) -> LedgerRecord:
    """``record`` claimable again after a replay: ``retrying``, its attempts and failure cleared.

    ``start_uncertain_at`` stays: a start that got no answer may have created a run, which the
    replay's claim then looks for before starting one. A claim still ``dispatching`` (its holder
    died, ``DispatchInterrupted``) gets the same doubt, dated at the claim: its ``scheduleRun``
    may have created a run, so the replay looks for it (and adopts it) instead of starting another.
    """
    uncertain = record.start_uncertain_at
    if record.status is RunStatus.DISPATCHING and uncertain is None:
        uncertain = record.updated_at
    return record.with_event(
        now,
        "replayed",
        detail,
        status=RunStatus.RETRYING,
        attempts=0,
        failure_reason=None,
        dead_letter_message_id=None,
        start_uncertain_at=uncertain,
    )


@dataclass(frozen=True)
class Adopt:
    """Recovery found the run a dead claim started: record it as this request's (``record``, ``etag``)."""

    record: LedgerRecord
    etag: str
    run: RunHandle


# What a claim attempt gives: the claimed record and its ETag, a run to adopt, or the answer.
Claim = tuple[LedgerRecord, str] | Adopt | DispatchResult


class Claims:
    """The ledger side of dispatching requests to ``backend``."""

    def __init__(
        self, ledger: Ledger, backend: RunBackend, clock: Callable[[], datetime], later: Rescheduler
    ) -> None:
        self._ledger = ledger
        self._backend = backend
        self._clock = clock
        self._later = later

    def find(
        self, request: BuildRequest, message_id: str | None, now: datetime
    ) -> tuple[LedgerRecord, str] | None:
        """The request's record and ETag, if any; a failed one re-sent by another tool is reopened."""
        found = self._ledger.get(request.id)
        if found is not None and self._is_outside_replay(request, found[0], message_id):
            found = self._accept_outside_replay(found[0], found[1], message_id, now)
        return found

    def claim(
        self,
        request: BuildRequest,
        record: LedgerRecord,
        spec: RunSpec,
        message_id: str | None,
        found: tuple[LedgerRecord, str] | None,
    ) -> Claim:
        """Claim ``request``: create ``record`` if nothing was ``found``, else claim what is there."""
        # A record read before exists: claim it as it is, rather than a create bound to fail
        # (a write refused) and a second read of the same record.
        created = self._ledger.create_versioned(record) if found is None else None
        if created is not None:
            return record, created
        return self._claim_existing(request, record.payload_hash, spec, message_id, found)

    def _claim_existing(
        self,
        request: BuildRequest,
        fingerprint: str,
        spec: RunSpec,
        message_id: str | None,
        found: tuple[LedgerRecord, str] | None,
    ) -> Claim:
        """Claim a request whose record exists (``found``, or read now when a create found it)."""
        found = found or self._ledger.get(request.id)
        if found is None:  # deleted between create and get: let the redelivery try again
            return retry_now(request, "ledger record vanished while claiming")
        existing, etag = found
        settled = self.settled(request, fingerprint, existing, message_id)
        if settled is not None:
            return settled
        if existing.status is RunStatus.RETRYING:
            if existing.start_uncertain_at is not None:
                # The last start call got no answer: ACR may have created the run. Look first.
                return self._recover(request, spec, existing, etag, message_id, existing.start_uncertain_at)
            # A previous attempt failed before any run started: claim it again, exactly once.
            return self._reclaim(request, spec, existing, etag, "reclaimed", message_id)
        # DISPATCHING: another delivery holds the claim. While it may still be working, come back
        # when its lease ends; once the claim is older than any invocation can live, the holder
        # died between claiming and recording: find out whether it started a run.
        age = self._clock() - existing.updated_at
        if age < CLAIM_LEASE:
            return self._later.wait(
                request,
                existing.updated_at + CLAIM_LEASE + timedelta(seconds=5),
                "another delivery is dispatching this request",
            )
        return self._recover(request, spec, existing, etag, message_id)

    def settled(
        self, request: BuildRequest, fingerprint: str, existing: LedgerRecord, message_id: str | None
    ) -> DispatchResult | None:
        """The answer for a request the ledger already settled (or whose id was reused), else None."""
        if existing.payload_hash != fingerprint:
            return dead_letter(
                request,
                failures.ID_CONFLICT,
                f"request id {request.id} was already used for a different build; send it with a new id",
            )
        if existing.status is RunStatus.FAILED:
            # Refused for good earlier: refuse every redelivery of that message the same way, so it
            # ends in the dead-letter queue (not completed as a duplicate) and the reason stays
            # readable. Another copy of the request (a retry copy racing a redelivered original)
            # is a duplicate: the request sits in the dead-letter queue once.
            dead = existing.dead_letter_message_id
            if dead is not None and message_id is not None and message_id != dead:
                return duplicate(request, f"already failed; its dead letter is message {dead}")
            return dead_letter(
                request,
                existing.failure_reason or failures.RUN_REJECTED,
                existing.error or "the run was refused earlier",
            )
        if existing.status is RunStatus.CANCELLED:
            # Every copy, redelivery or wait of a cancelled request ends here: no run starts.
            return cancelled(request, f"cancelled by {existing.cancelled_by or 'an operator'}")
        if existing.status in (RunStatus.DISPATCHED, RunStatus.SUPERSEDED):
            return duplicate(request, f"already {existing.status.value} (run {existing.run_id or '-'})")
        return None

    @staticmethod
    def _is_outside_replay(request: BuildRequest, existing: LedgerRecord, message_id: str | None) -> bool:
        """A failed request re-sent as ``<id>-r<N>`` by another tool (the portal's Service Bus Explorer)."""
        if existing.status is not RunStatus.FAILED or message_id is None:
            return False
        suffix = message_id.removeprefix(request.id + failures.REPLAY_SUFFIX)
        return suffix != message_id and suffix.isdigit() and message_id != existing.dead_letter_message_id

    def _accept_outside_replay(
        self, existing: LedgerRecord, etag: str, message_id: str | None, now: datetime
    ) -> tuple[LedgerRecord, str] | None:
        """Make the failed record claimable again, noting the replay (``slipway replay`` does this itself)."""
        updated = reopened(existing, now, f"message {message_id} (sent by another tool)")
        try:
            return updated, self._ledger.replace(updated, etag)
        except ConflictError:
            return self._ledger.get(existing.request_id)

    def _reclaim(
        self,
        request: BuildRequest,
        spec: RunSpec,
        existing: LedgerRecord,
        etag: str,
        event: str,
        detail: str | None,
    ) -> Claim:
        """Claim a request no run started for; the record shows what this attempt sends (the
        configuration may have changed since the last one)."""
        claimed = existing.with_event(
            self._clock(),
            event,
            detail,
            status=RunStatus.DISPATCHING,
            attempts=existing.attempts + 1,
            start_uncertain_at=None,
            task_yaml=spec.task_yaml,
            result_marker=spec.result_marker,
            run_request=spec.redacted(),
        )
        try:
            new_etag = self._ledger.replace(claimed, etag)
        except ConflictError:
            return duplicate(request, "another delivery claimed it first")
        return claimed, new_etag

    def _recover(
        self,
        request: BuildRequest,
        spec: RunSpec,
        existing: LedgerRecord,
        etag: str,
        message_id: str | None,
        claimed_at: datetime | None = None,
    ) -> Claim:
        """A dead holder's claim (or an unanswered start at ``claimed_at``): adopt its run, start
        afresh if it started none, or ask an operator."""
        interrupted = (
            f"a previous attempt claimed {request.id} at {existing.updated_at.isoformat()} and stopped "
            "before recording a run"
        )
        list_runs = getattr(self._backend, "list_runs", None)
        if list_runs is None:
            return self._refuse_interrupted(
                request,
                existing,
                etag,
                f"{interrupted}; check the registry's runs for this request id, then replay if none",
            )
        from shared.acr.run_backend import RunFinder
        from shared.dispatch.run_recovery import find_orphan_run

        finder: RunFinder = self._backend  # type: ignore[assignment]
        try:
            recovery = find_orphan_run(finder, self._ledger, existing, claimed_at=claimed_at)
        except (TransientBackendError, PermanentBackendError) as exc:
            return self._later.wait(
                request,
                self._clock() + RetryPolicy.from_settings().delay(1),
                f"cannot list runs to recover the claim: {exc}",
            )
        if recovery.run is not None:
            return Adopt(existing, etag, recovery.run)
        if recovery.nothing_started:
            return self._reclaim(request, spec, existing, etag, "reclaimed_no_run_found", message_id)
        return self._refuse_interrupted(
            request,
            existing,
            etag,
            f"{interrupted}; runs {', '.join(recovery.candidates)} started around then, none is "
            "recorded and no log names this request yet (the build step prints 'slipway: request "
            "<id>'): a replay looks again and adopts the run whose log names it",
        )

    def settle(
        self,
        record: LedgerRecord,
        etag: str,
        *,
        status: RunStatus,
        event: str,
        detail: str | None = None,
        **fields: object,
    ) -> tuple[LedgerRecord, str] | None:
        """Write the claim's new state; the written record and its ETag, or None if that failed."""
        updated = record.with_event(
            self._clock(), event, detail or fields.get("error"), status=status, **fields
        )
        try:
            return updated, self._ledger.replace(updated, etag)
        except Exception as exc:  # the run has started; a ledger hiccup must not start another
            ledger_failed(record.request_id, exc)
            return None

    def settle_transient(
        self,
        request: BuildRequest,
        record: LedgerRecord,
        etag: str,
        exc: TransientBackendError,
        policy: RetryPolicy,
        message_id: str | None,
    ) -> DispatchResult:
        """A transient failure after the claim: back off, or give up after ``max_attempts`` claims."""
        why = f"{self._backend.name} is unavailable: {exc}"
        # No HTTP answer at all (timeout, reset): the run may exist. The next attempt, or a replay
        # after giving up, looks for it before starting another.
        uncertain = record.updated_at if exc.status_code is None else None
        if policy.exhausted(record.attempts):
            description = f"gave up after {record.attempts} attempts; last error: {why}"
            if uncertain is not None:
                description += "; the last start got no answer, so a replay first looks for its run"
            self.settle(
                record,
                etag,
                status=RunStatus.FAILED,
                error=description,
                failure_reason=failures.RETRIES_EXHAUSTED,
                dead_letter_message_id=message_id,
                start_uncertain_at=uncertain,
                event="retries_exhausted",
            )
            return dead_letter(request, failures.RETRIES_EXHAUSTED, description)
        self.settle(
            record,
            etag,
            status=RunStatus.RETRYING,
            error=str(exc),
            start_uncertain_at=uncertain,
            event="start_failed_transient" if uncertain is None else "start_unanswered",
        )
        return self._later.retry_later(request, record.attempts, exc.retry_after, policy, why)

    # --- refusals: the reason goes to the ledger, the message to the dead-letter queue -------
    #
    # The function trigger cannot dead-letter with a reason (``handlers/dispatch.py``): the
    # message reaches the dead-letter queue as MaxDeliveryCountExceeded, in Azure and under
    # ``slipway serve`` alike. So every refusal of a request Slipway can name leaves its reason in
    # the ledger (``failure_reason``), where ``slipway replay --reason`` and ``runs show`` find it.
    # Left out: a body that is not a BuildRequest (no id) and ``IdConflict`` (the record there
    # belongs to the other build); their dead letters keep the queue's reason.

    def refuse_unclaimed(
        self, request: BuildRequest, reason: str, description: str, message_id: str | None
    ) -> DispatchResult:
        """Refuse a request before any claim, recorded as ``failed`` with why.

        A request with no record gets one. A ``retrying`` record (a replay reopened it, or a retry
        was pending) is settled ``failed`` with this refusal: the request is dead-lettered again,
        and a record left ``retrying`` would say it is coming back when nothing is queued. Any
        other record (dispatched, failed, a live claim) stays as it is. Like any failed request it
        then needs a replay once the cause is fixed, which is what the dead letter asks for anyway.
        """
        now = self._clock()
        record = new_record(
            request,
            RunStatus.FAILED,
            now,
            "refused",
            description,
            error=description,
            failure_reason=reason,
            dead_letter_message_id=message_id,
        )
        try:
            if not self._ledger.create(record):
                self._refuse_retrying(request.id, now, reason, description, message_id)
        except Exception as exc:  # the refusal stands; only its reason is not recorded
            ledger_failed(request.id, exc)
        return dead_letter(request, reason, description)

    def _refuse_retrying(
        self, request_id: str, now: datetime, reason: str, description: str, message_id: str | None
    ) -> None:
        """``failed`` for a ``retrying`` record refused before its claim (see ``refuse_unclaimed``)."""
        for _ in range(3):  # a conflict is another delivery or a replay moving the record on
            found = self._ledger.get(request_id)
            if found is None or found[0].status is not RunStatus.RETRYING:
                return
            existing, etag = found
            refused = existing.with_event(
                now,
                "refused",
                description,
                status=RunStatus.FAILED,
                error=description,
                failure_reason=reason,
                dead_letter_message_id=message_id,
            )
            try:
                self._ledger.replace(refused, etag)
            except ConflictError:
                continue
            return

    def _refuse_interrupted(
        self, request: BuildRequest, existing: LedgerRecord, etag: str, description: str
    ) -> DispatchResult:
        """``DispatchInterrupted``: the reason joins the dead holder's claim, which stays as it is.

        Status, ``updated_at`` and the claim's lease are untouched: every redelivery goes through
        recovery again (a run may have shown up since), and a replay reopens the record.
        """
        reason = failures.DISPATCH_INTERRUPTED
        if existing.failure_reason != reason or existing.error != description:
            entry = {"at": self._clock().isoformat(), "event": "dispatch_interrupted", "detail": description}
            noted = existing.model_copy(
                update={"failure_reason": reason, "error": description, "history": [*existing.history, entry]}
            )
            try:
                self._ledger.replace(noted, etag)
            except Exception as exc:  # a conflict means another delivery moved on: its word stands
                ledger_failed(request.id, exc)
        return dead_letter(request, reason, description)

"""The dispatcher: one queue message in, at most one ACR run out.

Order matters: validate (a message that can never succeed is refused before any side
effect); look at the ledger (a request already started or refused is settled at once); wait
out the quiet period; skip a request superseded by a newer one on its coalesce key; respect
the run budgets; claim the request id in the ledger with a conditional create (a redelivered or
duplicated message finds the claim and starts nothing); start the run; record it.

Waiting and retrying never hold a message: with a ``queue`` the dispatcher schedules a copy of
the request for later under a new message id and the original is completed (see
``shared.dispatch.failures``). Without one (the bare tests) it answers ``RETRY`` and the caller abandons.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.acr.run_backend import PermanentBackendError, RunBackend, RunHandle, TransientBackendError
from shared.acr.run_prepare import MissingSecret as MissingSecret  # re-exported (slipway doctor)
from shared.acr.run_prepare import prepare_run
from shared.acr.run_prepare import resolve_secrets as resolve_secrets  # re-exported (slipway doctor)
from shared.acr.task import RenderError, RunSpec, new_result_marker
from shared.dispatch import failures
from shared.dispatch.coalesce import Coalescer, Newer, PendingRequests, Started, is_rebuild
from shared.dispatch.failures import RetryPolicy
from shared.dispatch.request_check import request_mismatch
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig, Target
from shared.model.validation import problems
from shared.platform.ledger import ConflictError, Ledger, LedgerRecord, RunStatus
from shared.platform.logs import log_event
from shared.platform.queue.port import QueueError, QueueSender

if TYPE_CHECKING:
    from shared.platform.state import StateStore
    from shared.runs.build_status import BuildStatusNotifier

logger = logging.getLogger("slipway.dispatch")

# Longer than any invocation can run (host.json functionTimeout is 5 minutes): a claim older than
# this belongs to an attempt that died.
CLAIM_LEASE = timedelta(minutes=10)
# A claim over budget that was among the first by claim time looks again this often, this long
# apart, while later claimants back off (see shared/dispatch/budgets.py), before backing off itself.
BUDGET_LOOKS = 3
BUDGET_SETTLE = 0.5  # seconds


class Outcome(StrEnum):
    DISPATCHED = "dispatched"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"  # a newer request on the coalesce key builds instead: complete
    RESCHEDULED = "rescheduled"  # a copy comes back later (wait or retry): complete the original
    RETRY = "retry"  # abandon: redelivered at once (no queue to schedule a copy on)
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class DispatchResult:
    outcome: Outcome
    request_id: str | None = None
    run_id: str | None = None
    reason: str | None = None
    description: str | None = None


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


def _buildable(request: BuildRequest, config: SlipwayConfig) -> bool:
    """Whether the dispatcher would build ``request`` at all (its target exists and allows it)."""
    target = config.target(request.target)
    return target is not None and request_mismatch(request, config, target) is None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(
        self,
        *,
        config: Callable[[], SlipwayConfig],
        ledger: Ledger,
        backend: RunBackend,
        settings: Mapping[str, str],
        clock: Callable[[], datetime] = _utcnow,
        state: StateStore | None = None,
        notifier: BuildStatusNotifier | None = None,
        queue: QueueSender | None = None,
        pending: PendingRequests | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``state`` receives the last build of each target's default branch and the newest
        started request per coalesce key (none: not recorded); ``notifier`` posts the ``pending``
        commit status of a started run (none: no statuses); ``queue`` takes the delayed copies
        (none: waits and retries answer RETRY); ``pending`` answers the coalescing look-ahead
        (normally the same queue)."""
        self._config = config
        self._ledger = ledger
        self._backend = backend
        self._settings = settings
        self._clock = clock
        self._state = state
        self._notifier = notifier
        self._queue = queue
        self._sleep = sleep
        self._coalescer = Coalescer(pending=pending, state=state)

    def dispatch(
        self, body: bytes | str, *, message_id: str | None = None, delivery_count: int = 1
    ) -> DispatchResult:
        try:
            request = BuildRequest.from_json(body)
        except ValidationError as exc:
            return self._dead_letter(
                None, None, failures.INVALID_REQUEST, f"the message is not a BuildRequest v1: {problems(exc)}"
            )
        correlation_id = request.trigger.correlation_id
        try:
            config = self._config()
        except Exception as exc:
            # The operator can fix the file; the request comes back later, a bounded number of times.
            return self._retry_unclaimed(request, f"configuration cannot be loaded: {exc}")
        target = config.target(request.target)
        if target is None:
            return self._refuse_unclaimed(
                request,
                failures.UNKNOWN_TARGET,
                f"target {request.target!r} is not in the configuration",
                message_id,
            )
        # The target's credentials are about to be applied to what the request names.
        mismatch = request_mismatch(request, config, target)
        if mismatch is not None:
            return self._refuse_unclaimed(request, failures.REQUEST_NOT_ALLOWED, mismatch, message_id)
        try:
            # The same function renders `slipway render`'s task: placeholders for unset secrets.
            prepared = prepare_run(request, config, target, self._settings, result_marker=new_result_marker())
        except RenderError as exc:
            return self._refuse_unclaimed(request, failures.INVALID_REQUEST, str(exc), message_id)
        spec = prepared.spec
        if prepared.missing:
            if self._backend.name != "dry-run":
                return self._refuse_unclaimed(
                    request,
                    failures.SETTING_MISSING,
                    f"{prepared.missing_detail}; set it, then replay this message",
                    message_id,
                )
            return self._could_not_run(request, spec, prepared.missing_detail, message_id)

        now = self._clock()
        fingerprint = build_fingerprint(request)
        found = self._ledger.get(request.id)
        if found is not None and self._is_outside_replay(request, found[0], message_id):
            found = self._accept_outside_replay(found[0], found[1], message_id, now)
        if found is not None and found[0].status is not RunStatus.DISPATCHING:
            settled = self._settled(request, fingerprint, found[0], message_id)
            if settled is not None:
                return settled
        if found is None or found[0].status is RunStatus.RETRYING:
            # Nothing started yet for this request: it may still wait, be superseded or be deferred.
            deferred = self._defer(request, target, config, now, message_id)
            if deferred is not None:
                return deferred
        record = new_record(
            request,
            RunStatus.DISPATCHING,
            now,
            "claimed",
            f"message {message_id}",
            backend=self._backend.name,
            task_yaml=spec.task_yaml,
            result_marker=spec.result_marker,
            run_request=spec.redacted(),
            attempts=1,
        )
        # A record read above exists: claim it as it is, rather than a create bound to fail
        # (a write refused) and a second read of the same record.
        created = self._ledger.create_versioned(record) if found is None else None
        if created is None:
            claimed = self._claim_existing(
                request, fingerprint, spec, message_id, target, delivery_count, found
            )
            if isinstance(claimed, DispatchResult):
                return claimed
            record, etag = claimed
        else:
            etag = created
        over_budget = self._hold_budget(request, target, config, record, etag)
        if over_budget is not None:
            return over_budget

        try:
            handle = self._backend.start(spec, request_id=request.id, correlation_id=correlation_id)
        except TransientBackendError as exc:
            return self._retry_claimed(
                request, record, etag, exc, RetryPolicy.from_settings(config.dispatch), message_id
            )
        except PermanentBackendError as exc:
            self._update(
                record,
                etag,
                status=RunStatus.FAILED,
                error=str(exc),
                failure_reason=failures.RUN_REJECTED,
                dead_letter_message_id=message_id,
                event="start_refused",
            )
            return self._dead_letter(
                request, record, failures.RUN_REJECTED, f"{self._backend.name} refused the run: {exc}"
            )
        return self._started(request, target, record, etag, handle, delivery_count)

    def _could_not_run(
        self, request: BuildRequest, spec: RunSpec, missing: str, message_id: str | None
    ) -> DispatchResult:
        """A dry run whose secrets are unset: a real run would be refused, so record it as one that
        could not run (``failed``, MissingSetting, with the task it would have sent) and dead-letter
        it as a real dispatch would. Set the setting, then replay."""
        description = f"{missing}: a real run could not start (dry run); set it, then replay this message"
        found = self._ledger.get(request.id)
        if found is not None:
            settled = self._settled(request, build_fingerprint(request), found[0], message_id)
            if settled is not None:
                return settled
        outcome: dict[str, Any] = {
            "task_yaml": spec.task_yaml,
            "result_marker": spec.result_marker,
            "run_request": spec.redacted(),
            "error": description,
            "failure_reason": failures.SETTING_MISSING,
            "dead_letter_message_id": message_id,
        }
        now = self._clock()
        if found is None:
            record = new_record(
                request, RunStatus.FAILED, now, "not_run", description, backend=self._backend.name, **outcome
            )
            written = self._ledger.create(record)
        else:
            existing, etag = found
            try:
                self._ledger.replace(
                    existing.with_event(now, "not_run", description, status=RunStatus.FAILED, **outcome), etag
                )
                written = True
            except ConflictError:
                written = False
        if not written:
            return self._retry(
                request, "the ledger record changed while recording a run that could not start"
            )
        return self._dead_letter(request, None, failures.SETTING_MISSING, description)

    def _started(
        self,
        request: BuildRequest,
        target: Target,
        record: LedgerRecord,
        etag: str,
        handle: RunHandle,
        delivery_count: int,
        event: str = "run_started",
    ) -> DispatchResult:
        correlation_id = request.trigger.correlation_id

        dispatched = self._update(
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
        self._supersede_older_run(request, target, handle.run_id)
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

    def _claim_existing(
        self,
        request: BuildRequest,
        fingerprint: str,
        spec: RunSpec,
        message_id: str | None,
        target: Target,
        delivery_count: int,
        found: tuple[LedgerRecord, str] | None = None,
    ) -> DispatchResult | tuple[LedgerRecord, str]:
        """Claim a request whose record exists (``found``, or read now when a create found it)."""
        found = found or self._ledger.get(request.id)
        if found is None:  # deleted between create and get: let the redelivery try again
            return self._retry(request, "ledger record vanished while claiming")
        existing, etag = found
        settled = self._settled(request, fingerprint, existing, message_id)
        if settled is not None:
            return settled
        if existing.status is RunStatus.RETRYING:
            if existing.start_uncertain_at is not None:
                # The last start call got no answer: ACR may have created the run. Look first.
                return self._recover(
                    request,
                    target,
                    spec,
                    existing,
                    etag,
                    message_id,
                    delivery_count,
                    existing.start_uncertain_at,
                )
            # A previous attempt failed before any run started: claim it again, exactly once.
            return self._reclaim(request, spec, existing, etag, "reclaimed", message_id)
        # DISPATCHING: another delivery holds the claim. While it may still be working, come back
        # when its lease ends; once the claim is older than any invocation can live, the holder
        # died between claiming and recording: find out whether it started a run.
        age = self._clock() - existing.updated_at
        if age < CLAIM_LEASE:
            return self._wait(
                request,
                existing.updated_at + CLAIM_LEASE + timedelta(seconds=5),
                "another delivery is dispatching this request",
            )
        return self._recover(request, target, spec, existing, etag, message_id, delivery_count)

    def _settled(
        self, request: BuildRequest, fingerprint: str, existing: LedgerRecord, message_id: str | None
    ) -> DispatchResult | None:
        """The answer for a request the ledger already settled (or whose id was reused), else None."""
        if existing.payload_hash != fingerprint:
            return self._dead_letter(
                request,
                None,
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
                return self._duplicate(request, f"already failed; its dead letter is message {dead}")
            return self._dead_letter(
                request,
                existing,
                existing.failure_reason or failures.RUN_REJECTED,
                existing.error or "the run was refused earlier",
            )
        if existing.status in (RunStatus.DISPATCHED, RunStatus.SUPERSEDED):
            return self._duplicate(request, f"already {existing.status.value} (run {existing.run_id or '-'})")
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
    ) -> DispatchResult | tuple[LedgerRecord, str]:
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
            return self._duplicate(request, "another delivery claimed it first")
        return claimed, new_etag

    def _recover(
        self,
        request: BuildRequest,
        target: Target,
        spec: RunSpec,
        existing: LedgerRecord,
        etag: str,
        message_id: str | None,
        delivery_count: int,
        claimed_at: datetime | None = None,
    ) -> DispatchResult | tuple[LedgerRecord, str]:
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
            return self._wait(
                request,
                self._clock() + RetryPolicy.from_settings().delay(1),
                f"cannot list runs to recover the claim: {exc}",
            )
        if recovery.run is not None:
            return self._started(
                request, target, existing, etag, recovery.run, delivery_count, event="run_recovered"
            )
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

    # --- waiting, coalescing, budgets --------------------------------------------------------

    def _defer(
        self,
        request: BuildRequest,
        target: Target,
        config: SlipwayConfig,
        now: datetime,
        message_id: str | None,
    ) -> DispatchResult | None:
        """Wait out the quiet period, skip a superseded request, or wait for budget; None: go on."""
        settings = config.dispatch
        quiet_until = request.trigger.received_at + settings.quiet_period
        newer = self._coalescer.superseded_by(request, buildable=lambda other: _buildable(other, config))
        if (
            newer is not None
            and newer.pending
            and newer.push
            and is_rebuild(request)
            and self._queue is not None
        ):
            # A rebuild that a pending push will serve: supersede it once that push has started,
            # so its reason lands on a record that exists.
            # Just after its quiet period; past that (it waits for budget), one budget delay later.
            until = newer.received_at + settings.quiet_period + timedelta(seconds=5)
            until = until if until > now else now + settings.budget_delay
            return self._wait(request, until, f"the pending push {newer.request_id} builds the newest commit")
        if newer is not None:
            return self._supersede(request, newer, now, message_id)
        if self._queue is None:
            return None  # waiting needs a delayed copy: abandoning would burn deliveries instead
        if now < quiet_until:
            return self._wait(request, quiet_until, "quiet period: a newer commit may follow")
        from shared.dispatch.budgets import check_budget

        budget = check_budget(self._ledger, config, target, now=now)
        if budget.over:
            jitter = settings.budget_delay * (0.5 * random.random())  # noqa: S311 - jitter, not a secret
            return self._wait(request, now + settings.budget_delay + jitter, f"over budget: {budget.detail}")
        return None

    def _hold_budget(
        self, request: BuildRequest, target: Target, config: SlipwayConfig, record: LedgerRecord, etag: str
    ) -> DispatchResult | None:
        """After the claim, the budget check that bounds the runs (``shared.dispatch.budgets``): None to go
        on and start the run; over budget, the claim goes back to ``retrying`` and a copy waits."""
        from shared.dispatch.budgets import claim_standing, limits

        if self._queue is None or self._backend.name == "dry-run" or limits(config, target) == (None, None):
            return None  # as in _defer: waiting needs a delayed copy; dry runs never count
        from shared.platform.ledger import RecordSummary

        claim = RecordSummary.of(record)
        for look in range(BUDGET_LOOKS):
            standing = claim_standing(self._ledger, config, target, claim, now=self._clock())
            if not standing.over:
                return None
            if not standing.first or look == BUDGET_LOOKS - 1:
                break
            self._sleep(BUDGET_SETTLE)
        released = record.with_event(
            self._clock(),
            "over_budget",
            standing.detail,
            status=RunStatus.RETRYING,
            attempts=max(record.attempts - 1, 0),  # no start was attempted
        )
        try:
            self._ledger.replace(released, etag)
        except Exception as exc:  # the claim stays: after its lease, recovery finds no run and reclaims
            self._ledger_failed(request.id, exc)
            return self._retry(request, f"over budget, and the claim could not be released: {exc}")
        settings = config.dispatch
        jitter = settings.budget_delay * (0.5 * random.random())  # noqa: S311 - jitter, not a secret
        return self._wait(
            request, self._clock() + settings.budget_delay + jitter, f"over budget: {standing.detail}"
        )

    def _supersede(
        self, request: BuildRequest, newer: Newer, now: datetime, message_id: str | None
    ) -> DispatchResult:
        """Record that ``request`` starts no run because ``newer`` serves it."""
        detail = f"by {newer.request_id} (message {message_id})"
        if is_rebuild(request):
            detail += f"; the {request.trigger.kind} rebuild is served by " + (
                "that pending push" if newer.pending else "that run, started after it was received"
            )
        record = new_record(
            request,
            RunStatus.SUPERSEDED,
            now,
            "superseded",
            detail,
            backend=self._backend.name,
            following=False,
        )
        if not self._ledger.create(record):
            found = self._ledger.get(request.id)
            if found is None or found[0].status is not RunStatus.RETRYING:
                return self._retry(request, "the ledger record changed while superseding")
            existing, etag = found
            try:
                self._ledger.replace(
                    existing.with_event(
                        now, "superseded", detail, status=RunStatus.SUPERSEDED, following=False
                    ),
                    etag,
                )
            except ConflictError:
                return self._retry(request, "the ledger record changed while superseding")
        log_event(
            logger,
            "request_superseded",
            correlation_id=request.trigger.correlation_id,
            request_id=request.id,
            target=request.target,
            superseded_by=newer.request_id,
        )
        if is_rebuild(request):
            self._note_served_rebuild(request, newer.request_id, now)
        return DispatchResult(
            Outcome.SUPERSEDED, request.id, reason="Superseded", description=f"by {newer.request_id}"
        )

    def _note_served_rebuild(self, rebuild: BuildRequest, by: str, now: datetime) -> None:
        """Record on the serving run's ledger record which rebuild it also serves, and why.

        Best effort: the rebuild's own record names the run that serves it either way.
        """
        trigger = rebuild.trigger
        detail = (
            f"{rebuild.id}: {trigger.kind} from {trigger.provider}"
            f"{f' (delivery {trigger.delivery_id})' if trigger.delivery_id else ''}"
            f", received {trigger.received_at.isoformat()}, correlation {trigger.correlation_id}"
        )
        for _ in range(3):
            found = self._ledger.get(by)
            if found is None or found[0].status in (RunStatus.DISPATCHING, RunStatus.RETRYING):
                return  # not started: nothing to note on (a superseded rebuild names it anyway)
            record, etag = found
            if any(entry.get("detail") == detail for entry in record.history):
                return
            try:
                self._ledger.replace(record.with_event(now, "covers_rebuild", detail), etag)
            except ConflictError:
                continue
            except Exception as exc:
                self._ledger_failed(by, exc)
            return

    def _supersede_older_run(self, request: BuildRequest, target: Target, run_id: str) -> None:
        """Remember this run as started on its key; cancel the older ones if the target asks."""
        for previous in self._coalescer.record_started(request, run_id, now=self._clock()):
            if previous.run_id is not None and previous.run_id != run_id and target.cancel_superseded:
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

    # --- rescheduling -------------------------------------------------------------------------

    def _send_copy(self, request: BuildRequest, message_id: str, at: datetime) -> bool:
        """Schedule ``request`` (as given) under ``message_id`` for ``at``; False if that failed."""
        if self._queue is None:
            return False
        from shared.intake.rebuild_queue import request_message

        try:
            self._queue.send([request_message(request, message_id=message_id, subject="retry", scheduled=at)])
        except QueueError as exc:
            log_event(
                logger, "reschedule_failed", level=logging.WARNING, request_id=request.id, error=str(exc)
            )
            return False
        return True

    def _wait(self, request: BuildRequest, until: datetime, why: str) -> DispatchResult:
        """Come back at ``until`` (not an attempt: nothing failed)."""
        message_id = failures.wait_message_id(request.id, int(until.timestamp()))
        return self._reschedule(request, message_id, until, why, "Waiting")

    def _retry_later(
        self, request: BuildRequest, attempt: int, retry_after: float | None, policy: RetryPolicy, why: str
    ) -> DispatchResult:
        at = self._clock() + policy.delay(attempt, retry_after=retry_after)
        copy = request.model_copy(update={"attempt": attempt})
        return self._reschedule(copy, failures.retry_message_id(request.id, attempt), at, why, "Transient")

    def _reschedule(
        self, request: BuildRequest, message_id: str, at: datetime, why: str, reason: str
    ) -> DispatchResult:
        """A copy of ``request`` comes back at ``at``; without a queue to send it on, RETRY."""
        if not self._send_copy(request, message_id, at):
            return self._retry(request, why)
        log_event(
            logger,
            "dispatch_rescheduled",
            level=logging.WARNING if reason == "Transient" else logging.INFO,
            correlation_id=request.trigger.correlation_id,
            request_id=request.id,
            message_id=message_id,
            attempt=request.attempt,
            at=at.isoformat(),
            reason=why,
        )
        return DispatchResult(Outcome.RESCHEDULED, request.id, reason=reason, description=why)

    def _retry_claimed(
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
            self._update(
                record,
                etag,
                status=RunStatus.FAILED,
                error=description,
                failure_reason=failures.RETRIES_EXHAUSTED,
                dead_letter_message_id=message_id,
                start_uncertain_at=uncertain,
                event="retries_exhausted",
            )
            return self._dead_letter(request, record, failures.RETRIES_EXHAUSTED, description)
        self._update(
            record,
            etag,
            status=RunStatus.RETRYING,
            error=str(exc),
            start_uncertain_at=uncertain,
            event="start_failed_transient" if uncertain is None else "start_unanswered",
        )
        return self._retry_later(request, record.attempts, exc.retry_after, policy, why)

    def _retry_unclaimed(self, request: BuildRequest, why: str) -> DispatchResult:
        """A transient failure before any claim (no configuration): the attempt lives in the body."""
        policy = RetryPolicy.from_settings()
        attempt = request.attempt + 1
        if policy.exhausted(attempt):
            return self._dead_letter(
                request, None, failures.RETRIES_EXHAUSTED, f"gave up after {attempt} attempts: {why}"
            )
        return self._retry_later(request, attempt, None, policy, why)

    def _update(
        self,
        record: LedgerRecord,
        etag: str,
        *,
        status: RunStatus,
        event: str,
        detail: str | None = None,
        **fields: object,
    ) -> tuple[LedgerRecord, str] | None:
        """Write the record's new state; the written record and its ETag, or None if that failed."""
        updated = record.with_event(
            self._clock(), event, detail or fields.get("error"), status=status, **fields
        )
        try:
            return updated, self._ledger.replace(updated, etag)
        except Exception as exc:  # the run has started; a ledger hiccup must not start another
            log_event(
                logger,
                "ledger_update_failed",
                level=logging.ERROR,
                request_id=record.request_id,
                error=str(exc),
            )
            return None

    def _duplicate(self, request: BuildRequest, why: str) -> DispatchResult:
        log_event(
            logger,
            "duplicate_ignored",
            correlation_id=request.trigger.correlation_id,
            request_id=request.id,
            reason=why,
        )
        return DispatchResult(Outcome.DUPLICATE, request.id, reason=why)

    def _retry(self, request: BuildRequest, why: str) -> DispatchResult:
        log_event(
            logger,
            "dispatch_retry",
            level=logging.WARNING,
            correlation_id=request.trigger.correlation_id,
            request_id=request.id,
            reason=why,
        )
        return DispatchResult(Outcome.RETRY, request.id, reason="Transient", description=why)

    # --- refusals: the reason goes to the ledger, the message to the dead-letter queue -------
    #
    # The function trigger cannot dead-letter with a reason (``handlers/dispatch.py``): the
    # message reaches the dead-letter queue as MaxDeliveryCountExceeded, in Azure and under
    # ``slipway serve`` alike. So every refusal of a request Slipway can name leaves its reason in
    # the ledger (``failure_reason``), where ``slipway replay --reason`` and ``runs show`` find it.
    # Left out: a body that is not a BuildRequest (no id) and ``IdConflict`` (the record there
    # belongs to the other build); their dead letters keep the queue's reason.

    def _refuse_unclaimed(
        self, request: BuildRequest, reason: str, description: str, message_id: str | None
    ) -> DispatchResult:
        """Refuse a request before any claim, recorded as ``failed`` with why.

        Only when it has no record yet: one left by an earlier attempt stays as it is. Like any
        failed request it then needs a replay once the cause is fixed (a redelivery is refused
        again from the ledger), which is what the dead letter asks for anyway.
        """
        record = new_record(
            request,
            RunStatus.FAILED,
            self._clock(),
            "refused",
            description,
            error=description,
            failure_reason=reason,
            dead_letter_message_id=message_id,
        )
        try:
            self._ledger.create(record)
        except Exception as exc:  # the refusal stands; only its reason is not recorded
            self._ledger_failed(request.id, exc)
        return self._dead_letter(request, None, reason, description)

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
                self._ledger_failed(request.id, exc)
        return self._dead_letter(request, existing, reason, description)

    @staticmethod
    def _ledger_failed(request_id: str, exc: Exception) -> None:
        log_event(logger, "ledger_update_failed", level=logging.ERROR, request_id=request_id, error=str(exc))

    def _dead_letter(
        self, request: BuildRequest | None, record: LedgerRecord | None, reason: str, description: str
    ) -> DispatchResult:
        log_event(
            logger,
            "dispatch_refused",
            level=logging.ERROR,
            correlation_id=request.trigger.correlation_id if request else None,
            request_id=request.id if request else None,
            reason=reason,
            description=description,
        )
        return DispatchResult(
            Outcome.DEAD_LETTER, request.id if request else None, reason=reason, description=description
        )

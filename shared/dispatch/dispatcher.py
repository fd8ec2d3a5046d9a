"""The dispatcher: one queue message in, at most one ACR run out (the orchestration).

Order matters: validate (a message that can never succeed is refused before any side
effect); look at the ledger (a request already started or refused is settled at once); cancel a
pull-request build whose request was closed (``shared.dispatch.pr_closed``); wait out the quiet
period; skip a request superseded by a newer one on its coalesce key; respect
the run budgets; claim the request id in the ledger with a conditional create (a redelivered or
duplicated message finds the claim and starts nothing); start the run; record it.

Only the order is here; each step lives beside it: the ledger lifecycle of a claim in
``shared.dispatch.claims``, waits and retries as delayed copies in ``shared.dispatch.retry``, a
superseded request in ``shared.dispatch.supersede``, what follows a started run in
``shared.dispatch.started``, and the answers the queue trigger acts on in ``shared.dispatch.outcome``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.acr.run_backend import PermanentBackendError, RunBackend, TransientBackendError
from shared.acr.run_prepare import MissingSecret as MissingSecret  # re-exported (slipway doctor)
from shared.acr.run_prepare import prepare_run
from shared.acr.run_prepare import resolve_secrets as resolve_secrets  # re-exported (slipway doctor)
from shared.acr.task import RenderError, RunSpec, new_result_marker
from shared.dispatch import failures
from shared.dispatch.claims import Adopt, Claims, build_fingerprint, new_record
from shared.dispatch.coalesce import Coalescer, PendingRequests, is_rebuild, is_rerun
from shared.dispatch.failures import RetryPolicy
from shared.dispatch.outcome import DispatchResult as DispatchResult
from shared.dispatch.outcome import Outcome as Outcome
from shared.dispatch.outcome import dead_letter, ledger_failed, retry_now
from shared.dispatch.pr_closed import ClosedPullRequests
from shared.dispatch.request_check import request_mismatch
from shared.dispatch.retry import Rescheduler
from shared.dispatch.started import StartedRuns
from shared.dispatch.supersede import Superseding
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig, Target
from shared.model.validation import problems
from shared.platform.ledger import ConflictError, Ledger, LedgerRecord, RunStatus
from shared.platform.queue.port import QueueSender

if TYPE_CHECKING:
    from shared.platform.state import StateStore
    from shared.runs.build_status import BuildStatusNotifier

# A claim over budget that was among the first by claim time looks again this often, this long
# apart, while later claimants back off (see shared/dispatch/budgets.py), before backing off itself.
BUDGET_LOOKS = 3
BUDGET_SETTLE = 0.5  # seconds


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
        self._sleep = sleep
        self._coalescer = Coalescer(pending=pending, state=state)
        self._later = Rescheduler(queue, clock)
        self._claims = Claims(ledger, backend, clock, self._later)
        self._superseding = Superseding(ledger, backend)
        self._closed = ClosedPullRequests(ledger, backend, state, clock)
        self._started = StartedRuns(
            ledger=ledger,
            backend=backend,
            clock=clock,
            claims=self._claims,
            coalescer=self._coalescer,
            state=state,
            notifier=notifier,
        )

    def dispatch(
        self, body: bytes | str, *, message_id: str | None = None, delivery_count: int = 1
    ) -> DispatchResult:
        try:
            request = BuildRequest.from_json(body)
        except ValidationError as exc:
            return dead_letter(
                None, failures.INVALID_REQUEST, f"the message is not a BuildRequest v1: {problems(exc)}"
            )
        correlation_id = request.trigger.correlation_id
        try:
            config = self._config()
        except Exception as exc:
            # The operator can fix the file; the request comes back later, a bounded number of times.
            return self._later.retry_unclaimed(request, f"configuration cannot be loaded: {exc}")
        target = config.target(request.target)
        if target is None:
            return self._claims.refuse_unclaimed(
                request,
                failures.UNKNOWN_TARGET,
                f"target {request.target!r} is not in the configuration",
                message_id,
            )
        # The target's credentials are about to be applied to what the request names.
        mismatch = request_mismatch(request, config, target)
        if mismatch is not None:
            return self._claims.refuse_unclaimed(request, failures.REQUEST_NOT_ALLOWED, mismatch, message_id)
        try:
            # The same function renders `slipway render`'s task: placeholders for unset secrets.
            prepared = prepare_run(request, config, target, self._settings, result_marker=new_result_marker())
        except RenderError as exc:
            return self._claims.refuse_unclaimed(request, failures.INVALID_REQUEST, str(exc), message_id)
        spec = prepared.spec
        if prepared.missing:
            if self._backend.name != "dry-run":
                return self._claims.refuse_unclaimed(
                    request,
                    failures.SETTING_MISSING,
                    f"{prepared.missing_detail}; set it, then replay this message",
                    message_id,
                )
            return self._could_not_run(request, spec, prepared.missing_detail, message_id)

        now = self._clock()
        found = self._claims.find(request, message_id, now)
        if found is not None and found[0].status is not RunStatus.DISPATCHING:
            settled = self._claims.settled(request, build_fingerprint(request), found[0], message_id)
            if settled is not None:
                return settled
        if found is None or found[0].status is RunStatus.RETRYING:
            # Nothing started yet for this request: it may be of a closed pull request, still wait,
            # be superseded or be deferred.
            closed = self._closed.settle(request, found, message_id)
            if closed is not None:
                return closed
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
        claimed = self._claims.claim(request, record, spec, message_id, found)
        if isinstance(claimed, DispatchResult):
            return claimed
        if isinstance(claimed, Adopt):
            adopted = (claimed.record, claimed.etag, claimed.run)
            return self._started.record(request, target, *adopted, delivery_count, event="run_recovered")
        record, etag = claimed
        over_budget = self._hold_budget(request, target, config, record, etag)
        if over_budget is not None:
            return over_budget

        try:
            handle = self._backend.start(spec, request_id=request.id, correlation_id=correlation_id)
        except TransientBackendError as exc:
            policy = RetryPolicy.from_settings(config.dispatch)
            return self._claims.settle_transient(request, record, etag, exc, policy, message_id)
        except PermanentBackendError as exc:
            self._claims.settle(
                record,
                etag,
                status=RunStatus.FAILED,
                error=str(exc),
                failure_reason=failures.RUN_REJECTED,
                dead_letter_message_id=message_id,
                event="start_refused",
            )
            return dead_letter(request, failures.RUN_REJECTED, f"{self._backend.name} refused the run: {exc}")
        return self._started.record(request, target, record, etag, handle, delivery_count)

    def _could_not_run(
        self, request: BuildRequest, spec: RunSpec, missing: str, message_id: str | None
    ) -> DispatchResult:
        """A dry run whose secrets are unset: a real run would be refused, so record it as one that
        could not run (``failed``, MissingSetting, with the task it would have sent) and dead-letter
        it as a real dispatch would. Set the setting, then replay."""
        description = f"{missing}: a real run could not start (dry run); set it, then replay this message"
        found = self._ledger.get(request.id)
        if found is not None:
            settled = self._claims.settled(request, build_fingerprint(request), found[0], message_id)
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
            return retry_now(request, "the ledger record changed while recording a run that could not start")
        return dead_letter(request, failures.SETTING_MISSING, description)

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
            and self._later.can_wait
        ):
            # A rebuild that a pending push will serve: supersede it once that push has started,
            # so its reason lands on a record that exists.
            # Just after its quiet period; past that (it waits for budget), one budget delay later.
            until = newer.received_at + settings.quiet_period + timedelta(seconds=5)
            until = until if until > now else now + settings.budget_delay
            why = f"the pending push {newer.request_id} builds the newest commit"
            return self._later.wait(request, until, why)
        if newer is not None:
            return self._superseding.supersede(request, newer, now, message_id)
        if not self._later.can_wait:
            return None  # waiting needs a delayed copy: abandoning would burn deliveries instead
        # A rerun waits for no newer commit: it is never coalesced (``shared.dispatch.coalesce``).
        if now < quiet_until and not is_rerun(request):
            return self._later.wait(request, quiet_until, "quiet period: a newer commit may follow")
        from shared.dispatch.budgets import check_budget

        budget = check_budget(self._ledger, config, target, now=now)
        if budget.over:
            jitter = settings.budget_delay * (0.5 * random.random())  # noqa: S311 - jitter, not a secret
            until = now + settings.budget_delay + jitter
            return self._later.wait(request, until, f"over budget: {budget.detail}")
        return None

    def _hold_budget(
        self, request: BuildRequest, target: Target, config: SlipwayConfig, record: LedgerRecord, etag: str
    ) -> DispatchResult | None:
        """After the claim, the budget check that bounds the runs (``shared.dispatch.budgets``): None to go
        on and start the run; over budget, the claim goes back to ``retrying`` and a copy waits."""
        from shared.dispatch.budgets import claim_standing, limits

        if not self._later.can_wait or self._backend.name == "dry-run":
            return None  # as in _defer: waiting needs a delayed copy; dry runs never count
        if limits(config, target) == (None, None):
            return None  # no budget applies to this target
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
            ledger_failed(request.id, exc)
            return retry_now(request, f"over budget, and the claim could not be released: {exc}")
        settings = config.dispatch
        jitter = settings.budget_delay * (0.5 * random.random())  # noqa: S311 - jitter, not a secret
        return self._later.wait(
            request, self._clock() + settings.budget_delay + jitter, f"over budget: {standing.detail}"
        )

"""Coming back later: a copy of the request scheduled on the queue, and the original completed.

Waiting (quiet period, budget, another delivery's claim) and retrying (a transient failure) never
hold a message: the Python Service Bus binding cannot delay a redelivery, so the dispatcher
schedules a copy under a new message id (``shared.dispatch.failures``). Without a queue to send
it on (the bare tests), the answer is ``RETRY`` and the caller abandons the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from shared.dispatch import failures
from shared.dispatch.failures import RetryPolicy
from shared.dispatch.outcome import DispatchResult, Outcome, dead_letter, logger, retry_now
from shared.model.build_request import BuildRequest
from shared.platform.logs import log_event
from shared.platform.queue.port import QueueError, QueueSender


class Rescheduler:
    """Schedules the copies that come back later, on ``queue`` (none: every answer is RETRY)."""

    def __init__(self, queue: QueueSender | None, clock: Callable[[], datetime]) -> None:
        self._queue = queue
        self._clock = clock

    @property
    def can_wait(self) -> bool:
        """Whether a wait can be a delayed copy; abandoning instead would burn deliveries."""
        return self._queue is not None

    def wait(self, request: BuildRequest, until: datetime, why: str) -> DispatchResult:
        """Come back at ``until`` (not an attempt: nothing failed)."""
        message_id = failures.wait_message_id(request.id, int(until.timestamp()))
        return self._reschedule(request, message_id, until, why, "Waiting")

    def retry_later(
        self, request: BuildRequest, attempt: int, retry_after: float | None, policy: RetryPolicy, why: str
    ) -> DispatchResult:
        """Attempt ``attempt`` failed: a copy carrying it comes back after the policy's backoff."""
        at = self._clock() + policy.delay(attempt, retry_after=retry_after)
        copy = request.model_copy(update={"attempt": attempt})
        return self._reschedule(copy, failures.retry_message_id(request.id, attempt), at, why, "Transient")

    def retry_unclaimed(self, request: BuildRequest, why: str) -> DispatchResult:
        """A transient failure before any claim (no configuration): the attempt lives in the body."""
        policy = RetryPolicy.from_settings()
        attempt = request.attempt + 1
        if policy.exhausted(attempt):
            description = f"gave up after {attempt} attempts: {why}"
            return dead_letter(request, failures.RETRIES_EXHAUSTED, description)
        return self.retry_later(request, attempt, None, policy, why)

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

    def _reschedule(
        self, request: BuildRequest, message_id: str, at: datetime, why: str, reason: str
    ) -> DispatchResult:
        """A copy of ``request`` comes back at ``at``; without a queue to send it on, RETRY."""
        if not self._send_copy(request, message_id, at):
            return retry_now(request, why)
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

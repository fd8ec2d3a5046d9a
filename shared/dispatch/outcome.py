"""What one dispatch attempt answers, and the log line each answer leaves.

The queue trigger (``handlers/dispatch.py``) acts on the ``Outcome`` alone: complete, abandon or
dead-letter the message. The dispatcher, its claims and its retries all answer through these
helpers, so every answer of one kind logs the same event under the ``slipway.dispatch`` logger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from shared.model.build_request import BuildRequest
from shared.platform.logs import log_event

logger = logging.getLogger("slipway.dispatch")


class Outcome(StrEnum):
    DISPATCHED = "dispatched"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"  # a newer request on the coalesce key builds instead: complete
    RESCHEDULED = "rescheduled"  # a copy comes back later (wait or retry): complete the original
    CANCELLED = "cancelled"  # an operator cancelled the request before it started: complete
    RETRY = "retry"  # abandon: redelivered at once (no queue to schedule a copy on)
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class DispatchResult:
    outcome: Outcome
    request_id: str | None = None
    run_id: str | None = None
    reason: str | None = None
    description: str | None = None


def duplicate(request: BuildRequest, why: str) -> DispatchResult:
    """Nothing to do: the ledger says this request was handled (or is being handled) already."""
    log_event(
        logger,
        "duplicate_ignored",
        correlation_id=request.trigger.correlation_id,
        request_id=request.id,
        reason=why,
    )
    return DispatchResult(Outcome.DUPLICATE, request.id, reason=why)


def cancelled(request: BuildRequest, why: str) -> DispatchResult:
    """An operator cancelled the request (``slipway cancel``): start nothing, complete the message."""
    log_event(
        logger,
        "cancelled_request_settled",
        correlation_id=request.trigger.correlation_id,
        request_id=request.id,
        reason=why,
    )
    return DispatchResult(Outcome.CANCELLED, request.id, reason="Cancelled", description=why)


def retry_now(request: BuildRequest, why: str) -> DispatchResult:
    """Abandon the message: it is redelivered at once (no copy was scheduled)."""
    log_event(
        logger,
        "dispatch_retry",
        level=logging.WARNING,
        correlation_id=request.trigger.correlation_id,
        request_id=request.id,
        reason=why,
    )
    return DispatchResult(Outcome.RETRY, request.id, reason="Transient", description=why)


def dead_letter(request: BuildRequest | None, reason: str, description: str) -> DispatchResult:
    """Refuse the message for good; ``reason`` is one of ``shared.dispatch.failures``' names."""
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


def ledger_failed(request_id: str, exc: Exception) -> None:
    """A best-effort ledger write failed: the answer stands, only the record lags."""
    log_event(logger, "ledger_update_failed", level=logging.ERROR, request_id=request_id, error=str(exc))

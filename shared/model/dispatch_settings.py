"""The ``dispatch:`` section of ``slipway.yaml``: quiet period, retries and run budgets.

Kept out of ``shared/model/config/`` so the dispatch policy reads in one place; ``SlipwayConfig``
only holds the field.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.model.durations import Duration


class DispatchSettings(BaseModel):
    """How the dispatcher behaves under pressure.

    Requests sharing a coalesce key (target + ref) wait ``quiet_period`` after they were received;
    one superseded by a newer request on the same key meanwhile starts no run. A transient
    failure is retried ``max_attempts - 1`` times with exponential backoff and jitter (never
    shorter than ACR's ``Retry-After``), then dead-lettered. Over a run budget, a request waits
    ``budget_delay`` and tries again, as often as needed.
    """

    model_config = ConfigDict(extra="forbid")

    quiet_period: Duration = Field(
        default=timedelta(seconds=30),
        description="How long a request waits for a newer one on the same target and ref (0s: no wait).",
    )
    max_attempts: int = Field(
        default=8, ge=1, le=50, description="Attempts at starting a run before the request is dead-lettered."
    )
    backoff_base: Duration = Field(
        default=timedelta(seconds=10), description="Delay before the first retry; doubles with each attempt."
    )
    backoff_max: Duration = Field(
        default=timedelta(minutes=5),
        description="Longest delay between attempts (keep it under the queue's duplicate-detection window).",
    )
    max_concurrent_runs: int | None = Field(
        default=None, ge=1, description="Runs in flight at once across all targets (none: unlimited)."
    )
    max_concurrent_runs_per_target: int | None = Field(
        default=None, ge=1, description="Runs in flight at once per target, unless the target sets its own."
    )
    budget_delay: Duration = Field(
        default=timedelta(minutes=1),
        description="How long a request over a run budget waits before trying again.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> DispatchSettings:
        if self.backoff_max < self.backoff_base:
            raise ValueError("backoff_max must not be shorter than backoff_base")
        if self.budget_delay <= timedelta(0):
            raise ValueError("budget_delay must be positive")
        return self

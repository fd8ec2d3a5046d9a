"""What a failed dispatch attempt becomes: a delayed retry, or a dead letter with a reason.

The Python Service Bus binding cannot delay a redelivery (an exception abandons the message and
Service Bus hands it out again at once), so a retry is a *copy* of the request scheduled for
later under a new message id, ``<request id>-a<attempt>``, after which the original is completed.
The copy carries ``attempt`` in its body; after ``max_attempts`` the request is dead-lettered.
A copy has its own id because a re-send under the original id inside the duplicate-detection
window would be dropped silently.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from shared.model.dispatch_settings import DispatchSettings

# Dead-letter reasons an operator sees (``slipway queue list --dead-letter``, ``runs show``).
INVALID_REQUEST = "InvalidBuildRequest"
UNKNOWN_TARGET = "UnknownTarget"
REQUEST_NOT_ALLOWED = "RequestNotAllowedForTarget"
SETTING_MISSING = "MissingSetting"
ID_CONFLICT = "IdConflict"
RUN_REJECTED = "RunRejected"
RETRIES_EXHAUSTED = "RetriesExhausted"
DISPATCH_INTERRUPTED = "DispatchInterrupted"

# Suffixes of the message ids of copies: a retry, a wait (quiet period, budget), a replay.
RETRY_SUFFIX = "-a"
WAIT_SUFFIX = "-w"
REPLAY_SUFFIX = "-r"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded, never shorter than the server asked."""

    max_attempts: int
    base: timedelta
    cap: timedelta

    @classmethod
    def from_settings(cls, settings: DispatchSettings | None = None) -> RetryPolicy:
        """The policy ``settings`` configure (none: the defaults, as in an empty ``dispatch:``)."""
        settings = settings or DispatchSettings()
        return cls(max_attempts=settings.max_attempts, base=settings.backoff_base, cap=settings.backoff_max)

    def exhausted(self, attempt: int) -> bool:
        """``attempt`` is how many attempts have failed so far."""
        return attempt >= self.max_attempts

    def delay(self, attempt: int, *, retry_after: float | None = None) -> timedelta:
        """Delay before attempt ``attempt + 1``: half fixed, half jitter, so retries spread out.

        ``Retry-After`` wins when it is longer (ACR's throttling says when to come back); it is
        still capped, at twice ``cap``, so a bogus header cannot park a request for days.
        """
        ceiling: timedelta = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        backoff: timedelta = ceiling / 2 + ceiling / 2 * random.random()  # noqa: S311 - jitter
        if retry_after is not None and retry_after > 0:
            backoff = max(backoff, min(timedelta(seconds=retry_after), self.cap * 2))
        return backoff


def retry_message_id(request_id: str, attempt: int) -> str:
    return f"{request_id}{RETRY_SUFFIX}{attempt}"


def wait_message_id(request_id: str, until_epoch_s: int) -> str:
    """A copy waiting until a moment (quiet period, budget): unique per moment, stable on redelivery."""
    return f"{request_id}{WAIT_SUFFIX}{until_epoch_s}"


def replay_message_id(request_id: str, replay: int) -> str:
    return f"{request_id}{REPLAY_SUFFIX}{replay}"

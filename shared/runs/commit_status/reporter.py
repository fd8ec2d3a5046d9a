"""Posting a commit status with bounded retries, logged, and never raising: a status never fails a build."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from shared.model.repo_urls import parse_repo_url
from shared.platform.logs import log_event
from shared.runs.commit_status.choose import client_for
from shared.runs.commit_status.model import CommitStatus, StatusClient, StatusNotPostable, StatusPostError

logger = logging.getLogger("slipway.commit_status")

ClientFactory = Callable[[str, str | None, Mapping[str, str]], StatusClient | None]


class StatusReporter:
    """Posts statuses with bounded retries; never raises, so a status never fails a build.

    Retries are for what can pass later: 429 and GitHub's rate-limit 403 (waiting as long as
    ``Retry-After``/the rate-limit reset says, giving up when that is over ``max_delay``),
    408, 5xx and connection errors, with exponential backoff and jitter. Everything else (401,
    403, 404, 422...) is a configuration problem: logged once, not retried.
    """

    def __init__(
        self,
        settings: Mapping[str, str],
        *,
        max_attempts: int = 4,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        client_factory: ClientFactory = client_for,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._settings = settings
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._jitter = jitter
        self._client_factory = client_factory

    def report(
        self, status: CommitStatus, *, provider_hint: str | None = None, correlation_id: str | None = None
    ) -> bool:
        """Post ``status``; True when the host accepted it."""
        loc = parse_repo_url(status.repo_url)
        fields: dict[str, Any] = {
            "correlation_id": correlation_id,
            "repo": loc.display if loc else "(unparsable repository URL)",
            "commit": status.commit,
            "state": status.state.value,
            "context": status.context,
        }
        try:
            client = self._client_factory(status.repo_url, provider_hint, self._settings)
        except Exception as exc:  # a status must never fail a build
            log_event(logger, "commit_status_failed", level=logging.WARNING, error=_describe(exc), **fields)
            return False
        if client is None:
            log_event(logger, "commit_status_off", level=logging.DEBUG, **fields)
            return False
        fields["provider"] = client.provider
        for attempt in range(1, self._max_attempts + 1):
            try:
                client.post(status)
            except StatusNotPostable as exc:
                log_event(logger, "commit_status_not_postable", reason=str(exc), **fields)
                return False
            except StatusPostError as exc:
                delay = self._delay(attempt, exc)
                if not exc.retryable or attempt == self._max_attempts or delay is None:
                    log_event(
                        logger,
                        "commit_status_failed",
                        level=logging.WARNING,
                        attempt=attempt,
                        status_code=exc.status,
                        retryable=exc.retryable,
                        error=str(exc),
                        **fields,
                    )
                    return False
                log_event(
                    logger,
                    "commit_status_retry",
                    level=logging.INFO,
                    attempt=attempt,
                    status_code=exc.status,
                    delay_s=round(delay, 3),
                    error=str(exc),
                    **fields,
                )
                self._sleep(delay)
            except Exception as exc:  # a bug in a client must not fail the build either
                log_event(
                    logger,
                    "commit_status_failed",
                    level=logging.WARNING,
                    attempt=attempt,
                    error=_describe(exc),
                    **fields,
                )
                return False
            else:
                log_event(logger, "commit_status_posted", attempt=attempt, **fields)
                return True
        return False  # pragma: no cover - the loop returns on its last attempt

    def refusal(self, status: CommitStatus, *, provider_hint: str | None = None) -> str | None:
        """Why ``status``'s host has nowhere Slipway may post it (a Bitbucket fork's request), or None.

        Asked before posting so that a status that can never be posted is not retried either.
        """
        try:
            client = self._client_factory(status.repo_url, provider_hint, self._settings)
        except Exception:  # report() logs it; here it only means "no known refusal"
            return None
        refuses = getattr(client, "refuses", None)
        reason = refuses(status) if callable(refuses) else None
        return reason if isinstance(reason, str) else None

    def _delay(self, attempt: int, exc: StatusPostError) -> float | None:
        """Seconds before the next attempt, or None when the host asks for more than ``max_delay``."""
        if exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= self._max_delay else None
        backoff = min(self._max_delay, self._base_delay * 2.0 ** (attempt - 1))
        return backoff * (0.5 + 0.5 * self._jitter())


def _describe(exc: BaseException) -> str:
    """The exception's type only: an unexpected error's text could carry anything, tokens included."""
    return f"unexpected {type(exc).__name__}"

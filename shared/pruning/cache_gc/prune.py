"""Wiring: a ``CacheCollector`` for the configured cache, and the timer's run of it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shared.platform.app_settings import positive_setting
from shared.platform.logs import log_event
from shared.pruning.cache_gc.layout import CacheLayout
from shared.pruning.cache_gc.planner import Policy

if TYPE_CHECKING:
    from shared.model.config import CacheStorage, SlipwayConfig
    from shared.platform.state import StateStore
    from shared.pruning.cache_gc.collector import CacheCollector, Progress
    from shared.pruning.cache_gc.report import CacheReport

logger = logging.getLogger("slipway.cache_gc")
_UNCHANGED = timedelta(-1)  # "use the configured max_age" (None is a valid value: no expiry by age)
# A candidate blob waits between the run that records it and the run that deletes it as long as an
# export in flight at the first run can still last: the build's run.timeout (default below), or
# the grace period where that is shorter (the grace already assumes exports finish within it).
DEFAULT_SETTLE = timedelta(hours=1)
# The timer's work bound. host.json's functionTimeout is 5 minutes; the sweep stops before its next
# delete batch after 4, leaving a minute for that batch and the candidates document, and the next
# run resumes where it stopped.
MAX_SECONDS_SETTING = "SLIPWAY_CACHE_PRUNE_MAX_SECONDS"
MAX_DELETES_SETTING = "SLIPWAY_CACHE_PRUNE_MAX_DELETES"
DEFAULT_MAX_SECONDS = 240


class PruneSettingError(ValueError):
    """A work-bound setting that is not a positive integer (read before anything is deleted)."""


def _positive(settings: Mapping[str, str], name: str, default: int | None) -> int | None:
    try:
        return positive_setting(settings, name, default)
    except ValueError as exc:
        raise PruneSettingError(str(exc)) from None


def work_bounds(settings: Mapping[str, str]) -> tuple[int | None, int | None]:
    """The timer's (max_deletes, max_seconds): no delete bound and 240 s unless the settings say."""
    return (
        _positive(settings, MAX_DELETES_SETTING, None),
        _positive(settings, MAX_SECONDS_SETTING, DEFAULT_MAX_SECONDS),
    )


def closed_pull_requests(store: StateStore) -> Callable[[str, int], bool]:
    """Whether a pull request is recorded closed (``shared.runs.pull_request_state``), for the
    planner. A document that cannot be read counts as open: the cache then waits for ``max_age``
    or the next run, and one bad document never stops a collection."""
    from shared.runs.pull_request_state import read_state

    def closed(target: str, number: int) -> bool:
        try:
            state = read_state(store, target, number)
        except Exception as exc:
            log_event(
                logger, "pull_request_state_unreadable", level=logging.WARNING, target=target, number=number,
                error=str(exc),
            )  # fmt: skip
            return False
        return state is not None and state.closed

    return closed


def policy_for(
    cache: CacheStorage,
    *,
    grace: timedelta | None = None,
    max_age: timedelta | None = _UNCHANGED,
    run_timeout: timedelta = DEFAULT_SETTLE,
    state: StateStore | None = None,
) -> Policy:
    """The configured policy, with the CLI's overrides; with ``state``, the caches of closed pull
    requests expire too."""
    effective_grace = cache.grace if grace is None else grace
    return Policy(
        grace=effective_grace,
        max_age=cache.max_age if max_age is _UNCHANGED else max_age,
        keep_names=tuple(cache.keep_names),
        max_bytes=cache.max_bytes,
        settle=min(effective_grace, run_timeout),
        pull_request_closed=None if state is None else closed_pull_requests(state),
    )


def collector_for(
    cache: CacheStorage,
    settings: Mapping[str, str],
    *,
    policy: Policy | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    max_deletes: int | None = None,
    max_seconds: float | None = None,
    **client_options: Any,
) -> CacheCollector:
    """``client_options`` go to the storage client (the CLI shortens the SDK's retry backoff)."""
    from shared.pruning.cache_gc.collector import CacheCollector
    from shared.pruning.cache_gc.store import cache_store

    return CacheCollector(
        cache_store(cache, settings, **client_options),
        CacheLayout(cache.prefix),
        policy or policy_for(cache),
        dry_run=dry_run,
        progress=progress,
        max_deletes=max_deletes,
        max_seconds=max_seconds,
    )


def prune_on_schedule(
    config: SlipwayConfig, settings: Mapping[str, str], state: StateStore | None = None
) -> CacheReport | None:
    """The timer's work: nothing without a ``cache:`` section; else one run, logged as one line.
    ``state`` holds the pull requests' closes (their caches expire)."""
    cache = config.cache
    if cache is None:
        log_event(logger, "cache_prune_skipped", reason="no cache section in the configuration")
        return None
    policy = policy_for(cache, run_timeout=timedelta(seconds=config.run.timeout), state=state)
    try:
        max_deletes, max_seconds = work_bounds(settings)
    except PruneSettingError as exc:
        log_event(logger, "cache_prune_failed", level=logging.ERROR, error=str(exc))
        raise
    try:
        collector = collector_for(
            cache, settings, policy=policy, max_deletes=max_deletes, max_seconds=max_seconds
        )
        report = collector.collect()
    except Exception as exc:
        from shared.platform.errors import is_service_error, one_line

        if is_service_error(exc):  # one readable line first; the invocation still fails (alerts)
            log_event(logger, "cache_prune_failed", level=logging.ERROR, error=one_line(exc))
        raise
    level = logging.INFO if report.complete and not report.delete_failures else logging.ERROR
    log_event(logger, "cache_prune", level=level, **report.summary())
    return report

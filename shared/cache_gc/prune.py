"""Wiring: a ``CacheCollector`` for the configured cache, and the timer's run of it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shared.cache_gc.layout import CacheLayout
from shared.cache_gc.planner import Policy
from shared.logs import log_event

if TYPE_CHECKING:
    from shared.cache_gc.collector import CacheCollector, Progress
    from shared.cache_gc.report import CacheReport
    from shared.config import CacheStorage
    from shared.runtime import Runtime

logger = logging.getLogger("slipway.cache_gc")
_UNCHANGED = timedelta(-1)  # "use the configured max_age" (None is a valid value: no expiry by age)
# A candidate blob waits between the run that records it and the run that deletes it as long as an
# export in flight at the first run can still last: the build's run.timeout (default below), or
# the grace period where that is shorter (the grace already assumes exports finish within it).
DEFAULT_SETTLE = timedelta(hours=1)


def policy_for(
    cache: CacheStorage,
    *,
    grace: timedelta | None = None,
    max_age: timedelta | None = _UNCHANGED,
    run_timeout: timedelta = DEFAULT_SETTLE,
) -> Policy:
    """The configured policy, with the CLI's overrides."""
    effective_grace = cache.grace if grace is None else grace
    return Policy(
        grace=effective_grace,
        max_age=cache.max_age if max_age is _UNCHANGED else max_age,
        keep_names=tuple(cache.keep_names),
        max_bytes=cache.max_bytes,
        settle=min(effective_grace, run_timeout),
    )


def collector_for(
    cache: CacheStorage,
    settings: Mapping[str, str],
    *,
    policy: Policy | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    **client_options: Any,
) -> CacheCollector:
    """``client_options`` go to the storage client (the CLI shortens the SDK's retry backoff)."""
    from shared.cache_gc.collector import CacheCollector
    from shared.cache_gc.store import cache_store

    return CacheCollector(
        cache_store(cache, settings, **client_options),
        CacheLayout(cache.prefix),
        policy or policy_for(cache),
        dry_run=dry_run,
        progress=progress,
    )


def prune_on_schedule(rt: Runtime) -> CacheReport | None:
    """The timer's work: nothing without a ``cache:`` section; else one run, logged as one line."""
    config = rt.config()
    cache = config.cache
    if cache is None:
        log_event(logger, "cache_prune_skipped", reason="no cache section in the configuration")
        return None
    policy = policy_for(cache, run_timeout=timedelta(seconds=config.run.timeout))
    try:
        report = collector_for(cache, rt.settings, policy=policy).collect()
    except Exception as exc:
        from shared.service_errors import is_service_error, one_line

        if is_service_error(exc):  # one readable line first; the invocation still fails (alerts)
            log_event(logger, "cache_prune_failed", level=logging.ERROR, error=one_line(exc))
        raise
    level = logging.INFO if report.complete and not report.delete_failures else logging.ERROR
    log_event(logger, "cache_prune", level=level, **report.summary())
    return report

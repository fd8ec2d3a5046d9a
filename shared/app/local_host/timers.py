"""The local host's timer triggers: each fires when its NCRONTAB schedule comes due, as in Azure.

A timer with ``runOnStartup`` fires at once; one that fires more than a minute late is told it
is ``past_due``; a failing timer is logged and fires again at its next due time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from shared.app.local_host.functions import TimerTrigger

logger = logging.getLogger("slipway.host")


def run_timers(
    timers: Sequence[TimerTrigger], clock: Callable[[], datetime], stopping: threading.Event, tick: float
) -> None:
    """Fire ``timers`` as they come due, looking every ``tick`` seconds, until ``stopping`` is set."""
    from azure.functions.timer import TimerRequest

    now = clock()
    for timer in timers:
        timer.next_due = now if timer.run_on_startup else timer.cron.next_after(now)
    while not stopping.is_set():
        now = clock()
        for timer in timers:
            if timer.next_due is not None and timer.next_due <= now:
                past_due = (now - timer.next_due).total_seconds() > 60
                try:
                    timer.function(**{timer.arg_name: TimerRequest(past_due=past_due)})
                except Exception:
                    logger.exception("timer %s failed", timer.name)
                timer.next_due = timer.cron.next_after(max(now, timer.next_due))
        stopping.wait(tick)

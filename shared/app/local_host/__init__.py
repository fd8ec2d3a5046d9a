"""The local host behind ``slipway serve``: the app's own functions, run on one machine.

``functions`` finds what to run (and reads the settings), ``http_front`` serves the HTTP
triggers, ``timers`` fires the timer triggers, ``host`` ties them to the local queue.
"""

from shared.app.local_host.functions import (
    DEFAULT_SCHEDULES,
    MASTER_KEY_SETTING,
    AppFunctions,
    HostError,
    HttpRoute,
    QueueTrigger,
    TimerTrigger,
    apply_settings,
    discover,
    load_local_settings,
    resolve,
)
from shared.app.local_host.host import LocalHost, main_loop

__all__ = [
    "DEFAULT_SCHEDULES",
    "MASTER_KEY_SETTING",
    "AppFunctions",
    "HostError",
    "HttpRoute",
    "LocalHost",
    "QueueTrigger",
    "TimerTrigger",
    "apply_settings",
    "discover",
    "load_local_settings",
    "main_loop",
    "resolve",
]

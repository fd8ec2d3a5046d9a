"""What the local host runs: the app's functions sorted by trigger, and the settings they name.

``discover`` imports the app as the Functions worker does and reads each function's bindings;
``%NAME%`` in a binding is resolved from the settings. Settings come from the environment and
``local.settings.json`` (``Values``), as the Functions host does; the environment wins.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.model.cron import Cron, CronError

# The local host's stand-in for the Functions host's master key (``_master``).
MASTER_KEY_SETTING = "SLIPWAY_LOCAL_MASTER_KEY"
_SETTING_RE = re.compile(r"%([A-Za-z0-9_]+)%")
# The timers' %NAME% schedule settings (NCRONTAB with seconds, UTC) and what ``slipway serve``
# uses when one is unset; in Azure each must be set (``slipway doctor`` checks).
DEFAULT_SCHEDULES = {
    "SLIPWAY_RECONCILE_SCHEDULE": "30 * * * * *",
    "SLIPWAY_SCHEDULE_TIMER": "0 * * * * *",
    "SLIPWAY_BASE_IMAGE_POLL_SCHEDULE": "0 */15 * * * *",
    "SLIPWAY_CACHE_PRUNE_SCHEDULE": "0 30 3 * * *",
    "SLIPWAY_IMAGE_PRUNE_SCHEDULE": "0 0 4 * * *",
}


# Microsoft Learn, "Timer trigger for Azure Functions" (functions-bindings-timer, section "CRON
# expressions", titled "NCRONTAB expressions" in later revisions; MicrosoftDocs/azure-docs
# articles/azure-functions/functions-bindings-timer.md): "Azure Functions uses the NCronTab
# library to interpret CRON expressions. A CRON expression includes six fields: {second} {minute}
# {hour} {day} {month} {day-of-week}". The same page: "A TimeSpan can be used only for a function
# app that runs on an App Service Plan", so a TimeSpan ("01:00:00") is refused here too.
NCRONTAB_FIELDS = 6
NCRONTAB_FORM = "{second} {minute} {hour} {day} {month} {day-of-week}"


def schedule_problem(expression: str) -> str | None:
    """Why the Functions host would refuse ``expression`` as a timer schedule (None: it is fine)."""
    fields = expression.split()
    if len(fields) != NCRONTAB_FIELDS:
        return f"{len(fields)} field(s), NCRONTAB needs six: {NCRONTAB_FORM}"
    try:
        Cron.parse(expression)
    except CronError as exc:
        return str(exc)
    return None


def invalid_schedules(settings: Mapping[str, str]) -> list[str]:
    """One line per timer schedule setting that is set but not a valid NCRONTAB expression."""
    problems = []
    for name in DEFAULT_SCHEDULES:
        value = settings.get(name)
        if value is None or not value.strip():
            continue
        problem = schedule_problem(value)
        if problem is not None:
            problems.append(f"{name}={value!r}: {problem}")
    return problems


class HostError(Exception):
    """The app uses something the local host cannot run."""


def load_local_settings(path: Path) -> dict[str, str]:
    """``Values`` of a local.settings.json file (missing file: nothing)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    values = data.get("Values", {})
    if not isinstance(values, dict):
        raise HostError(f"{path}: Values must be an object")
    return {str(k): str(v) for k, v in values.items()}


def apply_settings(values: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> None:
    """Expose settings as environment variables; variables already set win."""
    env = os.environ if environ is None else environ
    for key, value in values.items():
        env.setdefault(key, value)


def resolve(text: str, settings: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise HostError(f"binding refers to %{name}% but the setting is not set")
        return settings[name]

    return _SETTING_RE.sub(sub, text)


@dataclass
class HttpRoute:
    name: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    arg_name: str
    function: Callable[..., Any]
    path: str = ""  # as declared, under /api/, for people to read
    auth_level: str = "anonymous"  # the binding's authLevel, lower case: anonymous, function, admin


@dataclass
class QueueTrigger:
    name: str
    queue_name: str
    arg_name: str
    function: Callable[..., Any]


@dataclass
class TimerTrigger:
    name: str
    cron: Cron
    arg_name: str
    function: Callable[..., Any]
    run_on_startup: bool = False
    next_due: datetime | None = None
    schedule: str = ""  # as resolved from its setting, for people to read


@dataclass
class AppFunctions:
    http: list[HttpRoute] = field(default_factory=list)
    queues: list[QueueTrigger] = field(default_factory=list)
    timers: list[TimerTrigger] = field(default_factory=list)


def _route_pattern(route: str) -> re.Pattern[str]:
    parts = []
    for segment in route.strip("/").split("/"):
        match = re.fullmatch(r"\{(\w+)(?::[^}]*)?\??\}", segment)
        parts.append(f"(?P<{match.group(1)}>[^/]+)" if match else re.escape(segment))
    return re.compile("^/api/" + "/".join(parts) + "/?$")


def discover(app_module: str, settings: Mapping[str, str]) -> AppFunctions:
    """Import the app like the worker does and sort its functions by trigger."""
    import azure.functions as func

    module = importlib.import_module(app_module)
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if len(apps) != 1:
        raise HostError(f"{app_module} must define exactly one FunctionApp (found {len(apps)})")
    found = AppFunctions()
    app = apps[0]
    # get_functions() records names and refuses a second call on the same app object; the host
    # may discover the same app twice in one process (tests, a restart in place).
    app.functions_bindings = None
    for fn in app.get_functions():
        bindings = json.loads(fn.get_function_json())["bindings"]
        triggers = [b for b in bindings if b["type"].endswith("Trigger")]
        others = [b for b in bindings if not b["type"].endswith("Trigger") and b["type"] != "http"]
        name = fn.get_function_name() or "function"
        if settings.get(f"AzureWebJobs.{name}.Disabled", "").lower() in ("true", "1"):
            continue  # the Functions host's own switch for disabling one function
        if len(triggers) != 1 or others:
            raise HostError(f"{name}: the local host supports one trigger and no other bindings")
        trigger = triggers[0]
        user_function = fn.get_user_function()
        if trigger["type"] == "httpTrigger":
            route = trigger.get("route") or name
            methods = frozenset(
                m.upper() for m in trigger.get("methods") or ["GET", "POST", "PUT", "DELETE", "PATCH"]
            )
            found.http.append(
                HttpRoute(
                    name,
                    _route_pattern(route),
                    methods,
                    trigger["name"],
                    user_function,
                    f"/api/{route.strip('/')}",
                    str(trigger.get("authLevel") or "function").lower(),
                )
            )
        elif trigger["type"] == "serviceBusTrigger":
            queue = resolve(trigger["queueName"], settings)
            found.queues.append(QueueTrigger(name, queue, trigger["name"], user_function))
        elif trigger["type"] == "timerTrigger":
            schedule = resolve(trigger["schedule"], settings)
            problem = schedule_problem(schedule)
            if problem is not None:
                raise HostError(f"timer {name}: schedule {trigger['schedule']} = {schedule!r}: {problem}")
            found.timers.append(
                TimerTrigger(
                    name,
                    Cron.parse(schedule),
                    trigger["name"],
                    user_function,
                    bool(trigger.get("runOnStartup")),
                    schedule=schedule,
                )
            )
        else:
            raise HostError(f"{name}: trigger {trigger['type']} is not supported by the local host")
    return found

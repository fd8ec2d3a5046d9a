"""Timer triggers: scheduled rebuilds and base-image digest polling.

Each timer wires the runtime's adapters (configuration, state store, queue) to one domain call
in ``shared/``; the domain functions take the clock, so tests drive them directly too. Domain
modules are imported inside the functions: the worker imports this file at start-up.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from shared.app.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]
logger = logging.getLogger("slipway.timers")


def _note_past_due(name: str, timer: func.TimerRequest) -> None:
    if timer.past_due:
        logger.warning("%s is running late (the host missed its slot); evaluating now", name)


@bp.function_name("scheduled_rebuilds")
@bp.timer_trigger(arg_name="timer", schedule="%SLIPWAY_SCHEDULE_TIMER%")
def scheduled_rebuilds(timer: func.TimerRequest) -> None:
    from shared.intake.schedules import evaluate_schedules

    _note_past_due("scheduled_rebuilds", timer)
    rt = runtime()
    evaluate_schedules(rt.config(), now=datetime.now(UTC), state=rt.state(), queue=rt.queue())


@bp.function_name("base_image_poll")
@bp.timer_trigger(arg_name="timer", schedule="%SLIPWAY_BASE_IMAGE_POLL_SCHEDULE%")
def base_image_poll(timer: func.TimerRequest) -> None:
    from shared.intake.digest_poll import poll_base_images, registry_clients

    _note_past_due("base_image_poll", timer)
    rt = runtime()
    poll_base_images(
        rt.config(),
        now=datetime.now(UTC),
        state=rt.state(),
        queue=rt.queue(),
        clients=registry_clients(rt.settings),
    )

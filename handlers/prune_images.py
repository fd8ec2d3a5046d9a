"""Timer trigger: prune registry images by the ``images:`` rules (%SLIPWAY_IMAGE_PRUNE_SCHEDULE%)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.app.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]
logger = logging.getLogger("slipway.timers")


@bp.function_name("prune_images")
@bp.timer_trigger(arg_name="timer", schedule="%SLIPWAY_IMAGE_PRUNE_SCHEDULE%")
def prune_images(timer: func.TimerRequest) -> None:
    from shared.pruning.retention.prune import run_scheduled_prune

    if timer.past_due:
        logger.warning("prune_images is running late (the host missed its slot); pruning now")
    rt = runtime()
    run_scheduled_prune(rt.config(), rt.settings)

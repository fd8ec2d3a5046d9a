"""The timer that garbage-collects the BuildKit azblob cache (schedule: %SLIPWAY_CACHE_PRUNE_SCHEDULE%)."""

from __future__ import annotations

import azure.functions as func

from shared.app.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("prune_cache")
@bp.timer_trigger(arg_name="timer", schedule="%SLIPWAY_CACHE_PRUNE_SCHEDULE%", run_on_startup=False)
def prune_cache(timer: func.TimerRequest) -> None:
    from shared.pruning.cache_gc.prune import prune_on_schedule

    rt = runtime()
    prune_on_schedule(rt.config(), rt.settings, rt.state())

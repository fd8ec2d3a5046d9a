"""Timer: follow dispatched ACR runs to their end and post the outcome to the Git host."""

from __future__ import annotations

import azure.functions as func

from shared.app.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("reconcile_runs")
@bp.timer_trigger(arg_name="timer", schedule="%SLIPWAY_RECONCILE_SCHEDULE%", use_monitor=False)
def reconcile_runs(timer: func.TimerRequest) -> None:
    rt = runtime()
    rt.reconciler().run()

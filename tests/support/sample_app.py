"""A small function app for the local host's own tests: a routed HTTP trigger and a timer."""

from __future__ import annotations

import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
ticks: list[bool] = []


@app.function_name("echo")
@app.route(route="items/{item_id}", methods=["GET"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    body = {"item": req.route_params.get("item_id"), "q": req.params.get("q"), "correlation_id": "echo-1"}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.function_name("boom")
@app.route(route="boom", methods=["POST"])
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the function failed")


@app.function_name("tick")
@app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%", run_on_startup=True)
def tick(timer: func.TimerRequest) -> None:
    ticks.append(timer.past_due)

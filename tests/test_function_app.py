"""function_app.py as the Functions worker sees it, and the settings it needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.index_app import index_in_subprocess
from tests.support.settings_read import settings_read_by_code

ROOT = Path(__file__).resolve().parents[1]

# The Functions host refuses an HTTP function whose route, trimmed of "/" and lower-cased, starts
# with one of these (a plain string prefix, so "administration/x" is refused too), whatever the
# route prefix; a function without a route gets its name as the route first. The function is
# then in error and its URL answers 404. Source: Azure/azure-functions-host,
# src/WebJobs.Script/Host/ScriptHost.cs, ValidateHttpFunction ("The specified route conflicts with
# one or more built in routes."), dev at 89dc438d476542786f2fc4070f553423213a6223 (4.1037.0); its
# test test/WebJobs.Script.Tests/ScriptHostTests.cs tries "admin/foo/bar" and "runtime/foo/bar".
HOST_RESERVED_ROUTE_PREFIXES = ("admin", "runtime")


def host_effective_route(function_name: str, route: str | None) -> str:
    """The route the host checks: the function name when none is given, trimmed, lower-case."""
    return (route if route and route.strip() else function_name).strip("/").lower()


def conflicts_with_host_routes(function_name: str, route: str | None) -> bool:
    return host_effective_route(function_name, route).startswith(HOST_RESERVED_ROUTE_PREFIXES)


@pytest.fixture(scope="module")
def indexed() -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in index_in_subprocess(ROOT)}


def _trigger(function: dict[str, Any]) -> dict[str, Any]:
    triggers: list[dict[str, Any]] = [b for b in function["raw_bindings"] if b["type"].endswith("Trigger")]
    assert len(triggers) == 1
    return triggers[0]


def test_expected_functions_and_bindings(indexed: dict[str, dict[str, Any]]) -> None:
    routes = {
        "github_webhook": "hooks/github",
        "gitlab_webhook": "hooks/gitlab",
        "azure_devops_webhook": "hooks/azure-devops",
        "bitbucket_webhook": "hooks/bitbucket",
        "gitea_webhook": "hooks/gitea",
        "acr_webhook": "hooks/acr",
        "eventgrid_webhook": "hooks/eventgrid",
        "dockerhub_webhook": "hooks/dockerhub",
    }
    assert {*routes, "dispatch"} <= set(indexed)
    for name, route in routes.items():
        trigger = _trigger(indexed[name])
        assert trigger["type"] == "httpTrigger"
        assert trigger["route"] == route
        assert trigger["methods"] == (["POST", "OPTIONS"] if name == "eventgrid_webhook" else ["POST"])
        assert trigger["authLevel"] == "ANONYMOUS"
    dispatch = _trigger(indexed["dispatch"])
    assert dispatch["type"] == "serviceBusTrigger"
    assert dispatch["queueName"] == "%BUILD_QUEUE%"
    assert dispatch["connection"] == "ServiceBusConnection"
    for function in indexed.values():
        assert function["script_file"] == "function_app.py"


def test_no_http_route_is_one_the_host_keeps_for_itself(indexed: dict[str, dict[str, Any]]) -> None:
    http = {
        name: _trigger(function).get("route")
        for name, function in indexed.items()
        if _trigger(function)["type"] == "httpTrigger"
    }
    assert len(http) >= 9, sorted(http)
    refused = {name: route for name, route in http.items() if conflicts_with_host_routes(name, route)}
    assert not refused, f"the Functions host would put these in error (404): {refused}"


@pytest.mark.parametrize(
    ("name", "route", "refused"),
    [
        ("admin_replay", "admin/replay", True),
        ("x", "/Admin/replay", True),
        ("x", "administration/health", True),
        ("x", "runtime/webhooks/x", True),
        ("admin_replay", None, True),  # no route: the name is the route
        ("ops_replay", "ops/replay", False),
        ("x", "hooks/admin", False),
    ],
)
def test_the_reserved_route_check(name: str, route: str | None, refused: bool) -> None:
    assert conflicts_with_host_routes(name, route) is refused


def test_replay_is_on_the_ops_route_for_the_master_key_only(indexed: dict[str, dict[str, Any]]) -> None:
    trigger = _trigger(indexed["ops_replay"])
    assert trigger["type"] == "httpTrigger"
    assert trigger["route"] == "ops/replay"
    assert trigger["methods"] == ["POST"]
    # "admin": only the host's master key (the Admin authorization level) is let through.
    assert trigger["authLevel"] == "ADMIN"
    assert "admin_replay" not in indexed


def test_every_binding_setting_is_in_the_sample(indexed: dict[str, dict[str, Any]]) -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    referenced: set[str] = set()
    for function in indexed.values():
        for binding in function["raw_bindings"]:
            referenced.update(re.findall(r"%([A-Za-z0-9_]+)%", json.dumps(binding)))
            if "connection" in binding:
                conn = binding["connection"]
                assert conn in sample or f"{conn}__fullyQualifiedNamespace" in sample
    assert referenced, "expected %SETTING% references in the bindings"
    assert referenced <= set(sample), referenced - set(sample)


def test_every_setting_the_code_reads_is_in_the_sample() -> None:
    sample = set(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])
    missing = sorted(settings_read_by_code(ROOT) - sample)
    assert not missing, f"settings read by the code but missing from local.settings.sample.json: {missing}"


def test_host_json() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
    assert host["extensions"]["serviceBus"]["autoCompleteMessages"] is True


def test_importing_the_app_loads_no_heavy_sdk() -> None:
    code = (
        "import sys, function_app; "
        "heavy = [m for m in ('azure.mgmt.containerregistry', 'azure.servicebus', 'azure.storage.blob', "
        "'azure.identity', 'yaml', 'rich', 'pydantic', 'pydantic_core', 'shared.platform.http') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_reconcile_timer(indexed: dict[str, dict[str, Any]]) -> None:
    trigger = _trigger(indexed["reconcile_runs"])
    assert trigger["type"] == "timerTrigger"
    assert trigger["schedule"] == "%SLIPWAY_RECONCILE_SCHEDULE%"
    assert trigger.get("useMonitor") is False  # a missed pass is simply the next one

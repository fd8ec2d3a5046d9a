"""The local host's pieces: discovery, HTTP routing, timers, settings."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shared.local_host import HostError, LocalHost, apply_settings, discover, load_local_settings, resolve


def _get(url: str, method: str = "GET") -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def functions() -> Any:
    return discover("tests.support.sample_app", {"TICK_SCHEDULE": "*/1 * * * * *"})


def test_discovery_sorts_functions_by_trigger(functions: Any) -> None:
    assert [r.name for r in functions.http] == ["echo", "boom"]
    assert [t.name for t in functions.timers] == ["tick"]
    assert functions.queues == []


def test_http_routes_params_errors_and_timers(functions: Any) -> None:
    from tests.support import sample_app

    host = LocalHost(functions, queue_factory=lambda name: None, port=0)
    host.start()
    try:
        base = "http://{}:{}".format(*host.address)
        assert _get(f"{base}/api/items/42?q=x") == (200, {"item": "42", "q": "x", "correlation_id": "echo-1"})
        status, body = _get(f"{base}/api/items/42", method="POST")
        assert (status, body["error"]) == (405, "method_not_allowed")
        status, body = _get(f"{base}/api/nowhere")
        assert (status, body["error"]) == (404, "not_found")
        status, body = _get(f"{base}/api/boom", method="POST")
        assert (status, body["error"]) == (500, "internal_error")
        deadline = time.monotonic() + 5
        while len(sample_app.ticks) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sample_app.ticks) >= 2  # run on startup, then every second
    finally:
        host.stop()


def test_unresolved_setting_is_a_clear_error() -> None:
    with pytest.raises(HostError, match="TICK_SCHEDULE"):
        resolve("%TICK_SCHEDULE%", {})


def test_disabled_function_is_skipped() -> None:
    found = discover(
        "tests.support.sample_app",
        {"TICK_SCHEDULE": "0 0 * * * *", "AzureWebJobs.tick.Disabled": "true"},
    )
    assert found.timers == []


def test_local_settings_values_and_precedence(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "from-file", "B": "from-file"}}))
    env = {"A": "from-env"}
    apply_settings(load_local_settings(path), env)
    assert env == {"A": "from-env", "B": "from-file"}
    assert load_local_settings(tmp_path / "missing.json") == {}
    path.write_text(json.dumps({"Values": ["not", "a", "mapping"]}))
    with pytest.raises(HostError):
        load_local_settings(path)

"""`slipway serve` as a user runs it: a subprocess on a free port, observed through the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.github import SECRET, fixture_bytes, fixture_json, signed_request
from tests.support.serve import SLIPWAY, ServeProcess, local_env

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
registry: slipway.azurecr.io
dispatch:
  quiet_period: 1s
targets:
  - name: azure-test
    repo: https://github.com/dougbu/AzureTest
    image: dougbu/azure-test
    branches: ["**"]
"""


class Server(ServeProcess):
    """Also: a start it refuses, a signed GitHub push to it, and the CLI on its state folder."""

    def refused(self, *args: str, **extra_env: str) -> str:
        """Run ``serve`` expecting it to refuse to start; its output."""
        out = subprocess.run(
            self.command(*args),
            cwd=self.workdir,
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out
        return out.stderr

    def stop(self) -> str:
        out = super().stop()
        assert self.proc is not None and self.proc.returncode == 0, out
        return out

    def post(self, body: bytes, **kw: Any) -> tuple[int, dict[str, Any]]:
        plain = signed_request(body, **kw)
        req = urllib.request.Request(
            f"{self.url}hooks/github",
            data=plain.body,
            headers=dict(plain.headers),
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def cli(self, *args: str) -> Any:
        out = subprocess.run(
            [str(SLIPWAY), *args, "--json"],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "slipway.yaml").write_text(CONFIG)
    env = local_env()
    env.update(
        {
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "SLIPWAY_STATE_DIR": str(tmp_path / "state"),
            "SLIPWAY_CONFIG": str(tmp_path / "slipway.yaml"),
        }
    )
    srv = Server(tmp_path, env)
    yield srv
    srv.kill()


def _wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _pushes(count: int) -> list[bytes]:
    payload = fixture_json("push-branch-signed-aspnet.json")
    bodies = []
    for i in range(count):
        payload["after"] = f"{i + 1:040x}"
        bodies.append(json.dumps(payload).encode())
    return bodies


def test_push_is_dispatched_as_a_dry_run(server: Server) -> None:
    server.start()
    status, body = server.post(fixture_bytes("push-branch-signed-aspnet.json"), delivery="serve-1")
    assert status == 202, body
    [accepted] = body["accepted"]
    runs = _wait_for(lambda: [r for r in server.cli("runs", "list")["runs"] if r["status"] == "dispatched"])
    assert [r["request_id"] for r in runs] == [accepted["id"]]
    assert runs[0]["backend"] == "dry-run"
    assert runs[0]["correlation_id"] == "serve-1"
    shown = server.cli("runs", "show", accepted["id"])
    assert shown["task_yaml"].startswith("version: v1.1.0")
    assert shown["run_request"]

    # A duplicate delivery creates nothing new; a bad signature gets 401 and leaves the queue alone.
    status, again = server.post(fixture_bytes("push-branch-signed-aspnet.json"), delivery="serve-2")
    assert status == 202 and again["accepted"][0]["id"] == accepted["id"]
    status, refused = server.post(fixture_bytes("push-branch-signed-aspnet.json"), secret="wrong")
    assert status == 401 and refused["error"] == "unauthorized"
    time.sleep(1.0)
    assert len(server.cli("runs", "list")["runs"]) == 1
    assert server.cli("queue", "list")["messages"] == []
    out = server.stop()
    assert '"event":"http_request"' in out and "serve-1" in out
    assert "POST /api/hooks/azure-devops  (azure_devops_webhook)" in out  # routes listed as declared
    assert "timer '30 * * * * *' UTC  (reconcile_runs)" in out  # timers with their schedules


def test_stopping_loses_no_accepted_request(server: Server) -> None:
    # First run: the dispatcher is switched off (the Functions host's own setting), so every
    # accepted request is still queued when the server stops.
    server.start(**{"AzureWebJobs.dispatch.Disabled": "true"})
    accepted = []
    for body in _pushes(5):
        status, answer = server.post(body)
        assert status == 202
        accepted.append(answer["accepted"][0]["id"])
    server.stop()
    queued = server.cli("queue", "list")["messages"]
    assert sorted(m["message_id"] for m in queued) == sorted(accepted)

    # Second run, dispatcher on: everything queued before is accounted for. The five pushes are
    # to one branch, so coalescing builds the newest and records the four older ones as superseded.
    server.start()
    _wait_for(
        lambda: len(server.cli("runs", "list")["runs"]) == 5 and not server.cli("queue", "list")["messages"]
    )
    runs = {r["request_id"]: r["status"] for r in server.cli("runs", "list")["runs"]}
    assert sorted(runs) == sorted(accepted)
    assert runs[accepted[-1]] == "dispatched"
    assert sorted(runs[r] for r in accepted[:-1]) == ["superseded"] * 4
    server.stop()


def _replay(server: Server, headers: dict[str, str], query: str = "") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/api/ops/replay{query}",
        data=b'{"dry_run": true}',
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# Fake coordinates: the point is that they are set, not that they reach Azure.
ACR = {
    "ACR_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "ACR_RESOURCE_GROUP": "rg",
    "ACR_NAME": "x",
}


def test_a_reachable_or_real_server_refuses_the_public_secret(server: Server) -> None:
    env_without_secret = {k: v for k, v in server.env.items() if k != "GITHUB_WEBHOOK_SECRET"}
    server.env = env_without_secret
    out = server.refused("--host", "0.0.0.0")
    assert "--host 0.0.0.0 is reachable from other machines" in out and "GITHUB_WEBHOOK_SECRET" in out
    out = server.refused(GITHUB_WEBHOOK_SECRET="slipway-local-secret", ACR_NAME="x")
    assert "ACR_NAME set: dispatch starts real ACR runs" in out
    out = server.refused(**ACR)
    assert "slipway-local-secret" in out and "Traceback" not in out


def test_with_acr_settings_replay_needs_the_master_key(server: Server) -> None:
    server.start(**ACR, SLIPWAY_LOCAL_MASTER_KEY="local-master-key-1")
    assert _replay(server, {})[0] == 401
    status, body = _replay(server, {"x-functions-key": "wrong"})
    assert (status, body["error"]) == (401, "unauthorized")
    assert _replay(server, {"x-functions-key": "local-master-key-1"})[0] == 200
    assert _replay(server, {}, "?code=local-master-key-1")[0] == 200
    # The webhooks stay anonymous: their own signatures authenticate them.
    status, _ = server.post(fixture_bytes("push-branch-signed-aspnet.json"), secret="wrong")
    assert status == 401
    out = server.stop()
    assert "/api/ops/replay need SLIPWAY_LOCAL_MASTER_KEY in x-functions-key (set)" in out


def test_with_acr_settings_and_no_master_key_replay_is_closed(server: Server) -> None:
    server.start(**ACR)
    status, body = _replay(server, {"x-functions-key": ""})
    assert status == 401 and "SLIPWAY_LOCAL_MASTER_KEY is not set" in body["reason"]
    server.stop()


def test_loopback_dry_run_keeps_replay_open_and_base_image_polling_off(server: Server) -> None:
    server.start()
    assert _replay(server, {})[0] == 200
    out = server.stop()
    assert "timer base_image_poll is off (--poll-base-images turns it on)" in out
    assert "(base_image_poll)" not in out  # not among the timers that run

    server.start("--poll-base-images")
    assert _replay(server, {})[0] == 200  # answered: the server is past its start-up
    out = server.stop()
    assert "UTC  (base_image_poll)" in out


def test_pruning_timers_delete_nothing_unless_asked(server: Server) -> None:
    """They delete registry images and cache blobs with this machine's credentials."""
    server.start()
    assert _replay(server, {})[0] == 200
    out = server.stop()
    for timer in ("prune_images", "prune_cache"):
        assert f"timer {timer} is off (--prune turns it on)" in out
        assert f"({timer})" not in out
    server.start("--prune")
    assert _replay(server, {})[0] == 200
    out = server.stop()
    assert "UTC  (prune_images)" in out and "UTC  (prune_cache)" in out


def test_bad_input_gets_a_json_4xx_from_the_server(server: Server) -> None:
    server.start()
    body = (
        fixture_bytes("push-branch-signed-aspnet.json").rstrip()[:-1]
        + b',"x":'
        + b"[" * 1000
        + b"]" * 1000
        + b"}"
    )
    for event in ("push", "ping"):  # a ping is checked with json.loads: a 500 before
        status, answer = server.post(body, event=event)
        assert status == 400 and answer["reason"].startswith("body is nested too deeply"), answer
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /api/hooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n")
        answer_bytes = sock.makefile("rb").read()  # the server answers, then closes
    head, _, payload = answer_bytes.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head
    assert json.loads(payload)["error"] == "bad_request"
    out = server.stop()
    assert "Traceback" not in out

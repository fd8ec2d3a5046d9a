"""The spine end to end, through the very function objects function_app.py registers.

Signed GitHub push -> HTTP trigger -> local queue -> queue trigger -> ledger in Azurite ->
the real ACR SDK over HTTPS to the loopback ACR server.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import yaml
from azure.core.credentials import AccessToken
from azure.functions.servicebus import ServiceBusMessage

from shared.acr.run_backend import AcrBackend
from shared.app.runtime import Runtime, set_runtime
from shared.platform.ledger import BlobLedger, RunStatus
from shared.platform.queue.local import LocalQueue
from shared.platform.state import BlobStateStore
from shared.runs.last_build import read_last_build
from tests.support.agent import Agent
from tests.support.github import SECRET, fixture_json, signed_request

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
registry: slipway.azurecr.io
dispatch:
  quiet_period: 0s
cache:
  account_url: https://slipwaycache.blob.core.windows.net
  container: buildkit-cache
targets:
  - name: azure-test
    repo: https://github.com/dougbu/AzureTest
    image: dougbu/azure-test
    branches: ["**"]
"""


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", 4102444800)


@pytest.fixture
def app_env(tmp_path: Path, azurite: Any, acr_server: Any) -> Iterator[dict[str, Any]]:
    (tmp_path / "slipway.yaml").write_text(CONFIG)
    container = azurite.new_container("ledger")
    settings = {
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "SLIPWAY_CONFIG": str(tmp_path / "slipway.yaml"),
        "SLIPWAY_CACHE_ACCOUNT_KEY": "c2VjcmV0LWtleS1kby1ub3QtbGVhaw==",
        "BUILD_QUEUE": "build-requests",
    }
    queue = LocalQueue(tmp_path / "queue.sqlite3")
    ledger = BlobLedger(container)
    backend = AcrBackend(
        subscription_id="00000000-0000-0000-0000-000000000001",
        resource_group="rg-builds",
        registry_name="slipway",
        credential=StaticToken(),
        base_url=acr_server.base_url,
        connection_verify=acr_server.ca_path,
    )
    state = BlobStateStore(azurite.new_container("state"))
    set_runtime(
        Runtime(settings, app_root=tmp_path, queue=queue, ledger=ledger, backend=backend, state=state)
    )
    try:
        yield {"queue": queue, "ledger": ledger, "acr": acr_server, "settings": settings, "state": state}
    finally:
        set_runtime(None)


def _functions() -> dict[str, Any]:
    from handlers import dispatch, webhooks

    return {
        "github": webhooks.github_webhook.build().get_user_function(),
        "dispatch": dispatch.dispatch.build().get_user_function(),
    }


def _post(body: bytes, **kw: Any) -> func.HttpResponse:
    plain = signed_request(body, **kw)
    req = func.HttpRequest("POST", plain.url, headers=dict(plain.headers), body=plain.body)
    response: func.HttpResponse = _functions()["github"](req)
    return response


def _deliver(queue: LocalQueue, *, lose_lock: bool = False) -> list[tuple[str, Exception | None]]:
    """Feed every available message to the queue trigger, settling as the Functions host does.

    ``lose_lock`` models a host that dies after the function returned but before it completed
    the message: Service Bus delivers the same message again.
    """
    outcomes: list[tuple[str, Exception | None]] = []
    for message in queue.receive(max_count=10):
        sb = ServiceBusMessage(
            body=message.body,
            message_id=message.message_id,
            content_type=message.content_type,
            correlation_id=message.correlation_id,
            delivery_count=message.delivery_count,
            application_properties=dict(message.application_properties),
            user_properties={},
        )
        try:
            _functions()["dispatch"](sb)
        except Exception as exc:
            queue.abandon(message)
            outcomes.append((message.message_id, exc))
        else:
            if lose_lock:
                queue.abandon(message)
            else:
                queue.complete(message)
            outcomes.append((message.message_id, None))
    return outcomes


def _schedule_runs(acr: Any) -> list[Any]:
    return [r for r in acr.requests if r.method == "POST" and r.path.endswith("/scheduleRun")]


def test_signed_push_becomes_exactly_one_acr_run(app_env: dict[str, Any]) -> None:
    queue: LocalQueue = app_env["queue"]
    payload = fixture_json("push-branch-signed-aspnet.json")
    resp = _post(json.dumps(payload).encode(), delivery="e2e-delivery-1")
    assert resp.status_code == 202, resp.get_body()
    [accepted] = json.loads(resp.get_body())["accepted"]

    assert _deliver(queue) == [(accepted["id"], None)]
    [call] = _schedule_runs(app_env["acr"])
    assert "api-version=2025-03-01-preview" in call.query
    task = base64.b64decode(call.body["encodedTaskContent"]).decode()
    assert task.splitlines()[0] == "version: v1.1.0"
    assert "c2VjcmV0LWtleS1kby1ub3QtbGVhaw==" not in task
    assert any(v["isSecret"] for v in call.body["values"])

    record, _etag = app_env["ledger"].get(accepted["id"])
    assert record.status is RunStatus.DISPATCHED
    assert record.run_id == "ca1"
    assert record.correlation_id == "e2e-delivery-1"
    assert record.request["source"]["commit"] == payload["after"]
    assert "c2VjcmV0LWtleS1kby1ub3QtbGVhaw==" not in json.dumps(record.run_request)
    # A push to the default branch is what base-image updates rebuild: recorded in Blob state.
    last = read_last_build(app_env["state"], "azure-test")
    assert last is not None and (last.commit, last.request_id) == (payload["after"], accepted["id"])

    # The sender retries: duplicate detection drops the copy.
    again = _post(json.dumps(payload).encode(), delivery="e2e-delivery-2")
    assert again.status_code == 202
    assert queue.count() == 0
    assert len(_schedule_runs(app_env["acr"])) == 1


def test_redelivered_message_starts_no_second_run(app_env: dict[str, Any]) -> None:
    queue: LocalQueue = app_env["queue"]
    resp = _post(json.dumps(fixture_json("push-branch-signed-aspnet.json")).encode())
    [accepted] = json.loads(resp.get_body())["accepted"]
    assert _deliver(queue, lose_lock=True) == [(accepted["id"], None)]
    [redelivered] = queue.peek()
    assert redelivered.message_id == accepted["id"]
    assert _deliver(queue) == [(accepted["id"], None)]
    assert len(_schedule_runs(app_env["acr"])) == 1
    assert queue.count() == 0
    record, _ = app_env["ledger"].get(accepted["id"])
    assert record.run_id == "ca1"


def test_invalid_message_is_refused_before_any_side_effect(app_env: dict[str, Any]) -> None:
    from shared.platform.queue.port import OutgoingMessage

    queue: LocalQueue = app_env["queue"]
    queue.send([OutgoingMessage(message_id="junk-1", body=b'{"schema": "slipway.build-request/v1"}')])
    [(message_id, error)] = _deliver(queue)
    assert message_id == "junk-1"
    assert error is not None and "InvalidBuildRequest" in str(error)
    assert _schedule_runs(app_env["acr"]) == []


def test_hostile_ref_never_reaches_a_shell_unquoted(app_env: dict[str, Any], tmp_path: Path) -> None:
    payload = fixture_json("push-branch-signed-aspnet.json")
    payload["ref"] = "refs/heads/feat/$(touch${IFS}/tmp/pwned)`id`;reboot"
    resp = _post(json.dumps(payload).encode())
    assert resp.status_code == 202, resp.get_body()
    assert _deliver(app_env["queue"])[0][1] is None
    [call] = _schedule_runs(app_env["acr"])
    task = yaml.safe_load(base64.b64decode(call.body["encodedTaskContent"]))
    for step in task["steps"]:
        assert "$(" not in step["cmd"] and "`" not in step["cmd"] and "reboot" not in step["cmd"]

    # Run the task as the agent would, with fake tools: nothing from the ref may execute.
    (tmp_path / "agent").mkdir()
    agent = Agent(tmp_path / "agent")
    task_yaml = base64.b64decode(call.body["encodedTaskContent"]).decode()
    values = [(v["name"], v["value"]) for v in call.body.get("values", [])]
    results = agent.run_task(task_yaml, values)
    assert [step["id"] for step in task["steps"]] == list(results)  # every step ran
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr)
    assert not agent.executed.exists()
    assert not Path("/tmp/pwned").exists()
    builds = [c for c in agent.docker_calls() if c["argv"][:2] == ["buildx", "build"]]
    # The ref reaches the build only as sanitised names; the context is pinned by the commit.
    [build] = builds
    assert build["argv"][-1].endswith("#c72d62bc4e992806a012ccaca139a8a6ef41a07c")
    assert not any("$(" in arg or "`" in arg for call in agent.docker_calls() for arg in call["argv"])


def test_acr_throttling_is_retried_and_still_starts_one_run(app_env: dict[str, Any]) -> None:
    from shared.platform.queue.port import OutgoingMessage

    queue: LocalQueue = app_env["queue"]
    app_env["acr"].fail_next(429, headers={"Retry-After": "7"})
    resp = _post(json.dumps(fixture_json("push-branch-signed-aspnet.json")).encode())
    [accepted] = json.loads(resp.get_body())["accepted"]
    # Completed, with a copy scheduled no sooner than Retry-After (the delayed-retry pattern).
    assert _deliver(queue) == [(accepted["id"], None)]
    record, _ = app_env["ledger"].get(accepted["id"])
    assert record.status is RunStatus.RETRYING
    [copy] = queue.peek()
    assert copy.message_id == f"{accepted['id']}-a1" and copy.is_scheduled
    assert copy.scheduled_enqueue_time is not None
    assert (copy.scheduled_enqueue_time - record.updated_at).total_seconds() >= 7  # Retry-After honoured
    assert json.loads(copy.body)["attempt"] == 1
    queue.cancel_scheduled(copy.sequence_number)  # deliver it now instead of waiting 7 s
    queue.send([OutgoingMessage(message_id=copy.message_id + "-now", body=copy.body)])
    assert _deliver(queue) == [(copy.message_id + "-now", None)]
    record, _ = app_env["ledger"].get(accepted["id"])
    assert (record.status, record.run_id, record.attempts) == (RunStatus.DISPATCHED, "ca1", 2)
    assert len(_schedule_runs(app_env["acr"])) == 2  # one refused with 429, one accepted


def test_a_run_acr_refuses_is_refused_on_every_delivery(app_env: dict[str, Any]) -> None:
    queue: LocalQueue = app_env["queue"]
    app_env["acr"].fail_next(
        400,
        body={
            "error": {"code": "TasksOperationsNotAllowed", "message": "ACR Tasks requests are not permitted"}
        },
    )
    resp = _post(json.dumps(fixture_json("push-branch-signed-aspnet.json")).encode())
    [accepted] = json.loads(resp.get_body())["accepted"]
    for _ in range(3):  # each redelivery is refused again, before any call to ACR
        [(_, error)] = _deliver(queue)
        assert error is not None and "RunRejected" in str(error)
        assert "TasksOperationsNotAllowed" in str(error) or "not permitted" in str(error)
    assert len(_schedule_runs(app_env["acr"])) == 1
    record, _ = app_env["ledger"].get(accepted["id"])
    assert record.status is RunStatus.FAILED

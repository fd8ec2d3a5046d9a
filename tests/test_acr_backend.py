"""The ACR backend through the real management SDK, over HTTPS, against the loopback ACR server."""

from __future__ import annotations

import base64
import email.utils
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from shared.acr.run_backend import (
    AcrBackend,
    DryRunBackend,
    PermanentBackendError,
    RunHandle,
    TransientBackendError,
)
from shared.acr.task import RunSecrets, RunSpec, RunValue, render_run
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig
from tests.support.acr_server import API_VERSION, AcrServer, StaticTokenCredential, decoded_task
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
RESOURCE_GROUP = "rg-builds"
REGISTRY = "slipway"
ACCOUNT_KEY = "c2VjcmV0LWtleS1kby1ub3QtbGVhaw=="
GIT_TOKEN = "ghp_TestTokenNotReal0123456789"
RUN_PATH = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    f"/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}"
)


def _spec() -> RunSpec:
    request = BuildRequest.model_validate(
        {
            "id": "app.0123456789abcdef",
            "target": "app",
            "trigger": {
                "kind": "push",
                "provider": "github",
                "received_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
                "correlation_id": "corr-1",
            },
            "source": {
                "repo_url": "https://github.com/o/r.git",
                "ref": "refs/heads/main",
                "commit": "3f5a0c9e1b7d2486a1c0e9f8b7d6c5a4e3f2a1b0",
            },
            "image": {"registry": "slipway.azurecr.io", "repository": "team/app", "tags": ["main"]},
            "platforms": ["linux/amd64", "linux/arm64"],
            "cache": {"name": "app-main"},
            "coalesce_key": "app:refs/heads/main",
        }
    )
    config = SlipwayConfig.model_validate(
        {"registry": "slipway.azurecr.io", "cache": {"account_url": "https://c.blob.core.windows.net"}}
    )
    return render_run(request, config, RunSecrets(cache_account_key=ACCOUNT_KEY, git_token=GIT_TOKEN))


def _backend(server: AcrServer, credential: Any = None, base_url: str | None = None) -> AcrBackend:
    return AcrBackend(
        subscription_id=SUBSCRIPTION,
        resource_group=RESOURCE_GROUP,
        registry_name=REGISTRY,
        credential=credential or StaticTokenCredential(),
        base_url=base_url or server.base_url,
        connection_verify=server.ca_path,
    )


def test_schedule_run_sends_the_encoded_task(acr_server: AcrServer) -> None:
    credential = StaticTokenCredential()
    backend = _backend(acr_server, credential)
    spec = _spec()

    handle = backend.start(spec, request_id="app.0123456789abcdef", correlation_id="corr-1")

    assert handle == RunHandle(run_id="ca1", status="Queued", backend="acr")
    [call] = acr_server.requests
    assert (call.method, call.path) == ("POST", f"{RUN_PATH}/scheduleRun")
    assert call.params == {"api-version": API_VERSION}
    assert call.headers["authorization"] == "Bearer test-token"
    assert credential.scopes == [(f"{acr_server.base_url}/.default",)]
    body = call.body
    assert body["type"] == "EncodedTaskRunRequest"
    assert decoded_task(call) == spec.task_yaml
    assert body["platform"] == {"os": "Linux", "architecture": "amd64"}
    assert body["agentConfiguration"] == {"cpu": 2}
    assert body["timeout"] == 3600
    assert body["isArchiveEnabled"] is False
    assert "sourceLocation" not in body and "agentPoolName" not in body
    values = {v["name"]: v for v in body["values"]}
    assert values["slipwayCacheAccountKey"] == {
        "name": "slipwayCacheAccountKey",
        "value": base64.b64encode(ACCOUNT_KEY.encode()).decode(),
        "isSecret": True,
    }
    assert values["slipwayGitToken"]["isSecret"] is True
    assert base64.b64decode(values["slipwayGitToken"]["value"]).decode() == GIT_TOKEN
    assert values["slipwayRequestId"] == {
        "name": "slipwayRequestId",
        "value": "app.0123456789abcdef",
        "isSecret": False,
    }
    assert values["slipwayCorrelationId"] == {
        "name": "slipwayCorrelationId",
        "value": "corr-1",
        "isSecret": False,
    }
    # The secret itself is only in the secret values, never in the task text.
    assert ACCOUNT_KEY not in decoded_task(call) and GIT_TOKEN not in decoded_task(call)

    again = backend.start(spec, request_id="app.other", correlation_id="corr-2")
    assert again.run_id == "ca2"


def test_get_returns_the_run_status(acr_server: AcrServer) -> None:
    backend = _backend(acr_server)
    backend.start(_spec(), request_id="r", correlation_id="c")
    acr_server.set_status("ca1", "Running")

    running = backend.get("ca1")
    assert (running.run_id, running.status, running.backend, running.finished) == (
        "ca1",
        "Running",
        "acr",
        False,
    )
    assert running.started_at is not None and running.finished_at is None
    get = acr_server.requests[-1]
    assert (get.method, get.path, get.params) == ("GET", f"{RUN_PATH}/runs/ca1", {"api-version": API_VERSION})
    with pytest.raises(PermanentBackendError) as info:
        backend.get("ca404")
    assert info.value.status_code == 404

    digest = "sha256:" + "b" * 64
    acr_server.set_status(
        "ca1",
        "Failed",
        error="build step failed",
        output_images=[{"registry": "r.azurecr.io", "repository": "app", "tag": "v1", "digest": digest}],
    )
    failed = backend.get("ca1")
    assert (failed.status, failed.finished, failed.error_message) == ("Failed", True, "build step failed")
    assert failed.output_images == (f"r.azurecr.io/app@{digest}",)
    assert failed.started_at is not None and failed.finished_at is not None
    assert failed.started_at <= failed.finished_at


def test_agent_pool_is_sent(acr_server: AcrServer) -> None:
    spec = _spec()
    pooled = RunSpec(
        task_yaml=spec.task_yaml,
        values=spec.values,
        timeout=7200,
        cpu=4,
        agent_pool="pool-1",
        scripts=spec.scripts,
    )
    _backend(acr_server).start(pooled, request_id="r", correlation_id="c")
    body = acr_server.requests[0].body
    assert (body["agentPoolName"], body["agentConfiguration"], body["timeout"]) == (
        "pool-1",
        {"cpu": 4},
        7200,
    )


def test_throttling_is_transient_and_honours_retry_after(acr_server: AcrServer) -> None:
    acr_server.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(TransientBackendError) as info:
        _backend(acr_server).start(_spec(), request_id="r", correlation_id="c")
    assert info.value.status_code == 429
    assert info.value.retry_after == 7.0
    # No SDK retries: the queue owns retrying, with backoff.
    assert len(acr_server.requests) == 1


def test_retry_after_as_http_date_and_milliseconds(acr_server: AcrServer) -> None:
    when = email.utils.format_datetime(datetime.fromtimestamp(time.time() + 120, UTC), usegmt=True)
    acr_server.fail_next(503, headers={"Retry-After": when})
    with pytest.raises(TransientBackendError) as info:
        _backend(acr_server).start(_spec(), request_id="r", correlation_id="c")
    assert info.value.retry_after is not None and 100 <= info.value.retry_after <= 121

    acr_server.fail_next(429, headers={"retry-after-ms": "1500", "Retry-After": "2"})
    with pytest.raises(TransientBackendError) as info:
        _backend(acr_server).start(_spec(), request_id="r", correlation_id="c")
    assert info.value.retry_after == 1.5


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_server_errors_are_transient(acr_server: AcrServer, status: int) -> None:
    acr_server.fail_next(status)
    with pytest.raises(TransientBackendError) as info:
        _backend(acr_server).start(_spec(), request_id="r", correlation_id="c")
    assert info.value.status_code == status
    assert info.value.retry_after is None
    assert len(acr_server.requests) == 1


@pytest.mark.parametrize("status", [400, 403, 404, 409])
def test_client_errors_are_permanent(acr_server: AcrServer, status: int) -> None:
    acr_server.fail_next(
        status, body={"error": {"code": "TasksOperationsNotAllowed", "message": "not permitted"}}
    )
    with pytest.raises(PermanentBackendError) as info:
        _backend(acr_server).start(_spec(), request_id="r", correlation_id="c")
    assert info.value.status_code == status
    assert info.value.code == "TasksOperationsNotAllowed"
    assert "not permitted" in str(info.value)


def test_a_request_the_server_refuses_is_permanent(acr_server: AcrServer) -> None:
    spec = _spec()
    bad = RunSpec(task_yaml="steps: []\n", values=spec.values, timeout=spec.timeout)
    with pytest.raises(PermanentBackendError) as info:
        _backend(acr_server).start(bad, request_id="r", correlation_id="c")
    assert (info.value.status_code, info.value.code) == (400, "InvalidRequestBody")
    assert "version: v1.1.0" in str(info.value)


def test_a_wrong_token_is_permanent(acr_server: AcrServer) -> None:
    with pytest.raises(PermanentBackendError) as info:
        _backend(acr_server, StaticTokenCredential("wrong")).start(
            _spec(), request_id="r", correlation_id="c"
        )
    assert info.value.status_code == 401


def test_no_token_is_transient(acr_server: AcrServer) -> None:
    class Failing:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            raise ClientAuthenticationError("IMDS is not answering")

    with pytest.raises(TransientBackendError):
        _backend(acr_server, Failing()).start(_spec(), request_id="r", correlation_id="c")
    assert acr_server.requests == []


def test_connection_refused_is_transient(acr_server: AcrServer) -> None:
    port = free_port()  # nothing listens there
    backend = _backend(acr_server, base_url=f"https://127.0.0.1:{port}")
    with pytest.raises(TransientBackendError) as info:
        backend.start(_spec(), request_id="r", correlation_id="c")
    assert info.value.status_code is None


def test_untrusted_certificate_is_transient_not_silent(acr_server: AcrServer) -> None:
    backend = AcrBackend(
        subscription_id=SUBSCRIPTION,
        resource_group=RESOURCE_GROUP,
        registry_name=REGISTRY,
        credential=StaticTokenCredential(),
        base_url=acr_server.base_url,
    )
    with pytest.raises(TransientBackendError):
        backend.start(_spec(), request_id="r", correlation_id="c")
    assert acr_server.requests == []


def test_dry_run_backend_starts_nothing() -> None:
    backend = DryRunBackend()
    spec = RunSpec(task_yaml="version: v1.1.0\n", values=(RunValue("x", "eA==", True),), timeout=300)
    first = backend.start(spec, request_id="app.1", correlation_id="c")
    assert first == backend.start(spec, request_id="app.1", correlation_id="other")
    assert first.run_id.startswith("dryrun-") and first.status == "DryRun" and first.backend == "dry-run"
    assert backend.start(spec, request_id="app.2", correlation_id="c").run_id != first.run_id
    assert backend.name == "dry-run"


def test_from_settings() -> None:
    with pytest.raises(ValueError, match="ACR_NAME"):
        AcrBackend.from_settings({"ACR_SUBSCRIPTION_ID": SUBSCRIPTION, "ACR_RESOURCE_GROUP": RESOURCE_GROUP})
    backend = AcrBackend.from_settings(
        {
            "ACR_SUBSCRIPTION_ID": SUBSCRIPTION,
            "ACR_RESOURCE_GROUP": RESOURCE_GROUP,
            "ACR_NAME": REGISTRY,
            "AZURE_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
            "SLIPWAY_ARM_ENDPOINT": "https://management.chinacloudapi.cn/",
        }
    )
    assert (backend.subscription_id, backend.resource_group, backend.registry_name) == (
        SUBSCRIPTION,
        RESOURCE_GROUP,
        REGISTRY,
    )
    assert backend.base_url == "https://management.chinacloudapi.cn"
    assert backend.name == "acr"


def test_importing_the_backend_module_does_not_import_the_sdk() -> None:
    code = (
        "import sys\n"
        "import shared.acr.run_backend, shared.acr.task\n"
        "loaded = [m for m in sys.modules if m.startswith(('azure.mgmt', 'azure.identity'))]\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

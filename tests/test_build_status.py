"""Where a build's commit status goes: the target's configured repository, never the record's URL."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shared.model.config import SlipwayConfig
from shared.platform.ledger import LedgerRecord, RunStatus
from shared.runs.build_status import BuildStatusNotifier
from shared.runs.commit_status import CommitState, CommitStatus, StatusClient, StatusReporter, client_for

if TYPE_CHECKING:
    from tests.support.git_hosts import GitHostServer

pytest_plugins = ("tests.support.git_hosts",)

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TOKEN = "status-token-for-the-tests-0123456789"


def _config(repo: str) -> SlipwayConfig:
    return SlipwayConfig.model_validate(
        {
            "registry": "slipway.azurecr.io",
            "targets": [
                {"name": "azure-test", "repo": repo, "image": "dougbu/azure-test", "branches": ["**"]}
            ],
        }
    )


def _record(repo_url: str, provider: str) -> LedgerRecord:
    """A dispatched ACR run of the example request, its source.repo_url replaced."""
    request = json.loads((ROOT / "examples" / "build-request.json").read_text())
    request["source"]["repo_url"] = repo_url
    request["trigger"]["provider"] = provider
    return LedgerRecord(
        request_id=request["id"],
        target=request["target"],
        status=RunStatus.DISPATCHED,
        created_at=NOW,
        updated_at=NOW,
        correlation_id="corr-1",
        payload_hash="0" * 64,
        request=request,
        backend="acr",
        run_id="ca42",
    )


class Recorded:
    """A client factory around the real ``client_for`` that keeps the clients and their posts."""

    def __init__(self) -> None:
        self.clients: list[StatusClient] = []
        self.posted: list[CommitStatus] = []

    def __call__(self, repo_url: str, hint: str | None, settings: Mapping[str, str]) -> StatusClient | None:
        client = client_for(repo_url, hint, settings)
        if client is not None:
            self.clients.append(client)
        recorded = self

        class _NoNetwork:
            provider = client.provider if client is not None else "none"

            def post(self, status: CommitStatus) -> None:
                recorded.posted.append(status)

        return _NoNetwork() if client is not None else None


def _notifier(settings: dict[str, str], config: SlipwayConfig, **reporter: Any) -> BuildStatusNotifier:
    return BuildStatusNotifier(
        StatusReporter(settings, max_attempts=1, sleep=lambda _s: None, **reporter),
        settings,
        config=lambda: config,
    )


@pytest.mark.parametrize(
    "record_url",
    [
        "https://gitlab.attacker.example/group/app.git",  # another host
        "https://gitlab.example.com:4443/group/app.git",  # the configured host, another port
        "https://token@gitlab.example.com/group/app.git",  # user information
    ],
)
def test_the_status_token_goes_to_the_configured_host_only(record_url: str) -> None:
    # Self-managed GitLab without GITLAB_API_URL: the API is https://<repository host>/api/v4, so
    # the repository URL decides where GITLAB_STATUS_TOKEN is sent.
    settings = {"GITLAB_STATUS_TOKEN": TOKEN}
    recorded = Recorded()
    notifier = _notifier(settings, _config("git@gitlab.example.com:group/app.git"), client_factory=recorded)

    assert notifier.notify(_record(record_url, "gitlab"), CommitState.PENDING) is True

    [client] = recorded.clients
    assert client.api_url == "https://gitlab.example.com/api/v4"  # type: ignore[attr-defined]
    [status] = recorded.posted
    assert status.repo_url == "https://gitlab.example.com/group/app.git"


def test_the_status_names_the_configured_repository(git_host_server: GitHostServer) -> None:
    # GITHUB_API_URL points at the loopback server; the request path names the repository.
    settings = git_host_server.settings(GITHUB_STATUS_TOKEN=TOKEN)
    notifier = _notifier(settings, _config("https://github.com/dougbu/AzureTest"))
    record = _record("https://github.com/someone/else.git", "github")

    assert notifier.notify(record, CommitState.SUCCESS) is True

    [request] = git_host_server.requests
    commit = record.request["source"]["commit"]
    assert (request.method, request.path) == ("POST", f"/github/repos/dougbu/AzureTest/statuses/{commit}")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


def test_a_target_no_longer_configured_gets_no_status(git_host_server: GitHostServer) -> None:
    settings = git_host_server.settings(GITHUB_STATUS_TOKEN=TOKEN)
    other = SlipwayConfig.model_validate(
        {
            "registry": "slipway.azurecr.io",
            "targets": [{"name": "other", "repo": "https://github.com/o/r", "image": "o/r"}],
        }
    )
    notifier = _notifier(settings, other)
    record = _record("https://github.com/dougbu/AzureTest.git", "github")

    assert notifier.status_for(record, CommitState.PENDING) is None
    assert notifier.notify(record, CommitState.PENDING) is False
    assert git_host_server.requests == []


def test_a_configuration_that_cannot_load_costs_the_status_not_the_build() -> None:
    def broken() -> SlipwayConfig:
        raise ValueError("slipway.yaml: broken")

    settings = {"GITHUB_STATUS_TOKEN": TOKEN}
    notifier = BuildStatusNotifier(StatusReporter(settings, max_attempts=1), settings, config=broken)
    assert (
        notifier.notify(_record("https://github.com/dougbu/AzureTest.git", "github"), CommitState.PENDING)
        is False
    )

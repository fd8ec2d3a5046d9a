"""Run reconciliation and commit statuses, end to end: the real ACR SDK over HTTPS to the
loopback ACR server, the real status clients over HTTP to the loopback Git host server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from shared.acr.run_backend import AcrBackend, DryRunBackend
from shared.dispatch.dispatcher import Dispatcher, Outcome
from shared.model.config import SlipwayConfig
from shared.platform.ledger import BlobLedger, FolderLedger, LedgerRecord
from shared.runs.build_status import BuildStatusNotifier
from shared.runs.commit_status import StatusReporter
from shared.runs.reconcile import Reconciler
from tests.support.acr_server import AcrServer, StaticTokenCredential
from tests.support.azurite import AzuriteServer
from tests.support.git_hosts import GitHostServer

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "c72d62bc4e992806a012ccaca139a8a6ef41a07c"
ACR = {"ACR_SUBSCRIPTION_ID": "sub-1", "ACR_RESOURCE_GROUP": "rg-builds", "ACR_NAME": "slipway"}
CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [
            {
                "name": "azure-test",
                "repo": "https://github.com/dougbu/AzureTest",
                "image": "dougbu/azure-test",
                "branches": ["**"],
            }
        ],
    }
)


def _config_for(repo_url: str) -> SlipwayConfig:
    """CONFIG with the target on another Git host (the dispatcher builds only the target's repo)."""
    [target] = CONFIG.targets
    return CONFIG.model_copy(update={"targets": [target.model_copy(update={"repo": repo_url})]})


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _request(commit: str | None = COMMIT, kind: str = "push") -> bytes:
    body = (ROOT / "examples" / "build-request.json").read_text()
    if commit is None:
        body = body.replace(f'"commit": "{COMMIT}"', '"commit": null').replace(
            '"kind": "push"', f'"kind": "{kind}"'
        )
        body = body.replace("010b33d99c56bf6ebff35d0e00c6fa73", "0000000000000000000000000000head")
        body = body.replace('"sha-c72d62b",', "")  # a head build knows no commit: no {sha} tag
    return body.encode()


class Env:
    def __init__(self, tmp_path: Path, acr: AcrServer, git: GitHostServer) -> None:
        self.acr, self.git, self.clock = acr, git, Clock()
        self.config = CONFIG
        self.settings = {**ACR, **git.settings(GITHUB_STATUS_TOKEN="ghs-test-token")}
        self.ledger: FolderLedger | BlobLedger = FolderLedger(tmp_path / "ledger")
        self.backend = AcrBackend(
            subscription_id=ACR["ACR_SUBSCRIPTION_ID"],
            resource_group=ACR["ACR_RESOURCE_GROUP"],
            registry_name=ACR["ACR_NAME"],
            credential=StaticTokenCredential(),
            base_url=acr.base_url,
            connection_verify=acr.ca_path,
        )

    def notifier(self) -> BuildStatusNotifier:
        reporter = StatusReporter(self.settings, max_attempts=2, sleep=lambda _s: None)
        # Statuses go to the configured repository's host: the one the last dispatch ran with.
        return BuildStatusNotifier(reporter, self.settings, config=lambda: self.config)

    def dispatch(self, body: bytes | None = None, backend: Any = None, config: SlipwayConfig = CONFIG) -> str:
        self.config = config
        dispatcher = Dispatcher(
            config=lambda: config,
            ledger=self.ledger,
            backend=backend or self.backend,
            settings=self.settings,
            clock=self.clock,
            notifier=self.notifier(),
        )
        result = dispatcher.dispatch(body or _request())
        assert result.outcome is Outcome.DISPATCHED, result
        return result.request_id or ""

    def reconcile(self) -> Any:
        return Reconciler(
            ledger=self.ledger, backend=self.backend, notifier=self.notifier(), clock=self.clock
        ).run()

    def record(self, request_id: str) -> LedgerRecord:
        found = self.ledger.get(request_id)
        assert found is not None
        # Records keep unknown fields (a newer version's); Slipway's own writes must add none.
        assert not found[0].model_extra, found[0].model_extra
        return found[0]

    def statuses(self) -> list[dict[str, Any]]:
        return [r.body for r in self.git.requests if r.host == "github" and isinstance(r.body, dict)]

    def run_gets(self) -> int:
        return sum(1 for r in self.acr.requests if r.method == "GET" and "/runs/" in r.path)


@pytest.fixture
def env(tmp_path: Path, acr_server: AcrServer, git_host_server: GitHostServer) -> Env:
    return Env(tmp_path, acr_server, git_host_server)


def test_dispatch_posts_pending_with_a_portal_link_and_records_it(env: Env) -> None:
    request_id = env.dispatch()
    record = env.record(request_id)
    assert record.commit_status == "pending"
    [status] = env.statuses()
    assert status["state"] == "pending"
    assert status["context"] == "slipway/azure-test"
    assert status["target_url"].startswith("https://portal.azure.com/#@/resource/subscriptions/sub-1/")
    assert status["target_url"].endswith(f"/registries/slipway/runs/{record.run_id}")
    assert "Building dougbu/azure-test:master" in status["description"]
    [post] = [r for r in env.git.requests if r.host == "github"]
    assert post.path == f"/github/repos/dougbu/AzureTest/statuses/{COMMIT}"
    assert post.headers["authorization"] == "Bearer ghs-test-token"


def test_a_run_is_followed_to_success_then_no_longer_asked_about(env: Env) -> None:
    request_id = env.dispatch()
    run_id = env.record(request_id).run_id
    assert run_id is not None
    env.acr.set_status(run_id, "Running")
    report = env.reconcile()
    record = env.record(request_id)
    assert (report.checked, record.run_status, record.following) == (1, "Running", True)
    assert record.run_started_at is not None
    assert len(env.statuses()) == 1  # still pending: nothing new to say

    env.acr.set_status(
        run_id,
        "Succeeded",
        output_images=[
            {
                "registry": "slipway.azurecr.io",
                "repository": "dougbu/azure-test",
                "tag": "master",
                "digest": "sha256:" + "a" * 64,
            }
        ],
    )
    report = env.reconcile()
    record = env.record(request_id)
    assert report.finished == [request_id]
    assert (record.run_status, record.following, record.commit_status) == ("Succeeded", False, "success")
    assert record.run_finished_at is not None
    assert env.statuses()[-1]["state"] == "success"
    assert env.statuses()[-1]["description"].startswith("Built and pushed dougbu/azure-test:master")
    assert any(e["event"] == "run_finished" for e in record.history)

    gets, posts = env.run_gets(), len(env.statuses())
    assert env.reconcile().checked == 0
    assert (env.run_gets(), len(env.statuses())) == (gets, posts)


@pytest.mark.parametrize(
    ("run_status", "state", "words"),
    [
        ("Failed", "failure", "failed: step build exited 1"),
        ("Timeout", "failure", "timed out"),
        ("Canceled", "error", "was canceled"),
        ("Error", "error", "failed: step build exited 1"),
    ],
)
def test_each_ending_maps_to_a_commit_state_and_a_readable_sentence(
    env: Env, run_status: str, state: str, words: str
) -> None:
    request_id = env.dispatch()
    run_id = env.record(request_id).run_id
    assert run_id is not None
    env.acr.set_status(run_id, run_status, error="step build exited 1")
    env.reconcile()
    record = env.record(request_id)
    assert (record.run_status, record.following, record.commit_status) == (run_status, False, state)
    assert words in env.statuses()[-1]["description"]
    if run_status in ("Failed", "Error"):
        assert record.run_error == "step build exited 1"


def test_a_status_the_host_refuses_now_is_posted_on_a_later_pass(env: Env) -> None:
    request_id = env.dispatch()
    run_id = env.record(request_id).run_id
    assert run_id is not None
    env.acr.set_status(run_id, "Succeeded")
    env.git.fail_next(503, times=2)  # both attempts of this pass
    env.reconcile()
    record = env.record(request_id)
    assert (record.run_status, record.following, record.commit_status) == ("Succeeded", True, "pending")
    env.reconcile()
    record = env.record(request_id)
    assert (record.following, record.commit_status) == (False, "success")
    assert env.statuses()[-1]["state"] == "success"


def test_a_host_that_is_down_at_dispatch_never_fails_the_build(env: Env) -> None:
    env.git.fail_next(500, times=2)
    request_id = env.dispatch()
    record = env.record(request_id)
    assert record.run_id is not None and record.commit_status is None
    env.reconcile()  # reconciliation says "pending" once the host is back
    assert env.record(request_id).commit_status == "pending"
    assert env.statuses()[-1]["state"] == "pending"


def test_throttling_stops_the_pass_and_changes_nothing(env: Env) -> None:
    request_id = env.dispatch()
    before = env.record(request_id)
    env.acr.fail_next(429, headers={"Retry-After": "17"})
    report = env.reconcile()
    assert report.throttled_for == 17
    assert env.record(request_id) == before
    assert env.reconcile().errors == []


def test_a_run_without_an_outcome_past_its_timeout_is_given_up_on(env: Env) -> None:
    request_id = env.dispatch()
    run_id = env.record(request_id).run_id
    assert run_id is not None
    env.acr.set_status(run_id, "Running")
    env.clock.now += timedelta(hours=3)  # the run's timeout is 1 h, plus 1 h of grace
    report = env.reconcile()
    record = env.record(request_id)
    assert report.abandoned == [request_id]
    assert (record.following, record.commit_status, record.run_status) == (False, "error", "Running")
    assert "last known status Running" in (record.run_error or "")
    assert "stopped following" in env.statuses()[-1]["description"]


def test_a_run_acr_does_not_know_is_given_up_on(env: Env) -> None:
    request_id = env.dispatch()
    run_id = env.record(request_id).run_id
    assert run_id is not None
    del env.acr.runs[run_id]
    env.reconcile()
    record = env.record(request_id)
    assert record.following is False
    assert "ACR does not answer for the run" in (record.run_error or "")


def test_records_older_than_the_horizon_are_not_read(env: Env) -> None:
    request_id = env.dispatch()
    env.clock.now += timedelta(days=2)
    report = env.reconcile()
    assert report.checked == 0
    assert env.record(request_id).following is True


def test_dry_runs_and_head_rebuilds_get_no_commit_status(env: Env) -> None:
    env.dispatch(backend=DryRunBackend())
    assert env.statuses() == []
    assert env.reconcile().checked == 0  # a dry run has nothing to follow
    request_id = env.dispatch(_request(commit=None, kind="schedule"))
    record = env.record(request_id)
    assert record.run_id is not None and record.commit_status is None
    assert env.statuses() == []
    env.acr.set_status(record.run_id, "Succeeded")
    env.reconcile()
    assert env.record(request_id).following is False
    assert env.statuses() == []


def test_runs_show_reports_what_reconciliation_learned(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from shared.app.cli import main
    from shared.app.runtime import Runtime, set_runtime

    request_id = env.dispatch()
    run_id = env.record(request_id).run_id
    assert run_id is not None
    env.acr.set_status(run_id, "Failed", error="exec format error")
    env.reconcile()
    set_runtime(Runtime(env.settings, ledger=env.ledger))
    try:
        assert main(["runs", "show", request_id, "--json"]) == 0
    finally:
        set_runtime(None)
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_status"] == "Failed"
    assert shown["run_error"] == "exec format error"
    assert shown["commit_status"] == "failure"
    assert shown["following"] is False
    assert shown["run_started_at"] and shown["run_finished_at"]


@pytest.mark.parametrize(
    ("repo_url", "provider", "token_setting", "route"),
    [
        (
            "https://gitlab.com/group/app.git",
            "gitlab",
            "GITLAB_STATUS_TOKEN",
            "/gitlab/projects/group%2Fapp/statuses/",
        ),
        (
            "https://dev.azure.com/org/proj/_git/app",
            "azure-devops",
            "AZURE_DEVOPS_STATUS_TOKEN",
            "/ado/org/proj/_apis/git/repositories/app/commits/",
        ),
        (
            "https://bitbucket.org/team/app.git",
            "bitbucket",
            "BITBUCKET_STATUS_TOKEN",
            "/bitbucket/2.0/repositories/team/app/commit/",
        ),
    ],
)
def test_every_git_host_hears_about_the_run(
    env: Env, repo_url: str, provider: str, token_setting: str, route: str
) -> None:
    env.settings = {**ACR, **env.git.settings(**{token_setting: "status-token"})}
    # (Gitea needs an https repository on GITEA_BASE_URL's host: its client is tested in test_commit_status.)
    body = _request().decode().replace("https://github.com/dougbu/AzureTest.git", repo_url)
    body = body.replace('"provider": "github"', f'"provider": "{provider}"')
    request_id = env.dispatch(body.encode(), config=_config_for(repo_url))
    run_id = env.record(request_id).run_id
    assert run_id is not None
    env.acr.set_status(run_id, "Succeeded")
    env.reconcile()
    posts = [r for r in env.git.requests if r.host == provider]
    assert [p.path.startswith(route) for p in posts] == [True, True]
    assert env.record(request_id).commit_status == "success"


def test_a_pass_reads_only_the_records_it_follows(
    env: Env, azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which runs are still followed comes from the blob listing's summaries: a finished run's
    record is not downloaded again on every pass."""
    env.ledger = BlobLedger(ContainerClient.from_connection_string(azurite.connection_string, "reconcile"))
    finished = env.dispatch()
    running = env.dispatch(_request(commit=None, kind="schedule"))
    env.acr.set_status(env.record(finished).run_id or "", "Succeeded")
    env.acr.set_status(env.record(running).run_id or "", "Running")
    env.reconcile()
    assert env.record(finished).following is False and env.record(running).following is True

    read: list[str] = []
    real_get = env.ledger.get

    def get(request_id: str) -> tuple[LedgerRecord, str] | None:
        read.append(request_id)
        return real_get(request_id)

    monkeypatch.setattr(env.ledger, "get", get)
    monkeypatch.setattr(env.ledger, "_read_listed", lambda name: pytest.fail(f"downloaded {name}"))
    report = env.reconcile()
    assert report.checked == 1 and read == [running]

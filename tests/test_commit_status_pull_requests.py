"""Pull-request builds' statuses (issue #20, item 6): on the head commit, where each host shows them.

A pull-request BuildRequest is made by ``request_for_pull_request`` (the one producer of such
requests) and its status posted by the real ``BuildStatusNotifier`` to the loopback server
speaking the five hosts' APIs. The expected URLs and bodies are written from the providers' docs:

- GitHub, Gitea: the base repository's ``/statuses/{head sha}`` (a pull request's own
  ``statuses_url``; Gitea reads a request's statuses from its base repository);
- GitLab: ``POST /projects/:id/statuses/:sha`` with ``ref``: the source branch, or for a fork
  ``refs/merge-requests/<iid>/head`` (docs.gitlab.com/api/commits/#set-commit-pipeline-status);
- Azure DevOps: ``POST .../pullRequests/{pullRequestId}/statuses?api-version=7.1`` (Pull Request
  Statuses - Create), body ``state``, ``description``, ``context {name, genre}``, ``targetUrl``;
- Bitbucket Cloud: the commit's build status with ``refname`` = the source branch ("To associate
  a commit status to a pull request, the refname field must be set to the source branch"); a
  fork's head commit is the fork's, where Slipway's token has no rights: no status.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.intake.pr_policy import PullRequestDecision
from shared.intake.pr_routing import request_for_pull_request
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig, Target, parse_config
from shared.model.events import PullRequestEvent
from shared.platform.ledger import LedgerRecord, RunStatus
from shared.runs.build_status import BuildStatusNotifier, describe
from shared.runs.commit_status import CommitState, CommitStatus, PullRequestRef, StatusReporter, context_for

if TYPE_CHECKING:
    from tests.support.git_hosts import GitHostServer

pytest_plugins = ("tests.support.git_hosts",)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HEAD = "5c2f6e0b9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
TOKEN = "pr-status-token-0123456789"
TOKENS = {
    "GITHUB_STATUS_TOKEN": TOKEN,
    "GITLAB_STATUS_TOKEN": TOKEN,
    "AZURE_DEVOPS_STATUS_TOKEN": TOKEN,
    "BITBUCKET_STATUS_TOKEN": TOKEN,
    "GITEA_STATUS_TOKEN": TOKEN,
}
PORTAL = {"ACR_SUBSCRIPTION_ID": "sub-1", "ACR_RESOURCE_GROUP": "rg-builds", "ACR_NAME": "slipwayacr"}
PROVIDERS = {
    "gh": "github",
    "gl": "gitlab",
    "ado": "azure-devops",
    "bb": "bitbucket",
    "gt": "gitea",
}


def _config(gitea_base: str) -> SlipwayConfig:
    """One target per host, each building pull requests (push: none by default)."""
    text = f"""\
registry: slipway.azurecr.io
targets:
  - {{name: gh, repo: "https://github.com/octo-org/web", image: octo/web, pull_requests: {{enabled: true}}}}
  - {{name: gl, repo: "git@gitlab.com:group/sub/app.git", image: group/app, pull_requests: {{enabled: true}}}}
  - name: ado
    repo: https://dev.azure.com/fabrikam/Fabrikam%20Fiber/_git/Web
    image: fabrikam/web
    pull_requests: {{enabled: true}}
  - name: bb
    repo: git@bitbucket.org:atlassian/widgets.git
    image: atlassian/widgets
    pull_requests: {{enabled: true, push: scratch, scratch_repository: atlassian/widgets-pr}}
  - {{name: gt, repo: "{gitea_base}/alice/app.git", image: alice/app, pull_requests: {{enabled: true}}}}
"""
    return parse_config(text, source="slipway.yaml")


def _target(config: SlipwayConfig, name: str) -> Target:
    return next(t for t in config.targets if t.name == name)


def _request(config: SlipwayConfig, name: str, *, number: int = 12, fork: bool = False) -> BuildRequest:
    target = _target(config, name)
    base = target.repo
    event = PullRequestEvent(
        provider=PROVIDERS[name],
        delivery_id="d-1",
        received_at=NOW,
        repo_urls=(base,),
        number=number,
        action="opened",
        head_commit=HEAD,
        head_ref="refs/heads/feature/login",
        head_repo_urls=("https://example.org/contributor/fork.git",) if fork else (base,),
        base_ref="refs/heads/main",
        fork=fork,
    )
    decision = PullRequestDecision(build=True, reason="built for the test", platforms=("linux/amd64",))
    return request_for_pull_request(event, config, target, decision, correlation_id="corr-pr")


def _record(request: BuildRequest, run_status: str | None = None) -> LedgerRecord:
    return LedgerRecord(
        request_id=request.id,
        target=request.target,
        status=RunStatus.DISPATCHED,
        created_at=NOW,
        updated_at=NOW,
        correlation_id="corr-pr",
        payload_hash="0" * 64,
        request=request.model_dump(mode="json", by_alias=True),
        backend="acr",
        run_id="cb7",
        run_status=run_status,
    )


def _notifier(server: GitHostServer, config: SlipwayConfig) -> BuildStatusNotifier:
    settings = server.settings(**TOKENS, **PORTAL)
    reporter = StatusReporter(settings, max_attempts=1, sleep=lambda _s: None)
    return BuildStatusNotifier(reporter, settings, config=lambda: config)


@pytest.fixture
def config(git_host_server: GitHostServer) -> SlipwayConfig:
    return _config(f"{git_host_server.base_url}/gitea")


def test_github_posts_on_the_base_repository_for_the_head_commit_fork_or_not(
    git_host_server: GitHostServer, config: SlipwayConfig
) -> None:
    notifier = _notifier(git_host_server, config)
    for fork in (False, True):
        assert notifier.notify(_record(_request(config, "gh", fork=fork)), CommitState.PENDING) is True

    for request in git_host_server.requests:
        assert (request.method, request.path) == ("POST", f"/github/repos/octo-org/web/statuses/{HEAD}")
        assert request.body["context"] == "slipway/gh/pr"
        assert request.body["state"] == "pending"
        assert request.body["target_url"].endswith("/registries/slipwayacr/runs/cb7")
    assert len(git_host_server.requests) == 2


def test_gitea_posts_on_the_base_repository_for_the_head_commit(
    git_host_server: GitHostServer, config: SlipwayConfig
) -> None:
    notifier = _notifier(git_host_server, config)
    assert notifier.notify(_record(_request(config, "gt", fork=True), "Succeeded"), CommitState.SUCCESS)

    [request] = git_host_server.requests
    assert request.path == f"/gitea/api/v1/repos/alice/app/statuses/{HEAD}"
    assert request.headers["authorization"] == f"token {TOKEN}"
    assert (request.body["state"], request.body["context"]) == ("success", "slipway/gt/pr")


@pytest.mark.parametrize(
    ("fork", "ref"),
    [(False, "feature/login"), (True, "refs/merge-requests/12/head")],
)
def test_gitlab_names_the_ref_the_merge_request_shows(
    git_host_server: GitHostServer, config: SlipwayConfig, fork: bool, ref: str
) -> None:
    notifier = _notifier(git_host_server, config)
    assert notifier.notify(_record(_request(config, "gl", fork=fork)), CommitState.PENDING)

    [request] = git_host_server.requests
    assert request.path == f"/gitlab/projects/group%2Fsub%2Fapp/statuses/{HEAD}"
    assert request.headers["private-token"] == TOKEN
    assert request.body["ref"] == ref
    assert (request.body["state"], request.body["name"]) == ("pending", "slipway/gl/pr")


def test_a_push_build_s_gitlab_status_still_names_no_ref(git_host_server: GitHostServer) -> None:
    reporter = StatusReporter(git_host_server.settings(**TOKENS), max_attempts=1, sleep=lambda _s: None)
    status = CommitStatus("https://gitlab.com/group/app", HEAD, CommitState.PENDING, "Building", "slipway/gl")
    assert reporter.report(status)
    assert "ref" not in git_host_server.requests[0].body


@pytest.mark.parametrize("fork", [False, True])
def test_azure_devops_posts_a_pull_request_status(
    git_host_server: GitHostServer, config: SlipwayConfig, fork: bool
) -> None:
    notifier = _notifier(git_host_server, config)
    assert notifier.notify(
        _record(_request(config, "ado", number=41, fork=fork), "Failed"), CommitState.FAILURE
    )

    [request] = git_host_server.requests
    assert request.host == "azure-devops-pr"
    assert (
        request.path == "/ado/fabrikam/Fabrikam%20Fiber/_apis/git/repositories/Web/pullRequests/41/statuses"
    )
    assert request.params == {"api-version": "7.1"}
    body = request.body
    assert body["state"] == "failed"
    assert body["context"] == {"genre": "slipway", "name": "ado/pr"}
    assert body["targetUrl"].endswith("/runs/cb7")
    assert "iterationId" not in body  # posted to the request as a whole (see the client)


def test_bitbucket_names_the_source_branch_as_refname(
    git_host_server: GitHostServer, config: SlipwayConfig
) -> None:
    notifier = _notifier(git_host_server, config)
    assert notifier.notify(_record(_request(config, "bb"), "Succeeded"), CommitState.SUCCESS)

    [request] = git_host_server.requests
    assert request.path == f"/bitbucket/2.0/repositories/atlassian/widgets/commit/{HEAD}/statuses/build"
    body = request.body
    assert (body["key"], body["name"], body["state"]) == ("slipway/bb/pr", "slipway/bb/pr", "SUCCESSFUL")
    assert body["refname"] == "feature/login"


def test_a_bitbucket_fork_gets_no_status_and_is_not_retried(
    git_host_server: GitHostServer, config: SlipwayConfig, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = _notifier(git_host_server, config)
    record = _record(_request(config, "bb", fork=True), "Succeeded")

    with caplog.at_level(logging.INFO, logger="slipway.commit_status"):
        # None: reconciliation keeps a record followed only while a status could still be posted.
        assert notifier.status_for(record, CommitState.SUCCESS) is None
        assert notifier.notify(record, CommitState.SUCCESS) is False

    assert git_host_server.requests == []
    assert any("commit_status_not_postable" in r.getMessage() for r in caplog.records)


def test_the_bitbucket_client_refuses_a_fork_even_when_asked_directly(git_host_server: GitHostServer) -> None:
    fork = PullRequestRef(number=3, head_branch="patch-1", fork=True)
    status = CommitStatus(
        "https://bitbucket.org/atlassian/widgets",
        HEAD,
        CommitState.PENDING,
        "Building",
        "slipway/bb/pr",
        None,
        fork,
    )
    reporter = StatusReporter(git_host_server.settings(**TOKENS), max_attempts=3, sleep=lambda _s: None)
    assert reporter.report(status) is False
    assert git_host_server.requests == []


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_a_pull_request_status_never_replaces_the_push_build_s(
    git_host_server: GitHostServer, config: SlipwayConfig, name: str
) -> None:
    notifier = _notifier(git_host_server, config)
    pr_status = notifier.status_for(_record(_request(config, name)), CommitState.PENDING)
    assert pr_status is not None
    assert pr_status.context == f"slipway/{name}/pr" != context_for(name)


@given(target=st.from_regex(r"[a-z0-9][a-z0-9-]{0,40}", fullmatch=True), other=st.text(max_size=45))
def test_no_push_status_is_named_as_a_pull_request_status(target: str, other: str) -> None:
    # Target names have no "/": a push build's context is never any target's PR context.
    pr = context_for(target, pull_request=True)
    assert pr != context_for(target)
    if "/" not in other:
        assert context_for(other) != pr


def _succeeded(request: BuildRequest) -> LedgerRecord:
    started = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    finished = datetime(2026, 12, 1, 12, 3, 12, tzinfo=UTC)
    record = _record(request, "Succeeded")
    return record.model_copy(update={"run_started_at": started, "run_finished_at": finished})


def test_a_cache_only_build_does_not_say_it_pushed(config: SlipwayConfig) -> None:
    cache_only = describe(_succeeded(_request(config, "gh", number=7)))
    scratch = describe(_succeeded(_request(config, "bb", number=7)))

    assert cache_only == "Built octo/web:pr-7, pushed nowhere in 3 min 12 s"
    assert scratch == "Built and pushed atlassian/widgets-pr:pr-7 in 3 min 12 s"

"""Commit statuses against a loopback server speaking the five hosts' APIs."""

from __future__ import annotations

import base64
import json
import logging
from email.utils import formatdate
from time import time
from typing import TYPE_CHECKING, Any

import pytest

from shared.runs.commit_status import (
    AzureDevOpsRepo,
    AzureDevOpsStatusClient,
    BitbucketStatusClient,
    CommitState,
    CommitStatus,
    GiteaStatusClient,
    GitHubStatusClient,
    GitLabStatusClient,
    StatusPostError,
    StatusReporter,
    client_for,
    context_for,
    parse_azure_devops_repo,
    parse_repo_url,
    portal_run_url,
    truncate,
)
from tests.support.ports import free_port

if TYPE_CHECKING:
    from tests.support.git_hosts import GitHostServer

pytest_plugins = ("tests.support.git_hosts",)

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
TOKEN = "s3cr3t-status-token-0123456789"
RUN_URL = portal_run_url("00000000-0000-0000-0000-000000000001", "rg-builds", "slipwayacr", "ca42")
TOKENS = {
    "GITHUB_STATUS_TOKEN": TOKEN,
    "GITLAB_STATUS_TOKEN": TOKEN,
    "AZURE_DEVOPS_STATUS_TOKEN": TOKEN,
    "BITBUCKET_STATUS_TOKEN": TOKEN,
    "GITEA_STATUS_TOKEN": TOKEN,
}


def status(
    repo_url: str,
    state: CommitState = CommitState.PENDING,
    *,
    description: str = "Build dispatched to ACR",
    context: str = "slipway/web",
    target_url: str | None = RUN_URL,
) -> CommitStatus:
    return CommitStatus(repo_url, SHA, state, description, context, target_url)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def reporter(settings: dict[str, str], sleeps: Sleeps | None = None, **kwargs: Any) -> StatusReporter:
    return StatusReporter(settings, sleep=sleeps or Sleeps(), jitter=lambda: 0.0, **kwargs)


@pytest.fixture
def settings(git_host_server: GitHostServer) -> dict[str, str]:
    return git_host_server.settings(**TOKENS)


# -- GitHub ------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(CommitState))
def test_github_posts_a_status(git_host_server: GitHostServer, settings: dict[str, str], state: CommitState):
    posted = reporter(settings).report(status("https://github.com/octo-org/hello-world.git", state))

    assert posted is True
    [req] = git_host_server.requests
    assert (req.method, req.path) == ("POST", f"/github/repos/octo-org/hello-world/statuses/{SHA}")
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["accept"] == "application/vnd.github+json"
    assert req.headers["x-github-api-version"] == "2022-11-28"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"].startswith("slipway")
    assert req.body == {
        "state": state.value,
        "target_url": RUN_URL,
        "description": "Build dispatched to ACR",
        "context": "slipway/web",
    }


def test_github_without_target_url_leaves_it_out(git_host_server: GitHostServer, settings: dict[str, str]):
    assert reporter(settings).report(status("git@github.com:octo-org/hello-world.git", target_url=None))
    assert "target_url" not in git_host_server.requests[0].body


# -- GitLab ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (CommitState.PENDING, "pending"),
        (CommitState.SUCCESS, "success"),
        (CommitState.FAILURE, "failed"),
        (CommitState.ERROR, "failed"),
    ],
)
def test_gitlab_encodes_the_project_path_and_maps_states(
    git_host_server: GitHostServer, settings: dict[str, str], state: CommitState, expected: str
):
    repo = "https://gitlab.com/my-group/sub.group/my-project.git"
    assert reporter(settings).report(status(repo, state))

    [req] = git_host_server.requests
    assert req.path == f"/gitlab/projects/my-group%2Fsub.group%2Fmy-project/statuses/{SHA}"
    assert req.headers["private-token"] == TOKEN
    assert "authorization" not in req.headers
    assert req.body == {
        "state": expected,
        "name": "slipway/web",
        "description": "Build dispatched to ACR",
        "target_url": RUN_URL,
    }


def test_gitlab_leaves_out_a_link_over_its_255_character_limit(
    git_host_server: GitHostServer, settings: dict[str, str]
):
    long_link = "https://portal.azure.com/#@/resource/" + "x" * 240
    assert reporter(settings).report(status("https://gitlab.com/g/p", target_url=long_link))
    assert "target_url" not in git_host_server.requests[0].body


def test_gitlab_same_state_again_counts_as_posted(git_host_server: GitHostServer, settings: dict[str, str]):
    git_host_server.fail_next(
        400, body={"message": "Cannot transition status via :enqueue from :pending (Reason(s): ...)"}
    )
    sleeps = Sleeps()
    assert reporter(settings, sleeps).report(status("https://gitlab.com/g/p"))
    assert len(git_host_server.requests) == 1 and sleeps.calls == []


def test_gitlab_under_a_relative_url_strips_the_prefix(git_host_server: GitHostServer):
    client = GitLabStatusClient(TOKEN, api_url="https://git.example.com/gitlab/api/v4")
    assert client.project_path("https://git.example.com/gitlab/team/app.git") == "team/app"
    assert client.project_path("https://other.example.com/gitlab/team/app.git") == "gitlab/team/app"


# -- Azure DevOps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "repo_url",
    [
        "https://dev.azure.com/fabrikam/Fabrikam%20Web/_git/web-app",
        "https://fabrikam@dev.azure.com/fabrikam/Fabrikam%20Web/_git/web-app",
        "https://fabrikam.visualstudio.com/Fabrikam%20Web/_git/web-app",
        "https://fabrikam.visualstudio.com/DefaultCollection/Fabrikam%20Web/_git/web-app",
        "git@ssh.dev.azure.com:v3/fabrikam/Fabrikam%20Web/web-app",
    ],
)
def test_azure_devops_parses_org_project_repo_and_posts(
    git_host_server: GitHostServer, settings: dict[str, str], repo_url: str
):
    assert reporter(settings).report(status(repo_url, CommitState.SUCCESS))

    [req] = git_host_server.requests
    assert req.path == f"/ado/fabrikam/Fabrikam%20Web/_apis/git/repositories/web-app/commits/{SHA}/statuses"
    assert req.params == {"api-version": "7.1"}
    assert req.headers["authorization"] == "Basic " + base64.b64encode(f":{TOKEN}".encode()).decode()
    assert req.body == {
        "state": "succeeded",
        "description": "Build dispatched to ACR",
        "targetUrl": RUN_URL,
        "context": {"name": "web", "genre": "slipway"},
    }


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (CommitState.PENDING, "pending"),
        (CommitState.SUCCESS, "succeeded"),
        (CommitState.FAILURE, "failed"),
        (CommitState.ERROR, "error"),
    ],
)
def test_azure_devops_state_mapping(
    git_host_server: GitHostServer, settings: dict[str, str], state: CommitState, expected: str
):
    assert reporter(settings).report(status("https://dev.azure.com/o/p/_git/r", state))
    assert git_host_server.requests[0].body["state"] == expected


def test_azure_devops_sends_an_entra_token_as_bearer(git_host_server: GitHostServer):
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiI0OTliODRhYyJ9.c2lnbmF0dXJl"
    settings = git_host_server.settings(AZURE_DEVOPS_STATUS_TOKEN=jwt)
    assert reporter(settings).report(status("https://dev.azure.com/o/p/_git/r"))
    assert git_host_server.requests[0].headers["authorization"] == f"Bearer {jwt}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://dev.azure.com/org/project/_git/repo", AzureDevOpsRepo("org", "project", "repo")),
        ("https://org.visualstudio.com/project/_git/repo", AzureDevOpsRepo("org", "project", "repo")),
        ("https://dev.azure.com/org/_git/project", AzureDevOpsRepo("org", "project", "project")),
        ("https://org.visualstudio.com/_git/project", AzureDevOpsRepo("org", "project", "project")),
        ("org@vs-ssh.visualstudio.com:v3/org/project/repo", AzureDevOpsRepo("org", "project", "repo")),
        ("https://dev.azure.com/org/project/_git/My%20Repo", AzureDevOpsRepo("org", "project", "My Repo")),
        ("https://dev.azure.com/org/project", None),
        ("https://tfs.example.com/tfs/Collection/_git/Project", None),
        ("https://github.com/org/project", None),
    ],
)
def test_parse_azure_devops_repo(url: str, expected: AzureDevOpsRepo | None):
    assert parse_azure_devops_repo(url) == expected


# -- Bitbucket Cloud ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (CommitState.PENDING, "INPROGRESS"),
        (CommitState.SUCCESS, "SUCCESSFUL"),
        (CommitState.FAILURE, "FAILED"),
        (CommitState.ERROR, "FAILED"),
    ],
)
def test_bitbucket_posts_a_build_status(
    git_host_server: GitHostServer, settings: dict[str, str], state: CommitState, expected: str
):
    assert reporter(settings).report(status("https://jdoe@bitbucket.org/my-team/my-repo.git", state))

    [req] = git_host_server.requests
    assert req.path == f"/bitbucket/2.0/repositories/my-team/my-repo/commit/{SHA}/statuses/build"
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.body == {
        "key": "slipway/web",
        "state": expected,
        "name": "slipway/web",
        "url": RUN_URL,
        "description": "Build dispatched to ACR",
    }


def test_bitbucket_app_password_uses_basic_auth_and_falls_back_to_the_repo_url(
    git_host_server: GitHostServer,
):
    settings = git_host_server.settings(BITBUCKET_STATUS_TOKEN=TOKEN, BITBUCKET_STATUS_USER="slipway-bot")
    assert reporter(settings).report(status("git@bitbucket.org:my-team/my-repo.git", target_url=None))

    [req] = git_host_server.requests
    expected = base64.b64encode(f"slipway-bot:{TOKEN}".encode()).decode()
    assert req.headers["authorization"] == f"Basic {expected}"
    assert req.body["url"] == "https://bitbucket.org/my-team/my-repo"


def test_bitbucket_key_stays_within_40_characters_and_is_stable():
    context = context_for("a-very-long-target-name-that-goes-on-and-on")
    key = BitbucketStatusClient.key_for(context)
    assert len(key) == 40
    assert key == BitbucketStatusClient.key_for(context)
    assert key != BitbucketStatusClient.key_for(context + "-2")
    assert BitbucketStatusClient.key_for("slipway/web") == "slipway/web"


# -- Gitea / Forgejo ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(CommitState))
def test_gitea_posts_a_status(git_host_server: GitHostServer, settings: dict[str, str], state: CommitState):
    repo = f"{git_host_server.base_url}/gitea/alice/app.git"
    assert reporter(settings).report(status(repo, state), provider_hint="gitea")

    [req] = git_host_server.requests
    assert req.path == f"/gitea/api/v1/repos/alice/app/statuses/{SHA}"
    assert req.headers["authorization"] == f"token {TOKEN}"
    assert req.body == {
        "state": state.value,
        "target_url": RUN_URL,
        "description": "Build dispatched to ACR",
        "context": "slipway/web",
    }


# -- descriptions, links, the portal -----------------------------------------------------------


def test_descriptions_are_truncated_to_each_hosts_limit(git_host_server: GitHostServer, settings):
    long = "Build failed: " + "step output " * 40
    report = reporter(settings)
    assert report.report(status("https://github.com/o/r", description=long))
    assert report.report(status("https://gitlab.com/o/r", description=long))

    github, gitlab = (r.body["description"] for r in git_host_server.requests)
    assert len(github) <= 140 and github.endswith("…") and github.startswith("Build failed: step")
    assert len(gitlab) <= 255 and gitlab.endswith("…")


def test_truncate_keeps_one_line():
    assert truncate("line one\n  line two\t", 140) == "line one line two"
    assert truncate("abcdef", 4) == "abc…"


def test_portal_run_url():
    assert RUN_URL == (
        "https://portal.azure.com/#@/resource/subscriptions/00000000-0000-0000-0000-000000000001"
        "/resourceGroups/rg-builds/providers/Microsoft.ContainerRegistry/registries/slipwayacr/runs/ca42"
    )
    assert portal_run_url("s", "rg", "reg", "cb1", tenant="contoso.onmicrosoft.com").startswith(
        "https://portal.azure.com/#@contoso.onmicrosoft.com/resource/subscriptions/s/"
    )
    assert "/resourceGroups/rg%2F..%23x/" in portal_run_url("s", "rg/..#x", "reg", "cb1")
    with pytest.raises(ValueError):
        portal_run_url("s", "rg", "reg", "")


def test_a_sas_link_is_never_posted(git_host_server: GitHostServer, settings: dict[str, str]):
    sas = "https://acct.blob.core.windows.net/logs/ca42.log?sv=2022-11-02&se=2030-01-01&sr=b&sp=r&sig=abc%3D"
    posted = status("https://github.com/o/r", target_url=sas)
    assert posted.target_url is None
    assert reporter(settings).report(posted)
    assert "target_url" not in git_host_server.requests[0].body
    assert status("https://github.com/o/r", target_url="https://u:p@example.com/x").target_url is None


def test_commit_status_validates_the_commit_and_coerces_the_state():
    with pytest.raises(ValueError):
        CommitStatus("https://github.com/o/r", "main", CommitState.PENDING, "d", "c")
    coerced = CommitStatus("https://github.com/o/r", SHA, "success", "d", "c")  # type: ignore[arg-type]
    assert coerced.state is CommitState.SUCCESS


# -- retries -----------------------------------------------------------------------------------


def test_retries_a_server_error_then_posts(git_host_server: GitHostServer, settings: dict[str, str]):
    git_host_server.fail_next(500)
    git_host_server.fail_next(502)
    sleeps = Sleeps()

    assert reporter(settings, sleeps, base_delay=1.0).report(status("https://github.com/o/r"))

    assert len(git_host_server.requests) == 3
    assert sleeps.calls == [0.5, 1.0]  # base * 2**n, with the jitter at its low end (x0.5)


def test_backoff_jitter_stays_within_bounds(git_host_server: GitHostServer, settings: dict[str, str]):
    git_host_server.fail_next(503, times=3)
    sleeps = Sleeps()
    report = StatusReporter(settings, sleep=sleeps, jitter=lambda: 0.999, base_delay=2.0, max_delay=5.0)

    assert report.report(status("https://github.com/o/r"))
    assert [round(s, 2) for s in sleeps.calls] == [2.0, 4.0, 5.0]


def test_429_honours_retry_after_seconds(git_host_server: GitHostServer, settings: dict[str, str]):
    git_host_server.fail_next(429, {"Retry-After": "7"})
    sleeps = Sleeps()

    assert reporter(settings, sleeps).report(status("https://gitlab.com/o/r"))
    assert sleeps.calls == [7.0]
    assert len(git_host_server.requests) == 2


def test_429_honours_retry_after_as_a_date(git_host_server: GitHostServer, settings: dict[str, str]):
    git_host_server.fail_next(429, {"Retry-After": formatdate(time() + 20, usegmt=True)})
    sleeps = Sleeps()

    assert reporter(settings, sleeps).report(status("https://bitbucket.org/o/r"))
    assert len(sleeps.calls) == 1 and 15 <= sleeps.calls[0] <= 21


def test_github_rate_limit_403_is_retried(git_host_server: GitHostServer, settings: dict[str, str]):
    reset = str(int(time()) + 3)
    git_host_server.fail_next(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})
    sleeps = Sleeps()

    assert reporter(settings, sleeps).report(status("https://github.com/o/r"))
    assert len(sleeps.calls) == 1 and 0 <= sleeps.calls[0] <= 4


def test_gives_up_when_retry_after_is_beyond_max_delay(
    git_host_server: GitHostServer, settings: dict[str, str], caplog: pytest.LogCaptureFixture
):
    git_host_server.fail_next(429, {"Retry-After": "3600"})
    sleeps = Sleeps()
    with caplog.at_level(logging.INFO, logger="slipway.commit_status"):
        assert reporter(settings, sleeps, max_delay=30).report(status("https://github.com/o/r")) is False
    assert sleeps.calls == [] and len(git_host_server.requests) == 1
    assert _events(caplog)[-1]["event"] == "commit_status_failed"


def test_bounded_attempts_then_false(git_host_server: GitHostServer, settings: dict[str, str]):
    git_host_server.fail_next(500, times=10)
    sleeps = Sleeps()

    assert reporter(settings, sleeps, max_attempts=3).report(status("https://github.com/o/r")) is False
    assert len(git_host_server.requests) == 3 and len(sleeps.calls) == 2


def test_connection_errors_are_retried():
    port = free_port()  # nothing listens there: connections are refused
    settings = {"GITHUB_API_URL": f"http://127.0.0.1:{port}", "GITHUB_STATUS_TOKEN": TOKEN}
    sleeps = Sleeps()

    assert reporter(settings, sleeps, max_attempts=3).report(status("https://github.com/o/r")) is False
    assert len(sleeps.calls) == 2


@pytest.mark.parametrize("code", [401, 403, 404, 422])
def test_client_errors_are_not_retried(
    git_host_server: GitHostServer, settings: dict[str, str], caplog: pytest.LogCaptureFixture, code: int
):
    git_host_server.fail_next(code)
    sleeps = Sleeps()
    with caplog.at_level(logging.INFO, logger="slipway.commit_status"):
        assert reporter(settings, sleeps).report(status("https://github.com/o/r")) is False

    assert len(git_host_server.requests) == 1 and sleeps.calls == []
    [failed] = [e for e in _events(caplog) if e["event"] == "commit_status_failed"]
    assert failed["status_code"] == code and failed["retryable"] is False
    assert failed["provider"] == "github" and failed["repo"] == "github.com/o/r" and failed["commit"] == SHA


def test_redirects_are_not_followed(git_host_server: GitHostServer, settings: dict[str, str]):
    git_host_server.fail_next(307, {"Location": f"{git_host_server.base_url}/github/elsewhere"})
    assert reporter(settings).report(status("https://github.com/o/r")) is False
    assert len(git_host_server.requests) == 1


def test_report_never_raises():
    def broken_factory(*args: Any) -> Any:
        raise RuntimeError(f"boom {TOKEN}")

    class BrokenClient:
        provider = "github"

        def post(self, status: CommitStatus) -> None:
            raise KeyError(TOKEN)

    assert StatusReporter({}, client_factory=broken_factory).report(status("https://github.com/o/r")) is False
    broken = StatusReporter({}, client_factory=lambda *a: BrokenClient())
    assert broken.report(status("https://github.com/o/r")) is False


# -- tokens stay out of logs -------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("repo", "extra", "sent"),
    [
        ("https://github.com/o/r", {}, TOKEN),
        ("https://gitlab.com/o/r", {}, TOKEN),
        ("https://dev.azure.com/o/p/_git/r", {}, _basic("", TOKEN)),
        ("https://bitbucket.org/o/r", {}, TOKEN),
        ("https://bitbucket.org/o/r", {"BITBUCKET_STATUS_USER": "bot"}, _basic("bot", TOKEN)),
    ],
)
def test_tokens_never_reach_logs_or_errors(
    git_host_server: GitHostServer,
    caplog: pytest.LogCaptureFixture,
    repo: str,
    extra: dict[str, str],
    sent: str,
):
    echo = {"message": f"bad credentials {TOKEN} / {sent}"}  # a host echoing the credential back
    git_host_server.fail_next(500, body=echo)
    git_host_server.fail_next(401, body=echo)
    settings = git_host_server.settings(**TOKENS, **extra)
    client = client_for(repo, None, settings)
    assert client is not None

    with caplog.at_level(logging.DEBUG):
        assert reporter(settings).report(status(repo)) is False
        git_host_server.fail_next(401, body=echo)
        with pytest.raises(StatusPostError) as raised:
            client.post(status(repo))

    credentials = {
        r.headers.get("authorization") or r.headers.get("private-token") for r in git_host_server.requests
    }
    assert all(c is not None and c.endswith(sent) for c in credentials)  # it was sent: the redaction matters
    text = caplog.text + json.dumps([getattr(r, "slipway", None) for r in caplog.records], default=str)
    text += str(raised.value) + repr(client)
    assert TOKEN not in text and sent not in text
    assert "bad credentials *** / ***" in str(raised.value)


# -- choosing the host -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "hint", "settings", "kind", "base"),
    [
        ("https://github.com/o/r.git", None, {}, GitHubStatusClient, "https://api.github.com"),
        ("git@github.com:o/r.git", "operator", {}, GitHubStatusClient, "https://api.github.com"),
        ("https://ghe.corp.example/o/r", "github", {}, GitHubStatusClient, "https://ghe.corp.example/api/v3"),
        ("https://octo.ghe.com/o/r", None, {}, GitHubStatusClient, "https://api.octo.ghe.com"),
        (
            "https://ghe.corp.example/o/r",
            "replay",
            {"GITHUB_API_URL": "https://ghe.corp.example/api/v3/"},
            GitHubStatusClient,
            "https://ghe.corp.example/api/v3",
        ),
        ("https://gitlab.com/g/s/p.git", None, {}, GitLabStatusClient, "https://gitlab.com/api/v4"),
        ("https://git.corp.example/g/p", "gitlab", {}, GitLabStatusClient, "https://git.corp.example/api/v4"),
        ("https://dev.azure.com/o/p/_git/r", None, {}, AzureDevOpsStatusClient, "https://dev.azure.com"),
        ("https://o.visualstudio.com/p/_git/r", None, {}, AzureDevOpsStatusClient, "https://dev.azure.com"),
        ("https://bitbucket.org/w/r", None, {}, BitbucketStatusClient, "https://api.bitbucket.org"),
        (
            "https://code.example.org/alice/app.git",
            None,
            {"GITEA_BASE_URL": "https://code.example.org/"},
            GiteaStatusClient,
            "https://code.example.org",
        ),
        (
            "https://code.example.org/alice/app.git",
            "forgejo",
            {"GITEA_BASE_URL": "https://code.example.org"},
            GiteaStatusClient,
            "https://code.example.org",
        ),
    ],
)
def test_client_for_chooses_the_host(
    repo: str, hint: str | None, settings: dict[str, str], kind: type, base: str
):
    client = client_for(repo, hint, {**TOKENS, **settings})
    assert isinstance(client, kind)
    assert (getattr(client, "api_url", None) or getattr(client, "base_url", None)) == base


@pytest.mark.parametrize(
    "repo",
    [
        "https://github.com/o/r",
        "https://gitlab.com/o/r",
        "https://dev.azure.com/o/p/_git/r",
        "https://bitbucket.org/w/r",
        "https://code.example.org/alice/app",
    ],
)
def test_client_for_is_off_without_credentials(repo: str):
    settings = {"GITEA_BASE_URL": "https://code.example.org"}
    assert client_for(repo, None, settings) is None
    assert client_for(repo, None, {**settings, **dict.fromkeys(TOKENS, "  ")}) is None
    assert client_for(repo, None, {**settings, **TOKENS}) is not None


@pytest.mark.parametrize(
    ("repo", "hint", "settings"),
    [
        ("https://evil.example/alice/app", "gitea", {"GITEA_BASE_URL": "https://code.example.org"}),
        ("https://code.example.org/alice/app", "gitea", {}),
        ("https://unknown.example/o/r", None, {}),
        ("https://tfs.example.com/tfs/Coll/_git/P", "azure-devops", {}),
        ("https://bitbucket.corp.example/scm/p/r.git", "bitbucket", {}),
        ("https://github.com/o/r", None, {"GITHUB_API_URL": "http://api.example.com"}),  # cleartext
        ("https://github.com/o/r", None, {"GITHUB_API_URL": "https://u:p@api.example.com"}),
        ("not a url", None, {}),
    ],
)
def test_client_for_refuses(repo: str, hint: str | None, settings: dict[str, str]):
    assert client_for(repo, hint, {**TOKENS, **settings}) is None


def test_statuses_off_is_not_an_error(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.DEBUG, logger="slipway.commit_status"):
        assert StatusReporter({}).report(status("https://github.com/o/r")) is False
    assert [e["event"] for e in _events(caplog)] == ["commit_status_off"]


def test_parse_repo_url_forms():
    assert parse_repo_url("https://user:pw@GitHub.com:443/O/R.git/") == parse_repo_url(
        "https://github.com:443/O/R"
    )
    assert parse_repo_url("ssh://git@github.com:22/o/r.git").port is None  # type: ignore[union-attr]
    loc = parse_repo_url("git@gitlab.com:group/sub/proj.git")
    assert (
        loc is not None
        and loc.segments == ("group", "sub", "proj")
        and loc.display == "gitlab.com/group/sub/proj"
    )
    assert parse_repo_url("https://github.com/") is None


def _events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.slipway for r in caplog.records if hasattr(r, "slipway")]

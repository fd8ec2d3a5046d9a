"""Every Git host's pull/merge request events, from published payloads (tests/fixtures/*/SOURCES.md).

The expected values are read from the fixture files by hand. Each event is read, then answered as
a target whose ``pull_requests`` policy builds its repository's requests would answer it: the
head queued (202) when it moved or opened, a close recorded, anything else ignored with a reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from shared.intake.receivers import pull_requests as pr
from shared.intake.receivers.azure_devops import read_azure_devops, receive_azure_devops
from shared.intake.receivers.bitbucket import bitbucket_reader, receive_bitbucket
from shared.intake.receivers.gitea import receive_gitea
from shared.intake.receivers.github import _decode_body, receive_github
from shared.intake.receivers.github import sign as github_sign
from shared.intake.receivers.gitlab import receive_gitlab
from shared.intake.receivers.pipeline import ReceiverContext
from shared.intake.receivers.signatures import hmac_sha256_hex
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig
from shared.model.config.pull_requests import PullRequestPolicy
from shared.model.events import PullRequestEvent
from shared.platform.http import HttpRequest, HttpResponse
from shared.platform.queue.local import LocalQueue
from shared.platform.state import FolderStateStore
from tests.support.receiving import DIFFERENT_REPOSITORIES, NOW, fixture_bytes, receiver_context
from tests.support.receiving import queue as queue

SECRET = "pull request secret for the tests"
USER, PASSWORD = "slipway", "a password for the tests"
SETTINGS = {
    "GITHUB_WEBHOOK_SECRET": SECRET,
    "GITEA_WEBHOOK_SECRET": SECRET,
    "BITBUCKET_WEBHOOK_SECRET": SECRET,
    "GITLAB_WEBHOOK_TOKEN": SECRET,
    "AZURE_DEVOPS_WEBHOOK_USER": USER,
    "AZURE_DEVOPS_WEBHOOK_PASSWORD": PASSWORD,
}
CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [{"name": "web", "repo": "https://x.test/o/r", "image": "o/r"}],
    }
)
JSON = "application/json"


def _ctx(queue: LocalQueue) -> ReceiverContext:
    return receiver_context(queue, CONFIG, SETTINGS)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# (body, event, secret) -> the request each host sends.
def github_request(body: bytes, event: str = "pull_request", secret: str = SECRET) -> HttpRequest:
    headers = {
        "Content-Type": JSON,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "gh-1",
        "X-Hub-Signature-256": github_sign(secret.encode(), body),
    }
    return HttpRequest("POST", "http://x/api/hooks/github", headers, body)


def gitea_request(body: bytes, event: str = "pull_request", secret: str = SECRET) -> HttpRequest:
    headers = {
        "Content-Type": JSON,
        "X-Gitea-Event": event,
        "X-Gitea-Delivery": "gitea-1",
        "X-Gitea-Signature": hmac_sha256_hex(secret.encode(), body),
    }
    return HttpRequest("POST", "http://x/api/hooks/gitea", headers, body)


def bitbucket_request(body: bytes, event: str, secret: str = SECRET) -> HttpRequest:
    headers = {
        "Content-Type": JSON,
        "X-Event-Key": event,
        "X-Request-UUID": "bb-1",
        "X-Hub-Signature": "sha256=" + hmac_sha256_hex(secret.encode(), body),
    }
    return HttpRequest("POST", "http://x/api/hooks/bitbucket", headers, body)


def gitlab_request(body: bytes, event: str = "Merge Request Hook", secret: str = SECRET) -> HttpRequest:
    headers = {"Content-Type": JSON, "X-Gitlab-Event": event, "X-Gitlab-Token": secret}
    return HttpRequest("POST", "http://x/api/hooks/gitlab", headers, body)


def ado_request(body: bytes, event: str = "", secret: str = PASSWORD) -> HttpRequest:
    headers = {"Content-Type": "application/json; charset=utf-8", "Authorization": _basic(USER, secret)}
    return HttpRequest("POST", "http://x/api/hooks/azure-devops", headers, body)


@dataclass(frozen=True)
class Case:
    host: str
    file: str
    event: str
    receive: Callable[[HttpRequest, ReceiverContext], HttpResponse]
    request: Callable[..., HttpRequest]
    read: pr.Read
    expected: dict[str, object]
    delivery: str


GH_SHA = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
GH_URLS = (
    "https://github.com/Codertocat/Hello-World.git",
    "https://github.com/Codertocat/Hello-World",
    "git@github.com:Codertocat/Hello-World.git",
)
_GH = {
    "number": 2,
    "head_commit": GH_SHA,
    "head_ref": "refs/heads/changes",
    "base_ref": "refs/heads/master",
    "fork": False,
    "labels": frozenset({"bug"}),
    "merged": False,
    "repo_urls": GH_URLS,
    "head_repo_urls": GH_URLS,
}
GITHUB_READ = pr.github_reader(_decode_body)


def _github(action: str, normalised: str, **extra: object) -> Case:
    expected = {**_GH, "action": normalised, "sender_action": action, **extra}
    return Case(
        "github",
        f"pull_request-{action}.json",
        "pull_request",
        receive_github,
        github_request,
        GITHUB_READ,
        expected,
        "gh-1",
    )


ADO_URL = ("https://fabrikam.visualstudio.com/DefaultCollection/_git/Fabrikam",)
_ADO = {
    "number": 1,
    "head_commit": "53d54ac915144006c2c9e90d2c7d3880920db49c",
    "head_ref": "refs/heads/mytopic",
    "base_ref": "refs/heads/master",
    "fork": False,
    "labels": frozenset(),
    "repo_urls": ADO_URL,
    "head_repo_urls": ADO_URL,
}


def _ado(kind: str, action: str, merged: bool, event_id: str) -> Case:
    expected = {**_ADO, "action": action, "merged": merged, "sender_action": f"git.pullrequest.{kind}"}
    return Case(
        "azure-devops",
        f"git.pullrequest.{kind}-aspnet-webhooks.json",
        "",
        receive_azure_devops,
        ado_request,
        read_azure_devops,
        expected,
        event_id,
    )


BB_TEST2 = ("https://bitbucket.org/anbraten/test-2",)


def _bitbucket(kind: str, expected: dict[str, object]) -> Case:
    key = f"pullrequest:{kind}"
    return Case(
        "bitbucket",
        f"pullrequest-{kind}-woodpecker.json",
        key,
        receive_bitbucket,
        bitbucket_request,
        bitbucket_reader(key),
        {"sender_action": key, "head_commit": None, **expected},
        "bb-1",
    )


def _gitea(name: str, expected: dict[str, object]) -> Case:
    return Case(
        "gitea", name, "pull_request", receive_gitea, gitea_request, pr.read_gitea, expected, "gitea-1"
    )


GITEA_HELLO = (
    "https://gitea.com/a_nice_user/hello_world_ci.git",
    "https://gitea.com/a_nice_user/hello_world_ci",
    "ssh://git@gitea.com:3344/a_nice_user/hello_world_ci.git",
)
_GITEA_7 = {
    "number": 7,
    "head_commit": "07977177c2cd7d46bad37b8472a9d50e7acb9d1f",
    "head_ref": "refs/heads/jony-patch-1",
    "base_ref": "refs/heads/main",
    "fork": False,
    "labels": frozenset({"bug", "help wanted"}),
    "repo_urls": GITEA_HELLO,
}
_GITEA_1 = {
    "number": 1,
    "head_commit": "d555a5dd07f4d0148a58d4686ec381502ae6a2d4",
    "head_ref": "refs/heads/anbraten-patch-1",
    "base_ref": "refs/heads/main",
    "fork": False,
    "labels": frozenset(),
}

CASES = [
    _github("opened", "opened", labels_added=frozenset()),
    _github("synchronize", "updated"),
    _github("reopened", "reopened"),
    _github("closed", "closed"),
    _github("labeled", "labeled", labels_added=frozenset({"bug"})),
    _github("unlabeled", "unlabeled", labels_added=frozenset()),
    Case(
        "gitlab",
        "merge_request-hook-go-gitlab.json",
        "Merge Request Hook",
        receive_gitlab,
        gitlab_request,
        pr.read_gitlab,
        {
            "number": 1,
            "action": "opened",
            "sender_action": "open",
            "head_commit": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "head_ref": "refs/heads/ms-viewport",
            "base_ref": "refs/heads/master",
            # source_project_id and target_project_id are both 14
            "fork": False,
            "labels": frozenset({"API"}),
            # changes.labels: previous [API], current [Platform]
            "labels_added": frozenset({"Platform"}),
            "merged": False,
            "repo_urls": (
                "http://example.com/gitlabhq/gitlab-test.git",
                "http://example.com/gitlabhq/gitlab-test",
                "git@example.com:gitlabhq/gitlab-test.git",
            ),
            "head_repo_urls": (
                "http://example.com/awesome_space/awesome_project.git",
                "http://example.com/awesome_space/awesome_project",
                "git@example.com:awesome_space/awesome_project.git",
            ),
        },
        "",
    ),
    _ado("created", "opened", False, "2ab4e3d3-b7a6-425e-92b1-5a9982c1269e"),
    # "marked the pull request as completed": status completed
    _ado("updated", "closed", True, "af07be1b-f3ad-44c8-a7f1-c4835f2df06b"),
    _ado("merged", "closed", True, "6872ee8c-b333-4eff-bfb9-0d5274943566"),
    _bitbucket(
        "created",
        {
            "number": 1,
            "action": "opened",
            "head_commit_abbrev": "d3022fc0ca3d",
            "head_ref": "refs/heads/branch2",
            "base_ref": "refs/heads/main",
            "fork": False,
            "merged": False,
            "repo_urls": (
                "https://api.bitbucket.org/team_name/repo_name",
                "https://bitbucket.org/user_name/repo_name",
            ),
        },
    ),
    _bitbucket(
        "fulfilled",
        {
            "number": 1,
            "action": "closed",
            "head_commit_abbrev": "668218c13e04",
            "head_ref": "refs/heads/patch-2",
            "fork": False,
            "merged": True,
            "repo_urls": BB_TEST2,
            "head_repo_urls": BB_TEST2,
        },
    ),
    _bitbucket(
        "rejected",
        {
            "number": 2,
            "action": "closed",
            "head_commit_abbrev": "f90e18fc9d45",
            "fork": False,
            "merged": False,
        },
    ),
    _gitea(
        "pull_request-label_updated-woodpecker.json", {**_GITEA_7, "action": "labeled", "labels_added": None}
    ),
    _gitea("pull_request-label_cleared-woodpecker.json", {**_GITEA_7, "action": "unlabeled"}),
    _gitea("pull_request-closed-woodpecker.json", {**_GITEA_1, "action": "closed", "merged": False}),
    _gitea("pull_request-closed-merged-woodpecker.json", {**_GITEA_1, "action": "closed", "merged": True}),
    _gitea(
        "pull_request-synchronized-woodpecker.json",
        {
            "number": 2,
            "action": "updated",
            "head_commit": "788ed8d02d3b7fcfcf6386dbcbca696aa1d4dc25",
            # head.repo_id and base.repo_id are both 6
            "fork": False,
            "labels": frozenset({"Kind/Bug", "Kind/Security"}),
        },
    ),
    _gitea(
        "pull_request-reopened-woodpecker.json",
        {
            "number": 1,
            "action": "reopened",
            "head_commit": "36b5813240a9d2daa29b05046d56a53e18f39a3e",
            "fork": False,
        },
    ),
    _gitea(
        "pull_request-label_updated-forgejo-woodpecker.json",
        {"number": 1, "action": "labeled", "labels": frozenset({"Kind/Documentation", "Kind/Enhancement"})},
    ),
    # A trimmed payload: the number only at the top, no head or base repository: taken as a fork.
    _gitea(
        "pull_request-opened-woodpecker.json",
        {
            "number": 1,
            "action": "opened",
            "head_commit": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            "head_ref": "refs/heads/feature/changes",
            "fork": True,
            "head_repo_urls": (),
        },
    ),
]


def _id(case: Case) -> str:
    return f"{case.host}:{case.file}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_each_published_payload_is_read_as_written(case: Case) -> None:
    event = case.read(fixture_bytes(case.host, case.file), JSON, "delivery", NOW)
    assert isinstance(event, PullRequestEvent)
    assert (event.provider, event.delivery_id, event.received_at) == (case.host, "delivery", NOW)
    assert {name: getattr(event, name) for name in case.expected} == case.expected


def _building(repo: str) -> SlipwayConfig:
    """A target building the pull requests of ``repo``, forks included."""
    return SlipwayConfig.model_validate(
        {
            "registry": "slipway.azurecr.io",
            "targets": [
                {
                    "name": "app",
                    "repo": repo,
                    "image": "o/app",
                    "branches": ["**"],
                    "pull_requests": {"enabled": True, "forks": "on"},
                }
            ],
        }
    )


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_each_published_payload_is_answered_by_a_target_that_builds_pull_requests(
    queue: LocalQueue, tmp_path: Path, case: Case
) -> None:
    body = fixture_bytes(case.host, case.file)
    event = case.read(body, JSON, None, NOW)
    assert isinstance(event, PullRequestEvent)
    state = FolderStateStore(tmp_path / "state")
    ctx = receiver_context(queue, _building(event.repo_urls[0]), SETTINGS, state=state)
    resp = case.receive(case.request(body, case.event), ctx)
    expected = case.expected
    number, action = expected["number"], expected["action"]
    if case.delivery:
        assert resp.body["correlation_id"] == case.delivery
    [ignored] = resp.body["ignored"] or [None]
    if case.file == "pullrequest-created-woodpecker.json":
        # This trimmed payload names two repositories (api.bitbucket.org/team_name, user_name).
        assert resp.status == 200 and ignored is not None
        assert ignored["reason"].startswith(DIFFERENT_REPOSITORIES)
        assert queue.count() == 0
        return
    if action in ("opened", "reopened", "updated"):
        assert resp.status == 202, resp.body
        [queued] = [BuildRequest.from_json(m.body) for m in queue.peek()]
        head = expected["head_commit"]
        assert isinstance(head, str)
        assert resp.body["accepted"] == [{"id": queued.id, "target": "app", "tags": queued.image.tags}]
        assert queued.trigger.kind == "pull-request" and queued.source.commit == head
        assert queued.pull_request is not None and queued.pull_request.number == number
        assert queued.image.tags == [f"pr-{number}", f"pr-{number}-{head[:12]}"]
        assert (queued.cache.name, queued.coalesce_key) == (f"app-pr-{number}", f"app:pr-{number}")
        return
    assert resp.status == 200, resp.body
    assert resp.body["accepted"] == [] and queue.count() == 0
    assert ignored is not None and ignored["target"] == "app"
    assert ignored["reason"].startswith(f"pull request #{number} {action}: ")
    found = state.get(f"pull-requests/app/pr-{number}.json")
    if action == "closed":
        assert "recorded closed" in ignored["reason"]
        assert found is not None and found.value["closed"] is True
        assert found.value["merged"] is expected["merged"]
    else:  # a label on a request that is no fork trusts nothing new; an unlabel builds nothing
        assert ignored["reason"].endswith(
            "its head did not move" if action == "labeled" else "nothing to build"
        )
        assert found is None


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_a_target_whose_policy_is_off_says_so_and_records_nothing(
    queue: LocalQueue, tmp_path: Path, case: Case
) -> None:
    """The repository's pushes are built, its pull requests are not (``pull_requests`` left off):
    every event, a close included, is answered with that reason and leaves nothing behind."""
    body = fixture_bytes(case.host, case.file)
    event = case.read(body, JSON, None, NOW)
    assert isinstance(event, PullRequestEvent)
    config = _building(event.repo_urls[0])
    config = config.model_copy(
        update={"targets": [config.targets[0].model_copy(update={"pull_requests": PullRequestPolicy()})]}
    )
    state = FolderStateStore(tmp_path / "state")
    resp = case.receive(
        case.request(body, case.event), receiver_context(queue, config, SETTINGS, state=state)
    )
    assert resp.status == 200, resp.body
    [ignored] = resp.body["ignored"]
    if case.file == "pullrequest-created-woodpecker.json":  # names two repositories (see above)
        assert ignored["reason"].startswith(DIFFERENT_REPOSITORIES)
    else:
        assert ignored["target"] == "app"
        assert ignored["reason"] == (
            f"pull request #{case.expected['number']} {case.expected['action']}: "
            "pull-request builds are off for this target"
        )
    assert queue.count() == 0 and list(state.keys()) == []


@pytest.mark.parametrize("case", [c for c in CASES if c.expected["action"] != "closed"][:3], ids=_id)
def test_without_a_target_for_the_repository_nothing_is_queued(queue: LocalQueue, case: Case) -> None:
    resp = case.receive(case.request(fixture_bytes(case.host, case.file), case.event), _ctx(queue))
    assert resp.status == 200, resp.body
    [ignored] = resp.body["ignored"]
    assert ignored["target"] is None and "no target builds" in ignored["reason"]
    assert queue.count() == 0


@pytest.mark.parametrize("case", CASES[::3], ids=_id)
def test_a_wrong_credential_is_refused_before_the_body_is_read(queue: LocalQueue, case: Case) -> None:
    body = fixture_bytes(case.host, case.file)
    resp = case.receive(case.request(body, case.event, secret="not the secret"), _ctx(queue))
    assert resp.status == 401, resp.body
    assert queue.count() == 0


@pytest.mark.parametrize("case", [CASES[0], CASES[6], CASES[7], CASES[9], CASES[12]], ids=_id)
def test_a_malformed_pr_payload_is_400_naming_the_field(queue: LocalQueue, case: Case) -> None:
    payload = json.loads(fixture_bytes(case.host, case.file))
    # the head commit, wherever each host puts it
    if case.host in ("github", "gitea"):
        payload["pull_request"]["head"]["sha"] = "not-a-commit"
    elif case.host == "gitlab":
        payload["object_attributes"]["last_commit"]["id"] = "not-a-commit"
    elif case.host == "azure-devops":
        payload["resource"]["lastMergeSourceCommit"]["commitId"] = "not-a-commit"
    else:
        payload["pullrequest"]["source"]["commit"]["hash"] = "not-a-commit"
    resp = case.receive(case.request(json.dumps(payload).encode(), case.event), _ctx(queue))
    assert resp.status == 400, resp.body
    assert "payload" in resp.body["reason"]
    assert queue.count() == 0


@pytest.mark.parametrize(
    ("request_for", "receive", "body"),
    [
        (lambda b: github_request(b), receive_github, {"action": "edited"}),
        (lambda b: gitea_request(b), receive_gitea, {"action": "milestoned"}),
    ],
)
def test_actions_that_do_not_move_or_trust_the_head_are_not_acted_on(
    queue: LocalQueue,
    request_for: Callable[[bytes], HttpRequest],
    receive: Callable[[HttpRequest, ReceiverContext], HttpResponse],
    body: dict[str, str],
) -> None:
    name = (
        "github/pull_request-opened.json"
        if receive is receive_github
        else "gitea/pull_request-reopened-woodpecker.json"
    )
    host, file = name.split("/")
    payload = {**json.loads(fixture_bytes(host, file)), **body}
    resp = receive(request_for(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200
    assert resp.body["ignored"][0]["reason"] == f"pull request action {body['action']!r} is not acted on"


def _gitlab_update(**attributes: object) -> bytes:
    payload = json.loads(fixture_bytes("gitlab", "merge_request-hook-go-gitlab.json"))
    payload["object_attributes"].update({"action": "update", **attributes})
    return json.dumps(payload).encode()


def test_a_gitlab_update_with_oldrev_moved_the_head() -> None:
    event = pr.read_gitlab(_gitlab_update(oldrev="0" * 39 + "1"), JSON, None, NOW)
    assert isinstance(event, PullRequestEvent)
    assert event.action == "updated"


def test_a_gitlab_update_of_labels_is_labeled_or_unlabeled() -> None:
    # The fixture's changes.labels goes from [API] to [Platform]: Platform added.
    event = pr.read_gitlab(_gitlab_update(), JSON, None, NOW)
    assert isinstance(event, PullRequestEvent) and event.action == "labeled"
    payload = json.loads(_gitlab_update())
    payload["changes"]["labels"]["current"] = []
    event = pr.read_gitlab(json.dumps(payload).encode(), JSON, None, NOW)
    assert isinstance(event, PullRequestEvent) and event.action == "unlabeled"
    del payload["changes"]["labels"]
    assert (
        pr.read_gitlab(json.dumps(payload).encode(), JSON, None, NOW)
        == "pull request action 'update' is not acted on"
    )


def test_a_github_fork_is_told_by_the_head_repository() -> None:
    payload = json.loads(fixture_bytes("github", "pull_request-synchronize.json"))
    payload["pull_request"]["head"]["repo"]["id"] = 1
    payload["pull_request"]["head"]["repo"]["clone_url"] = "https://github.com/someone/Hello-World.git"
    event = GITHUB_READ(json.dumps(payload).encode(), JSON, None, NOW)
    assert isinstance(event, PullRequestEvent) and event.fork
    assert event.head_repo_urls[0] == "https://github.com/someone/Hello-World.git"
    payload["pull_request"]["head"]["repo"] = None  # the fork was deleted
    event = GITHUB_READ(json.dumps(payload).encode(), JSON, None, NOW)
    assert isinstance(event, PullRequestEvent) and event.fork and event.head_repo_urls == ()


def test_an_azure_devops_fork_source_makes_a_fork() -> None:
    payload = json.loads(fixture_bytes("azure-devops", "git.pullrequest.created-aspnet-webhooks.json"))
    fork_url = "https://dev.azure.com/other/p/_git/Fabrikam"
    payload["resource"]["forkSource"] = {"name": "refs/heads/mytopic", "repository": {"remoteUrl": fork_url}}
    event = read_azure_devops(json.dumps(payload).encode(), JSON, None, NOW)
    assert isinstance(event, PullRequestEvent)
    assert (event.fork, event.head_repo_urls) == (True, (fork_url,))


def test_a_form_encoded_github_pull_request_is_read(queue: LocalQueue) -> None:
    body = urlencode({"payload": fixture_bytes("github", "pull_request-synchronize.json").decode()}).encode()
    request = github_request(body)
    form = HttpRequest(
        "POST", request.url, {**request.headers, "Content-Type": "application/x-www-form-urlencoded"}, body
    )
    resp = receive_github(form, _ctx(queue))
    assert resp.status == 200, resp.body
    assert resp.body["ignored"][0]["reason"].startswith("pull request #2 updated: ")


def test_forgejo_headers_are_enough(queue: LocalQueue) -> None:
    body = fixture_bytes("gitea", "pull_request-label_updated-forgejo-woodpecker.json")
    headers = {
        "Content-Type": JSON,
        "X-Forgejo-Event": "pull_request",
        "X-Forgejo-Signature": hmac_sha256_hex(SECRET.encode(), body),
    }
    resp = receive_gitea(HttpRequest("POST", "http://x/api/hooks/gitea", headers, body), _ctx(queue))
    assert resp.status == 200, resp.body
    assert resp.body["ignored"][0]["reason"].startswith("pull request #1 labeled: ")

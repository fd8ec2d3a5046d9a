"""``slipway send --pull-request``'s bodies: read by the real receivers as the event asked for, and
shaped like the hosts' published samples (tests/fixtures/<host>/, SOURCES.md there).

The readers are the receivers' own (``shared.intake.receivers``): each body must come back as a
``PullRequestEvent`` with the action, number, head, refs, fork flag and labels the options named.
The shape check walks every field of a made body and requires the same path, with the same JSON
type, in one of the host's published samples; the fields no sample has are listed here, each with
the reason its action needs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.app.commands._send_pull_requests import (
    ACTIONS,
    NotSendable,
    PullRequestSpec,
    event_of_file,
    gitea_event_type,
    pull_request_body,
    pull_request_payload,
)
from shared.intake.receivers import pull_requests as pr
from shared.intake.receivers.azure_devops import read_azure_devops
from shared.intake.receivers.bitbucket import bitbucket_reader
from shared.intake.receivers.github import _decode_body
from shared.model.events import PullRequestEvent
from tests.support.receiving import FIXTURES

NOW = datetime(2026, 12, 1, tzinfo=UTC)
HEAD = "0123456789abcdef0123456789abcdef01234567"
REPOS = {
    "github": "https://github.com/contoso/web",
    "gitlab": "git@gitlab.com:group/sub/app.git",
    "azure-devops": "https://dev.azure.com/fabrikam/Fiber/_git/Web",
    "bitbucket": "git@bitbucket.org:atlassian/widgets.git",
    "gitea": "https://gitea.example.org/alice/app",
}
FORKS = {
    "github": "https://github.com/someone/web",
    "gitlab": "https://gitlab.com/someone/app",
    "azure-devops": "https://dev.azure.com/fabrikam/Fiber/_git/Web-fork",
    "bitbucket": "https://bitbucket.org/someone/widgets",
    "gitea": "https://gitea.example.org/bob/app",
}
# What each host sends for each action, from its docs (see _send_pull_requests' docstring).
EXPECTED: dict[str, dict[str, tuple[str, bool]]] = {
    # action -> (event, merged)
    "github": {a: ("pull_request", a == "merged") for a in ACTIONS},
    "gitlab": {a: ("Merge Request Hook", a == "merged") for a in ACTIONS},
    "azure-devops": {
        "opened": ("", False),
        "updated": ("", False),
        "closed": ("", False),
        "merged": ("", True),
    },
    "bitbucket": {
        "opened": ("pullrequest:created", False),
        "updated": ("pullrequest:updated", False),
        "closed": ("pullrequest:rejected", False),
        "merged": ("pullrequest:fulfilled", True),
    },
    "gitea": {a: ("pull_request", a == "merged") for a in ACTIONS},
}
# How Slipway reads each action (PullRequestEvent.action): merged is a close.
READ_AS = {
    "opened": "opened",
    "updated": "updated",
    "closed": "closed",
    "merged": "closed",
    "labeled": "labeled",
    "reopened": "reopened",
}
Reader = Callable[[bytes, str, str | None, datetime], PullRequestEvent | str]


def _reader(sender: str, event: str | None) -> Reader:
    readers: dict[str, Callable[[], Reader]] = {
        "github": lambda: pr.github_reader(_decode_body),
        "gitlab": lambda: pr.read_gitlab,
        "azure-devops": lambda: read_azure_devops,
        "bitbucket": lambda: bitbucket_reader(event or ""),
        "gitea": lambda: pr.read_gitea,
    }
    return readers[sender]()


def _spec(sender: str, action: str, *, fork: bool = False, **more: Any) -> PullRequestSpec:
    labels = ("safe-to-build",) if action == "labeled" else ()
    return PullRequestSpec(
        action=action,
        repo=REPOS[sender],
        number=more.pop("number", 42),
        head=HEAD,
        head_branch="feature/login",
        base_branch="release/2.0",
        head_repo=FORKS[sender] if fork else None,
        labels=labels,
        **more,
    )


CASES = [(s, a, fork) for s in EXPECTED for a in EXPECTED[s] for fork in (False, True)]


@pytest.mark.parametrize(("sender", "action", "fork"), CASES)
def test_each_made_event_is_read_by_the_receiver_as_asked(sender: str, action: str, fork: bool) -> None:
    body, event = pull_request_body(sender, _spec(sender, action, fork=fork), "delivery-1")
    expected_event, merged = EXPECTED[sender][action]
    assert (event or "") == expected_event

    read = _reader(sender, event)(body, "application/json", "delivery-1", NOW)

    assert isinstance(read, PullRequestEvent), read
    assert (read.provider, read.number, read.action) == (sender, 42, READ_AS[action])
    assert (read.head_ref, read.base_ref) == ("refs/heads/feature/login", "refs/heads/release/2.0")
    assert read.fork is fork
    assert read.merged is merged
    if sender == "bitbucket":  # Bitbucket sends 12 hex digits of the head
        assert (read.head_commit, read.head_commit_abbrev) == (None, HEAD[:12])
    else:
        assert read.head_commit == HEAD
    if action == "labeled":
        assert "safe-to-build" in read.labels
        # Gitea's label_updated carries the new set only (labels_added None); the others say it.
        assert read.labels_added == (None if sender == "gitea" else frozenset({"safe-to-build"}))


@pytest.mark.parametrize("sender", list(EXPECTED))
def test_the_base_repository_is_the_one_named(sender: str) -> None:
    from shared.model.repo_urls import normalize_repo

    body, event = pull_request_body(sender, _spec(sender, "opened", fork=True), "d")
    read = _reader(sender, event)(body, "application/json", "d", NOW)
    assert isinstance(read, PullRequestEvent)
    assert {normalize_repo(u) for u in read.repo_urls} == {normalize_repo(REPOS[sender])}
    assert normalize_repo(FORKS[sender]) in {normalize_repo(u) for u in read.head_repo_urls}


def test_gitea_names_the_hook_type_of_each_action() -> None:
    # X-Gitea-Event-Type: pull_request_sync for synchronized, pull_request_label for label changes.
    types = {}
    for action in ACTIONS:
        payload, event = pull_request_payload("gitea", _spec("gitea", action), "d")
        types[action] = gitea_event_type(event or "", payload)
    assert types == {
        "opened": "pull_request",
        "updated": "pull_request_sync",
        "closed": "pull_request",
        "merged": "pull_request",
        "labeled": "pull_request_label",
        "reopened": "pull_request",
    }


@pytest.mark.parametrize(
    ("sender", "spec", "message"),
    [
        ("azure-devops", _spec("github", "labeled"), "azure-devops sends no label events"),
        ("bitbucket", _spec("github", "labeled"), "bitbucket sends no label events"),
        ("azure-devops", _spec("github", "reopened"), "azure-devops sends no reopen events"),
        ("bitbucket", _spec("github", "reopened"), "bitbucket sends no reopen events"),
        ("acr", _spec("github", "opened"), "acr sends no pull request events"),
        ("github", PullRequestSpec("labeled", REPOS["github"]), "name the label added with --label"),
        ("github", PullRequestSpec("opened", REPOS["github"], head="abc"), "40 hex digits"),
        ("github", PullRequestSpec("opened", "not a url"), "is not a repository URL"),
        ("github", PullRequestSpec("opened", REPOS["github"], number=0), "1 or more"),
    ],
)
def test_what_cannot_be_sent_is_said(sender: str, spec: PullRequestSpec, message: str) -> None:
    with pytest.raises(NotSendable, match=message):
        pull_request_payload(sender, spec, "d")


# --- the shape of the published samples -------------------------------------------------------

SAMPLES = {
    "github": "github/pull_request-*.json",
    "gitlab": "gitlab/merge_request-*.json",
    "azure-devops": "azure-devops/git.pullrequest.*.json",
    "bitbucket": "bitbucket/pullrequest-*.json",
    "gitea": "gitea/pull_request-*.json",
}
# Fields no published sample has, each needed by its action.
EXTRAS = {
    # GitLab docs (Webhook events, Merge request events): "oldrev" only when the code changed;
    # the go-gitlab sample is an "open".
    "gitlab": {"object_attributes.oldrev"},
    # GitPullRequest.forkSource (a fork's request); Microsoft's samples are same-repository ones.
    "azure-devops": {
        "resource.forkSource",
        "resource.forkSource.name",
        "resource.forkSource.repository",
        *(f"resource.forkSource.repository.{k}" for k in ("id", "name", "url", "project", "remoteUrl")),
        *(f"resource.forkSource.repository.project.{k}" for k in ("id", "name", "state")),
    },
}


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}.get(
        type(value), "null"
    )


def _paths(value: Any, prefix: str = "") -> dict[str, set[str]]:
    """Every field path (list items as ``[]``) and the JSON types seen there."""
    seen: dict[str, set[str]] = {}
    if prefix:
        seen.setdefault(prefix, set()).add(_kind(value))
    if isinstance(value, dict):
        for key, item in value.items():
            for path, kinds in _paths(item, f"{prefix}.{key}" if prefix else key).items():
                seen.setdefault(path, set()).update(kinds)
    elif isinstance(value, list):
        for item in value:
            for path, kinds in _paths(item, f"{prefix}[]").items():
                seen.setdefault(path, set()).update(kinds)
    return seen


def _published(sender: str) -> dict[str, set[str]]:
    folder, pattern = SAMPLES[sender].split("/")
    seen: dict[str, set[str]] = {}
    files = sorted((FIXTURES / folder).glob(pattern))
    assert files
    for path in files:
        for key, kinds in _paths(json.loads(path.read_bytes())).items():
            seen.setdefault(key, set()).update(kinds)
    return seen


@pytest.mark.parametrize(("sender", "action", "fork"), CASES)
def test_each_made_body_has_the_shape_of_the_published_samples(sender: str, action: str, fork: bool) -> None:
    published = _published(sender)
    payload, _ = pull_request_payload(sender, _spec(sender, action, fork=fork), "d")
    extras = EXTRAS.get(sender, set())
    for path, kinds in _paths(payload).items():
        if path in extras:
            continue
        assert path in published, f"{sender}: {path} is in no published sample"
        # null fits any type (the samples' null fields hold values elsewhere, and back).
        assert kinds - {"null"} <= published[path] | ({"string"} if "null" in published[path] else set()), (
            f"{sender}: {path} is {kinds}, the samples have {published[path]}"
        )


# --- event headers of payload files ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "name", "expected"),
    [
        ("github", "github/pull_request-synchronize.json", "pull_request"),  # octokit: X-GitHub-Event
        ("github", "github/push-branch-created.json", None),
        ("gitea", "gitea/pull_request-label_updated-woodpecker.json", "pull_request"),
        ("gitea", "gitea/push-docs.json", None),
        ("bitbucket", "bitbucket/pullrequest-fulfilled-woodpecker.json", "pullrequest:fulfilled"),
        ("bitbucket", "bitbucket/pullrequest-rejected-woodpecker.json", "pullrequest:rejected"),
        ("bitbucket", "bitbucket/repo-push-aspnet-functionaltest.json", None),
    ],
)
def test_a_pull_request_file_s_event_is_the_one_its_source_recorded(
    sender: str, name: str, expected: str | None
) -> None:
    payload = json.loads((FIXTURES / name).read_bytes().removeprefix(b"\xef\xbb\xbf"))
    assert event_of_file(sender, payload) == expected


def test_an_open_bitbucket_request_file_needs_its_event() -> None:
    payload = json.loads((FIXTURES / "bitbucket/pullrequest-updated-drone-go-scm.json").read_bytes())
    with pytest.raises(NotSendable, match="--event pullrequest:created or --event pullrequest:updated"):
        event_of_file("bitbucket", payload)


@settings(max_examples=60, deadline=None)
@given(
    sender=st.sampled_from(sorted(EXPECTED)),
    number=st.integers(min_value=1, max_value=10**9),
    branch=st.from_regex(r"[a-z0-9][a-z0-9._/-]{0,30}", fullmatch=True).filter(
        lambda b: not b.endswith((".", "/", ".lock")) and "//" not in b and ".." not in b
    ),
)
def test_any_number_and_branch_round_trip(sender: str, number: int, branch: str) -> None:
    spec = PullRequestSpec("opened", REPOS[sender], number=number, head=HEAD, head_branch=branch)
    body, event = pull_request_body(sender, spec, "d")
    read = _reader(sender, event)(body, "application/json", "d", NOW)
    assert isinstance(read, PullRequestEvent)
    assert (read.number, read.head_ref) == (number, f"refs/heads/{branch}")

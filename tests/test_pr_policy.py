"""A target's ``pull_requests:`` policy: its validation, and the decision for a PR event (#20)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.intake.pr_policy import decide
from shared.model.config import ConfigError, SlipwayConfig
from shared.model.config.loader import load_config
from shared.model.config.targets import Target
from shared.model.events import PULL_REQUEST_ACTIONS, PullRequestEvent
from shared.model.globs import any_match
from tests.support.receiving import NOW

HEAD = "a" * 40
LABEL = "ok-to-build"


def target(**policy: Any) -> Target:
    return Target.model_validate(
        {
            "name": "web",
            "repo": "https://github.com/o/web",
            "image": "o/web",
            "branches": ["main", "release/*"],
            "pull_requests": {"enabled": True, **policy},
        }
    )


def event(**fields: Any) -> PullRequestEvent:
    base: dict[str, Any] = {
        "provider": "github",
        "delivery_id": "d",
        "received_at": NOW,
        "repo_urls": ("https://github.com/o/web.git",),
        "number": 7,
        "action": "opened",
        "head_commit": HEAD,
        "head_ref": "refs/heads/feature",
        "head_repo_urls": ("https://github.com/o/web.git",),
        "base_ref": "refs/heads/main",
        "fork": False,
    }
    return PullRequestEvent(**{**base, **fields})


def fork(**fields: Any) -> PullRequestEvent:
    return event(fork=True, head_repo_urls=("https://github.com/someone/web.git",), **fields)


# --- validation ---------------------------------------------------------------------------


def test_the_policy_is_off_and_forks_are_off_by_default() -> None:
    plain = Target.model_validate({"name": "web", "repo": "https://x.test/o/web", "image": "o/web"})
    policy = plain.pull_requests
    assert (policy.enabled, policy.forks, policy.push, policy.label) == (False, "off", "none", None)
    assert decide(event(), plain).reason == "pull-request builds are off for this target"


@pytest.mark.parametrize(
    ("policy", "where", "message"),
    [
        ({"forks": "label"}, "label", "forks: label needs the label"),
        ({"label": LABEL}, "label", "label is used only with forks: label"),
        ({"push": "scratch"}, "scratch_repository", "push: scratch needs a scratch_repository"),
        ({"scratch_repository": "o/web-pr"}, "scratch_repository", "used only with push: scratch"),
        ({"push": "scratch", "scratch_repository": "o/web"}, "scratch_repository", "must differ from image"),
        ({"platforms": ["linux/s390x"]}, "platforms[0]", "not one of the target's platforms"),
        ({"platforms": ["linux/amd64", "amd64"]}, "platforms[1]", "is not os/arch"),
        ({"forks": "sometimes"}, "forks", "'off', 'label' or 'on'"),
        ({"push": "scratch", "scratch_repository": "O/Bad"}, "scratch_repository", "repository name"),
        ({"forks": "label", "label": "  "}, "label", "label must be a label name"),
    ],
)
def test_config_validate_points_at_the_policy_field(
    tmp_path: Path, policy: dict[str, Any], where: str, message: str
) -> None:
    lines = [f"      {key}: {value!r}".replace("'", '"') for key, value in policy.items()]
    text = "\n".join(
        [
            "registry: slipway.azurecr.io",
            "targets:",
            "  - name: web",
            "    repo: https://github.com/o/web",
            "    image: o/web",
            "    pull_requests:",
            "      enabled: true",
            *lines,
            "",
        ]
    )
    path = tmp_path / "slipway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    rendered = str(raised.value)
    assert f"targets[0].pull_requests.{where}" in rendered
    assert message in rendered


def test_a_valid_policy_loads() -> None:
    loaded = target(
        forks="label", label=LABEL, push="scratch", scratch_repository="o/web-pr", platforms=["linux/arm64"]
    )
    policy = loaded.pull_requests
    assert (policy.label, policy.scratch_repository, policy.platforms) == (LABEL, "o/web-pr", ["linux/arm64"])
    SlipwayConfig.model_validate({"registry": "r.azurecr.io", "targets": [loaded.model_dump()]})


def test_an_unknown_key_in_the_policy_is_an_error() -> None:
    with pytest.raises(ValidationError):
        target(fork="on")


# --- the decision -------------------------------------------------------------------------


def test_a_same_repository_request_builds_on_open_reopen_and_a_new_push() -> None:
    for action in ("opened", "reopened", "updated"):
        decision = decide(event(action=action), target())
        assert decision.build, decision
        assert decision.platforms == ("linux/amd64", "linux/arm64")


def test_closed_and_unlabeled_build_nothing() -> None:
    for action in ("closed", "unlabeled"):
        decision = decide(event(action=action), target(forks="on"))
        assert not decision.build
        assert decision.reason == f"pull request {action}: nothing to build"


def test_a_labeled_same_repository_request_builds_nothing() -> None:
    decision = decide(
        event(action="labeled", labels=frozenset({"x"}), labels_added=frozenset({"x"})), target()
    )
    assert (decision.build, decision.reason) == (False, "pull request labeled: its head did not move")


def test_base_branches_default_to_the_targets_and_can_be_narrowed() -> None:
    assert decide(event(base_ref="refs/heads/release/2.0"), target()).build
    refused = decide(event(base_ref="refs/heads/develop"), target())
    assert refused.reason == "base branch 'develop' does not match the pull request branch filters"
    assert not decide(event(base_ref="refs/heads/release/2.0"), target(branches=["main"])).build
    assert decide(event(base_ref="refs/heads/develop"), target(branches=["dev*"])).build


def test_forks_off_never_builds_a_fork() -> None:
    decision = decide(fork(), target())
    assert (decision.build, decision.reason) == (False, "fork pull request: forks are off for this target")


def test_forks_on_builds_a_fork_like_any_request() -> None:
    assert decide(fork(action="updated"), target(forks="on")).build


def test_forks_label_builds_only_the_event_that_adds_the_label() -> None:
    policy = target(forks="label", label=LABEL)
    labeled = fork(action="labeled", labels=frozenset({LABEL}), labels_added=frozenset({LABEL}))
    decision = decide(labeled, policy)
    assert (decision.build, decision.reason) == (True, "fork pull request trusted by its label")
    opened = decide(fork(labels=frozenset({LABEL})), policy)
    assert opened.reason == f"fork pull request: waiting for a maintainer to add the label {LABEL!r}"
    other = decide(
        fork(action="labeled", labels=frozenset({LABEL, "x"}), labels_added=frozenset({"x"})), policy
    )
    assert other.reason == f"fork pull request: the label added is not {LABEL!r}"


def test_a_new_push_removes_the_trust_of_the_label() -> None:
    # GitHub's synchronize still lists the label: it was added before the push.
    decision = decide(fork(action="updated", labels=frozenset({LABEL})), target(forks="label", label=LABEL))
    assert not decision.build
    assert (
        decision.reason
        == f"fork pull request: a new push removes the trust; remove the label {LABEL!r} and add it again"
    )


def test_a_host_that_does_not_say_which_label_was_added_cannot_trust_a_fork() -> None:
    gitea = fork(provider="gitea", action="labeled", labels=frozenset({LABEL}), labels_added=None)
    decision = decide(gitea, target(forks="label", label=LABEL))
    assert not decision.build
    assert "gitea does not say which label was added" in decision.reason


def test_paths_apply_when_the_changed_files_are_known() -> None:
    policy = target(paths=["src/**"])
    assert decide(event(), policy, changed_files=["src/app.py"]).build
    refused = decide(event(), policy, changed_files=["docs/readme.md"])
    assert refused.reason == "no changed file matches the pull request paths filter"
    unknown = decide(event(), policy)
    assert unknown.build and unknown.notes == (
        "paths filter not applied (the changed files are not known); building",
    )


def test_the_policy_platforms_are_built_and_an_abbreviated_head_is_noted() -> None:
    decision = decide(
        event(head_commit=None, head_commit_abbrev="d3022fc0ca3d"), target(platforms=["linux/arm64"])
    )
    assert decision.platforms == ("linux/arm64",)
    assert decision.notes == ("the host sent an abbreviated head commit (d3022fc0ca3d); resolve it first",)


# --- properties ---------------------------------------------------------------------------

LABELS = st.frozensets(st.sampled_from([LABEL, "bug", "x"]), max_size=3)
EVENTS = st.builds(
    lambda action, is_fork, labels, added, base, provider: event(
        action=action,
        fork=is_fork,
        labels=labels,
        labels_added=added if added is None else added & labels,
        base_ref=f"refs/heads/{base}",
        provider=provider,
    ),
    st.sampled_from(PULL_REQUEST_ACTIONS),
    st.booleans(),
    LABELS,
    st.one_of(st.none(), LABELS),
    st.sampled_from(["main", "release/1", "develop", "feature/x"]),
    st.sampled_from(["github", "gitlab", "gitea", "bitbucket", "azure-devops"]),
)
POLICIES = st.fixed_dictionaries(
    {
        "enabled": st.booleans(),
        "forks": st.sampled_from(["off", "label", "on"]),
        "branches": st.one_of(st.none(), st.lists(st.sampled_from(["main", "release/*", "*"]), max_size=2)),
    }
).map(lambda p: target(**p, **({"label": LABEL} if p["forks"] == "label" else {})))


@given(EVENTS, POLICIES)
def test_a_fork_is_built_only_when_forks_are_on_or_its_label_was_just_added(
    pr: PullRequestEvent, policy: Target
) -> None:
    decision = decide(pr, policy)
    if decision.build and pr.fork:
        rules = policy.pull_requests
        assert rules.forks == "on" or (
            pr.action == "labeled" and pr.labels_added is not None and LABEL in pr.labels_added
        )


@given(EVENTS, POLICIES)
def test_nothing_is_built_with_the_policy_off_on_close_or_off_the_branches(
    pr: PullRequestEvent, policy: Target
) -> None:
    decision = decide(pr, policy)
    rules = policy.pull_requests
    branches = rules.branches if rules.branches is not None else policy.branches
    if not rules.enabled or pr.action in ("closed", "unlabeled") or not any_match(branches, pr.base_branch):
        assert not decision.build
    assert decision.reason  # every decision says why
    if decision.build:
        assert set(decision.platforms) <= set(policy.platforms)


@given(EVENTS)
def test_a_new_push_never_builds_a_fork_under_forks_label(pr: PullRequestEvent) -> None:
    pushed = replace(pr, action="updated", fork=True)
    assert not decide(pushed, target(forks="label", label=LABEL)).build


# --- the removal of a fork's trust label ----------------------------------------------------


def _read(provider: str, name: str, **changes: Any) -> PullRequestEvent:
    """A host's published sample, read by its receiver's reader, with ``changes`` to its JSON."""
    import json

    from shared.intake.receivers.pull_requests import github_reader, read_gitea, read_gitlab
    from tests.support.receiving import fixture_bytes

    payload: Any = json.loads(fixture_bytes(provider, name))
    for path, value in changes.items():
        node = payload
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    body = json.dumps(payload).encode()
    readers = {
        "github": github_reader(lambda raw, _media: json.loads(raw)),
        "gitlab": read_gitlab,
        "gitea": read_gitea,
    }
    read = readers[provider](body, "application/json", "d", NOW)
    assert isinstance(read, PullRequestEvent), read
    return replace(read, fork=True)  # each sample is read as a fork's request


def test_the_trust_label_is_withdrawn_by_each_host_s_removal_and_by_nothing_else() -> None:
    from shared.intake.pr_policy import withdrawn_label

    # GitHub's unlabeled sample removes "bug" (its labels still list it: the label field says).
    unlabeled = _read("github", "pull_request-unlabeled.json")
    assert withdrawn_label(unlabeled, target(forks="label", label="bug")) == "bug"
    assert withdrawn_label(unlabeled, target(forks="label", label="other")) is None
    assert (
        withdrawn_label(_read("github", "pull_request-labeled.json"), target(forks="label", label="bug"))
        is None
    )
    # GitLab's sample, as an update that changes the labels: "API" replaced by "Platform".
    swapped = _read("gitlab", "merge_request-hook-go-gitlab.json", object_attributes__action="update")
    assert swapped.action == "labeled"
    assert withdrawn_label(swapped, target(forks="label", label="API")) == "API"
    assert withdrawn_label(swapped, target(forks="label", label="Platform")) is None
    # Gitea: label_cleared removes every label; label_updated says only the set after it.
    cleared = _read("gitea", "pull_request-label_cleared-woodpecker.json")
    assert withdrawn_label(cleared, target(forks="label", label="bug")) == "bug"
    updated = _read("gitea", "pull_request-label_updated-woodpecker.json")  # bug, help wanted
    assert withdrawn_label(updated, target(forks="label", label="bug")) is None
    assert withdrawn_label(updated, target(forks="label", label=LABEL)) == LABEL
    # Not a fork, forks on or off, or pull-request builds off: a label trusts nothing to take back.
    assert withdrawn_label(replace(unlabeled, fork=False), target(forks="label", label="bug")) is None
    for policy in (target(forks="on"), target(), target(enabled=False)):
        assert withdrawn_label(unlabeled, policy) is None
    # Events other than label changes never withdraw (a new push does not build, but cancels nothing).
    for action in ("opened", "updated", "reopened", "closed"):
        assert withdrawn_label(replace(unlabeled, action=action), target(forks="label", label="bug")) is None

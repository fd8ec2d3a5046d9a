"""The pull (merge) request events ``slipway send --pull-request`` makes, one per Git host.

Each body has the shape of the host's published samples (tests/fixtures/<host>/, SOURCES.md
there: octokit's GitHub examples, GitLab's "Merge Request Hook", Microsoft's Azure DevOps
service-hook samples, Bitbucket Cloud and Gitea recordings): the same fields, nested the same
way, filled from the options (repository, number, head commit and branch, base branch, head
repository, labels). A test compares every field path with the samples'. The few fields no
sample has are the ones its action needs, cited where they are set. The event header each host
sends with it comes back with the body; ``_send_requests`` signs the delivery as the host does.

Actions, as Slipway reads them (``PullRequestEvent.action``), and what each host sends for them
(GitHub ``action``; GitLab ``object_attributes.action``; Azure DevOps ``eventType`` and
``status``; Bitbucket ``X-Event-Key``; Gitea ``action``):

- opened: opened; open; git.pullrequest.created; pullrequest:created; opened
- updated: synchronize; update with ``oldrev``; git.pullrequest.updated; pullrequest:updated;
  synchronized
- closed (not merged): closed; close; git.pullrequest.updated, abandoned; pullrequest:rejected;
  closed
- merged: closed, ``merged: true``; merge; git.pullrequest.merged, completed;
  pullrequest:fulfilled; closed, ``merged: true``
- labeled: labeled; update with ``changes.labels``; none (Azure DevOps and Bitbucket send no
  label events); label_updated
- reopened: reopened; reopen; none (no reopen event in Azure DevOps' or Bitbucket's event lists);
  reopened
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

ACTIONS = ("opened", "updated", "closed", "merged", "labeled", "reopened")
# Hosts that send no label events (Azure DevOps, Bitbucket Cloud: none in their event lists).
NO_LABEL_EVENTS = frozenset({"azure-devops", "bitbucket"})
# Nor a reopen event: Azure DevOps' pull request events are created, updated, merged (and
# comments); Bitbucket Cloud's keys are created, updated, fulfilled, rejected (and reviews).
NO_REOPEN_EVENTS = frozenset({"azure-devops", "bitbucket"})
WHEN = "2026-01-05T10:00:00Z"


class NotSendable(ValueError):
    """The host has no such event, or the options cannot make one."""


@dataclass(frozen=True)
class PullRequestSpec:
    """What ``--pull-request`` and its options ask for."""

    action: str
    repo: str  # the base (target) repository, in any form slipway.yaml accepts
    number: int = 1
    head: str | None = None  # the head commit; default: one derived from the others
    head_branch: str = "feature"
    base_branch: str = "main"
    head_repo: str | None = None  # another repository makes a fork request
    labels: tuple[str, ...] = ()


def made_up_uuid(*parts: object) -> str:
    d = made_up_sha(*parts)
    return f"{d[:8]}-{d[8:12]}-4{d[13:16]}-8{d[17:20]}-{d[20:32]}"


@dataclass(frozen=True)
class Repo:
    """A repository as the payloads name it."""

    host: str  # with its port, if any
    path: tuple[str, ...]
    ssh_host: str

    @property
    def full_name(self) -> str:
        return "/".join(self.path)

    @property
    def owner(self) -> str:
        return self.path[0]

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def web(self) -> str:
        return f"https://{self.host}/{self.full_name}"

    @property
    def clone(self) -> str:
        return f"{self.web}.git"

    @property
    def ssh(self) -> str:
        return f"git@{self.ssh_host}:{self.full_name}.git"

    @property
    def id(self) -> int:
        """A stable numeric id: the same repository, the same id (hosts tell forks by id)."""
        return made_up_id("repository", self.web.lower())

    def uuid(self) -> str:
        """A stable UUID, bare (Azure DevOps writes them so, Bitbucket in braces)."""
        return made_up_uuid("repository", self.web.lower())


def _repo(url: str) -> Repo:
    from shared.model.repo_urls import parse_repo_url

    loc = parse_repo_url(url)
    if loc is None or len(loc.segments) < 2:
        raise NotSendable(f"{url!r} is not a repository URL like https://host/owner/repo")
    return Repo(loc.netloc, loc.segments, loc.host)


def made_up_sha(*parts: object) -> str:
    """A made-up commit id, the same for the same parts."""
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:40]


def made_up_id(*parts: object) -> int:
    """A made-up numeric id (users, labels), the same for the same parts."""
    return int(made_up_sha(*parts)[:8], 16)


@dataclass(frozen=True)
class Pr:
    """The spec, resolved: both repositories, the commits, the labels."""

    spec: PullRequestSpec
    base: Repo
    head_repo: Repo
    head: str
    base_sha: str

    @property
    def fork(self) -> bool:
        return self.head_repo.web.lower() != self.base.web.lower()

    @property
    def added(self) -> str | None:
        """The label a ``labeled`` event adds: the last ``--label``."""
        return self.spec.labels[-1] if self.spec.action == "labeled" and self.spec.labels else None


def _resolve(spec: PullRequestSpec) -> Pr:
    if spec.action not in ACTIONS:
        raise NotSendable(f"--pull-request {spec.action!r}: one of {', '.join(ACTIONS)}")
    if spec.action == "labeled" and not spec.labels:
        raise NotSendable("--pull-request labeled: name the label added with --label")
    if spec.number < 1:
        raise NotSendable("--number: a pull request's number is 1 or more")
    base = _repo(spec.repo)
    head_repo = _repo(spec.head_repo) if spec.head_repo else base
    head = (spec.head or made_up_sha(base.web, spec.number, spec.action)).lower()
    if len(head) != 40 or any(c not in "0123456789abcdef" for c in head):
        raise NotSendable("--head: a full commit id, 40 hex digits")
    return Pr(spec, base, head_repo, head, made_up_sha(base.web, spec.base_branch))


SENDERS = ("github", "gitlab", "azure-devops", "bitbucket", "gitea")


def pull_request_payload(
    sender: str, spec: PullRequestSpec, delivery: str
) -> tuple[dict[str, Any], str | None]:
    """The body ``sender`` sends for ``spec`` and its event header's value (None: in the body).

    ``delivery`` is the delivery id; Azure DevOps, which sends none in a header, carries it as
    the event's ``id``.
    """
    if sender not in SENDERS:
        raise NotSendable(f"--pull-request: {sender} sends no pull request events")
    if spec.action == "labeled" and sender in NO_LABEL_EVENTS:
        raise NotSendable(f"--pull-request labeled: {sender} sends no label events")
    if spec.action == "reopened" and sender in NO_REOPEN_EVENTS:
        raise NotSendable(f"--pull-request reopened: {sender} sends no reopen events")
    from shared.app.commands import _send_pull_request_bodies as bodies

    pr = _resolve(spec)
    if sender == "azure-devops":
        return bodies.azure_devops(pr, delivery)
    build = {
        "github": bodies.github,
        "gitlab": bodies.gitlab,
        "bitbucket": bodies.bitbucket,
        "gitea": bodies.gitea,
    }
    return build[sender](pr)


def pull_request_body(sender: str, spec: PullRequestSpec, delivery: str) -> tuple[bytes, str | None]:
    """``pull_request_payload`` as the bytes sent (compact JSON, as the hosts send it)."""
    body, event = pull_request_payload(sender, spec, delivery)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), event


def event_of_file(sender: str, payload: Any) -> str | None:
    """The event header a host sends with a pull request ``payload`` read from a file, or None.

    GitHub and Gitea name the event ``pull_request``; a GitHub review or review comment also
    carries ``pull_request`` and is told apart by its ``review``, ``comment`` or ``thread``.
    Bitbucket's key says the action: a merged or declined request's ``state`` says which, an
    open one does not (created and updated bodies are alike), hence a ``NotSendable``.
    """
    if not isinstance(payload, dict):
        return None
    if sender in ("github", "gitea"):
        pull = isinstance(payload.get("pull_request"), dict) and isinstance(payload.get("action"), str)
        # Gitea's pull_request bodies carry "review": null; a review event's is an object.
        other = any(payload.get(key) is not None for key in ("review", "comment", "thread"))
        return "pull_request" if pull and not other else None
    if sender == "bitbucket" and isinstance(payload.get("pullrequest"), dict):
        state = payload["pullrequest"].get("state")
        if state == "MERGED":
            return "pullrequest:fulfilled"
        if state == "DECLINED":
            return "pullrequest:rejected"
        raise NotSendable(
            "an open Bitbucket pull request's body does not say whether it was created or updated: "
            "pass --event pullrequest:created or --event pullrequest:updated"
        )
    return None


def gitea_event_type(event: str, payload: Any) -> str:
    """``X-Gitea-Event-Type``: the hook's own type, of which ``X-Gitea-Event`` is the family.

    ``HookEventType.Event()`` (modules/webhook/type.go) sends ``pull_request`` for the types
    ``pull_request``, ``pull_request_sync`` and ``pull_request_label`` alike; the notifier
    (services/webhook/notifier.go) uses ``pull_request_sync`` with action ``synchronized`` and
    ``pull_request_label`` with ``label_updated``/``label_cleared``.
    """
    if event != "pull_request" or not isinstance(payload, dict):
        return event
    action = payload.get("action")
    if action == "synchronized":
        return "pull_request_sync"
    if action in ("label_updated", "label_cleared"):
        return "pull_request_label"
    return event

"""Pull and merge request events of every Git host, read into ``PullRequestEvent`` (issue #20).

Each host's spec hands its PR events here from its triage (after the same authentication as a
push): the body is parsed and normalised, then answered by ``shared.intake.receivers.pr_answers``
(the builds the targets' policies allow are queued; a close is recorded).

What each host sends, and how it is read:

- GitHub ``pull_request``: ``opened``, ``reopened``, ``synchronize`` (head moved: ``updated``),
  ``closed`` (``merged`` in the body), ``labeled``/``unlabeled`` (the ``label`` changed);
  octokit/webhooks payload-examples.
- GitLab ``Merge Request Hook``: ``object_attributes.action`` ``open``, ``reopen``, ``close``,
  ``merge``, ``update``; an update with ``oldrev`` moved the head, one with ``changes.labels``
  changed labels (``previous``/``current``), any other update (title...) is not acted on.
- Azure DevOps ``git.pullrequest.created|updated|merged`` (read in ``azure_devops``): the
  status tells a closed request (``completed`` merged, ``abandoned``); an ``updated`` of an
  active request does not say what changed and is read as ``updated`` (the cautious reading: a
  new push). No label events.
- Bitbucket Cloud ``pullrequest:created|updated|fulfilled|rejected`` (read in ``bitbucket``;
  the action is the event key); no labels; the head commit is abbreviated (12 hex digits).
- Gitea/Forgejo ``pull_request``: ``opened``, ``reopened``, ``synchronized``, ``closed``,
  ``label_updated`` (the new set only: ``labels_added`` is None), ``label_cleared``.

A head whose repository cannot be told apart from the base's is read as a fork (the safe side).
Each reader keeps the request's ``updated_at`` (GitHub and Gitea ``pull_request.updated_at``,
GitLab ``object_attributes.updated_at``), the host's time of its last change: it orders a trust
label added against one removed (``shared.runs.pull_request_state``). GitHub's samples show a label
change moving it (octokit payload-examples ``labeled`` 15:20:35, ``unlabeled`` 15:20:36, in
tests/fixtures/github/); GitLab lists it among ``changes`` with the labels (go-gitlab's sample).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, ValidationError

from shared.intake.receivers.checks import PayloadModel, describe_error, parse_json, shown, unique_urls
from shared.intake.receivers.pipeline import Deferred, Delivery, ReceiverContext, ignored_response
from shared.intake.receivers.pr_answers import Resolve, answer_pull_request
from shared.model.build_request import CommitId
from shared.model.events import PullRequestAction, PullRequestEvent
from shared.model.repo_urls import normalize_repo
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected
from shared.platform.logs import log_event

logger = logging.getLogger("slipway.webhooks.pull_requests")
WHAT = "pull request payload"
# (body, media type, delivery id, received at) -> the event, or why the event is not acted on.
Read = Callable[[bytes, str, str | None, datetime], PullRequestEvent | str]


@dataclass(frozen=True)
class PullRequests:
    """A host triage's handler for its PR event: read it, then answer (``pr_answers``).

    ``resolve`` gives the full head commit of an event that carries an abbreviation (Bitbucket).
    """

    provider: str
    read: Read
    resolve: Resolve | None = None

    def __call__(self, req: HttpRequest, media_type: str, delivery: Delivery) -> Deferred:
        def answer(ctx: ReceiverContext) -> HttpResponse:
            outcome = self.read(req.body, media_type, delivery.delivery_id, ctx.clock())
            if isinstance(outcome, str):
                return ignored_response(delivery.correlation_id, outcome)
            log_event(
                logger,
                "pull_request_received",
                provider=self.provider,
                correlation_id=delivery.correlation_id,
                number=outcome.number,
                action=outcome.action,
                fork=outcome.fork,
            )
            return answer_pull_request(outcome, ctx, delivery, resolve=self.resolve)

        return answer


def payload_time(value: str | None) -> datetime | None:
    """A payload's timestamp: ISO 8601 (GitHub, Gitea, GitLab now), or GitLab's older
    ``2013-12-03 17:23:34 UTC``; a time without an offset is UTC. None when absent or unreadable
    (the state document's order is then used)."""
    if not value:
        return None
    text = value.strip()
    if text.endswith(" UTC"):
        text = text.removesuffix(" UTC")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def not_acted_on(action: str) -> str:
    return f"pull request action {shown(action)} is not acted on"


def branch_ref(name: str) -> str:
    """A branch as a full ref (``refs/heads/<name>``), as Azure DevOps already sends it."""
    return name if name.startswith("refs/") else f"refs/heads/{name}"


def is_fork(head_id: object, base_id: object, head_urls: tuple[str, ...], base_urls: tuple[str, ...]) -> bool:
    """The head lives in another repository; when nothing tells, it is taken to (the safe side)."""
    if head_id is not None and base_id is not None:
        return bool(head_id != base_id)
    if head_urls and base_urls:
        return normalize_repo(head_urls[0]) != normalize_repo(base_urls[0])
    return True


class _Label(PayloadModel):
    name: str = ""


# --- GitHub ---------------------------------------------------------------------------------


class _GitHubRepo(PayloadModel):
    id: int | None = None
    clone_url: str | None = None
    html_url: str | None = None
    ssh_url: str | None = None


class _GitHubSide(PayloadModel):
    ref: str = Field(min_length=1)
    sha: CommitId
    # null when the fork the head came from was deleted
    repo: _GitHubRepo | None = None


class _GitHubPr(PayloadModel):
    number: int
    head: _GitHubSide
    base: _GitHubSide
    labels: list[_Label] = Field(default_factory=list)
    merged: bool | None = None
    updated_at: str | None = None


class GitHubPullRequestPayload(PayloadModel):
    action: str
    pull_request: _GitHubPr
    label: _Label | None = None
    repository: _GitHubRepo


_GITHUB_ACTIONS: dict[str, PullRequestAction] = {
    "opened": "opened",
    "reopened": "reopened",
    "synchronize": "updated",
    "closed": "closed",
    "labeled": "labeled",
    "unlabeled": "unlabeled",
}


def _github_urls(repo: _GitHubRepo | None) -> tuple[str, ...]:
    return unique_urls(repo.clone_url, repo.html_url, repo.ssh_url) if repo else ()


def github_reader(decode: Callable[[bytes, str], dict[str, Any]]) -> Read:
    """GitHub's reader; ``decode`` reads its JSON or form-encoded body into a JSON object."""

    def read(
        body: bytes, media_type: str, delivery_id: str | None, received_at: datetime
    ) -> PullRequestEvent | str:
        try:
            payload = GitHubPullRequestPayload.model_validate(decode(body, media_type))
        except ValidationError as exc:
            raise RequestRejected(400, "bad_request", describe_error(exc, what=WHAT)) from None
        action = _GITHUB_ACTIONS.get(payload.action)
        if action is None:
            return not_acted_on(payload.action)
        pr = payload.pull_request
        base_urls = _github_urls(pr.base.repo) or _github_urls(payload.repository)
        head_urls = _github_urls(pr.head.repo)
        head_id = pr.head.repo.id if pr.head.repo else None
        base_id = pr.base.repo.id if pr.base.repo else payload.repository.id
        added = frozenset({payload.label.name}) if action == "labeled" and payload.label else frozenset()
        removed = frozenset({payload.label.name}) if action == "unlabeled" and payload.label else frozenset()
        return PullRequestEvent(
            provider="github",
            delivery_id=delivery_id,
            received_at=received_at,
            repo_urls=base_urls,
            number=pr.number,
            action=action,
            head_commit=pr.head.sha,
            head_ref=branch_ref(pr.head.ref),
            head_repo_urls=head_urls,
            base_ref=branch_ref(pr.base.ref),
            fork=pr.head.repo is None or is_fork(head_id, base_id, head_urls, base_urls),
            labels=frozenset(label.name for label in pr.labels),
            labels_added=added,
            labels_removed=removed,
            merged=bool(pr.merged),
            sender_action=payload.action,
            updated_at=payload_time(pr.updated_at),
        )

    return read


# --- Gitea / Forgejo ------------------------------------------------------------------------


class _GiteaSide(PayloadModel):
    ref: str = Field(min_length=1)
    sha: CommitId
    repo_id: int | None = None
    repo: _GitHubRepo | None = None


class _GiteaPr(PayloadModel):
    number: int | None = None
    head: _GiteaSide
    base: _GiteaSide
    labels: list[_Label] | None = None
    merged: bool | None = None
    updated_at: str | None = None


class GiteaPullRequestPayload(PayloadModel):
    action: str
    number: int | None = None
    pull_request: _GiteaPr
    repository: _GitHubRepo


_GITEA_ACTIONS: dict[str, PullRequestAction] = {
    "opened": "opened",
    "reopened": "reopened",
    "synchronized": "updated",
    "closed": "closed",
    "label_updated": "labeled",
    "label_cleared": "unlabeled",
}


def read_gitea(
    body: bytes, media_type: str, delivery_id: str | None, received_at: datetime
) -> PullRequestEvent | str:
    payload = parse_json(GiteaPullRequestPayload, body, what=WHAT)
    action = _GITEA_ACTIONS.get(payload.action)
    if action is None:
        return not_acted_on(payload.action)
    pr = payload.pull_request
    number = pr.number if pr.number is not None else payload.number
    if number is None:
        raise RequestRejected(400, "bad_request", f"{WHAT}: number: Field required")
    base_urls = _github_urls(pr.base.repo) or _github_urls(payload.repository)
    head_urls = _github_urls(pr.head.repo)
    head_id = pr.head.repo_id if pr.head.repo_id is not None else (pr.head.repo.id if pr.head.repo else None)
    base_id = pr.base.repo_id if pr.base.repo_id is not None else (pr.base.repo.id if pr.base.repo else None)
    fork = is_fork(head_id, base_id, head_urls, base_urls)
    if not fork and not head_urls:  # the same repository id, its URLs left out
        head_urls = base_urls
    return PullRequestEvent(
        provider="gitea",
        delivery_id=delivery_id,
        received_at=received_at,
        repo_urls=base_urls,
        number=number,
        action=action,
        head_commit=pr.head.sha,
        head_ref=branch_ref(pr.head.ref),
        head_repo_urls=head_urls,
        base_ref=branch_ref(pr.base.ref),
        fork=fork,
        labels=frozenset(label.name for label in pr.labels or ()),
        # label_updated carries the new set, not what changed.
        labels_added=None if action == "labeled" else frozenset(),
        # Neither says what was removed: label_cleared removes every label.
        labels_removed=None if action in ("labeled", "unlabeled") else frozenset(),
        merged=bool(pr.merged),
        sender_action=payload.action,
        updated_at=payload_time(pr.updated_at),
    )


# --- GitLab ---------------------------------------------------------------------------------


class _GitLabProject(PayloadModel):
    id: int | None = None
    git_http_url: str | None = None
    web_url: str | None = None
    git_ssh_url: str | None = None


class _GitLabCommit(PayloadModel):
    id: CommitId


class _GitLabLabel(PayloadModel):
    title: str = ""


class _GitLabLabelChange(PayloadModel):
    previous: list[_GitLabLabel] = Field(default_factory=list)
    current: list[_GitLabLabel] = Field(default_factory=list)


class _GitLabChanges(PayloadModel):
    labels: _GitLabLabelChange | None = None


class _GitLabAttributes(PayloadModel):
    iid: int
    action: str = ""
    source_branch: str = Field(min_length=1)
    target_branch: str = Field(min_length=1)
    source_project_id: int | None = None
    target_project_id: int | None = None
    last_commit: _GitLabCommit
    source: _GitLabProject | None = None
    target: _GitLabProject | None = None
    oldrev: str | None = None
    updated_at: str | None = None


class GitLabMergeRequestPayload(PayloadModel):
    project: _GitLabProject
    object_attributes: _GitLabAttributes
    labels: list[_GitLabLabel] = Field(default_factory=list)
    changes: _GitLabChanges | None = None


_GITLAB_ACTIONS: dict[str, PullRequestAction] = {
    "open": "opened",
    "reopen": "reopened",
    "close": "closed",
    "merge": "closed",
}


def _gitlab_urls(project: _GitLabProject | None) -> tuple[str, ...]:
    return unique_urls(project.git_http_url, project.web_url, project.git_ssh_url) if project else ()


def read_gitlab(
    body: bytes, media_type: str, delivery_id: str | None, received_at: datetime
) -> PullRequestEvent | str:
    payload = parse_json(GitLabMergeRequestPayload, body, what="merge request payload")
    attrs = payload.object_attributes
    label_change = payload.changes.labels if payload.changes else None
    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()
    if label_change is not None:
        previous = frozenset(x.title for x in label_change.previous)
        current = frozenset(x.title for x in label_change.current)
        added, removed = current - previous, previous - current
    action = _GITLAB_ACTIONS.get(attrs.action)
    if attrs.action == "update":
        if attrs.oldrev:  # the source branch moved
            action = "updated"
        elif label_change is not None:
            action = "labeled" if added else "unlabeled"
    if action is None:
        return not_acted_on(attrs.action)
    # The hook's project is the target (base) project.
    base_urls = _gitlab_urls(payload.project) or _gitlab_urls(attrs.target)
    head_urls = _gitlab_urls(attrs.source)
    return PullRequestEvent(
        provider="gitlab",
        delivery_id=delivery_id,
        received_at=received_at,
        repo_urls=base_urls,
        number=attrs.iid,
        action=action,
        head_commit=attrs.last_commit.id,
        head_ref=branch_ref(attrs.source_branch),
        head_repo_urls=head_urls,
        base_ref=branch_ref(attrs.target_branch),
        fork=is_fork(attrs.source_project_id, attrs.target_project_id, head_urls, _gitlab_urls(attrs.target)),
        labels=frozenset(label.title for label in payload.labels),
        labels_added=added,
        labels_removed=removed if action in ("labeled", "unlabeled") else frozenset(),
        merged=attrs.action == "merge",
        sender_action=attrs.action,
        updated_at=payload_time(attrs.updated_at),
    )

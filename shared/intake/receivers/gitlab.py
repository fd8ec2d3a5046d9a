"""GitLab: ``X-Gitlab-Token`` shared secret, ``Push Hook`` / ``Tag Push Hook`` and push system hooks.

GitLab signs nothing: it sends the configured secret token as is, so the token is compared in
constant time before the body is read. Project webhooks send ``Push Hook`` and ``Tag Push
Hook``; instance system hooks send ``System Hook`` with the event in the body's ``event_name``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from pydantic import Field

from shared.intake.receivers.answers import Pushes
from shared.intake.receivers.checks import (
    ListedCommit,
    PayloadModel,
    is_zero_commit,
    json_body,
    parse_json,
    payload_clone_url,
    required_setting,
    shown,
    unique_urls,
)
from shared.intake.receivers.pipeline import (
    Deferred,
    Delivery,
    EventHeader,
    ReceiverContext,
    Sender,
    first_delivery_id,
    ignored_response,
)
from shared.intake.receivers.pull_requests import PullRequests, read_gitlab
from shared.intake.receivers.signatures import tokens_equal
from shared.intake.routing import Ignored
from shared.model.build_request import CommitId
from shared.model.events import ZERO_COMMIT, PushEvent
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected

PROVIDER = "gitlab"
TOKEN_SETTING = "GITLAB_WEBHOOK_TOKEN"
TOKEN_HEADER = "X-Gitlab-Token"
EVENT_HEADER = "X-Gitlab-Event"
PUSH_EVENTS = frozenset({"Push Hook", "Tag Push Hook"})
SYSTEM_HOOK = "System Hook"
MERGE_REQUEST_HOOK = "Merge Request Hook"
SYSTEM_PUSH_EVENTS = frozenset({"push", "tag_push"})
logger = logging.getLogger("slipway.webhooks.gitlab")


class GitLabProject(PayloadModel):
    web_url: str | None = None
    git_http_url: str | None = None
    git_ssh_url: str | None = None
    http_url: str | None = None
    ssh_url: str | None = None
    url: str | None = None
    homepage: str | None = None
    default_branch: str | None = None


class GitLabRepository(PayloadModel):
    url: str | None = None
    homepage: str | None = None
    git_http_url: str | None = None
    git_ssh_url: str | None = None


class GitLabPush(PayloadModel):
    """The fields of a push or tag push (webhook or system hook) that Slipway reads."""

    ref: str = Field(min_length=1)
    before: str | None = None
    after: CommitId
    checkout_sha: CommitId | None = None
    project: GitLabProject
    repository: GitLabRepository | None = None
    commits: list[ListedCommit] = Field(default_factory=list)
    total_commits_count: int | None = None


class _SystemHookKind(PayloadModel):
    event_name: str | None = None


def _incomplete_reason(push: GitLabPush, created: bool) -> str | None:
    """Why the commits GitLab lists do not tell every changed file, if they do not."""
    if created:
        return "new ref: GitLab's commit list does not describe a new branch or tag"
    total = push.total_commits_count
    if total is not None and total > len(push.commits):
        # GitLab lists at most 20 commits per push; total_commits_count is the real number.
        return f"GitLab listed {len(push.commits)} of {total} commits"
    if not all(commit.lists_files for commit in push.commits):
        return "GitLab did not list the changed files; system hooks never do"
    return None


def repository_urls(push: GitLabPush) -> tuple[str, ...]:
    project, repo = push.project, push.repository or GitLabRepository()
    return unique_urls(
        project.git_http_url,
        project.http_url,
        project.web_url,
        project.homepage,
        project.git_ssh_url,
        project.ssh_url,
        project.url,
        repo.git_http_url,
        repo.homepage,
        repo.git_ssh_url,
        repo.url,
    )


def to_push_events(
    push: GitLabPush, delivery_id: str | None, received_at: datetime
) -> tuple[Sequence[PushEvent], Sequence[Ignored]]:
    """Normalise; the commit built is ``checkout_sha`` (for an annotated tag ``after`` is the tag)."""
    project, repo = push.project, push.repository or GitLabRepository()
    # GitLab sends checkout_sha null when the ref no longer exists; absent means an older sender.
    gone = "checkout_sha" in push.model_fields_set and push.checkout_sha is None
    deleted = is_zero_commit(push.after) or gone
    created = not deleted and is_zero_commit(push.before)
    commit = ZERO_COMMIT if deleted else (push.checkout_sha or push.after)
    files: set[str] = set()
    for item in push.commits:
        files.update(item.added or (), item.modified or (), item.removed or ())
    incomplete = None if deleted else _incomplete_reason(push, created)
    head = next((c for c in push.commits if c.id == commit), None)
    event = PushEvent(
        provider=PROVIDER,
        delivery_id=delivery_id,
        received_at=received_at,
        repo_urls=repository_urls(push),
        clone_url=payload_clone_url(
            project.git_http_url, project.http_url, repo.git_http_url, project.web_url
        ),
        ref=push.ref,
        after=commit,
        before=push.before,
        created=created,
        deleted=deleted,
        default_branch=project.default_branch,
        head_message=head.message if head else None,
        changed_files=None if incomplete else frozenset(files),
        incomplete_reason=incomplete,
    )
    return [event], []


def authenticate(req: HttpRequest, ctx: ReceiverContext) -> None:
    token = required_setting(ctx, TOKEN_SETTING)
    presented = req.header(TOKEN_HEADER)
    if not presented:
        raise RequestRejected(401, "unauthorized", f"{TOKEN_HEADER} is missing")
    if not tokens_equal(token, presented):
        raise RequestRejected(401, "unauthorized", f"{TOKEN_HEADER} does not match")


_PROJECT_HOOKS = EventHeader(
    (EVENT_HEADER,), PUSH_EVENTS, others=((MERGE_REQUEST_HOOK, PullRequests(PROVIDER, read_gitlab)),)
)


def triage(req: HttpRequest, media_type: str, delivery: Delivery) -> HttpResponse | Deferred | None:
    """Project hooks by their event header; a system hook by the ``event_name`` in its body."""
    if (req.header(EVENT_HEADER) or "").strip() == SYSTEM_HOOK:
        kind = parse_json(_SystemHookKind, req.body).event_name or ""
        if kind not in SYSTEM_PUSH_EVENTS:
            return ignored_response(delivery.correlation_id, f"system hook {shown(kind)} is not handled")
        return None
    return _PROJECT_HOOKS(req, media_type, delivery)


SENDER = Sender(
    provider=PROVIDER,
    logger=logger,
    delivery_id=first_delivery_id("X-Gitlab-Event-UUID", "Idempotency-Key"),
    authenticate=authenticate,
    triage=triage,
    parse=json_body(GitLabPush, what="push payload"),
    answer=Pushes(normalise=to_push_events),
)


def receive_gitlab(req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
    """``POST /api/hooks/gitlab``: never raises; every outcome is a JSON response."""
    return SENDER.receive(req, ctx)

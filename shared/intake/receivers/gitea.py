"""Gitea (and Forgejo, Gogs): GitHub-like push payloads signed with a hex HMAC-SHA256.

Gitea sends the same signature in several headers: ``X-Gitea-Signature`` (hex, no prefix),
``X-Gogs-Signature``, Forgejo's ``X-Forgejo-Signature`` and ``X-Hub-Signature-256``
(``sha256=<hex>``); any of them that matches authenticates the delivery. The deprecated
``secret`` field some versions put in the body is never trusted.

Only ``application/json`` deliveries are accepted: with the form content type Gitea signs the
JSON, not the form body it sends, so the signature cannot be checked before parsing.
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
    payload_clone_url,
    required_setting,
    unique_urls,
)
from shared.intake.receivers.pipeline import EventHeader, ReceiverContext, Sender, first_delivery_id
from shared.intake.receivers.pull_requests import PullRequests, read_gitea
from shared.intake.receivers.signatures import verify_hmac_sha256
from shared.intake.routing import Ignored
from shared.model.build_request import CommitId
from shared.model.events import PushEvent
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected

PROVIDER = "gitea"
SECRET_SETTING = "GITEA_WEBHOOK_SECRET"
# (header, prefix) in the order they are tried.
SIGNATURE_HEADERS = (
    ("X-Gitea-Signature", ""),
    ("X-Forgejo-Signature", ""),
    ("X-Gogs-Signature", ""),
    ("X-Hub-Signature-256", "sha256="),
)
EVENT_HEADERS = ("X-Gitea-Event", "X-Forgejo-Event", "X-Gogs-Event", "X-GitHub-Event")
DELIVERY_HEADERS = ("X-Gitea-Delivery", "X-Forgejo-Delivery")
logger = logging.getLogger("slipway.webhooks.gitea")


class GiteaRepository(PayloadModel):
    clone_url: str | None = None
    html_url: str | None = None
    ssh_url: str | None = None
    default_branch: str | None = None


class GiteaPush(PayloadModel):
    ref: str = Field(min_length=1)
    before: str | None = None
    after: CommitId
    commits: list[ListedCommit] = Field(default_factory=list)
    total_commits: int | None = None
    head_commit: ListedCommit | None = None
    repository: GiteaRepository


def _incomplete_reason(push: GiteaPush, created: bool) -> str | None:
    """Why the listed commits do not tell every changed file, if they do not."""
    if created:
        return "new ref: Gitea's commit list does not describe a new branch or tag"
    if push.total_commits is not None and push.total_commits > len(push.commits):
        return f"Gitea listed {len(push.commits)} of {push.total_commits} commits"
    if not all(commit.lists_files for commit in push.commits):
        return "Gitea did not list the changed files of every commit"
    return None


def repository_urls(push: GiteaPush) -> tuple[str, ...]:
    repo = push.repository
    return unique_urls(repo.clone_url, repo.html_url, repo.ssh_url)


def to_push_events(
    push: GiteaPush, delivery_id: str | None, received_at: datetime
) -> tuple[Sequence[PushEvent], Sequence[Ignored]]:
    repo = push.repository
    deleted = is_zero_commit(push.after)
    created = not deleted and is_zero_commit(push.before)
    files: set[str] = set()
    for commit in push.commits:
        files.update(commit.added or (), commit.modified or (), commit.removed or ())
    incomplete = None if deleted else _incomplete_reason(push, created)
    head = push.head_commit or next((c for c in push.commits if c.id == push.after), None)
    event = PushEvent(
        provider=PROVIDER,
        delivery_id=delivery_id,
        received_at=received_at,
        repo_urls=repository_urls(push),
        clone_url=payload_clone_url(repo.clone_url, repo.html_url),
        ref=push.ref,
        after=push.after,
        before=push.before,
        created=created,
        deleted=deleted,
        default_branch=repo.default_branch,
        head_message=head.message if head else None,
        changed_files=None if incomplete else frozenset(files),
        incomplete_reason=incomplete,
    )
    return [event], []


def signature_matches(secret: bytes, req: HttpRequest) -> bool | None:
    """True if any signature header matches the body, False if none does, None if none was sent.

    Every present header is checked, so the time taken does not say which one matched.
    """
    present = [(req.header(name), prefix) for name, prefix in SIGNATURE_HEADERS]
    sent = [(value, prefix) for value, prefix in present if value and value.strip()]
    if not sent:
        return None
    results = [verify_hmac_sha256(secret, req.body, value, prefix=prefix) for value, prefix in sent]
    return any(results)


def authenticate(req: HttpRequest, ctx: ReceiverContext) -> None:
    secret = required_setting(ctx, SECRET_SETTING)
    matched = signature_matches(secret.encode(), req)
    if matched is None:
        names = ", ".join(name for name, _ in SIGNATURE_HEADERS)
        raise RequestRejected(401, "unauthorized", f"no signature header ({names})")
    if not matched:
        raise RequestRejected(401, "unauthorized", "the signature does not match the body")


SENDER = Sender(
    provider=PROVIDER,
    logger=logger,
    delivery_id=first_delivery_id(*DELIVERY_HEADERS),
    authenticate=authenticate,
    # Gitea sends "pull_request" for label and synchronize changes too (HookEventType.Event()).
    triage=EventHeader(
        EVENT_HEADERS,
        frozenset({"push"}),
        ping="ping",
        others=(("pull_request", PullRequests(PROVIDER, read_gitea)),),
    ),
    parse=json_body(GiteaPush, what="push payload"),
    answer=Pushes(normalise=to_push_events),
)


def receive_gitea(req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
    """``POST /api/hooks/gitea``: never raises; every outcome is a JSON response."""
    return SENDER.receive(req, ctx)

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
from datetime import datetime

from pydantic import Field, field_validator

from shared.intake.receivers.base import ReceiverContext, safe_delivery_id
from shared.intake.receivers.common import (
    Delivery,
    PayloadModel,
    check_json_request,
    conflict_response,
    event_not_handled,
    https_clone_url,
    is_zero_commit,
    parse_json,
    pong_response,
    repository_conflict,
    require_json_object,
    required_setting,
    route_events,
    run_receiver,
    unique_urls,
)
from shared.intake.receivers.signatures import verify_hmac_sha256
from shared.model.build_request import COMMIT_RE
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


class GiteaCommit(PayloadModel):
    id: str = ""
    message: str = ""
    # None (absent), unlike [], means Gitea did not say: old versions send no file lists.
    added: list[str] | None = None
    modified: list[str] | None = None
    removed: list[str] | None = None

    @property
    def lists_files(self) -> bool:
        return self.added is not None or self.modified is not None or self.removed is not None


class GiteaRepository(PayloadModel):
    clone_url: str | None = None
    html_url: str | None = None
    ssh_url: str | None = None
    default_branch: str | None = None


class GiteaPush(PayloadModel):
    ref: str = Field(min_length=1)
    before: str | None = None
    after: str
    commits: list[GiteaCommit] = Field(default_factory=list)
    total_commits: int | None = None
    head_commit: GiteaCommit | None = None
    repository: GiteaRepository

    @field_validator("after")
    @classmethod
    def _after(cls, value: str) -> str:
        if not COMMIT_RE.match(value):
            raise ValueError("after is not a commit id")
        return value


def _incomplete_reason(push: GiteaPush, created: bool) -> str | None:
    """Why the listed commits do not tell every changed file, if they do not."""
    if created:
        return "new ref: Gitea's commit list does not describe a new branch or tag"
    if push.total_commits is not None and push.total_commits > len(push.commits):
        return f"Gitea listed {len(push.commits)} of {push.total_commits} commits"
    if not all(commit.lists_files for commit in push.commits):
        return "Gitea did not list the changed files of every commit"
    return None


def to_push_event(push: GiteaPush, *, delivery_id: str | None, received_at: datetime) -> PushEvent:
    repo = push.repository
    deleted = is_zero_commit(push.after)
    created = not deleted and is_zero_commit(push.before)
    files: set[str] = set()
    for commit in push.commits:
        files.update(commit.added or (), commit.modified or (), commit.removed or ())
    incomplete = None if deleted else _incomplete_reason(push, created)
    head = push.head_commit or next((c for c in push.commits if c.id == push.after), None)
    return PushEvent(
        provider=PROVIDER,
        delivery_id=delivery_id,
        received_at=received_at,
        repo_urls=unique_urls(repo.clone_url, repo.html_url, repo.ssh_url),
        clone_url=https_clone_url(repo.clone_url, repo.html_url),
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


def _first_header(req: HttpRequest, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` present with a non-blank value."""
    for name in names:
        value = (req.header(name) or "").strip()
        if value:
            return value
    return None


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


def receive_gitea(req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
    """``POST /api/hooks/gitea``: never raises; every outcome is a JSON response."""
    delivery_id = next(
        (d for d in (safe_delivery_id(req.header(n)) for n in DELIVERY_HEADERS) if d is not None), None
    )
    return run_receiver(_receive, req, ctx, provider=PROVIDER, delivery_id=delivery_id, logger=logger)


def _receive(req: HttpRequest, ctx: ReceiverContext, delivery: Delivery) -> HttpResponse:
    check_json_request(req, ctx)
    secret = required_setting(ctx, SECRET_SETTING)
    matched = signature_matches(secret.encode(), req)
    if matched is None:
        names = ", ".join(name for name, _ in SIGNATURE_HEADERS)
        raise RequestRejected(401, "unauthorized", f"no signature header ({names})")
    if not matched:
        raise RequestRejected(401, "unauthorized", "the signature does not match the body")

    event = _first_header(req, EVENT_HEADERS)
    if event is None:
        raise RequestRejected(400, "bad_request", f"no event header ({', '.join(EVENT_HEADERS)})")
    if event != "push":
        require_json_object(req.body)  # well-formed, even when it is not acted on
        if event == "ping":
            return pong_response(delivery.correlation_id)
        return event_not_handled(delivery.correlation_id, event)

    push = parse_json(GiteaPush, req.body, what="push payload")
    received_at = ctx.clock()
    push_event = to_push_event(push, delivery_id=delivery.delivery_id, received_at=received_at)
    if (conflict := repository_conflict(push_event.repo_urls)) is not None:
        return conflict_response(conflict, ctx, correlation_id=delivery.correlation_id)
    return route_events([push_event], ctx, correlation_id=delivery.correlation_id, received_at=received_at)

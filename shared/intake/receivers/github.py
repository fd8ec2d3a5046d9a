"""GitHub: ``X-Hub-Signature-256`` HMAC over the raw body, JSON or form-encoded deliveries."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.intake.receivers.base import ReceiverContext, enqueue, load_config, safe_delivery_id
from shared.intake.receivers.common import Delivery, conflict_response, repository_conflict, run_receiver
from shared.intake.routing import route_push
from shared.model.build_request import COMMIT_RE
from shared.model.events import PushEvent
from shared.platform.http import (
    HttpRequest,
    HttpResponse,
    RequestRejected,
    check_media_type,
    check_method,
    check_size,
    is_too_deep,
    too_deep,
)
from shared.platform.http import max_body_bytes as _max_body_bytes

SECRET_SETTING = "GITHUB_WEBHOOK_SECRET"
MEDIA_TYPES = ("application/json", "application/x-www-form-urlencoded")
# GitHub sends at most this many commits in a push payload; beyond it file lists are partial.
MAX_LISTED_COMMITS = 2048
logger = logging.getLogger("slipway.webhooks.github")


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.digest(secret, body, hashlib.sha256).hex()


def verify_github_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of ``sha256=<hex>`` over the exact bytes received."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GitHubCommit(_Model):
    id: str = ""
    message: str = ""
    added: list[str] = Field(default_factory=list)
    modified: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


class GitHubRepository(_Model):
    full_name: str | None = None
    clone_url: str | None = None
    html_url: str | None = None
    ssh_url: str | None = None
    git_url: str | None = None
    url: str | None = None
    default_branch: str | None = None
    master_branch: str | None = None


class GitHubPush(_Model):
    ref: str
    before: str | None = None
    after: str
    created: bool = False
    deleted: bool = False
    forced: bool = False
    commits: list[GitHubCommit] = Field(default_factory=list)
    head_commit: GitHubCommit | None = None
    repository: GitHubRepository

    @field_validator("after")
    @classmethod
    def _after(cls, value: str) -> str:
        if not COMMIT_RE.match(value):
            raise ValueError("after is not a commit id")
        return value


def _decode_body(media_type: str, body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
        if media_type == "application/x-www-form-urlencoded":
            form = parse_qs(text, keep_blank_values=True, max_num_fields=16)
            if "payload" not in form:
                raise RequestRejected(400, "bad_request", "form body has no payload field")
            text = form["payload"][0]
        data = json.loads(text)
    except RecursionError:
        # json.loads (kept here: it reads what GitHub's form bodies may hold, lone surrogates
        # included) recurses per level until the interpreter's limit; the sender nested too deep.
        raise too_deep() from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, RequestRejected):
            raise
        raise RequestRejected(400, "bad_request", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestRejected(400, "bad_request", "body is not a JSON object")
    return data


def _parse_push(media_type: str, body: bytes) -> GitHubPush:
    """Parse and validate in one pass (pydantic's JSON parser skips what the model ignores)."""
    try:
        if media_type == "application/json":
            return GitHubPush.model_validate_json(body)
        return GitHubPush.model_validate(_decode_body(media_type, body))
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid" and is_too_deep(first["msg"]):
            raise too_deep() from None
        if first["type"] in ("json_invalid", "json_type", "model_type"):
            raise RequestRejected(400, "bad_request", "body is not a JSON object") from None
        where = ".".join(str(p) for p in first["loc"])
        raise RequestRejected(400, "bad_request", f"push payload: {where}: {first['msg']}") from None


def to_push_event(push: GitHubPush, *, delivery_id: str | None, received_at: Any) -> PushEvent:
    repo = push.repository
    clone_url = repo.clone_url or (f"{repo.html_url}.git" if repo.html_url else "")
    files: set[str] = set()
    for commit in push.commits:
        files.update(commit.added, commit.modified, commit.removed)
    incomplete: str | None = None
    if push.created:
        incomplete = "new ref: GitHub lists only some of its commits"
    elif push.forced:
        incomplete = "forced push: the listed commits do not describe the change"
    elif len(push.commits) >= MAX_LISTED_COMMITS:
        incomplete = f"more than {MAX_LISTED_COMMITS} commits"
    return PushEvent(
        provider="github",
        delivery_id=delivery_id,
        received_at=received_at,
        repo_urls=tuple(u for u in (repo.clone_url, repo.html_url, repo.ssh_url, repo.git_url) if u),
        clone_url=clone_url,
        ref=push.ref,
        after=push.after,
        before=push.before,
        created=push.created,
        deleted=push.deleted,
        forced=push.forced,
        default_branch=repo.default_branch or repo.master_branch,
        head_message=push.head_commit.message if push.head_commit else None,
        changed_files=None if incomplete else frozenset(files),
        incomplete_reason=incomplete,
    )


def receive_github(req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
    """``POST /api/hooks/github``: never raises; every outcome is a JSON response."""
    delivery_id = safe_delivery_id(req.header("X-GitHub-Delivery"))
    return run_receiver(_receive, req, ctx, provider="github", delivery_id=delivery_id, logger=logger)


def _receive(req: HttpRequest, ctx: ReceiverContext, delivery: Delivery) -> HttpResponse:
    delivery_id, correlation_id = delivery.delivery_id, delivery.correlation_id
    check_method(req)
    check_size(req, _max_body_bytes(ctx.settings))
    media_type = check_media_type(req, MEDIA_TYPES)
    secret = ctx.settings.get(SECRET_SETTING, "")
    if not secret:
        raise RequestRejected(503, "receiver_not_configured", f"{SECRET_SETTING} is not set")
    signature = req.header("X-Hub-Signature-256")
    if signature is None:
        raise RequestRejected(401, "unauthorized", "X-Hub-Signature-256 is missing")
    if not verify_github_signature(secret.encode(), req.body, signature):
        raise RequestRejected(401, "unauthorized", "X-Hub-Signature-256 does not match the body")

    event = (req.header("X-GitHub-Event") or "").strip()
    if not event:
        raise RequestRejected(400, "bad_request", "X-GitHub-Event is missing")
    if event != "push":
        _decode_body(media_type, req.body)  # well-formed, even when it is not acted on
        if event == "ping":
            return HttpResponse(
                200, {"correlation_id": correlation_id, "status": "pong", "accepted": [], "ignored": []}
            )
        return HttpResponse(
            200,
            {
                "correlation_id": correlation_id,
                "accepted": [],
                "ignored": [{"target": None, "reason": f"event {event[:64]!r} is not handled"}],
            },
        )
    push = _parse_push(media_type, req.body)
    received_at = ctx.clock()
    push_event = to_push_event(push, delivery_id=delivery_id, received_at=received_at)
    if (conflict := repository_conflict(push_event.repo_urls)) is not None:
        return conflict_response(conflict, ctx, correlation_id=correlation_id)
    config = load_config(ctx)
    result = route_push(push_event, config, correlation_id=correlation_id, received_at=received_at)
    return enqueue(result, ctx, correlation_id=correlation_id, subject="push" if push_event.branch else "tag")

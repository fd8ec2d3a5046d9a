"""GitHub: ``X-Hub-Signature-256`` HMAC over the raw body, JSON or form-encoded deliveries."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from pydantic import Field, ValidationError

from shared.intake.receivers.answers import Pushes
from shared.intake.receivers.checks import PayloadModel, payload_clone_url, required_setting
from shared.intake.receivers.pipeline import EventHeader, ReceiverContext, Sender, first_delivery_id
from shared.intake.receivers.pull_requests import PullRequests, github_reader
from shared.intake.routing import Ignored
from shared.model.build_request import CommitId
from shared.model.events import PushEvent
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected, is_too_deep, too_deep

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


class GitHubCommit(PayloadModel):
    id: str = ""
    message: str = ""
    added: list[str] = Field(default_factory=list)
    modified: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


class GitHubRepository(PayloadModel):
    full_name: str | None = None
    clone_url: str | None = None
    html_url: str | None = None
    ssh_url: str | None = None
    git_url: str | None = None
    url: str | None = None
    default_branch: str | None = None
    master_branch: str | None = None


class GitHubPush(PayloadModel):
    ref: str
    before: str | None = None
    after: CommitId
    created: bool = False
    deleted: bool = False
    forced: bool = False
    commits: list[GitHubCommit] = Field(default_factory=list)
    head_commit: GitHubCommit | None = None
    repository: GitHubRepository


def _decode_body(body: bytes, media_type: str) -> dict[str, Any]:
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


def _parse_push(body: bytes, media_type: str) -> GitHubPush:
    """Parse and validate in one pass (pydantic's JSON parser skips what the model ignores)."""
    try:
        if media_type == "application/json":
            return GitHubPush.model_validate_json(body)
        return GitHubPush.model_validate(_decode_body(body, media_type))
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid" and is_too_deep(first["msg"]):
            raise too_deep() from None
        if first["type"] in ("json_invalid", "json_type", "model_type"):
            raise RequestRejected(400, "bad_request", "body is not a JSON object") from None
        where = ".".join(str(p) for p in first["loc"])
        raise RequestRejected(400, "bad_request", f"push payload: {where}: {first['msg']}") from None


def _urls(push: GitHubPush) -> tuple[str, ...]:
    repo = push.repository
    return tuple(filter(None, (repo.clone_url, repo.html_url, repo.ssh_url, repo.git_url)))


def to_push_events(
    push: GitHubPush, delivery_id: str | None, received_at: datetime
) -> tuple[Sequence[PushEvent], Sequence[Ignored]]:
    repo = push.repository
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
    event = PushEvent(
        provider="github",
        delivery_id=delivery_id,
        received_at=received_at,
        repo_urls=_urls(push),
        clone_url=payload_clone_url(repo.clone_url, repo.html_url),
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
    return [event], []


def authenticate(req: HttpRequest, ctx: ReceiverContext) -> None:
    secret = required_setting(ctx, SECRET_SETTING)
    signature = req.header("X-Hub-Signature-256")
    if signature is None:
        raise RequestRejected(401, "unauthorized", "X-Hub-Signature-256 is missing")
    if not verify_github_signature(secret.encode(), req.body, signature):
        raise RequestRejected(401, "unauthorized", "X-Hub-Signature-256 does not match the body")


SENDER = Sender(
    provider="github",
    logger=logger,
    delivery_id=first_delivery_id("X-GitHub-Delivery"),
    media_types=MEDIA_TYPES,
    authenticate=authenticate,
    triage=EventHeader(
        ("X-GitHub-Event",),
        frozenset({"push"}),
        ping="ping",
        well_formed=_decode_body,
        others=(("pull_request", PullRequests("github", github_reader(_decode_body))),),
    ),
    parse=_parse_push,
    answer=Pushes(normalise=to_push_events),
)


def receive_github(req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
    """``POST /api/hooks/github``: never raises; every outcome is a JSON response."""
    return SENDER.receive(req, ctx)

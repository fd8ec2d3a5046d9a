"""Bitbucket Cloud: ``repo:push`` signed with ``X-Hub-Signature: sha256=<hex>``.

One push may carry several changes (``push.changes[]``: branches and tags moved, created or
closed together); each becomes a ``PushEvent``, routed on its own, with one merged answer.
Bitbucket lists no changed files in push payloads, so ``changed_files`` is None and paths
filters are not applied (the answer notes it).

Delivery id: ``X-Request-UUID`` (one per delivery), else ``X-Hook-UUID``, which names the
webhook rather than the delivery and so only serves to correlate logs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from pydantic import Field

from shared.intake.commit_lookup import resolve_bitbucket_head
from shared.intake.receivers.answers import Pushes
from shared.intake.receivers.checks import (
    PayloadModel,
    json_body,
    parse_json,
    payload_clone_url,
    required_setting,
    unique_urls,
)
from shared.intake.receivers.pipeline import EventHeader, ReceiverContext, Sender, first_delivery_id
from shared.intake.receivers.pull_requests import WHAT, PullRequests, Read, branch_ref, is_fork
from shared.intake.receivers.signatures import verify_hmac_sha256
from shared.intake.routing import Ignored
from shared.model.build_request import COMMIT_RE
from shared.model.events import ZERO_COMMIT, PullRequestAction, PullRequestEvent, PushEvent
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected

PROVIDER = "bitbucket"
SECRET_SETTING = "BITBUCKET_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Hub-Signature"
SIGNATURE_PREFIX = "sha256="
EVENT_HEADER = "X-Event-Key"
PUSH_EVENT = "repo:push"
PING_EVENT = "diagnostics:ping"
NO_FILES_REASON = "Bitbucket push events do not list changed files"
CLOUD_HOST = "https://bitbucket.org"
_REF_PREFIXES = {"branch": "refs/heads/", "tag": "refs/tags/"}
logger = logging.getLogger("slipway.webhooks.bitbucket")


class BitbucketTarget(PayloadModel):
    hash: str = ""
    message: str | None = None


class BitbucketRef(PayloadModel):
    type: str = ""
    name: str = ""
    target: BitbucketTarget | None = None


class BitbucketChange(PayloadModel):
    old: BitbucketRef | None = None
    new: BitbucketRef | None = None
    created: bool = False
    closed: bool = False
    forced: bool = False


class BitbucketPushDetails(PayloadModel):
    changes: list[BitbucketChange] = Field(default_factory=list)


class BitbucketHref(PayloadModel):
    href: str | None = None


class BitbucketRepoLinks(PayloadModel):
    html: BitbucketHref | None = None


class BitbucketBranchName(PayloadModel):
    name: str | None = None


class BitbucketRepository(PayloadModel):
    full_name: str | None = None
    links: BitbucketRepoLinks | None = None
    mainbranch: BitbucketBranchName | None = None


class BitbucketPush(PayloadModel):
    push: BitbucketPushDetails
    repository: BitbucketRepository


def repository_urls(push: BitbucketPush) -> tuple[str, ...]:
    """The repository's web link and the Bitbucket Cloud URL its ``full_name`` gives, each once."""
    repo = push.repository
    html = repo.links.html.href if repo.links and repo.links.html else None
    return unique_urls(html, f"{CLOUD_HOST}/{repo.full_name}" if repo.full_name else None)


def to_push_events(
    push: BitbucketPush, delivery_id: str | None, received_at: datetime
) -> tuple[Sequence[PushEvent], Sequence[Ignored]]:
    """A ``PushEvent`` per branch or tag change; other changes (Mercurial, malformed) are ignored.

    Raises ``RequestRejected`` (400) when a new ref's target is not a full commit id.
    """
    repo = push.repository
    repo_urls = repository_urls(push)
    clone_url = payload_clone_url(*repo_urls)
    default_branch = repo.mainbranch.name if repo.mainbranch else None
    events: list[PushEvent] = []
    ignored: list[Ignored] = []
    for index, change in enumerate(push.push.changes):
        ref = change.new or change.old
        prefix = _REF_PREFIXES.get(ref.type) if ref else None
        if ref is None or prefix is None or not ref.name:
            what = f"a {ref.type[:32]!r} change" if ref and ref.type else "a change without a ref"
            ignored.append(Ignored(None, f"{what} is neither a branch nor a tag"))
            continue
        deleted = change.closed or change.new is None
        after = ZERO_COMMIT
        if not deleted:
            after = change.new.target.hash if change.new and change.new.target else ""
            if not COMMIT_RE.match(after):
                raise RequestRejected(
                    400,
                    "bad_request",
                    f"push payload: push.changes.{index}.new.target.hash is not a commit id",
                )
        old_target = change.old.target if change.old else None
        new_target = change.new.target if change.new else None
        events.append(
            PushEvent(
                provider=PROVIDER,
                delivery_id=delivery_id,
                received_at=received_at,
                repo_urls=repo_urls,
                clone_url=clone_url,
                ref=prefix + ref.name,
                after=after,
                before=old_target.hash if old_target and old_target.hash else None,
                created=not deleted and (change.created or change.old is None),
                deleted=deleted,
                forced=change.forced,
                default_branch=default_branch,
                head_message=new_target.message if new_target else None,
                changed_files=None,
                incomplete_reason=NO_FILES_REASON,
            )
        )
    return events, ignored


# Pull requests (issue #20): read into PullRequestEvent, see shared.intake.receivers.pull_requests.
_BITBUCKET_ACTIONS: dict[str, tuple[PullRequestAction, bool]] = {
    "pullrequest:created": ("opened", False),
    "pullrequest:updated": ("updated", False),
    "pullrequest:fulfilled": ("closed", True),
    "pullrequest:rejected": ("closed", False),
}
BITBUCKET_EVENTS = tuple(_BITBUCKET_ACTIONS)


class _BitbucketRepository(PayloadModel):
    uuid: str | None = None
    full_name: str | None = None
    links: BitbucketRepoLinks | None = None


class _BitbucketBranch(PayloadModel):
    name: str = Field(min_length=1)


class _BitbucketCommit(PayloadModel):
    hash: str = Field(pattern=r"^[0-9a-f]{7,64}$")


class _BitbucketEnd(PayloadModel):
    branch: _BitbucketBranch
    commit: _BitbucketCommit
    repository: _BitbucketRepository | None = None


class _BitbucketPr(PayloadModel):
    id: int
    source: _BitbucketEnd
    destination: _BitbucketEnd


class BitbucketPullRequestPayload(PayloadModel):
    pullrequest: _BitbucketPr
    repository: _BitbucketRepository


def _bitbucket_urls(repo: _BitbucketRepository | None) -> tuple[str, ...]:
    if repo is None:
        return ()
    html = repo.links.html.href if repo.links and repo.links.html else None
    return unique_urls(html, f"{CLOUD_HOST}/{repo.full_name}" if repo.full_name else None)


def _named(repo: _BitbucketRepository | None) -> tuple[str, ...]:
    return (f"{CLOUD_HOST}/{repo.full_name}",) if repo and repo.full_name else ()


def bitbucket_reader(event_key: str) -> Read:
    """The reader for one ``X-Event-Key``: Bitbucket says the action in the key, not the body."""
    action, merged = _BITBUCKET_ACTIONS[event_key]

    def read(
        body: bytes, media_type: str, delivery_id: str | None, received_at: datetime
    ) -> PullRequestEvent | str:
        payload = parse_json(BitbucketPullRequestPayload, body, what=WHAT)
        pr = payload.pullrequest
        head, base = pr.source.repository, pr.destination.repository or payload.repository
        commit = pr.source.commit.hash
        full = COMMIT_RE.match(commit) is not None
        return PullRequestEvent(
            provider="bitbucket",
            delivery_id=delivery_id,
            received_at=received_at,
            repo_urls=_bitbucket_urls(payload.repository),
            number=pr.id,
            action=action,
            head_commit=commit if full else None,
            head_commit_abbrev=None if full else commit,
            head_ref=branch_ref(pr.source.branch.name),
            head_repo_urls=_bitbucket_urls(head),
            base_ref=branch_ref(pr.destination.branch.name),
            fork=is_fork(head.uuid if head else None, base.uuid, _named(head), _named(base)),
            merged=merged,
            sender_action=event_key,
        )

    return read


def authenticate(req: HttpRequest, ctx: ReceiverContext) -> None:
    secret = required_setting(ctx, SECRET_SETTING)
    signature = req.header(SIGNATURE_HEADER)
    if not signature:
        raise RequestRejected(401, "unauthorized", f"{SIGNATURE_HEADER} is missing")
    if not verify_hmac_sha256(secret.encode(), req.body, signature, prefix=SIGNATURE_PREFIX):
        raise RequestRejected(401, "unauthorized", f"{SIGNATURE_HEADER} does not match the body")


def _no_changes(push: BitbucketPush) -> str | None:
    return None if push.push.changes else "the push lists no changes"


SENDER = Sender(
    provider=PROVIDER,
    logger=logger,
    # X-Hook-UUID names the webhook, not the delivery: it only correlates logs.
    delivery_id=first_delivery_id("X-Request-UUID", "X-Hook-UUID"),
    authenticate=authenticate,
    triage=EventHeader(
        (EVENT_HEADER,),
        frozenset({PUSH_EVENT}),
        ping=PING_EVENT,
        # Its head commit is abbreviated: resolved through Bitbucket's API (commit_lookup).
        others=tuple(
            (key, PullRequests(PROVIDER, bitbucket_reader(key), resolve=resolve_bitbucket_head))
            for key in BITBUCKET_EVENTS
        ),
    ),
    parse=json_body(BitbucketPush, what="push payload"),
    answer=Pushes(normalise=to_push_events, compared_urls=repository_urls, nothing_to_build=_no_changes),
)


def receive_bitbucket(req: HttpRequest, ctx: ReceiverContext) -> HttpResponse:
    """``POST /api/hooks/bitbucket``: never raises; every outcome is a JSON response."""
    return SENDER.receive(req, ctx)

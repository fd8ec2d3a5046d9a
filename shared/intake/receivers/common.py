"""Steps the Git host receivers (GitLab, Azure DevOps, Bitbucket, Gitea) share.

Each receiver keeps only what is specific to its host: how it authenticates, which events it
handles, and how its payload maps onto ``PushEvent``. The guards, the JSON parsing, the error
answers and the routing of several pushes from one delivery live here, so that every host
answers the same way for the same mistake.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.intake.receivers.base import (
    ReceiverContext,
    enqueue,
    load_config,
    new_correlation_id,
    safe_delivery_id,
)
from shared.intake.routing import Ignored, RouteResult, normalize_repo, route_push
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
from shared.platform.logs import log_event

JSON_MEDIA_TYPES = ("application/json",)
_UTF8_BOM = b"\xef\xbb\xbf"
_REASON_EVENT_CHARS = 64
_REASON_URL_CHARS = 100
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})

ModelT = TypeVar("ModelT", bound=BaseModel)


class PayloadModel(BaseModel):
    """Base of every payload model: unknown fields are ignored, so hosts can add fields freely."""

    model_config = ConfigDict(extra="ignore")


@dataclass
class Delivery:
    """One HTTP delivery being handled; the correlation id may be refined once the body is read."""

    provider: str
    delivery_id: str | None
    correlation_id: str

    def identify(self, delivery_id: str | None) -> None:
        """Adopt an id found in the (authenticated) body, for hosts that send no delivery header."""
        safe = safe_delivery_id(delivery_id)
        if safe and self.delivery_id is None:
            self.delivery_id = safe
            self.correlation_id = safe


Handler = Callable[[HttpRequest, ReceiverContext, Delivery], HttpResponse]


def run_receiver(
    handler: Handler,
    req: HttpRequest,
    ctx: ReceiverContext,
    *,
    provider: str,
    delivery_id: str | None,
    logger: logging.Logger,
    challenge: str | None = None,
) -> HttpResponse:
    """Call ``handler``; a ``RequestRejected`` becomes the JSON error answer, logged once.

    ``challenge`` is the ``WWW-Authenticate`` value sent with a 401 (HTTP Basic senders).
    """
    delivery = Delivery(provider, delivery_id, new_correlation_id(delivery_id))
    try:
        try:
            return handler(req, ctx, delivery)
        except RecursionError:
            # The last guard: bodies are parsed with a depth limit (``JSON_MAX_DEPTH``), but a
            # nested value that still exhausted the stack is the sender's doing, not a 500.
            raise too_deep() from None
    except RequestRejected as rejected:
        log_event(
            logger,
            "webhook_rejected",
            level=logging.WARNING,
            provider=provider,
            correlation_id=delivery.correlation_id,
            status=rejected.status,
            reason=rejected.reason,
        )
        response = rejected.response(correlation_id=delivery.correlation_id)
        if challenge and rejected.status == 401:
            return HttpResponse(response.status, response.body, {"WWW-Authenticate": challenge})
        return response


def check_json_request(req: HttpRequest, ctx: ReceiverContext) -> None:
    """Method, size and content type, in that order, before anything else is looked at."""
    check_method(req)
    check_size(req, _max_body_bytes(ctx.settings))
    check_media_type(req, JSON_MEDIA_TYPES)


def required_setting(ctx: ReceiverContext, name: str) -> str:
    """A receiver's secret setting; unset means the operator has not configured it: 503, not 401."""
    value = ctx.settings.get(name, "")
    if not value:
        raise RequestRejected(503, "receiver_not_configured", f"{name} is not set")
    return value


def parse_json(model: type[ModelT], body: bytes, *, what: str = "payload") -> ModelT:
    """Parse and validate in one pass; any problem is the sender's: 400 with where it is.

    A leading UTF-8 byte order mark is tolerated (some recorded Bitbucket bodies carry one); it is
    removed only after the signature has been checked over the bytes as received.
    """
    try:
        return model.model_validate_json(body.removeprefix(_UTF8_BOM))
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            if is_too_deep(first["msg"]):
                raise too_deep() from None
            raise RequestRejected(400, "bad_request", "body is not valid JSON") from None
        if first["type"] in ("json_type", "model_type", "model_attributes_type") and not first["loc"]:
            raise RequestRejected(400, "bad_request", "body is not a JSON object") from None
        where = ".".join(str(p) for p in first["loc"])
        raise RequestRejected(400, "bad_request", f"{what}: {where}: {first['msg']}") from None


class _AnyObject(PayloadModel):
    pass


def require_json_object(body: bytes) -> None:
    """A delivery that is not acted on must still be well-formed JSON, as for GitHub."""
    parse_json(_AnyObject, body)


def ignored_response(correlation_id: str, reason: str) -> HttpResponse:
    """200: understood, authenticated, and deliberately not built."""
    return HttpResponse(
        200,
        {"correlation_id": correlation_id, "accepted": [], "ignored": [{"target": None, "reason": reason}]},
    )


def event_not_handled(correlation_id: str, event: str) -> HttpResponse:
    return ignored_response(correlation_id, f"event {event[:_REASON_EVENT_CHARS]!r} is not handled")


def pong_response(correlation_id: str) -> HttpResponse:
    return HttpResponse(
        200, {"correlation_id": correlation_id, "status": "pong", "accepted": [], "ignored": []}
    )


def is_zero_commit(value: str | None) -> bool:
    """All zeros, of either hash length: Git's "no commit" (a created or deleted ref)."""
    return bool(value) and set(value or "") == {"0"}


def unique_urls(*urls: str | None) -> tuple[str, ...]:
    """The usable URLs in order, each once (the router matches on any of them).

    A URL ``urlsplit`` cannot parse (``http://[oops``) is dropped here: the router would raise.
    """
    seen: dict[str, None] = {}
    for url in urls:
        text = (url or "").strip()
        if text and _splittable(text):
            seen.setdefault(text, None)
    return tuple(seen)


def _splittable(url: str) -> bool:
    try:
        urlsplit(url).hostname  # noqa: B018 - parsing the host is what can fail
    except ValueError:
        return False
    return True


def https_clone_url(*candidates: str | None) -> str:
    """The sender's clone URL in https form, for ``PushEvent.clone_url`` only.

    Nothing is built from it: a request clones its target's configured ``repo``
    (``shared.intake.routing.https_clone_url``); a payload's URLs only route.

    The first https candidate wins; otherwise the first http one is upgraded to https (the
    dispatcher refuses plain http, and self-hosted instances often report http behind a TLS
    proxy). User information such as Azure DevOps' ``org@`` is dropped. "" when none is usable.
    """
    usable = unique_urls(*candidates)
    for scheme in ("https", "http"):
        for url in usable:
            parts = urlsplit(url)
            host = parts.netloc.rpartition("@")[2]
            if parts.scheme.lower() == scheme and host:
                return urlunsplit(("https", host, parts.path, "", ""))
    return ""


def _is_ssh(url: str) -> bool:
    """ssh:// or scp-like ``user@host:path``: a form whose host may differ from the web host."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() in _SSH_SCHEMES if sep else True


_CACHED_URL_CHARS = 2048


def repository_conflict(urls: tuple[str, ...]) -> str | None:
    """Why a payload's repository URLs cannot all name one repository, or None when they can.

    The web and clone URLs (https, http, git://) must name the same host and path. An ssh URL
    may name another host (GitLab and Gitea let the SSH host be configured apart; GitLab's own
    samples show it), and it has no relative-URL prefix, so only its path is held against the
    others: it must be the web path or its end. Slipway never builds from these URLs (the
    target's ``repo`` is what is cloned), but a payload that contradicts itself cannot be
    trusted to route either, so it is ignored with this reason. Cached (for URLs of a usual
    length): one repository's pushes repeat the same URLs.
    """
    if sum(map(len, urls)) <= _CACHED_URL_CHARS:
        return _cached_conflict(urls)
    return _conflict(urls)


@lru_cache(maxsize=1024)
def _cached_conflict(urls: tuple[str, ...]) -> str | None:
    return _conflict(urls)


def _conflict(urls: tuple[str, ...]) -> str | None:
    web: set[str] = set()
    ssh_paths: set[str] = set()
    for url in urls:
        key = normalize_repo(url)
        if _is_ssh(url):
            ssh_paths.add(key.partition("/")[2])
        else:
            web.add(key)
    if len(web) <= 1 and len(ssh_paths) <= 1:
        if not web or not ssh_paths:
            return None
        web_path, ssh_path = next(iter(web)).partition("/")[2], next(iter(ssh_paths))
        if web_path == ssh_path or web_path.endswith("/" + ssh_path):
            return None
    named = ", ".join(sorted(k[:_REASON_URL_CHARS] for k in web | ssh_paths)[:4])
    return (
        f"the payload's repository URLs name different repositories ({named}); "
        "Slipway builds only a target's configured repo"
    )


def conflict_response(
    reason: str, ctx: ReceiverContext, *, correlation_id: str, subject: str = "push"
) -> HttpResponse:
    """200 with ``reason`` ignored, logged like any other ignored push; nothing is queued."""
    return enqueue(
        RouteResult(ignored=[Ignored(None, reason)]), ctx, correlation_id=correlation_id, subject=subject
    )


def route_events(
    events: Sequence[PushEvent],
    ctx: ReceiverContext,
    *,
    correlation_id: str,
    received_at: datetime,
    ignored: Iterable[Ignored] = (),
) -> HttpResponse:
    """Route every push of one delivery and answer once with the merged result.

    With several pushes (Azure DevOps ref updates, Bitbucket changes) each ignore reason names
    its ref, so the sender's delivery log says which ref was skipped and why.
    """
    merged = RouteResult(ignored=list(ignored))
    if events:
        config = load_config(ctx)
        for event in events:
            result = route_push(event, config, correlation_id=correlation_id, received_at=received_at)
            prefix = f"{event.ref}: " if len(events) > 1 else ""
            merged.accepted.extend(result.accepted)
            merged.ignored.extend(Ignored(i.target, prefix + i.reason) for i in result.ignored)
            merged.notes.extend(result.notes)
    merged = RouteResult(
        accepted=list({r.id: r for r in merged.accepted}.values()),
        ignored=list(dict.fromkeys(merged.ignored)),
        notes=list(dict.fromkeys(merged.notes)),
    )
    subject = "tag" if events and all(e.tag is not None for e in events) else "push"
    return enqueue(merged, ctx, correlation_id=correlation_id, subject=subject)

"""What every sender's delivery is checked against: settings, tokens, the JSON body and its URLs.

These are the pieces a sender's spec (``shared.intake.receivers.pipeline.Sender``) is assembled
from, so that every sender answers the same way for the same mistake: 503 for a setting the
operator left unset, 401 for a missing or wrong credential (compared in constant time, see
``signatures``), 400 naming where a body is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.intake.receivers.signatures import tokens_equal
from shared.model.repo_urls import https_clone_url, normalize_repo
from shared.platform.http import HttpRequest, RequestRejected, is_too_deep, too_deep

if TYPE_CHECKING:
    from shared.intake.receivers.pipeline import ReceiverContext

JSON_MEDIA_TYPES = ("application/json",)
ModelT = TypeVar("ModelT", bound=BaseModel)
_UTF8_BOM = b"\xef\xbb\xbf"
_REASON_CHARS = 64
_REASON_URL_CHARS = 100
_MAX_REASON = 300
_SHAPE_ERRORS = ("json_type", "model_type", "model_attributes_type", "list_type")
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
_CACHED_URL_CHARS = 2048


class PayloadModel(BaseModel):
    """Base of every payload model: unknown fields are ignored, so senders can add fields freely."""

    model_config = ConfigDict(extra="ignore")


class ListedCommit(PayloadModel):
    """A pushed commit as GitLab and Gitea send it: its file lists may be absent.

    None (absent), unlike [], means the sender did not say: GitLab's system hooks and old Gitea
    versions send no file lists, so a path filter cannot be decided from the payload.
    """

    id: str = ""
    message: str = ""
    added: list[str] | None = None
    modified: list[str] | None = None
    removed: list[str] | None = None

    @property
    def lists_files(self) -> bool:
        return self.added is not None or self.modified is not None or self.removed is not None


def required_setting(ctx: ReceiverContext, name: str) -> str:
    """A receiver's secret setting; unset means the operator has not configured it: 503, not 401."""
    value = ctx.settings.get(name, "")
    if not value:
        raise RequestRejected(503, "receiver_not_configured", f"{name} is not set")
    return value


def query_token(setting: str) -> Callable[[HttpRequest, ReceiverContext], None]:
    """``?token=`` must equal ``setting`` (Event Grid and Docker Hub cannot send a secret header)."""

    def authenticate(req: HttpRequest, ctx: ReceiverContext) -> None:
        expected = required_setting(ctx, setting)
        presented = req.query.get("token")
        if presented is None:
            raise RequestRejected(401, "unauthorized", "the token query parameter is missing")
        if not tokens_equal(expected, presented):
            raise RequestRejected(401, "unauthorized", "the token query parameter is wrong")

    return authenticate


def parse_json(model: type[ModelT], body: bytes, *, what: str = "payload") -> ModelT:
    """Parse and validate in one pass; any problem is the sender's: 400 saying where.

    A leading UTF-8 byte order mark is tolerated (some recorded Bitbucket bodies carry one); it is
    removed only after the signature has been checked over the bytes as received.
    """
    try:
        return model.model_validate_json(body.removeprefix(_UTF8_BOM))
    except ValidationError as exc:
        raise RequestRejected(400, "bad_request", describe_error(exc, what=what)) from None


def json_body(model: type[ModelT], *, what: str) -> Callable[[bytes, str], ModelT]:
    """A spec's parser: the body as ``model``, whatever the (already checked) media type."""

    def parse(body: bytes, media_type: str) -> ModelT:
        return parse_json(model, body, what=what)

    return parse


def describe_error(exc: ValidationError, *, what: str, whole: str = "body") -> str:
    """The first problem, located: ``<what>: <field path>: <message>``, or ``<whole>`` is the wrong shape."""
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return too_deep().reason if is_too_deep(first["msg"]) else f"{whole} is not valid JSON"
    if first["type"] in _SHAPE_ERRORS and not first["loc"]:
        return f"{whole} is not a JSON {'array' if first['type'] == 'list_type' else 'object'}"
    where = ".".join(str(p) for p in first["loc"])
    return f"{what}: {where}: {first['msg']}"[:_MAX_REASON]


class _AnyObject(PayloadModel):
    pass


def require_json_object(body: bytes, media_type: str = "application/json") -> None:
    """A delivery that is not acted on must still be a well-formed JSON object (any media type:
    the signature of ``EventHeader.well_formed``)."""
    parse_json(_AnyObject, body)


def shown(value: str) -> str:
    """A sender's word (an event, an action) as it may appear in an answer: short and quoted."""
    return repr(value[:_REASON_CHARS])


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


def payload_clone_url(*candidates: str | None) -> str:
    """``PushEvent.clone_url``: the first usable candidate in https form, "" when none is.

    Informational only: a request clones its target's configured ``repo``, and both go through
    the one conversion, ``shared.model.repo_urls.https_clone_url`` (cached: pushes repeat URLs).
    """
    for url in candidates:
        text = (url or "").strip()
        if text:
            try:
                return https_clone_url(text)
            except ValueError:  # not a URL at all (``http://[oops``, a port that is not a number)
                continue
    return ""


def _is_ssh(url: str) -> bool:
    """ssh:// or scp-like ``user@host:path``: a form whose host may differ from the web host."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() in _SSH_SCHEMES if sep else True


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

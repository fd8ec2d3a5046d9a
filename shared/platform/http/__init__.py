"""Plain HTTP request/response types and the guards every webhook endpoint applies.

Handlers translate ``azure.functions.HttpRequest`` into ``HttpRequest`` and ``HttpResponse``
back; the local host does the same from its own server, so both run the very same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.platform.compact_json import compact_json

DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024
# Request bodies are parsed by pydantic's JSON parser (jiter), which refuses nesting deeper than
# its DEFAULT_RECURSION_LIMIT (200) with "recursion limit exceeded" (pydantic/jiter,
# crates/jiter/src/errors.rs). Python's ``json`` (GitHub's form bodies) recurses instead until
# the interpreter's limit and raises ``RecursionError``; both become ``too_deep()``.
JSON_MAX_DEPTH = 200
_JITER_TOO_DEEP = "recursion limit exceeded"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)
    _by_lower_name: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Folded once: receivers look several headers up on every delivery. The first of names
        # that differ only in case wins: folded from the last, each earlier one overwrites.
        headers = self.headers
        items = reversed(headers.items()) if type(headers) is dict else reversed(list(headers.items()))
        object.__setattr__(self, "_by_lower_name", {key.lower(): value for key, value in items})

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (the Functions host and http.server differ in case)."""
        return self._by_lower_name.get(name.lower())

    @property
    def media_type(self) -> str:
        raw = self.header("Content-Type") or ""
        return raw.split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    def body_bytes(self) -> bytes:
        return compact_json(self.body)


class RequestRejected(Exception):
    """The sender's request cannot be accepted; becomes a JSON error with ``status``."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason

    def response(self, **extra: Any) -> HttpResponse:
        return HttpResponse(self.status, {"error": self.error, "reason": self.reason, **extra})


def too_deep() -> RequestRejected:
    """The answer for a body nested beyond what any sender's payload needs."""
    return RequestRejected(
        400, "bad_request", f"body is nested too deeply (JSON is read to {JSON_MAX_DEPTH} levels)"
    )


def is_too_deep(message: str) -> bool:
    """Whether a JSON parser's error message (pydantic's or ``from_json``'s) is the nesting limit."""
    return _JITER_TOO_DEEP in message


def check_method(req: HttpRequest, allowed: tuple[str, ...] = ("POST",)) -> None:
    if req.method.upper() not in allowed:
        raise RequestRejected(405, "method_not_allowed", f"use {' or '.join(allowed)}")


def check_size(req: HttpRequest, max_bytes: int) -> None:
    """Refuse oversized bodies, by the declared length first so a liar is refused too."""
    declared = req.header("Content-Length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise RequestRejected(413, "payload_too_large", f"body is larger than {max_bytes} bytes")
        except ValueError:
            raise RequestRejected(400, "bad_request", "Content-Length is not a number") from None
    if len(req.body) > max_bytes:
        raise RequestRejected(413, "payload_too_large", f"body is larger than {max_bytes} bytes")


def check_media_type(req: HttpRequest, allowed: tuple[str, ...]) -> str:
    media_type = req.media_type
    if media_type not in allowed:
        shown = media_type or "none"
        raise RequestRejected(
            415, "unsupported_media_type", f"Content-Type {shown} is not one of {', '.join(allowed)}"
        )
    return media_type


def max_body_bytes(settings: Mapping[str, str]) -> int:
    raw = settings.get("SLIPWAY_MAX_BODY_BYTES", "")
    try:
        return int(raw) if raw else DEFAULT_MAX_BODY_BYTES
    except ValueError:
        return DEFAULT_MAX_BODY_BYTES

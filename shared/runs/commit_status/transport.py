"""The HTTP transport of commit statuses: one JSON POST, failures sorted into retryable or not.

Tokens travel only in headers, a redirect is never followed (urllib would resend the
Authorization header to the new host), an API base must be https (plain http only to loopback),
and every error message is redacted of the client's secrets before anyone sees it.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from shared.model.loopback import is_loopback
from shared.runs.commit_status.model import StatusPostError

USER_AGENT = "slipway-commit-status/1"
DEFAULT_TIMEOUT_S = 10.0
_ERROR_EXCERPT_CHARS = 300


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would resend the Authorization header to the new host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date), else GitHub's rate-limit reset."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw = lowered.get("retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - now)
        except (TypeError, ValueError):
            pass
    if lowered.get("x-ratelimit-remaining") == "0" and lowered.get("x-ratelimit-reset", "").isdigit():
        return max(0.0, float(lowered["x-ratelimit-reset"]) - now)
    return None


def _is_rate_limited(status: int, headers: Mapping[str, str]) -> bool:
    """GitHub answers 403 (not 429) for exhausted and secondary rate limits."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return status == 403 and ("retry-after" in lowered or lowered.get("x-ratelimit-remaining") == "0")


class Transport:
    """POSTs JSON; turns every failure into a ``StatusPostError`` with the secrets redacted."""

    def __init__(self, secrets: tuple[str, ...], timeout: float) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self._timeout = timeout

    def post_json(self, url: str, headers: Mapping[str, str], body: Mapping[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        request = urllib.request.Request(url, data=data, method="POST")  # noqa: S310 - scheme checked
        for name, value in {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Content-Type": "application/json",
            **headers,
        }.items():
            request.add_header(name, value)
        where = redact(url, self._secrets)
        try:
            with _OPENER.open(request, timeout=self._timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                excerpt = exc.read(_ERROR_EXCERPT_CHARS * 4).decode("utf-8", "replace")
            excerpt = " ".join(redact(excerpt, self._secrets).split())[:_ERROR_EXCERPT_CHARS]
            code = exc.code
            resp_headers = dict(exc.headers.items()) if exc.headers else {}
            retryable = code in (408, 429) or code >= 500 or _is_rate_limited(code, resp_headers)
            raise StatusPostError(
                f"POST {where} answered {code}: {excerpt or exc.reason}",
                retryable=retryable,
                status=code,
                retry_after=_retry_after_seconds(resp_headers, time.time()) if retryable else None,
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise StatusPostError(
                f"POST {where} failed: {redact(str(reason), self._secrets)}", retryable=True
            ) from None


def api_base(url: str) -> str | None:
    """An API base URL without trailing slash, or None when it would expose a token.

    https only; plain http is accepted for loopback (tests, a local proxy) and nothing else.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    secure = parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))
    if secure and parts.hostname and not parts.username and not parts.query and not parts.fragment:
        return url.strip().rstrip("/")
    return None

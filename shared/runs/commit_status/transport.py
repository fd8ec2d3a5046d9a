"""The HTTP transport of commit statuses: one JSON POST, failures sorted into retryable or not.

Tokens travel only in headers, a redirect is never followed (urllib would resend the
Authorization header to the new host), an API base must be https (plain http only to loopback),
and every error message is redacted of the client's secrets before anyone sees it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.model.loopback import is_loopback
from shared.runs.commit_status.model import StatusPostError

if TYPE_CHECKING:
    from shared.platform.http.client import HttpClient

USER_AGENT = "slipway-commit-status/1"
DEFAULT_TIMEOUT_S = 10.0
_ERROR_EXCERPT_CHARS = 300


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds from ``Retry-After`` (the one parser), else GitHub's rate-limit reset.

    GitHub's REST docs ("Rate limits for the REST API", "Exceeding the rate limit"): wait for
    ``retry-after`` when present, else until ``x-ratelimit-reset`` (epoch seconds) when
    ``x-ratelimit-remaining`` is 0.
    """
    from shared.platform.http.client import parse_retry_after

    lowered = {k.lower(): v for k, v in headers.items()}
    seconds = parse_retry_after(lowered.get("retry-after"), now=lambda: now)
    if seconds is not None:
        return seconds
    if lowered.get("x-ratelimit-remaining") == "0" and lowered.get("x-ratelimit-reset", "").isdigit():
        return max(0.0, float(lowered["x-ratelimit-reset"]) - now)
    return None


def _is_rate_limited(status: int, headers: Mapping[str, str]) -> bool:
    """GitHub answers 403 (not 429) for exhausted and secondary rate limits."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return status == 403 and ("retry-after" in lowered or lowered.get("x-ratelimit-remaining") == "0")


class Transport:
    """POSTs JSON through the one outbound client (``shared.platform.http.client``: no redirect is
    ever followed, so a token is never resent to another host); turns every failure into a
    ``StatusPostError`` with the secrets redacted."""

    def __init__(self, secrets: tuple[str, ...], timeout: float) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self._timeout = timeout
        self._client: HttpClient | None = None

    def _http(self) -> HttpClient:
        if self._client is None:
            from shared.platform.http.client import HttpClient

            self._client = HttpClient(timeout=self._timeout, user_agent=USER_AGENT)
        return self._client

    def post_json(self, url: str, headers: Mapping[str, str], body: Mapping[str, Any]) -> None:
        from shared.platform.http.client import ConnectionFailed

        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        sent = {"Accept": "application/json", "Content-Type": "application/json", **headers}
        where = redact(url, self._secrets)
        try:
            answer = self._http().request(
                "POST", url, headers=sent, body=data, max_body=_ERROR_EXCERPT_CHARS * 4
            )
        except ConnectionFailed as exc:
            raise StatusPostError(
                f"POST {where} failed: {redact(str(exc.reason), self._secrets)}", retryable=True
            ) from None
        if 200 <= answer.status < 300:
            return
        excerpt = answer.body.decode("utf-8", "replace")
        excerpt = " ".join(redact(excerpt, self._secrets).split())[:_ERROR_EXCERPT_CHARS]
        code = answer.status
        resp_headers = dict(answer.headers.items())
        retryable = code in (408, 429) or code >= 500 or _is_rate_limited(code, resp_headers)
        raise StatusPostError(
            f"POST {where} answered {code}: {excerpt or _reason(code)}",
            retryable=retryable,
            status=code,
            retry_after=_retry_after_seconds(resp_headers, time.time()) if retryable else None,
        )


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "no reason given"


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

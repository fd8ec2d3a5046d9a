"""The one outbound HTTP client: registries, ARM run logs and commit-status APIs all go through it.

Callers talk to hosts that hold credentials or signed URLs, so the client is deliberately plain:
it never follows a redirect (urllib would resend ``Authorization`` to wherever it points), never
raises for a status (the caller classifies 4xx/5xx itself), always has a timeout, verifies TLS
unless told otherwise, and turns every connection, TLS and read failure into ``ConnectionFailed``.
It uses only the standard library (``urllib``), with the system's proxy settings; each request
opens its own connection.

It also holds the one ``Retry-After`` parser (RFC 9110 §10.2.3).

Not imported at cold start: ``shared.platform.http`` (the inbound types) stays cheap.
"""

from __future__ import annotations

import email.utils
import http.client
import math
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BODY = 4 * 1024 * 1024
_SCHEMES = frozenset({"http", "https"})
# delay-seconds is 1*DIGIT; a decimal fraction is tolerated (some servers send one).
_DELAY_SECONDS_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; None when absent or unreadable.

    RFC 9110 §10.2.3: ``Retry-After = HTTP-date / delay-seconds``. An HTTP-date (any of the three
    formats §5.6.7 says a recipient must accept: IMF-fixdate, RFC 850, asctime, all in GMT) is
    turned into the seconds left from ``now()``, never less than zero.
    """
    if not value:
        return None
    text = value.strip()
    if _DELAY_SECONDS_RE.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime-date carries no zone: HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def tls_context(verify: bool | str = True) -> ssl.SSLContext:
    """``True``: the system's CAs; a path: that CA bundle; ``False``: no verification (tests only)."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()


def display_url(url: str) -> str:
    """The URL without its query or fragment (signatures, upload state, scopes): safe to log."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class ConnectionFailed(OSError):
    """No HTTP answer: the connection, TLS or a read failed, or timed out.

    ``reason`` is the underlying exception; the message names the method and the URL without its
    query, so a signed URL never reaches a log through it.
    """

    def __init__(self, message: str, *, reason: object) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def timed_out(self) -> bool:
        return isinstance(self.reason, TimeoutError)

    @property
    def tls_verification_failed(self) -> bool:
        """A certificate problem is configuration, not weather: retrying will not fix it."""
        return isinstance(self.reason, ssl.SSLCertVerificationError)


def _connection_failed(target: str, exc: BaseException) -> ConnectionFailed:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return ConnectionFailed(f"{target}: timed out", reason=reason)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return ConnectionFailed(f"{target}: TLS verification failed: {reason}", reason=reason)
    return ConnectionFailed(f"{target}: connection failed: {reason}", reason=reason)


@dataclass(frozen=True)
class Response:
    """A whole answer. ``body`` is at most the ``max_body`` asked for; ``truncated`` says it was cut."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes
    url: str
    truncated: bool = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def header_values(self, name: str) -> list[str]:
        """Every value of a header that may repeat (``WWW-Authenticate``, ``Link``)."""
        return self.headers.get_all(name) or []


class StreamedResponse:
    """An answer whose body is read as it arrives (``HttpClient.open``); read errors are mapped too."""

    def __init__(self, raw: http.client.HTTPResponse, url: str, target: str) -> None:
        self._raw = raw
        self.url = url
        self._target = target
        self.status = int(raw.status)
        self.headers: http.client.HTTPMessage = raw.headers

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body (fewer only at its end)."""
        try:
            return self._raw.read(limit)
        except (OSError, http.client.HTTPException) as exc:
            raise _connection_failed(self._target, exc) from exc

    def lines(self) -> Iterator[bytes]:
        """The body line by line, each with its ``\\n``."""
        while True:
            try:
                line = self._raw.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise _connection_failed(self._target, exc) from exc
            if not line:
                return
            yield line


class HttpClient:
    """Sends requests; see the module docstring for what it does and does not do.

    ``tls`` is the context for https (``tls_context(verify)``; default: the system's CAs);
    ``timeout`` bounds each connect and each read, in seconds; ``user_agent`` is sent when given.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tls: ssl.SSLContext | None = None,
        user_agent: str | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._user_agent = user_agent
        # Built by hand, without HTTPErrorProcessor and HTTPRedirectHandler: no status raises and
        # no redirect is followed behind the caller's back.
        self._opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(context=tls if tls is not None else tls_context()),
        ):
            self._opener.add_handler(handler)

    @contextmanager
    def open(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> Iterator[StreamedResponse]:
        """Send one request and hand over the answer before its body is read."""
        if urlsplit(url).scheme.lower() not in _SCHEMES:
            raise ValueError(f"only http and https URLs can be fetched, not {display_url(url)}")
        request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (scheme checked)
        if self._user_agent is not None:
            request.add_header("User-Agent", self._user_agent)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        target = f"{method} {display_url(url)}"
        try:
            raw = self._opener.open(request, timeout=self.timeout if timeout is None else timeout)
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            raise _connection_failed(target, exc) from exc
        with raw:
            yield StreamedResponse(raw, url, target)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> Response:
        """Send one request and read the answer, keeping at most ``max_body`` bytes of its body."""
        with self.open(method, url, headers=headers, body=body, timeout=timeout) as answer:
            data = answer.read(max_body + 1)
            return Response(answer.status, answer.headers, data[:max_body], url, len(data) > max_body)


__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_TIMEOUT",
    "ConnectionFailed",
    "HttpClient",
    "Response",
    "StreamedResponse",
    "display_url",
    "parse_retry_after",
    "tls_context",
]

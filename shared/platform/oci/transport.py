"""How the OCI client reaches a registry: base URLs, redirects, bounded bodies, typed errors.

Built on the one outbound client (``shared.platform.http.client``). Redirects are followed here,
for GET and HEAD only (a blob download is sent to storage), and ``Authorization`` goes only to
the origin it belongs to, never to the host a redirect points at.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

from shared.model.image_refs import DOCKER_HUB as DEFAULT_REGISTRY
from shared.model.image_refs import DOCKER_HUB_ENDPOINT, check_host, normalize_registry
from shared.model.loopback import is_loopback
from shared.platform.http.client import ConnectionFailed, HttpClient, Response, parse_retry_after, tls_context
from shared.platform.http.client import display_url as display
from shared.platform.oci.errors import (
    NotFound,
    RateLimited,
    RegistryError,
    TransientRegistryError,
    Unauthorized,
)

DEFAULT_TIMEOUT = 30.0
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's own limit for a manifest
_MAX_ERROR_BODY = 64 * 1024
_MAX_REDIRECTS = 5
_USER_AGENT = "slipway-oci/0.1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# ACR login server suffixes: Azure public cloud, Azure China, Azure US Government.
ACR_SUFFIXES = (".azurecr.io", ".azurecr.cn", ".azurecr.us")


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def registry_base(registry: str) -> str:
    """What to hand ``RegistryClient`` for a configured registry name: loopback speaks plain http.

    A registry on this machine is a local or test registry (Debian's docker-registry, a
    pull-through mirror), which serves no TLS; every other host is https only.
    """
    host = urlsplit(f"//{registry}").hostname or ""
    return f"http://{registry}" if "://" not in registry and is_loopback(host) else registry


def is_acr(registry: str) -> bool:
    """An Azure Container Registry login server, in any cloud: reached with an Entra ID token
    through its token exchange. A URL or a port around the name is allowed. Only a host that
    ends in a known suffix counts, so that ``x.azurecr.io.example.com`` never receives a token."""
    host = urlsplit(registry if "://" in registry else f"//{registry}").hostname or ""
    return host.endswith(ACR_SUFFIXES) and host not in {s[1:] for s in ACR_SUFFIXES}


def parse_base(registry: str, *, insecure: bool) -> tuple[str, str]:
    """``(registry name, base URL)`` for a host or an ``http(s)://host`` base.

    Plain http is used only when asked: ``insecure=True``, or an explicit ``http://`` base on a
    loopback address (the local test registry).
    """
    text = registry.strip().rstrip("/")
    scheme = "http" if insecure else "https"
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in {"http", "https"} or parts.path or parts.query or parts.fragment:
            raise ValueError(f"invalid registry {registry!r}: expected host[:port] or http(s)://host[:port]")
        if parts.scheme == "http" and not insecure and not is_loopback(parts.hostname or ""):
            raise ValueError(
                f"refusing plain http for {registry!r}: use https, or pass insecure=True for a test registry"
            )
        scheme, text = parts.scheme, parts.netloc
    name = normalize_registry(check_host(text))
    endpoint = DOCKER_HUB_ENDPOINT if name == DEFAULT_REGISTRY else name
    return name, f"{scheme}://{endpoint}"


class RegistryTransport:
    """One registry exchange: TLS, timeouts, bounded bodies, redirects and error classification."""

    def __init__(self, *, verify: bool | str, timeout: float, allow_http: bool, auth_origin: str) -> None:
        self.allow_http = allow_http
        self.auth_origin = auth_origin
        self._http = HttpClient(timeout=timeout, tls=tls_context(verify), user_agent=_USER_AGENT)

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        authorization: str | None = None,
        auth_origin: str | None = None,
        max_body: int = MAX_MANIFEST_BYTES,
    ) -> Response:
        """Send one request; GET and HEAD follow redirects.

        ``authorization`` is sent only to ``auth_origin`` (default: the registry), never to the
        storage host a blob download redirects to.
        """
        allowed = origin(auth_origin or self.auth_origin)
        for _ in range(_MAX_REDIRECTS + 1):
            sent = authorization if origin(url) == allowed else None
            response = self._send_once(method, url, headers, body, sent, max_body)
            location = response.header("Location")
            if response.status not in _REDIRECTS or method not in {"GET", "HEAD"} or not location:
                return response
            url = urljoin(url, location)
        raise RegistryError(f"{method} {display(url)}: more than {_MAX_REDIRECTS} redirects")

    def _send_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        authorization: str | None,
        max_body: int,
    ) -> Response:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in {"http", "https"} or (scheme == "http" and not self.allow_http):
            raise RegistryError(f"refusing to send {method} to {display(url)}: only https is allowed here")
        sent = dict(headers or {})
        if authorization is not None:
            sent["Authorization"] = authorization
        target = f"{method} {display(url)}"
        try:
            with self._http.open(method, url, headers=sent, body=body) as raw:
                success = 200 <= raw.status < 300
                limit = max_body if success else _MAX_ERROR_BODY
                declared = raw.header("Content-Length")
                if success and declared and declared.isdigit() and int(declared) > limit and method != "HEAD":
                    raise RegistryError(
                        f"{target}: response of {declared} bytes exceeds the {limit}-byte limit"
                    )
                data = b"" if method == "HEAD" else raw.read(limit + 1)
                if len(data) > limit:
                    if success:
                        raise RegistryError(f"{target}: response exceeds the {limit}-byte limit")
                    data = data[:limit]
                return Response(raw.status, raw.headers, data, url)
        except ConnectionFailed as exc:
            # A certificate problem is configuration, not weather: retrying will not fix it.
            kind = RegistryError if exc.tls_verification_failed else TransientRegistryError
            raise kind(str(exc)) from exc


def error_details(body: bytes) -> tuple[list[str], str]:
    """Codes and messages from distribution's ``{"errors": [{"code", "message"}]}`` error body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return [], ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return [], ""
    codes = [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")]
    messages = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
    return codes, "; ".join(messages)


def raise_for_status(response: Response, target: str, expected: Sequence[int]) -> None:
    """Turn an unexpected status into the right ``RegistryError`` subclass."""
    status = response.status
    if status in expected:
        return
    codes, message = error_details(response.body)
    detail = (
        f"{target}: HTTP {status}"
        + (f" {', '.join(codes)}" if codes else "")
        + (f": {message}" if message else "")
    )
    if status == 404:
        raise NotFound(detail, status=status, codes=codes)
    if status in {401, 403}:
        raise Unauthorized(detail, status=status, codes=codes)
    if status == 429:
        retry_after = parse_retry_after(response.header("Retry-After"))
        raise RateLimited(detail, retry_after=retry_after, status=status, codes=codes)
    if status == 408 or status >= 500:
        raise TransientRegistryError(detail, status=status, codes=codes)
    raise RegistryError(detail, status=status, codes=codes)


def json_object(response: Response, target: str) -> dict[str, Any]:
    try:
        data = json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{target}: the answer is not JSON") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{target}: the answer is not a JSON object")
    return data


__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_MANIFEST_BYTES",
    "RegistryTransport",
    "display",
    "error_details",
    "is_acr",
    "json_object",
    "origin",
    "parse_base",
    "raise_for_status",
    "registry_base",
]

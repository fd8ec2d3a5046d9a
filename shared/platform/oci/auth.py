"""Registry authentication: ``WWW-Authenticate`` challenges, token lifetimes, and ACR's exchange.

Public registries answer ``401`` with a Bearer challenge naming a token realm (the distribution
token spec); ACR takes an Entra ID token through its own exchange (``AcrTokenProvider``). Tokens
are cached until shortly before they expire.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urlsplit

from shared.model.image_refs import DOCKER_HUB
from shared.model.loopback import is_loopback
from shared.platform.oci.errors import RegistryError, Unauthorized, UntrustedRealm
from shared.platform.oci.transport import (
    DEFAULT_TIMEOUT,
    RegistryTransport,
    display,
    json_object,
    origin,
    parse_base,
    raise_for_status,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

#: Entra ID audience of the ACR data plane (what ``azure-containerregistry`` asks for).
ACR_AUDIENCE = "https://containerregistry.azure.net/.default"
MAX_TOKEN_BODY = 1024 * 1024
DEFAULT_TOKEN_LIFETIME = 60.0  # the distribution token spec's default for a missing expires_in
_UNKNOWN_JWT_LIFETIME = 60.0  # an ACR token whose expiry cannot be read is not kept long
# Docker Hub's registry sends clients to a token realm on another host: its challenge is
# ``Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`` (Docker's
# "Registry authentication" reference, https://docs.docker.com/reference/api/registry/auth/).
# It is the one well-known realm that lives off the registry's host; any other must be named.
_KNOWN_TOKEN_REALMS = {DOCKER_HUB: frozenset({"auth.docker.io"})}
_CHALLENGE_PARAM_RE = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` challenge (``Bearer realm=...,service=...,scope=...``)."""

    scheme: str  # lowercase: "bearer" or "basic"
    params: Mapping[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")


def parse_challenges(values: Sequence[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values; quoted values may contain commas."""
    challenges = []
    for value in values:
        match = re.match(r"\s*([A-Za-z][\w-]*)\s*(.*)", value, re.DOTALL)
        if match is None:
            continue
        params = {}
        for key, raw in _CHALLENGE_PARAM_RE.findall(match.group(2)):
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params[key.lower()] = raw
        challenges.append(Challenge(match.group(1).lower(), params))
    return challenges


class TokenProvider(Protocol):
    """Supplies registry bearer tokens for a scope (e.g. ``repository:app:pull``) and caches them.

    ``force_refresh`` is set after the registry refused a token the provider returned, so the
    provider must not hand back the same cached token.
    """

    def get_token(self, scope: str, *, force_refresh: bool = False) -> str: ...


@dataclass(frozen=True)
class CachedToken:
    value: str
    expires_at: float


def good_until(now: float, lifetime: float) -> float:
    """Stop using a token a little before it expires (clocks drift, requests take time)."""
    lifetime = max(0.0, lifetime)
    return now + lifetime - min(30.0, lifetime / 4)


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The unverified claims of a JWT, only to read ``exp`` and ``tid``; never used to trust it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _form(fields: Sequence[tuple[str, str]]) -> tuple[bytes, dict[str, str]]:
    return urlencode(fields).encode(), {"Content-Type": "application/x-www-form-urlencoded"}


class AcrTokenProvider:
    """ACR tokens from an Entra ID identity, through ACR's token exchange.

    An Entra token for the registry audience is exchanged at ``/oauth2/exchange`` for an ACR
    refresh token, which ``/oauth2/token`` turns into an access token per scope. Both are JWTs and
    are cached until shortly before their ``exp``; the refresh token serves every scope.
    """

    def __init__(
        self,
        credential: TokenCredential,
        login_server: str,
        *,
        audience: str = ACR_AUDIENCE,
        tenant_id: str | None = None,
        verify: bool | str = True,
        insecure: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service, self.base_url = parse_base(login_server, insecure=insecure)
        self._credential = credential
        self._audience = audience
        self._tenant_id = tenant_id
        self._clock = clock
        self._transport = RegistryTransport(
            verify=verify,
            timeout=timeout,
            allow_http=self.base_url.startswith("http://"),
            auth_origin=self.base_url,
        )
        self._lock = threading.Lock()
        self._refresh: CachedToken | None = None
        self._access: dict[str, CachedToken] = {}

    def get_token(self, scope: str, *, force_refresh: bool = False) -> str:
        with self._lock:
            now = self._clock()
            cached = self._access.get(scope)
            if cached is not None and not force_refresh and now < cached.expires_at:
                return cached.value
            if force_refresh:
                self._refresh = None  # the registry refused us: start again from Entra ID
            reused_refresh = self._refresh is not None and now < self._refresh.expires_at
            try:
                token = self._access_token(scope)
            except Unauthorized:
                if not reused_refresh:
                    raise
                self._refresh = None  # a cached refresh token may have been revoked: exchange again
                token = self._access_token(scope)
            self._access[scope] = token
            return token.value

    def _access_token(self, scope: str) -> CachedToken:
        refresh = self._refresh_token()
        fields = [("grant_type", "refresh_token"), ("service", self.service)]
        fields += [("scope", s) for s in scope.split()]
        fields.append(("refresh_token", refresh))
        data = self._post("/oauth2/token", fields)
        value = data.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryError(f"POST {self.base_url}/oauth2/token: no access_token in the answer")
        return self._cache_entry(value, data.get("expires_in"))

    def _refresh_token(self) -> str:
        now = self._clock()
        if self._refresh is not None and now < self._refresh.expires_at:
            return self._refresh.value
        aad = self._credential.get_token(self._audience)
        tenant = self._tenant_id
        if tenant is None:
            tid = (jwt_claims(aad.token) or {}).get("tid")
            tenant = tid if isinstance(tid, str) else None
        fields = [("grant_type", "access_token"), ("service", self.service)]
        if tenant:
            fields.append(("tenant", tenant))
        fields.append(("access_token", aad.token))
        data = self._post("/oauth2/exchange", fields)
        value = data.get("refresh_token")
        if not isinstance(value, str) or not value:
            raise RegistryError(f"POST {self.base_url}/oauth2/exchange: no refresh_token in the answer")
        self._refresh = self._cache_entry(value, None)
        return value

    def _cache_entry(self, value: str, expires_in: object) -> CachedToken:
        now = self._clock()
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
            return CachedToken(value, good_until(now, float(expires_in)))
        exp = (jwt_claims(value) or {}).get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            return CachedToken(value, good_until(now, float(exp) - now))
        return CachedToken(value, good_until(now, _UNKNOWN_JWT_LIFETIME))

    def _post(self, path: str, fields: Sequence[tuple[str, str]]) -> dict[str, Any]:
        url = self.base_url + path
        body, headers = _form(fields)
        headers["Accept"] = "application/json"
        response = self._transport.send("POST", url, headers=headers, body=body, max_body=MAX_TOKEN_BODY)
        target = f"POST {url}"
        raise_for_status(response, target, (200,))
        return json_object(response, target)


class RealmTokens:
    """Tokens from a Bearer challenge's realm (the distribution token spec) for one registry.

    ``credentials`` go only to a realm on the registry's own host, Docker Hub's
    ``auth.docker.io``, or a host in ``trusted_realm_hosts``, over https (plain http only on
    loopback): a hijacked or hostile registry cannot collect them by pointing its challenge
    elsewhere. Without credentials the realm is asked anonymously.
    """

    def __init__(
        self,
        registry: str,
        base_url: str,
        transport: RegistryTransport,
        *,
        credentials: tuple[str, str] | None,
        trusted_realm_hosts: Iterable[str],
        clock: Callable[[], float],
    ) -> None:
        self._registry = registry
        self._transport = transport
        self._credentials = credentials
        self._clock = clock
        self._hosts = (
            frozenset({urlsplit(base_url).hostname or ""})
            | _KNOWN_TOKEN_REALMS.get(registry, frozenset())
            | frozenset(h.strip().lower() for h in trusted_realm_hosts if h.strip())
        )

    def check(self, realm: str) -> None:
        """Refuse a realm our password may not go to (another host, or plain http off loopback)."""
        parts = urlsplit(realm)
        host = (parts.hostname or "").lower()
        if host not in self._hosts:
            raise UntrustedRealm(
                f"{self._registry}: refusing to send the registry credentials to the token realm "
                f"{display(realm)}, which is not on the registry's host; if it is the registry's own "
                "token service, name its host in SLIPWAY_REGISTRY_AUTH_REALMS"
            )
        if parts.scheme.lower() != "https" and not is_loopback(host):
            raise UntrustedRealm(
                f"{self._registry}: refusing to send the registry credentials over plain http to "
                f"{display(realm)}"
            )

    def fetch(self, challenge: Challenge, scope: str) -> CachedToken:
        """GET the realm with service and scope (Basic credentials if we have them)."""
        realm = challenge.realm
        if not realm or urlsplit(realm).scheme not in {"http", "https"} or not urlsplit(realm).netloc:
            raise RegistryError(f"{self._registry}: the bearer challenge has no usable realm ({realm!r})")
        params = [("service", challenge.service)] if challenge.service else []
        params += [("scope", s) for s in scope.split()]
        url = realm + (("&" if urlsplit(realm).query else "?") + urlencode(params) if params else "")
        authorization = None
        if self._credentials is not None:
            self.check(realm)
            authorization = basic_header(*self._credentials)
        response = self._transport.send(
            "GET",
            url,
            headers={"Accept": "application/json"},
            authorization=authorization,
            auth_origin=origin(realm),
            max_body=MAX_TOKEN_BODY,
        )
        target = f"GET {display(url)}"
        raise_for_status(response, target, (200,))
        data = json_object(response, target)
        value = data.get("token") or data.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryError(f"{target}: no token in the answer")
        expires_in = data.get("expires_in")
        lifetime = DEFAULT_TOKEN_LIFETIME
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
            lifetime = float(expires_in)
        return CachedToken(value, good_until(self._clock(), lifetime))


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


__all__ = [
    "ACR_AUDIENCE",
    "AcrTokenProvider",
    "CachedToken",
    "Challenge",
    "RealmTokens",
    "TokenProvider",
    "basic_header",
    "good_until",
    "jwt_claims",
    "parse_challenges",
]

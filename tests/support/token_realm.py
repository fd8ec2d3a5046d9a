"""A bearer-token realm and authenticating proxy in front of the real registry (``token_server``).

The challenge flow (401 → realm → token → retry) runs against the real registry; it can script
failures (429, 503, slow answers) and records every request. The scope rules (``grants``,
``covers``) are distribution's, and the fake ACRs reuse them.
"""

from __future__ import annotations

import base64
import http.client
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from shared.platform.oci import RegistryClient
from tests.support.loopback_server import Answer, RecordedRequest, serve_loopback
from tests.support.oci_registry import OciRegistry, json_bytes, rfc3339


def registry_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    body = json_bytes({"errors": [{"code": code, "message": message}]})
    return Answer(status, {"Content-Type": "application/json", **(headers or {})}, body)


_REPO_PATH_RE = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags)/")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


def required_scope(method: str, path: str) -> str | None:
    """The token scope distribution's token auth demands for a request (None: any valid token)."""
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    match = _REPO_PATH_RE.match(path)
    if match is None:
        return None
    action = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method, "pull,push")
    return f"repository:{match.group('name')}:{action}"


def grants(scopes: Sequence[str]) -> set[tuple[str, str, str]]:
    """``{(type, name, action)}`` for scopes like ``repository:app:pull,push``."""
    granted = set()
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        for action in actions.split(","):
            granted.add((kind, name, action))
    return granted


def covers(granted: set[tuple[str, str, str]], scope: str) -> bool:
    return grants([scope]) <= granted


# -- bearer-token realm in front of the real registry --------------------------------------------


class TokenServer:
    """A token realm and an authenticating proxy to ``upstream`` on one loopback port.

    Registry requests without a token that covers their scope get distribution's 401 challenge
    (``Bearer realm="<url>/token",service="<service>",scope="<scope>"``); ``/token`` issues opaque
    tokens for whatever scope is asked (with Basic ``credentials`` when set). Scripted answers
    (``fail_next``) replace the next registry or realm answers.
    """

    service = "slipway-test-registry"

    def __init__(self, upstream: OciRegistry) -> None:
        self.upstream = upstream
        self.port = 0
        self.expires_in: int | None = 300
        self.token_field = "token"
        self.credentials: tuple[str, str] | None = None
        self.requests: list[RecordedRequest] = []  # registry requests, as received
        self.token_requests: list[RecordedRequest] = []  # realm requests
        self._tokens: dict[str, tuple[set[tuple[str, str, str]], float]] = {}
        self._scripted: dict[str, list[Answer]] = {"registry": [], "token": []}
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def client(self, **kwargs: Any) -> RegistryClient:
        return RegistryClient(self.url, **kwargs)

    def fail_next(
        self,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        times: int = 1,
        delay: float = 0.0,
        target: str = "registry",
    ) -> None:
        """Answer the next ``times`` registry (or ``target="token"``: realm) requests with this."""
        with self._lock:
            for _ in range(times):
                self._scripted[target].append(Answer(status, dict(headers or {}), body, delay))

    def revoke_all(self) -> None:
        """Forget every token issued (as if they expired early)."""
        with self._lock:
            self._tokens.clear()

    def handle(self, request: RecordedRequest) -> Answer:
        if request.path == "/token":
            return self._token(request)
        with self._lock:
            self.requests.append(request)
            if self._scripted["registry"]:
                return self._scripted["registry"].pop(0)
        scope = required_scope(request.method, request.path)
        auth = request.headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        with self._lock:
            grant = self._tokens.get(token) if token else None
        valid = grant is not None and time.monotonic() < grant[1]
        if not valid or (scope is not None and grant is not None and not covers(grant[0], scope)):
            challenge = f'Bearer realm="{self.realm}",service="{self.service}"'
            if scope is not None:
                challenge += f',scope="{scope}"'
            if valid:
                challenge += ',error="insufficient_scope"'
            return registry_error(
                401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge}
            )
        return self._forward(request)

    def _token(self, request: RecordedRequest) -> Answer:
        with self._lock:
            self.token_requests.append(request)
            if self._scripted["token"]:
                return self._scripted["token"].pop(0)
        if request.method != "GET":
            return Answer(405, {}, b"")
        if self.credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if request.headers.get("authorization") != expected:
                return Answer(401, {"Content-Type": "application/json"}, b'{"details":"bad credentials"}')
        if request.params.get("service") != [self.service]:
            return Answer(400, {"Content-Type": "application/json"}, b'{"details":"unknown service"}')
        token = secrets.token_hex(16)
        lifetime = self.expires_in if self.expires_in is not None else 60
        with self._lock:
            self._tokens[token] = (grants(request.params.get("scope", [])), time.monotonic() + lifetime)
        answer: dict[str, Any] = {self.token_field: token, "issued_at": rfc3339(None)}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return Answer(200, {"Content-Type": "application/json"}, json_bytes(answer))

    def _forward(self, request: RecordedRequest) -> Answer:
        """Relay to the real registry (without our Authorization), rewriting its Location headers."""
        target = request.path + (f"?{request.query}" if request.query else "")
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP and k != "authorization"}
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=10)
        try:
            connection.request(request.method, target, body=request.body or None, headers=headers)
            response = connection.getresponse()
            body = response.read()
            relayed: dict[str, str] = {}
            for name, value in response.getheaders():
                if name.lower() in _HOP_BY_HOP:
                    continue
                if name.lower() in {"location", "link"}:
                    value = value.replace(self.upstream.url, self.url)
                relayed[name] = value
            return Answer(response.status, relayed, body)
        finally:
            connection.close()


@pytest.fixture
def token_server(oci_registry: OciRegistry) -> Iterator[TokenServer]:
    """A bearer-token realm and authenticating proxy in front of the session's real registry."""
    server = TokenServer(oci_registry)
    with serve_loopback(server.handle) as port:
        server.port = port
        yield server

"""An HTTPS loopback stand-in for ACR's Entra ID token exchange (``fake_acr``).

``/oauth2/exchange`` and ``/oauth2/token`` as ACR answers them, a manifest endpoint that checks
the resulting bearer token, and ``FakeAadCredential``, a static Entra ID ``TokenCredential``.
The certificate comes from the session's ``oci_test_ca``.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
import trustme
from azure.core.credentials import AccessToken

from shared.platform.oci import (
    MEDIA_TYPE_OCI_MANIFEST,
    compute_digest,
)
from tests.support.loopback_server import Answer, RecordedRequest, loopback_tls, make_test_ca, serve_loopback
from tests.support.oci_registry import json_bytes
from tests.support.token_realm import covers, grants, registry_error


def fake_jwt(claims: Mapping[str, Any]) -> str:
    """An unsigned JWT-shaped token: clients only read ``exp``/``tid`` from it, never verify it."""

    def part(data: Mapping[str, Any]) -> str:
        return base64.urlsafe_b64encode(json_bytes(data)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2ln"


class FakeAadCredential:
    """A static Entra ID ``TokenCredential``: records the scopes asked for."""

    def __init__(self, token: str, expires_on: int | None = None) -> None:
        self.token = token
        self.expires_on = expires_on or int(time.time()) + 3600
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, self.expires_on)


class FakeAcr:
    """ACR's token endpoints and a manifest endpoint, over HTTPS with a test CA.

    ``/oauth2/exchange`` checks the form against the reference (grant_type, service, tenant,
    access_token) and issues a refresh JWT; ``/oauth2/token`` checks grant_type, service, scope
    and refresh_token and issues an access JWT for the scopes; ``/v2/<repo>/manifests/<tag>``
    answers 401 with ACR's challenge unless the bearer token grants pull on the repository.
    """

    tenant_id = "72f988bf-0000-4000-8000-2d7cd011db47"
    #: ``azure-containerregistry`` sends no tenant; ``shared.platform.oci.AcrTokenProvider`` does.
    require_tenant = True

    def __init__(self, ca_path: str) -> None:
        self.ca_path = ca_path
        self.port = 0
        self.aad_token = fake_jwt({"aud": "https://containerregistry.azure.net", "tid": self.tenant_id})
        self.credential = FakeAadCredential(self.aad_token)
        self.refresh_lifetime = 3 * 3600
        self.access_lifetime = 75 * 60
        self.requests: list[RecordedRequest] = []
        self.images: dict[tuple[str, str], bytes] = {}
        self.issued_refresh_tokens: list[str] = []
        self.issued_access_tokens: list[str] = []
        self._access_tokens: dict[str, set[tuple[str, str, str]]] = {}
        self._lock = threading.Lock()

    @property
    def login_server(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.login_server}"

    def add_image(self, repo: str, tag: str) -> str:
        """Serve a (content-free) OCI manifest for ``repo:tag``; returns its digest."""
        body = json_bytes({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST, "tag": f"{repo}:{tag}"})
        self.images[(repo, tag)] = body
        return compute_digest(body)

    def calls(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def revoke_access_tokens(self) -> None:
        with self._lock:
            self._access_tokens.clear()

    def handle(self, request: RecordedRequest) -> Answer:
        with self._lock:
            self.requests.append(request)
        if request.path == "/oauth2/exchange":
            return self._exchange(request)
        if request.path == "/oauth2/token":
            return self._token(request)
        match = re.fullmatch(r"/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)", request.path)
        if match is None or request.method not in {"GET", "HEAD"}:
            return registry_error(404, "NOT_FOUND", "no such route")
        return self._manifest(request, match.group("repo"), match.group("ref"))

    def _form_problem(self, request: RecordedRequest, required: Sequence[str]) -> str | None:
        if request.method != "POST":
            return "POST required"
        if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return "form-encoded body required"
        form = request.form
        missing = [name for name in required if not form.get(name)]
        if missing:
            return f"missing {', '.join(missing)}"
        if form["service"] != [self.login_server]:
            return f"service must be {self.login_server}"
        return None

    def _exchange(self, request: RecordedRequest) -> Answer:
        required: tuple[str, ...] = ("grant_type", "service", "tenant", "access_token")
        if not self.require_tenant:
            required = tuple(name for name in required if name != "tenant")
        problem = self._form_problem(request, required)
        form = request.form
        if problem is None and form["grant_type"] != ["access_token"]:
            problem = "grant_type must be access_token"
        if problem is None and self.require_tenant and form["tenant"] != [self.tenant_id]:
            problem = "wrong tenant"
        if problem:
            return registry_error(400, "BAD_REQUEST", problem)
        if form["access_token"] != [self.aad_token]:
            return registry_error(401, "UNAUTHORIZED", "the Entra ID token was not accepted")
        token = fake_jwt({"exp": int(time.time()) + self.refresh_lifetime, "jti": secrets.token_hex(8)})
        with self._lock:
            self.issued_refresh_tokens.append(token)
        return Answer(200, {"Content-Type": "application/json"}, json_bytes({"refresh_token": token}))

    def _token(self, request: RecordedRequest) -> Answer:
        problem = self._form_problem(request, ("grant_type", "service", "scope", "refresh_token"))
        form = request.form
        if problem is None and form["grant_type"] != ["refresh_token"]:
            problem = "grant_type must be refresh_token"
        if problem:
            return registry_error(400, "BAD_REQUEST", problem)
        with self._lock:
            known = form["refresh_token"][0] in self.issued_refresh_tokens
        if not known:
            return registry_error(401, "UNAUTHORIZED", "unknown refresh token")
        token = fake_jwt({"exp": int(time.time()) + self.access_lifetime, "jti": secrets.token_hex(8)})
        with self._lock:
            self.issued_access_tokens.append(token)
            self._access_tokens[token] = grants(form["scope"])
        return Answer(200, {"Content-Type": "application/json"}, json_bytes({"access_token": token}))

    def _manifest(self, request: RecordedRequest, repo: str, ref: str) -> Answer:
        scope = f"repository:{repo}:pull"
        auth = request.headers.get("authorization", "")
        with self._lock:
            grant = self._access_tokens.get(auth[len("Bearer ") :]) if auth.startswith("Bearer ") else None
        if grant is None or not covers(grant, scope):
            challenge = (
                f'Bearer realm="{self.url}/oauth2/token",service="{self.login_server}",scope="{scope}"'
            )
            return registry_error(
                401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge}
            )
        body = self.images.get((repo, ref))
        if body is None:
            return registry_error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        headers = {"Content-Type": MEDIA_TYPE_OCI_MANIFEST, "Docker-Content-Digest": compute_digest(body)}
        return Answer(200, headers, body)


@pytest.fixture(scope="session")
def oci_test_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, str]:
    """A test CA for the HTTPS fakes, and its PEM path for clients' ``verify=``."""
    return make_test_ca(tmp_path_factory, "oci-ca")


@pytest.fixture
def fake_acr(oci_test_ca: tuple[trustme.CA, str]) -> Iterator[FakeAcr]:
    """A fresh fake ACR over HTTPS (certificate for 127.0.0.1 from ``oci_test_ca``)."""
    ca, ca_path = oci_test_ca
    context = loopback_tls(ca)
    acr = FakeAcr(ca_path)
    with serve_loopback(acr.handle, tls=context) as port:
        acr.port = port
        yield acr

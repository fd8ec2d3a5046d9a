"""A loopback server speaking the commit-status APIs of GitHub, GitLab, Azure DevOps, Bitbucket
Cloud and Gitea, so the status clients are tested over real HTTP.

It records every request (method, raw path, query, headers, parsed JSON body) and answers like
the host would: 201 with the created status for the documented routes (Azure DevOps: a commit's
and a pull request's), 401 without any credential header, 404 for anything else. ``fail_next``
scripts failures (outages, throttling with ``Retry-After``, revoked tokens). It speaks plain
HTTP on 127.0.0.1, which the clients accept for loopback only.

Every API lives under one root: point ``GITHUB_API_URL``, ``GITLAB_API_URL``,
``AZURE_DEVOPS_API_URL``, ``BITBUCKET_API_URL`` and ``GITEA_BASE_URL`` at ``settings()``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.loopback_server import LoopbackHandler, LoopbackServer, bind_loopback, port_of, serving

SHA = r"(?P<sha>[0-9a-f]{40}|[0-9a-f]{64})"
# Paths as sent on the wire: GitLab's project path stays percent-encoded (one segment).
ROUTES: dict[str, re.Pattern[str]] = {
    "github": re.compile(rf"^/github/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/statuses/{SHA}$"),
    "gitlab": re.compile(rf"^/gitlab/projects/(?P<project>[^/]+)/statuses/{SHA}$"),
    "azure-devops": re.compile(
        rf"^/ado/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/git/repositories/(?P<repo>[^/]+)"
        rf"/commits/{SHA}/statuses$"
    ),
    # Pull Request Statuses - Create: .../repositories/{repositoryId}/pullRequests/{pullRequestId}/statuses
    "azure-devops-pr": re.compile(
        r"^/ado/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/git/repositories/(?P<repo>[^/]+)"
        r"/pullRequests/(?P<number>[1-9][0-9]*)/statuses$"
    ),
    "bitbucket": re.compile(
        rf"^/bitbucket/2\.0/repositories/(?P<workspace>[^/]+)/(?P<slug>[^/]+)/commit/{SHA}/statuses/build$"
    ),
    "gitea": re.compile(rf"^/gitea/api/v1/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/statuses/{SHA}$"),
}
_CREDENTIAL_HEADERS = ("authorization", "private-token")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # raw, still percent-encoded
    query: str
    headers: dict[str, str]  # names lowercased
    body: Any  # parsed JSON, or None
    raw_body: bytes = b""

    @property
    def params(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.query).items()}

    @property
    def host(self) -> str | None:
        """Which API the path belongs to, or None."""
        return next((name for name, rx in ROUTES.items() if rx.match(self.path)), None)


@dataclass
class ScriptedResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class GitHostServer:
    """State and controls of one server; handler threads call ``handle``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.requests: list[RecordedRequest] = []
        self._scripted: list[ScriptedResponse] = []
        self._lock = threading.Lock()

    def settings(self, **extra: str) -> dict[str, str]:
        """API overrides pointing every host at this server, plus ``extra`` settings."""
        return {
            "GITHUB_API_URL": f"{self.base_url}/github",
            "GITLAB_API_URL": f"{self.base_url}/gitlab",
            "AZURE_DEVOPS_API_URL": f"{self.base_url}/ado",
            "BITBUCKET_API_URL": f"{self.base_url}/bitbucket",
            "GITEA_BASE_URL": f"{self.base_url}/gitea",
            **extra,
        }

    def fail_next(
        self,
        status: int,
        headers: Mapping[str, str] | None = None,
        *,
        body: Any = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (default body: a JSON message)."""
        if body is None:
            body = {"message": f"scripted failure {status}"}
        with self._lock:
            self._scripted.extend(ScriptedResponse(status, dict(headers or {}), body) for _ in range(times))

    def handle(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.requests.append(request)
            if self._scripted:
                scripted = self._scripted.pop(0)
                return scripted.status, scripted.headers, scripted.body
        host = request.host
        if request.method != "POST" or host is None:
            return 404, {}, {"message": "404 Not Found"}
        if not any(request.headers.get(h) for h in _CREDENTIAL_HEADERS):
            return 401, {}, {"message": "401 Unauthorized"}
        if host.startswith("azure-devops") and request.params.get("api-version") != "7.1":
            return 400, {}, {"message": "api-version must be 7.1"}
        if not isinstance(request.body, dict) or "state" not in request.body:
            return 400, {}, {"message": "state is required"}
        return 201, {}, {"id": len(self.requests), **request.body}


class _Handler(LoopbackHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        raw = self.read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw_body=raw,
        )
        status, headers, payload = self.server.state.handle(request)
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve


class _Server(LoopbackServer):
    state: GitHostServer


@pytest.fixture
def git_host_server() -> Iterator[GitHostServer]:
    """A fresh server per test on an ephemeral loopback port."""
    httpd = bind_loopback(_Server, _Handler)
    httpd.state = GitHostServer(f"http://127.0.0.1:{port_of(httpd)}")
    with serving(httpd, name="git-host-server", poll_interval=0.01):
        yield httpd.state


__all__ = ["ROUTES", "GitHostServer", "RecordedRequest", "git_host_server"]

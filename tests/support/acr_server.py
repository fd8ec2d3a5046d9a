"""A loopback ARM/ACR server over HTTPS, so tests drive the real management SDK end to end.

It serves the two operations Slipway uses, shaped like the REST API (2025-03-01-preview):

* ``POST .../registries/{reg}/scheduleRun`` checks the api-version, the bearer token and the
  ``EncodedTaskRunRequest`` body, and answers with a ``Run`` resource (run ids ``ca1``, ``ca2``...).
* ``GET .../registries/{reg}/runs/{runId}`` returns a run it created.
* ``GET .../registries/{reg}/runs?$filter=...&$top=N`` lists runs (``and`` of ``Field op value``
  clauses on runId, runType, status, createTime, finishTime, taskName, agentPoolName).
* ``POST .../registries/{reg}/runs/{runId}/cancel`` moves a run to ``Canceled``.
* ``POST .../runs/{runId}/listLogSasUrl`` hands out a SAS-signed link to the run's log blob, an
  append blob served with ``Range: bytes=N-`` as Blob Storage serves it (206, or 416 past the end)
  and the ``x-ms-meta-Complete`` metadata once ``set_log(..., complete=True)``; ``append_log`` grows it.

Faults: ``fail_next`` (any status, e.g. 429 with ``Retry-After``), ``reset_next`` (the connection
is dropped without an answer) and ``slow_next`` (the answer comes late).

Anything it rejects gets the ARM error shape ``{"error": {"code", "message"}}``. Tests can script
the next responses with ``fail_next`` (throttling, outages) and read every request back from
``requests``. The TLS certificate comes from a ``trustme`` test CA whose PEM is ``ca_path``; the
SDK is pointed at it with ``connection_verify``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
from azure.core.credentials import AccessToken

from tests.support.loopback_server import (
    LoopbackHandler,
    LoopbackServer,
    bind_loopback,
    loopback_tls,
    make_test_ca,
    port_of,
    serving,
)

API_VERSION = "2025-03-01-preview"
TEST_TOKEN = "test-token"
_REGISTRY_PATH = (
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.ContainerRegistry/registries/(?P<reg>[^/]+)"
)
_SCHEDULE_RUN_RE = re.compile(_REGISTRY_PATH + r"/scheduleRun$", re.IGNORECASE)
_GET_RUN_RE = re.compile(_REGISTRY_PATH + r"/runs/(?P<run>[^/]+)$", re.IGNORECASE)
_LOG_SAS_RE = re.compile(_REGISTRY_PATH + r"/runs/(?P<run>[^/]+)/listLogSasUrl$", re.IGNORECASE)
# Where the run logs live, as ACR's storage would serve them behind a SAS token.
_LOG_BLOB_RE = re.compile(r"^/logs/(?P<run>[^/]+)$")
LOG_SAS_SIGNATURE = "c2FzLXNpZ25hdHVyZQ%3D%3D"
_LIST_RUNS_RE = re.compile(_REGISTRY_PATH + r"/runs$", re.IGNORECASE)
_CANCEL_RUN_RE = re.compile(_REGISTRY_PATH + r"/runs/(?P<run>[^/]+)/cancel$", re.IGNORECASE)
# One clause of a runs.list $filter: ``Field op value`` (value quoted or a bare date-time).
_FILTER_CLAUSE_RE = re.compile(
    r"^\s*(?P<field>\w+)\s+(?P<op>eq|ne|ge|gt|le|lt)\s+'?(?P<value>[^']*)'?\s*$", re.I
)
_FILTER_FIELDS = {
    "runid": "runId",
    "runtype": "runType",
    "status": "status",
    "createtime": "createTime",
    "finishtime": "finishTime",
    "taskname": "task",
    "agentpoolname": "agentPoolName",
}
# Scripted "status" values that are not HTTP: drop the connection, or answer late.
RESET = -1
_OS_VALUES = {"linux", "windows"}
_ARCH_VALUES = {"amd64", "x86", "386", "arm", "arm64"}


class StaticTokenCredential:
    """A ``TokenCredential`` that always returns the same token (what the server expects)."""

    def __init__(self, token: str = TEST_TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, 4102444800)  # 2100-01-01


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str  # the raw query string, e.g. "api-version=2025-03-01-preview"
    headers: dict[str, str]
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    raw_body: bytes = b""

    @property
    def params(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.query).items()}


@dataclass
class ScriptedResponse:
    status: int  # RESET: close the connection without answering
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0  # seconds to wait before answering (a slow server)
    passthrough: bool = False  # after the delay, answer as usual


class AcrServer:
    """State and controls of one server; the handler thread calls ``handle``."""

    def __init__(self, base_url: str, ca_path: str, *, token: str = TEST_TOKEN) -> None:
        self.base_url = base_url
        self.ca_path = ca_path
        self.token = token
        self.requests: list[RecordedRequest] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, str] = {}
        self.logs_complete: set[str] = set()  # runs whose log blob carries the Complete metadata
        self.run_request_ids: dict[str, str | None] = {}
        self._scripted: list[ScriptedResponse] = []
        self._next_run = 1
        self._lock = threading.Lock()
        # Stamps createTime & co.; tests with a controlled clock put theirs here.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        # Called for every request before the script: a response to give instead, or None.
        self.fault_hook: Callable[[RecordedRequest], ScriptedResponse | None] | None = None

    # -- controls for tests ------------------------------------------------------------------

    def fail_next(
        self, status: int, *, headers: Mapping[str, str] | None = None, body: Any = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (default body: an ARM error)."""
        if body is None:
            body = {"error": {"code": f"Http{status}", "message": f"scripted failure {status}"}}
        with self._lock:
            for _ in range(times):
                self._scripted.append(ScriptedResponse(status, dict(headers or {}), body))

    def reset_next(self, *, times: int = 1) -> None:
        """Drop the connection of the next ``times`` requests without an answer (a reset)."""
        with self._lock:
            self._scripted.extend(ScriptedResponse(RESET) for _ in range(times))

    def slow_next(self, seconds: float, *, times: int = 1) -> None:
        """Handle the next ``times`` requests normally (a run is created), but answer ``seconds`` late."""
        with self._lock:
            self._scripted.extend(
                ScriptedResponse(200, delay=seconds, passthrough=True) for _ in range(times)
            )

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        error: str | None = None,
        output_images: list[dict[str, str]] | None = None,
    ) -> None:
        """Move a run on, stamping the times ACR stamps (start once running, finish at the end)."""
        with self._lock:
            properties = self.runs[run_id]["properties"]
            properties["status"] = status
            properties["lastUpdatedTime"] = self._now()
            if status != "Queued":
                properties.setdefault("startTime", self._now())
            if status in ("Succeeded", "Failed", "Canceled", "Error", "Timeout"):
                properties["finishTime"] = self._now()
            if error is not None:
                properties["runErrorMessage"] = error
            if output_images is not None:
                properties["outputImages"] = output_images

    def schedule_runs(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.lower().endswith("/schedulerun")]

    # -- request handling --------------------------------------------------------------------

    def _now(self) -> str:
        return self.clock().astimezone(UTC).isoformat().replace("+00:00", "Z")

    def request_id_of(self, run_id: str) -> str | None:
        """The slipwayRequestId value the run was started with."""
        with self._lock:
            return self.run_request_ids.get(run_id)

    def cancelled(self) -> list[str]:
        """Run ids cancelled through runs.cancel, in order."""
        return [
            m.group("run")
            for r in self.requests
            if r.method == "POST" and (m := _CANCEL_RUN_RE.match(r.path))
        ]

    def handle(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.requests.append(request)
            scripted = self._scripted.pop(0) if self._scripted else None
        if scripted is None and self.fault_hook is not None:
            scripted = self.fault_hook(request)
        if scripted is not None:
            if scripted.passthrough:
                # Do the work now, answer late: the client may give up on a run that exists.
                answer = self._answer(request)
                time.sleep(scripted.delay)
                return answer
            if scripted.delay:
                time.sleep(scripted.delay)
            return scripted.status, scripted.headers, scripted.body
        return self._answer(request)

    def set_log(self, run_id: str, text: str, *, complete: bool = False) -> None:
        """The run's log, served behind the SAS link that ``listLogSasUrl`` hands out; ``complete``
        adds the blob metadata ACR sets when the log is whole (``x-ms-meta-Complete``)."""
        with self._lock:
            self.logs[run_id] = text
            if complete:
                self.logs_complete.add(run_id)

    def append_log(self, run_id: str, text: str) -> None:
        """More of a run's log, as ACR appends blocks to the append blob while the run writes."""
        with self._lock:
            self.logs[run_id] = self.logs.get(run_id, "") + text

    def log_reads(self, run_id: str) -> list[RecordedRequest]:
        """The reads of a run's log blob, in order."""
        return [r for r in self.requests if r.method == "GET" and r.path == f"/logs/{run_id}"]

    def _answer(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        if request.method == "GET" and (m := _LOG_BLOB_RE.match(request.path)):
            # The log blob: authorised by its SAS signature, not by ARM's bearer token.
            if f"sig={LOG_SAS_SIGNATURE}" not in request.query:
                return 403, {}, {"error": "AuthenticationFailed"}
            with self._lock:
                text = self.logs.get(m.group("run"))
                complete = m.group("run") in self.logs_complete
            if text is None:
                return 404, {}, {"error": "BlobNotFound"}
            return _log_answer(text.encode(), request.headers.get("range"), complete)
        if request.params.get("api-version") != API_VERSION:
            return _error(400, "InvalidApiVersionParameter", f"api-version must be {API_VERSION}")
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.token}":
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        if request.method == "POST" and (m := _SCHEDULE_RUN_RE.match(request.path)):
            problem = _check_run_request(request.body)
            if problem:
                return _error(400, "InvalidRequestBody", problem)
            return 200, {}, self._create_run(m.group("sub"), m.group("rg"), m.group("reg"), request.body)
        if request.method == "GET" and (m := _LIST_RUNS_RE.match(request.path)):
            with self._lock:
                runs = list(self.runs.values())
            try:
                matching = [run for run in runs if _matches(run["properties"], request.params.get("$filter"))]
            except ValueError as exc:
                return _error(400, "InvalidFilter", str(exc))
            top = int(request.params.get("$top") or len(matching) or 1)
            return 200, {}, {"value": matching[:top]}
        if request.method == "POST" and (m := _CANCEL_RUN_RE.match(request.path)):
            with self._lock:
                known = m.group("run") in self.runs
            if not known:
                return _error(404, "ResourceNotFound", f"run {m.group('run')} was not found")
            self.set_status(m.group("run"), "Canceled")
            return 200, {}, None
        if request.method == "POST" and (m := _LOG_SAS_RE.match(request.path)):
            with self._lock:
                known = m.group("run") in self.runs
            if not known:
                return _error(404, "ResourceNotFound", f"run {m.group('run')} was not found")
            link = f"{self.base_url}/logs/{m.group('run')}?sv=2026-01-01&sr=b&sp=r&sig={LOG_SAS_SIGNATURE}"
            return 200, {}, {"logLink": link, "logArtifactLink": None}
        if request.method == "GET" and (m := _GET_RUN_RE.match(request.path)):
            with self._lock:
                run = self.runs.get(m.group("run"))
            if run is None:
                return _error(404, "ResourceNotFound", f"run {m.group('run')} was not found")
            return 200, {}, run
        return _error(404, "NotFound", f"no route for {request.method} {request.path}")

    def _create_run(self, sub: str, rg: str, reg: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            run_id = f"ca{self._next_run}"
            self._next_run += 1
            now = self._now()
            platform = body["platform"]
            run = {
                "id": (
                    f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry"
                    f"/registries/{reg}/runs/{run_id}"
                ),
                "name": run_id,
                "type": "Microsoft.ContainerRegistry/registries/runs",
                "properties": {
                    "runId": run_id,
                    "status": "Queued",
                    "lastUpdatedTime": now,
                    "runType": "QuickRun",
                    "createTime": now,
                    "provisioningState": "Succeeded",
                    "isArchiveEnabled": bool(body.get("isArchiveEnabled", False)),
                    "platform": {"os": platform["os"], "architecture": platform.get("architecture", "amd64")},
                    "agentConfiguration": body.get("agentConfiguration", {"cpu": 2}),
                    **({"agentPoolName": body["agentPoolName"]} if body.get("agentPoolName") else {}),
                },
            }
            values = {v.get("name"): v.get("value") for v in body.get("values", []) if isinstance(v, dict)}
            self.runs[run_id] = run
            self.run_request_ids[run_id] = values.get("slipwayRequestId")
            return run


def _matches(properties: dict[str, Any], query: str | None) -> bool:
    """``$filter`` as ACR reads it, for the clauses Slipway sends: ``and`` of ``Field op value``."""
    if not query:
        return True
    for clause in re.split(r"\s+and\s+", query.strip(), flags=re.I):
        match = _FILTER_CLAUSE_RE.match(clause)
        if match is None or match.group("field").lower() not in _FILTER_FIELDS:
            raise ValueError(f"unsupported filter clause {clause!r}")
        have = str(properties.get(_FILTER_FIELDS[match.group("field").lower()]) or "")
        want = match.group("value")
        if match.group("field").lower().endswith("time"):
            have_t, want_t = _parse_time(have) if have else None, _parse_time(want)
            if have_t is None:
                return False
            ok = {
                "eq": have_t == want_t,
                "ne": have_t != want_t,
                "ge": have_t >= want_t,
                "gt": have_t > want_t,
                "le": have_t <= want_t,
                "lt": have_t < want_t,
            }[match.group("op").lower()]
        else:
            ok = (have.lower() == want.lower()) == (match.group("op").lower() == "eq")
        if not ok:
            return False
    return True


def _log_answer(blob: bytes, range_header: str | None, complete: bool) -> tuple[int, dict[str, str], Any]:
    """Get Blob on the append blob: the whole blob, or ``Range: bytes=N-`` as Blob Storage answers
    it (206 with the bytes from N, or 416 when N is at or past the end)."""
    headers = {"x-ms-blob-type": "AppendBlob"}
    if complete:
        headers["x-ms-meta-Complete"] = "successful"
    if range_header is None:
        return 200, headers, blob
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
    if match is None:
        return 400, headers, {"error": "InvalidRange"}
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else len(blob) - 1
    if start >= len(blob):
        headers["Content-Range"] = f"bytes */{len(blob)}"
        return 416, headers, {"error": "InvalidRange"}
    end = min(end, len(blob) - 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{len(blob)}"
    return 206, headers, blob[start : end + 1]


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], Any]:
    return status, {}, {"error": {"code": code, "message": message}}


def _check_run_request(body: Any) -> str | None:
    """What ACR would refuse about an EncodedTaskRunRequest body, or None."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if body.get("type") != "EncodedTaskRunRequest":
        return "type must be EncodedTaskRunRequest"
    content = body.get("encodedTaskContent")
    if not isinstance(content, str):
        return "encodedTaskContent is required"
    try:
        task = base64.b64decode(content, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "encodedTaskContent must be base64 of UTF-8 text"
    if task.splitlines()[:1] != ["version: v1.1.0"]:
        return "the task must start with 'version: v1.1.0'"
    platform = body.get("platform")
    if not isinstance(platform, dict) or str(platform.get("os", "")).lower() not in _OS_VALUES:
        return "platform.os must be Linux or Windows"
    if "architecture" in platform and str(platform["architecture"]).lower() not in _ARCH_VALUES:
        return "platform.architecture is not supported"
    timeout = body.get("timeout", 3600)
    if not isinstance(timeout, int) or not 300 <= timeout <= 28800:
        return "timeout must be 300..28800"
    values = body.get("values", [])
    if not isinstance(values, list):
        return "values must be a list"
    for value in values:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return "each value needs a name"
        if not isinstance(value.get("value"), str):
            return f"value {value.get('name')} needs a string value"
        if not isinstance(value.get("isSecret", False), bool):
            return f"value {value.get('name')}: isSecret must be a boolean"
    return _check_credentials(body.get("credentials"))


# containerregistry_build.json (2025-03-01-preview): SourceRegistryLoginMode and SecretObjectType.
_LOGIN_MODES = {"None", "Default"}
_SECRET_OBJECT_TYPES = {"Opaque", "Vaultsecret"}


def _check_credentials(credentials: Any) -> str | None:
    """``credentials`` as the REST spec shapes it (Credentials, SourceRegistryCredentials,
    CustomRegistryCredentials keyed by login server, SecretObject), or what is wrong with it."""
    if credentials is None:
        return None
    if not isinstance(credentials, dict) or set(credentials) - {"sourceRegistry", "customRegistries"}:
        return "credentials has only sourceRegistry and customRegistries"
    source = credentials.get("sourceRegistry")
    if source is not None and (not isinstance(source, dict) or source.get("loginMode") not in _LOGIN_MODES):
        return "credentials.sourceRegistry.loginMode must be None or Default"
    custom = credentials.get("customRegistries", {})
    if not isinstance(custom, dict):
        return "credentials.customRegistries must be an object keyed by login server"
    for server, entry in custom.items():
        if not isinstance(entry, dict) or set(entry) - {"userName", "password", "identity"}:
            return f"credentials.customRegistries[{server}] has only userName, password and identity"
        for part in ("userName", "password"):
            secret = entry.get(part)
            if secret is None:
                continue
            if not isinstance(secret, dict) or secret.get("type") not in _SECRET_OBJECT_TYPES:
                return f"credentials.customRegistries[{server}].{part}.type must be Opaque or Vaultsecret"
            if not isinstance(secret.get("value"), str):
                return f"credentials.customRegistries[{server}].{part}.value must be a string"
    return None


class _Handler(LoopbackHandler):
    timeout = 30
    # Headers and body go out in two writes: without NODELAY, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True
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
        if status == RESET:
            # An abrupt close: the client sees a connection reset / no response.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.request.close()
            return
        raw_payload = isinstance(payload, bytes)  # a blob (a run log), not an ARM answer
        data = payload if raw_payload else b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if raw_payload else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", f"req-{len(self.server.state.requests)}")
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
    state: AcrServer


@pytest.fixture(scope="session")
def acr_test_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, str]:
    """One test CA per session (key generation is the slow part); its PEM path for clients."""
    return make_test_ca(tmp_path_factory, "acr-ca")


@pytest.fixture
def acr_server(acr_test_ca: tuple[trustme.CA, str]) -> Iterator[AcrServer]:
    """A fresh server per test: run ids start again at ``ca1``."""
    ca, ca_path = acr_test_ca
    httpd = bind_loopback(_Server, _Handler, tls=loopback_tls(ca))
    httpd.state = AcrServer(f"https://127.0.0.1:{port_of(httpd)}", ca_path)
    with serving(httpd, name="acr-server"):
        yield httpd.state


def decoded_task(request: RecordedRequest) -> str:
    """The task YAML a recorded scheduleRun carried."""
    return base64.b64decode(request.body["encodedTaskContent"]).decode("utf-8")


__all__ = [
    "API_VERSION",
    "TEST_TOKEN",
    "AcrServer",
    "RecordedRequest",
    "StaticTokenCredential",
    "acr_server",
    "acr_test_ca",
    "decoded_task",
]

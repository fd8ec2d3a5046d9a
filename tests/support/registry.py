"""A real OCI registry and loopback auth servers for the registry-client tests (pytest plugin).

* ``oci_registry`` (session) / ``fresh_oci_registry`` (per test): Debian's ``docker-registry``
  (CNCF distribution 2.8) on a free loopback port, with helpers that push images, multi-platform
  indexes with BuildKit-style attestation manifests, and referrers through the OCI API. The
  session instance is shared: ``new_repo()`` gives each test its own repository.
* ``token_server``: a bearer-token realm plus an authenticating proxy in front of ``oci_registry``,
  so the challenge flow (401 → realm → token → retry) runs against the real registry. It can
  script failures (429, 503, slow answers) and records every request.
* ``fake_acr``: an HTTPS loopback stand-in for ACR's ``/oauth2/exchange`` and ``/oauth2/token``
  with a manifest endpoint that checks the resulting bearer token, and ``FakeAadCredential``, a
  static Entra ID ``TokenCredential``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import io
import json
import re
import secrets
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
from azure.core.credentials import AccessToken

from shared.platform.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_MANIFEST,
    RegistryClient,
    compute_digest,
)
from tests.support.ports import free_port

STARTUP_TIMEOUT = 20.0
_PORT_ATTEMPTS = 3
IN_TOTO_MEDIA_TYPE = "application/vnd.in-toto+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
PROVENANCE_PREDICATE = "https://slsa.dev/provenance/v0.2"

PlatformSpec = tuple[str, str] | tuple[str, str, str]  # (os, architecture[, variant])


class RegistryUnavailable(RuntimeError):
    """docker-registry is not installed or did not start; the message says what to do."""


# -- the real registry ---------------------------------------------------------------------------


def registry_executable() -> str:
    """The ``docker-registry`` binary; a missing one is a setup problem, so fail, never skip."""
    path = shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None
    )
    if path is None:
        raise RegistryUnavailable(
            "docker-registry (Debian's CNCF distribution) is not installed: run ./dev setup, "
            "then the tests again."
        )
    return path


def _rfc3339(value: datetime | str | None) -> str:
    if value is None:
        value = datetime.now(UTC)
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _small_layer(content: bytes) -> tuple[bytes, str]:
    """A gzipped tar with one file, and its diff_id (the digest of the uncompressed tar)."""
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    raw_tar = tar_buffer.getvalue()
    return gzip.compress(raw_tar, mtime=0), compute_digest(raw_tar)


@dataclass(frozen=True)
class PushedImage:
    digest: str
    manifest: bytes
    config_digest: str


class OciRegistry:
    """One running ``docker-registry serve`` and helpers that push test content through the OCI API."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, work_dir: Path, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.work_dir = work_dir
        self.storage = work_dir / "storage"
        self.config_path = work_dir / "config.yml"
        self._log_path = log_path
        self._client: RegistryClient | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def client(self, **kwargs: Any) -> RegistryClient:
        """A ``RegistryClient`` for this registry (plain http on loopback)."""
        return RegistryClient(self.url, **kwargs)

    @property
    def _pusher(self) -> RegistryClient:
        if self._client is None:
            self._client = self.client(timeout=10)
        return self._client

    def new_repo(self, prefix: str = "test") -> str:
        """A repository name nobody else uses in this registry (``<prefix>/<12 hex>``)."""
        return f"{prefix}/{uuid.uuid4().hex[:12]}"

    def output(self) -> str:
        try:
            return self._log_path.read_text(errors="replace").strip()
        except OSError:
            return ""

    # -- pushing content -------------------------------------------------------------------------

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = self._pusher.put_blob(repo, data)
        assert digest == compute_digest(data)
        return digest

    def push_manifest(self, repo: str, reference: str | None, body: bytes, media_type: str) -> str:
        """Put a manifest under a tag, or under its own digest when ``reference`` is None."""
        expected = compute_digest(body)
        digest = self._pusher.put_manifest(repo, reference or expected, body, media_type)
        assert digest == expected
        return digest

    def push_image(
        self,
        repo: str,
        tag: str | None,
        *,
        platform: PlatformSpec = ("linux", "amd64"),
        created: datetime | str | None = None,
        layer_content: bytes | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        """Push a single-platform OCI image (config with ``created``, one small layer); its digest.

        Every push is unique unless ``layer_content`` (and ``created``) are given. ``tag=None``
        pushes by digest only (an untagged manifest).
        """
        return self._push_image(repo, tag, platform, created, layer_content, annotations).digest

    def _push_image(
        self,
        repo: str,
        tag: str | None,
        platform: PlatformSpec,
        created: datetime | str | None,
        layer_content: bytes | None,
        annotations: Mapping[str, str] | None,
    ) -> PushedImage:
        content = layer_content if layer_content is not None else f"hello {uuid.uuid4().hex}\n".encode()
        layer, diff_id = _small_layer(content)
        layer_digest = self.push_blob(repo, layer)
        config: dict[str, Any] = {
            "created": _rfc3339(created),
            "architecture": platform[1],
            "os": platform[0],
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        if len(platform) == 3:
            config["variant"] = platform[2]
        config_bytes = _json_bytes(config)
        config_digest = self.push_blob(repo, config_bytes)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {
                "mediaType": MEDIA_TYPE_OCI_CONFIG,
                "digest": config_digest,
                "size": len(config_bytes),
            },
            "layers": [{"mediaType": MEDIA_TYPE_OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        }
        if annotations:
            manifest["annotations"] = dict(annotations)
        body = _json_bytes(manifest)
        digest = self.push_manifest(repo, tag, body, MEDIA_TYPE_OCI_MANIFEST)
        return PushedImage(digest, body, config_digest)

    def _push_attestation(self, repo: str, subject: str, created: str) -> PushedImage:
        """A BuildKit-style attestation manifest: an in-toto provenance statement about ``subject``."""
        statement = _json_bytes(
            {
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": PROVENANCE_PREDICATE,
                "subject": [{"name": "_", "digest": {"sha256": subject.split(":", 1)[1]}}],
                "predicate": {"buildType": "https://mobyproject.org/buildkit@v1", "metadata": {}},
            }
        )
        statement_digest = self.push_blob(repo, statement)
        config_bytes = _json_bytes(
            {
                "architecture": "unknown",
                "os": "unknown",
                "created": created,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [statement_digest]},
            }
        )
        config_digest = self.push_blob(repo, config_bytes)
        body = _json_bytes(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "config": {
                    "mediaType": MEDIA_TYPE_OCI_CONFIG,
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": [
                    {
                        "mediaType": IN_TOTO_MEDIA_TYPE,
                        "digest": statement_digest,
                        "size": len(statement),
                        "annotations": {"in-toto.io/predicate-type": PROVENANCE_PREDICATE},
                    }
                ],
            }
        )
        return PushedImage(self.push_manifest(repo, None, body, MEDIA_TYPE_OCI_MANIFEST), body, config_digest)

    def push_index(
        self,
        repo: str,
        tag: str | None,
        platforms: Sequence[PlatformSpec] = (("linux", "amd64"), ("linux", "arm64")),
        attestation: bool = True,
        *,
        created: datetime | str | None = None,
    ) -> tuple[str, list[str]]:
        """Push a multi-platform OCI index like ``docker buildx`` does; ``(index digest, children)``.

        ``children`` lists the index's manifests in order: one image per platform, then (with
        ``attestation``) one attestation manifest per image, in the same order, each listed with
        platform ``unknown/unknown`` and the ``vnd.docker.reference.*`` annotations.
        """
        stamp = _rfc3339(created)
        descriptors: list[dict[str, Any]] = []
        images: list[PushedImage] = []
        for spec in platforms:
            image = self._push_image(repo, None, spec, stamp, None, None)
            images.append(image)
            platform = {"architecture": spec[1], "os": spec[0]}
            if len(spec) == 3:
                platform["variant"] = spec[2]
            descriptors.append(
                {
                    "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                    "digest": image.digest,
                    "size": len(image.manifest),
                    "platform": platform,
                }
            )
        if attestation:
            for image in images:
                att = self._push_attestation(repo, image.digest, stamp)
                descriptors.append(
                    {
                        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                        "digest": att.digest,
                        "size": len(att.manifest),
                        "annotations": {
                            "vnd.docker.reference.digest": image.digest,
                            "vnd.docker.reference.type": "attestation-manifest",
                        },
                        "platform": {"architecture": "unknown", "os": "unknown"},
                    }
                )
        body = _json_bytes({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": descriptors})
        digest = self.push_manifest(repo, tag, body, MEDIA_TYPE_OCI_INDEX)
        return digest, [d["digest"] for d in descriptors]

    def push_referrer(
        self, repo: str, subject: str, *, artifact_type: str = "application/vnd.example.signature"
    ) -> str:
        """Push an untagged OCI 1.1 artifact whose ``subject`` is ``subject`` (a signature, an SBOM)."""
        subject_manifest = self._pusher.get_manifest(repo, subject)
        empty = self.push_blob(repo, b"{}")
        payload = _json_bytes({"artifact": artifact_type, "nonce": uuid.uuid4().hex})
        payload_digest = self.push_blob(repo, payload)
        body = _json_bytes(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": empty, "size": 2},
                "layers": [{"mediaType": "application/json", "digest": payload_digest, "size": len(payload)}],
                "subject": {
                    "mediaType": subject_manifest.media_type,
                    "digest": subject,
                    "size": len(subject_manifest.raw),
                },
            }
        )
        return self.push_manifest(repo, None, body, MEDIA_TYPE_OCI_MANIFEST)

    def move_tag(self, repo: str, tag: str, **image_options: Any) -> str:
        """Point ``tag`` at a newly pushed single-platform image (what an upstream rebuild does)."""
        return self.push_image(repo, tag, **image_options)

    def add_tag(self, repo: str, tag: str, digest: str) -> None:
        """Point another tag at an existing manifest (what ``docker buildx imagetools create`` does)."""
        manifest = self._pusher.get_manifest(repo, digest)
        self.push_manifest(repo, tag, manifest.raw, manifest.media_type)

    def garbage_collect(self, *, delete_untagged: bool = False) -> str:
        """Run ``docker-registry garbage-collect`` on this registry's storage; its output.

        Only for a registry nobody pushes to meanwhile (``fresh_oci_registry``): distribution's GC
        assumes a quiet registry.
        """
        command = [registry_executable(), "garbage-collect", str(self.config_path)]
        if delete_untagged:
            command.append("--delete-untagged")
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        return done.stdout + done.stderr

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Terminate, then kill if it does not exit within 10 s; remove its storage."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.work_dir, ignore_errors=True)


_REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: slipway-test-secret
"""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=1) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _launch(executable: str, port: int) -> OciRegistry:
    work_dir = Path(tempfile.mkdtemp(prefix="oci-registry-"))
    (work_dir / "storage").mkdir()
    config = work_dir / "config.yml"
    config.write_text(_REGISTRY_CONFIG.format(root=work_dir / "storage", port=port))
    log_path = work_dir / "registry.log"
    with log_path.open("wb") as log:  # a file, not a pipe nobody drains
        process = subprocess.Popen(
            [executable, "serve", str(config)],
            cwd=work_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return OciRegistry(process, port, work_dir, log_path)


def start_registry(*, timeout: float = STARTUP_TIMEOUT) -> OciRegistry:
    """Start ``docker-registry serve`` on a free loopback port and wait until ``/v2/`` answers.

    Another process may take the free port before the registry binds it; an instance that exits
    with "address already in use" is retried on a new port.
    """
    executable = registry_executable()
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        registry = _launch(executable, free_port())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if registry.process.poll() is not None:
                break
            if _answers(registry.url):
                return registry
            time.sleep(0.05)
        exited = registry.process.poll() is not None
        output = registry.output()
        registry.stop()
        if exited and "address already in use" in output and attempt < _PORT_ATTEMPTS:
            continue
        state = (
            f"exited with code {registry.process.returncode}"
            if exited
            else f"did not answer within {timeout:.0f} s"
        )
        raise RegistryUnavailable(
            f"docker-registry ({executable}) on {registry.host} {state}. Its output:\n{output or '(none)'}"
        )
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def running_registry() -> Iterator[OciRegistry]:
    try:
        registry = start_registry()
    except RegistryUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def oci_registry() -> Iterator[OciRegistry]:
    """One registry for the session (it starts in well under a second); use ``new_repo()``."""
    with running_registry() as registry:
        yield registry


@pytest.fixture
def fresh_oci_registry() -> Iterator[OciRegistry]:
    """A private registry for one test (an empty catalog, or storage the test may tamper with)."""
    with running_registry() as registry:
        yield registry


# -- loopback HTTP plumbing ----------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lowercase names
    body: bytes = b""

    @property
    def params(self) -> dict[str, list[str]]:
        """Query parameters (repeatable, like ``scope``)."""
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def form(self) -> dict[str, list[str]]:
        """The form-encoded body's fields."""
        return parse_qs(self.body.decode(), keep_blank_values=True)


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (timeouts)


Handler = Callable[[RecordedRequest], Answer]


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.request.settimeout(15)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = RecordedRequest(
            self.command, parts.path, parts.query, {k.lower(): v for k, v in self.headers.items()}, body
        )
        answer = self.server.handler(request)
        if answer.delay:
            time.sleep(answer.delay)
        self.send_response(answer.status)
        headers = {k.lower(): v for k, v in answer.headers.items()}
        for name, value in answer.headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", headers.get("content-length", str(len(answer.body))))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = _serve
    do_HEAD = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
        return


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    handler: Handler

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that timed out and hung up is expected in these tests


@contextlib.contextmanager
def serve_loopback(handler: Handler, *, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """Run ``handler`` behind a threaded HTTP(S) server on a free loopback port; yields the port."""
    httpd = _HttpServer(("127.0.0.1", 0), _HttpHandler)
    httpd.handler = handler
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="loopback-http", daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _registry_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    body = _json_bytes({"errors": [{"code": code, "message": message}]})
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


def _grants(scopes: Sequence[str]) -> set[tuple[str, str, str]]:
    """``{(type, name, action)}`` for scopes like ``repository:app:pull,push``."""
    granted = set()
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        for action in actions.split(","):
            granted.add((kind, name, action))
    return granted


def _covers(granted: set[tuple[str, str, str]], scope: str) -> bool:
    return _grants([scope]) <= granted


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
        if not valid or (scope is not None and grant is not None and not _covers(grant[0], scope)):
            challenge = f'Bearer realm="{self.realm}",service="{self.service}"'
            if scope is not None:
                challenge += f',scope="{scope}"'
            if valid:
                challenge += ',error="insufficient_scope"'
            return _registry_error(
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
            self._tokens[token] = (_grants(request.params.get("scope", [])), time.monotonic() + lifetime)
        answer: dict[str, Any] = {self.token_field: token, "issued_at": _rfc3339(None)}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return Answer(200, {"Content-Type": "application/json"}, _json_bytes(answer))

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


# -- a fake ACR for the Entra ID token exchange --------------------------------------------------


def fake_jwt(claims: Mapping[str, Any]) -> str:
    """An unsigned JWT-shaped token: clients only read ``exp``/``tid`` from it, never verify it."""

    def part(data: Mapping[str, Any]) -> str:
        return base64.urlsafe_b64encode(_json_bytes(data)).rstrip(b"=").decode()

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
        body = _json_bytes({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST, "tag": f"{repo}:{tag}"})
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
            return _registry_error(404, "NOT_FOUND", "no such route")
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
            return _registry_error(400, "BAD_REQUEST", problem)
        if form["access_token"] != [self.aad_token]:
            return _registry_error(401, "UNAUTHORIZED", "the Entra ID token was not accepted")
        token = fake_jwt({"exp": int(time.time()) + self.refresh_lifetime, "jti": secrets.token_hex(8)})
        with self._lock:
            self.issued_refresh_tokens.append(token)
        return Answer(200, {"Content-Type": "application/json"}, _json_bytes({"refresh_token": token}))

    def _token(self, request: RecordedRequest) -> Answer:
        problem = self._form_problem(request, ("grant_type", "service", "scope", "refresh_token"))
        form = request.form
        if problem is None and form["grant_type"] != ["refresh_token"]:
            problem = "grant_type must be refresh_token"
        if problem:
            return _registry_error(400, "BAD_REQUEST", problem)
        with self._lock:
            known = form["refresh_token"][0] in self.issued_refresh_tokens
        if not known:
            return _registry_error(401, "UNAUTHORIZED", "unknown refresh token")
        token = fake_jwt({"exp": int(time.time()) + self.access_lifetime, "jti": secrets.token_hex(8)})
        with self._lock:
            self.issued_access_tokens.append(token)
            self._access_tokens[token] = _grants(form["scope"])
        return Answer(200, {"Content-Type": "application/json"}, _json_bytes({"access_token": token}))

    def _manifest(self, request: RecordedRequest, repo: str, ref: str) -> Answer:
        scope = f"repository:{repo}:pull"
        auth = request.headers.get("authorization", "")
        with self._lock:
            grant = self._access_tokens.get(auth[len("Bearer ") :]) if auth.startswith("Bearer ") else None
        if grant is None or not _covers(grant, scope):
            challenge = (
                f'Bearer realm="{self.url}/oauth2/token",service="{self.login_server}",scope="{scope}"'
            )
            return _registry_error(
                401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge}
            )
        body = self.images.get((repo, ref))
        if body is None:
            return _registry_error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        headers = {"Content-Type": MEDIA_TYPE_OCI_MANIFEST, "Docker-Content-Digest": compute_digest(body)}
        return Answer(200, headers, body)


@pytest.fixture(scope="session")
def oci_test_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, str]:
    """A test CA for the HTTPS fakes, and its PEM path for clients' ``verify=``."""
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("oci-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


def loopback_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server TLS context with a certificate for 127.0.0.1 and localhost from the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def fake_acr(oci_test_ca: tuple[trustme.CA, str]) -> Iterator[FakeAcr]:
    """A fresh fake ACR over HTTPS (certificate for 127.0.0.1 from ``oci_test_ca``)."""
    ca, ca_path = oci_test_ca
    context = loopback_tls(ca)
    acr = FakeAcr(ca_path)
    with serve_loopback(acr.handle, tls=context) as port:
        acr.port = port
        yield acr


__all__ = [
    "Answer",
    "FakeAadCredential",
    "FakeAcr",
    "OciRegistry",
    "RecordedRequest",
    "RegistryUnavailable",
    "TokenServer",
    "fake_acr",
    "fake_jwt",
    "fresh_oci_registry",
    "loopback_tls",
    "oci_registry",
    "oci_test_ca",
    "required_scope",
    "running_registry",
    "serve_loopback",
    "start_registry",
    "token_server",
]

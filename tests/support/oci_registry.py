"""A real OCI registry for the registry-client tests: Debian's ``docker-registry`` on loopback.

``oci_registry`` (session) / ``fresh_oci_registry`` (per test): CNCF distribution 2.8 on a free
loopback port, with helpers that push images, multi-platform indexes with BuildKit-style
attestation manifests, and referrers through the OCI API. The session instance is shared:
``new_repo()`` gives each test its own repository.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.platform.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_MANIFEST,
    RegistryClient,
    compute_digest,
)
from tests.support.child_server import ChildServer, spawn, start_on_free_port

STARTUP_TIMEOUT = 20.0
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


def rfc3339(value: datetime | str | None) -> str:
    if value is None:
        value = datetime.now(UTC)
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def json_bytes(data: Any) -> bytes:
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


class OciRegistry(ChildServer):
    """One running ``docker-registry serve`` and helpers that push test content through the OCI API."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, work_dir: Path, log_path: Path) -> None:
        super().__init__(process, port, log_path, work_dir)
        self.storage = work_dir / "storage"
        self.config_path = work_dir / "config.yml"
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
            "created": rfc3339(created),
            "architecture": platform[1],
            "os": platform[0],
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        if len(platform) == 3:
            config["variant"] = platform[2]
        config_bytes = json_bytes(config)
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
        body = json_bytes(manifest)
        digest = self.push_manifest(repo, tag, body, MEDIA_TYPE_OCI_MANIFEST)
        return PushedImage(digest, body, config_digest)

    def _push_attestation(self, repo: str, subject: str, created: str) -> PushedImage:
        """A BuildKit-style attestation manifest: an in-toto provenance statement about ``subject``."""
        statement = json_bytes(
            {
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": PROVENANCE_PREDICATE,
                "subject": [{"name": "_", "digest": {"sha256": subject.split(":", 1)[1]}}],
                "predicate": {"buildType": "https://mobyproject.org/buildkit@v1", "metadata": {}},
            }
        )
        statement_digest = self.push_blob(repo, statement)
        config_bytes = json_bytes(
            {
                "architecture": "unknown",
                "os": "unknown",
                "created": created,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [statement_digest]},
            }
        )
        config_digest = self.push_blob(repo, config_bytes)
        body = json_bytes(
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
        stamp = rfc3339(created)
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
        body = json_bytes({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": descriptors})
        digest = self.push_manifest(repo, tag, body, MEDIA_TYPE_OCI_INDEX)
        return digest, [d["digest"] for d in descriptors]

    def push_referrer(
        self, repo: str, subject: str, *, artifact_type: str = "application/vnd.example.signature"
    ) -> str:
        """Push an untagged OCI 1.1 artifact whose ``subject`` is ``subject`` (a signature, an SBOM)."""
        subject_manifest = self._pusher.get_manifest(repo, subject)
        empty = self.push_blob(repo, b"{}")
        payload = json_bytes({"artifact": artifact_type, "nonce": uuid.uuid4().hex})
        payload_digest = self.push_blob(repo, payload)
        body = json_bytes(
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
    process = spawn([executable, "serve", str(config)], work_dir, "registry.log")
    return OciRegistry(process, port, work_dir, work_dir / "registry.log")


def start_registry(*, timeout: float = STARTUP_TIMEOUT) -> OciRegistry:
    """Start ``docker-registry serve`` on a free loopback port and wait until ``/v2/`` answers.

    Another process may take the free port before the registry binds it; an instance that exits
    with "address already in use" is retried on a new port.
    """
    executable = registry_executable()
    return start_on_free_port(
        lambda port: _launch(executable, port),
        lambda registry: _answers(registry.url),
        name=f"docker-registry ({executable})",
        port_in_use="address already in use",
        timeout=timeout,
        interval=0.05,
        unavailable=RegistryUnavailable,
    )


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

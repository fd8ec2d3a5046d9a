"""Manifests and indexes as registries serve them: media types, descriptors, content digests.

A manifest is kept with the exact bytes its digest covers (``raw``), so what is pushed back or
compared is what the registry stored, not a re-serialisation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.model.image_refs import is_digest
from shared.platform.oci.errors import RegistryError

MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
#: Every manifest type we understand. Registries serve OCI manifests only to clients that list the
#: OCI types (distribution answers 404 otherwise), and would convert or refuse the others.
MANIFEST_MEDIA_TYPES = (
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_DOCKER_MANIFEST,
)
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
INDEX_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})
ATTESTATION_REFERENCE_TYPE = "attestation-manifest"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor (an index entry, a config, a layer or a ``subject``)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    @property
    def is_attestation(self) -> bool:
        """BuildKit's attestation manifests (provenance, SBOM) sit in the index as ``unknown/unknown``."""
        return self.annotations.get("vnd.docker.reference.type") == ATTESTATION_REFERENCE_TYPE

    @property
    def attests(self) -> str | None:
        """The digest of the image an attestation manifest is about."""
        return self.annotations.get("vnd.docker.reference.digest") if self.is_attestation else None

    @classmethod
    def from_json(cls, data: Any, where: str) -> Descriptor:
        if not isinstance(data, dict):
            raise RegistryError(f"{where}: a descriptor must be a JSON object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise RegistryError(f"{where}: descriptor without mediaType")
        if not isinstance(digest, str) or not is_digest(digest):
            raise RegistryError(f"{where}: descriptor with an invalid digest {digest!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryError(f"{where}: descriptor with an invalid size {size!r}")
        platform = None
        raw_platform = data.get("platform")
        if isinstance(raw_platform, dict):
            os_name, arch = raw_platform.get("os"), raw_platform.get("architecture")
            if not isinstance(os_name, str) or not isinstance(arch, str):
                raise RegistryError(f"{where}: platform needs os and architecture")
            variant, os_version = raw_platform.get("variant"), raw_platform.get("os.version")
            platform = Platform(
                os_name,
                arch,
                variant if isinstance(variant, str) else None,
                os_version if isinstance(os_version, str) else None,
            )
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise RegistryError(f"{where}: annotations must map strings to strings")
        artifact_type = data.get("artifactType")
        return cls(
            media_type,
            digest,
            size,
            platform,
            dict(annotations),
            artifact_type if isinstance(artifact_type, str) else None,
        )


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as the registry served it: ``raw`` is exactly what ``digest`` covers."""

    media_type: str
    digest: str
    content: dict[str, Any]
    raw: bytes
    manifests: tuple[Descriptor, ...] = ()  # an index's children, in order
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None  # the manifest this one refers to (OCI 1.1 referrers)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def artifact_type(self) -> str | None:
        value = self.content.get("artifactType")
        return value if isinstance(value, str) else None

    @property
    def annotations(self) -> Mapping[str, str]:
        value = self.content.get("annotations")
        return value if isinstance(value, dict) else {}

    @classmethod
    def parse(cls, raw: bytes, *, digest: str, content_type: str | None) -> Manifest:
        """Parse and check the structure; the media type comes from the body, else the header."""
        where = f"manifest {digest}"
        try:
            content = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{where} is not JSON: {exc}") from None
        if not isinstance(content, dict):
            raise RegistryError(f"{where} is not a JSON object")
        declared = content.get("mediaType")
        header_type = (content_type or "").split(";", 1)[0].strip().lower()
        if isinstance(declared, str) and declared:
            media_type = declared
        elif header_type and header_type not in {"application/json", "application/octet-stream"}:
            media_type = header_type
        else:
            media_type = MEDIA_TYPE_OCI_INDEX if "manifests" in content else MEDIA_TYPE_OCI_MANIFEST
        manifests: tuple[Descriptor, ...] = ()
        if "manifests" in content:
            children = content["manifests"]
            if not isinstance(children, list):
                raise RegistryError(f"{where}: manifests must be a list")
            manifests = tuple(
                Descriptor.from_json(c, f"{where} manifests[{i}]") for i, c in enumerate(children)
            )
        layers: tuple[Descriptor, ...] = ()
        if "layers" in content:
            raw_layers = content["layers"]
            if not isinstance(raw_layers, list):
                raise RegistryError(f"{where}: layers must be a list")
            layers = tuple(Descriptor.from_json(c, f"{where} layers[{i}]") for i, c in enumerate(raw_layers))
        config = Descriptor.from_json(content["config"], f"{where} config") if "config" in content else None
        subject = (
            Descriptor.from_json(content["subject"], f"{where} subject") if "subject" in content else None
        )
        return cls(media_type, digest, content, raw, manifests, config, layers, subject)


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """The content digest of ``data`` (``sha256:<hex>`` by default)."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_digest(data: bytes, expected: str, what: str) -> None:
    algorithm = expected.split(":", 1)[0]
    actual = compute_digest(data, algorithm)
    if actual != expected:
        raise RegistryError(f"{what}: content digest is {actual}, expected {expected}")


__all__ = [
    "ATTESTATION_REFERENCE_TYPE",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_MEDIA_TYPES",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_DOCKER_MANIFEST_LIST",
    "MEDIA_TYPE_OCI_CONFIG",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_LAYER",
    "MEDIA_TYPE_OCI_MANIFEST",
    "Descriptor",
    "Manifest",
    "Platform",
    "compute_digest",
    "verify_digest",
]

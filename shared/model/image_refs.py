"""Image references (``python:3.12-slim``, ``mcr.microsoft.com/dotnet/aspnet:8.0``), normalised like Docker.

Base images are written the way people write them in a ``FROM`` line, but a registry event names
an image by login server and full repository path. Both are brought to one form before they are
compared: the registry host in lowercase, ``docker.io`` for Docker Hub (whatever alias it was
written with), ``library/`` in front of Docker Hub's official images, and ``latest`` when neither
a tag nor a digest is given. That is the normalisation of distribution/reference
(``ParseNormalizedNamed``), which is what ``docker pull`` applies.

This module imports nothing from Slipway: the configuration models use it while they are built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
DOMAIN_RE = re.compile(rf"^{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]{{1,5}})?$")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
# Only the algorithms registries use in practice; a digest is compared as text, so it must be canonical.
DIGEST_RE = re.compile(r"^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


@dataclass(frozen=True)
class ImageReference:
    """A normalised reference. ``tag`` is None only when a digest pins the image."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def normalize_registry(host: str) -> str:
    """A registry host as Slipway compares it: lowercase, Docker Hub's aliases as ``docker.io``."""
    lowered = host.strip().lower()
    return DOCKER_HUB if lowered in DOCKER_HUB_ALIASES else lowered


def normalize_repository(registry: str, repository: str) -> str:
    """Docker Hub's official images live under ``library/``; other registries keep the path."""
    path = repository.strip().strip("/")
    if registry == DOCKER_HUB and "/" not in path:
        return f"{OFFICIAL_NAMESPACE}/{path}"
    return path


def is_digest(value: str | None) -> bool:
    return bool(value) and DIGEST_RE.match(value or "") is not None


def parse_image_reference(text: str) -> ImageReference:
    """Parse and normalise ``[registry/]path[:tag][@digest]``; ``ValueError`` says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an image reference must be a non-empty string such as python:3.12-slim")
    value = text.strip()
    remainder, at, digest = value.partition("@")
    if at and not DIGEST_RE.match(digest):
        raise ValueError(f"{text!r}: the digest must be sha256:<64 lowercase hex>")
    tag: str | None = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not TAG_RE.match(tag):
            raise ValueError(f"{text!r}: tag {tag!r} is not a valid tag")
    first, slash, rest = remainder.partition("/")
    # distribution/reference: the first component is a registry when it looks like a host.
    if slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        if not DOMAIN_RE.match(first):
            raise ValueError(f"{text!r}: {first!r} is not a registry host")
        registry, path = normalize_registry(first), rest
    else:
        registry, path = DOCKER_HUB, remainder
    if not PATH_RE.match(path):
        hint = " (repository names are lowercase)" if path.lower() != path else ""
        raise ValueError(f"{text!r}: {path!r} is not a repository path{hint}")
    repository = normalize_repository(registry, path)
    if len(f"{registry}/{repository}") > MAX_NAME_LENGTH:
        raise ValueError(f"{text!r}: the name is longer than {MAX_NAME_LENGTH} characters")
    if tag is None and not at:
        tag = DEFAULT_TAG
    return ImageReference(registry, repository, tag, digest if at else None)

"""Image references (``python:3.12-slim``, ``mcr.microsoft.com/dotnet/aspnet:8.0``), normalised like Docker.

The one reference grammar of Slipway: configuration, event receivers, the digest poller and the
OCI client (``shared.platform.oci``) all parse and validate references here.

Base images are written the way people write them in a ``FROM`` line, but a registry event names
an image by login server and full repository path. Both are brought to one form before they are
compared: the registry host in lowercase, ``docker.io`` for Docker Hub (whatever alias it was
written with), ``library/`` in front of Docker Hub's official images, and ``latest`` when neither
a tag nor a digest is given. That is the normalisation of distribution/reference
(``ParseNormalizedNamed`` and ``splitDockerDomain`` in normalize.go), which is what ``docker
pull`` applies; the grammar is the one at the top of its reference.go:

    reference := name [ ":" tag ] [ "@" digest ]
    name      := [domain '/'] remote-name
    domain    := host [':' port-number]
    host      := domain-name | IPv4address | \\[ IPv6address \\]
    path      := path-component ['/' path-component]*   (lowercase, separators . _ __ -+)
    tag       := /[\\w][\\w.-]{0,127}/

Digests are narrowed to what registries write (sha256/sha512, lowercase hex): a digest is
compared as text, so it must be canonical. Whitespace around a reference (YAML) is dropped;
whitespace inside one is refused.

This module imports nothing from Slipway: the configuration models use it while they are built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
#: The host that serves Docker Hub's registry API (``docker.io`` is only its name).
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255  # distribution/reference: RepositoryNameTotalLengthMax

_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = (
    rf"(?P<host>{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# Anchored with \Z, not $: "$" would let a trailing newline through.
DOMAIN_RE = re.compile(rf"^{_HOST}\Z")
PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*\Z")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
DIGEST_RE = re.compile(r"^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\Z")


def is_digest(value: str | None) -> bool:
    """True for ``sha256:<64 hex>`` or ``sha512:<128 hex>`` (lowercase, as registries write them)."""
    return bool(value) and DIGEST_RE.match(value or "") is not None


def check_digest(value: str, what: str = "digest") -> str:
    if not is_digest(value):
        raise ValueError(f"invalid {what} {value!r}: expected sha256:<64 lowercase hex digits>")
    return value


def check_host(registry: str) -> str:
    """A registry host: a DNS name, an IPv4 address or a bracketed IPv6 one, with an optional port."""
    match = DOMAIN_RE.match(registry)
    if match is None:
        raise ValueError(
            f"invalid registry host {registry!r}: expected a host name or IP with an optional :port"
        )
    port = match.group("port")
    if port is not None and not 0 < int(port) <= 65535:
        raise ValueError(f"invalid registry host {registry!r}: port {port} is out of range")
    return registry


def check_repository(repository: str) -> str:
    """Validate a repository path (``library/python``); registries refuse anything else."""
    if not repository:
        raise ValueError("repository name is empty")
    if repository.lower() != repository:
        raise ValueError(f"{repository!r} is not a repository path: repository names must be lowercase")
    if PATH_RE.match(repository) is None:
        raise ValueError(
            f"invalid repository {repository!r}: use lowercase letters, digits and single separators "
            "(., _, __, -) between path components joined by /"
        )
    return repository


def check_tag(tag: str) -> str:
    if TAG_RE.match(tag) is None:
        raise ValueError(
            f"invalid tag {tag!r}: it is not a valid tag "
            "(up to 128 letters, digits, _, . and -, not starting with . or -)"
        )
    return tag


def check_reference(reference: str) -> str:
    """What follows ``/manifests/`` in a registry URL: a tag or a digest."""
    return check_digest(reference) if ":" in reference else check_tag(reference)


def looks_like_host(first: str) -> bool:
    """distribution/reference (``splitDockerDomain``): the first path component is a registry when
    it has a ``.`` or ``:``, is ``localhost``, or has uppercase letters (namespaces cannot)."""
    return "." in first or ":" in first or first == "localhost" or first.lower() != first


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


def _reference_host(registry: str) -> str:
    """A reference's registry, lowercased unless the case is what marks it as a host.

    ``Foo/bar`` must keep its case to stay a host, and a lowercase single label could not be
    written down as a registry at all.
    """
    check_host(registry)
    lowered = normalize_registry(registry)
    if "." in lowered or ":" in lowered or lowered == "localhost":
        return lowered
    if lowered == registry:
        raise ValueError(
            f"registry {registry!r} would read as a Docker Hub namespace: use a host with a dot or a port"
        )
    return registry


@dataclass(frozen=True)
class ImageReference:
    """A fully qualified image reference; ``str()`` gives ``registry/repository[:tag][@digest]``.

    Construction normalises (lowercase registry, Docker Hub's aliases as ``docker.io``,
    ``library/`` for its official images) and validates every part. ``tag`` is None only when a
    digest pins the image.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        registry = _reference_host(self.registry)
        repository = self.repository
        if registry == DOCKER_HUB and repository and "/" not in repository:
            repository = f"{OFFICIAL_NAMESPACE}/{repository}"
        check_repository(repository)
        if len(registry) + 1 + len(repository) > MAX_NAME_LENGTH:
            raise ValueError(f"the name {registry}/{repository} is longer than {MAX_NAME_LENGTH} characters")
        if self.tag is not None:
            check_tag(self.tag)
        if self.digest is not None:
            check_digest(self.digest)
        if self.tag is None and self.digest is None:
            raise ValueError(f"{registry}/{repository}: a reference needs a tag or a digest")
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "repository", repository)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned (it wins over a tag), else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def endpoint(self) -> str:
        """The host that serves the API (Docker Hub's ``docker.io`` is served at registry-1)."""
        return DOCKER_HUB_ENDPOINT if self.registry == DOCKER_HUB else self.registry

    def with_digest(self, digest: str) -> ImageReference:
        return ImageReference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return f"{self.name}{tag}{digest}"


def parse_image_reference(text: str) -> ImageReference:
    """Parse and normalise ``[registry/]path[:tag][@digest]`` the way ``docker pull`` reads it.

    ``python:3.12`` → ``docker.io/library/python:3.12``; the tag defaults to ``latest`` unless a
    digest pins the image. Raises ``ValueError`` saying what is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the image reference is empty: write one such as python:3.12-slim")
    ref = text.strip()
    if "://" in ref:
        raise ValueError(f"{ref!r}: drop the URL scheme (write host/repository:tag)")
    name, at, digest_text = ref.partition("@")
    digest = check_digest(digest_text, f"digest in {ref!r}") if at else None
    tag: str | None = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not tag:
            raise ValueError(f"{ref!r}: empty tag after ':'")
    if any(ch.isspace() for ch in name):
        raise ValueError(f"{ref!r}: it contains whitespace")
    if not name:
        raise ValueError(f"{ref!r}: no repository name")
    first, sep, rest = name.partition("/")
    registry, repository = (first, rest) if sep and looks_like_host(first) else (DOCKER_HUB, name)
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    try:
        check_repository(repository)  # as written: before Docker Hub's library/ is put in front
        return ImageReference(registry, repository, tag, digest)
    except ValueError as exc:
        raise ValueError(f"{ref!r}: {exc}") from None

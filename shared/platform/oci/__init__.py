"""A small OCI Distribution client: resolve tags, read and write manifests, blobs and tags.

Base-image polling and image retention talk to Docker Hub, MCR, GHCR and ACR through it. It
speaks the registries' auth dialects (the anonymous or Basic bearer-token challenge that public
registries use, Entra ID for ACR through the token exchange) and turns every failure into a typed
error, so a caller never mistakes an outage, a throttle or a missing image for a moved tag.

Only the standard library is used (``urllib``); each request opens its own connection, which is
plenty for a poller that resolves a few dozen references per run.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import http.client
import json
import math
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urljoin, urlsplit

from shared.model.loopback import is_loopback

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DEFAULT_TAG = "latest"
_LEGACY_DOCKER_HUB = "index.docker.io"
# Docker Hub's registry sends clients to a token realm on another host: its challenge is
# ``Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`` (Docker's
# "Registry authentication" reference, https://docs.docker.com/reference/api/registry/auth/).
# It is the one well-known realm that lives off the registry's host; any other must be named.
_KNOWN_TOKEN_REALMS = {DEFAULT_REGISTRY: frozenset({"auth.docker.io"})}

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

#: Entra ID audience of the ACR data plane (what ``azure-containerregistry`` asks for).
ACR_AUDIENCE = "https://containerregistry.azure.net/.default"
ATTESTATION_REFERENCE_TYPE = "attestation-manifest"

DEFAULT_TIMEOUT = 30.0
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's own limit for a manifest
DEFAULT_MAX_BLOB_BYTES = 32 * 1024 * 1024  # configs and small artifacts, not whole layers
_MAX_ERROR_BODY = 64 * 1024
_MAX_TOKEN_BODY = 1024 * 1024
_MAX_REDIRECTS = 5
_MAX_TAG_PAGES = 10_000
_DEFAULT_TOKEN_LIFETIME = 60.0  # the distribution token spec's default for a missing expires_in
_UNKNOWN_JWT_LIFETIME = 60.0  # an ACR token whose expiry cannot be read is not kept long
_USER_AGENT = "slipway-oci/0.1"

# Grammar of docker/distribution's reference package.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(
    rf"(?P<host>{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::(?P<port>[0-9]{{1,5}}))?"
)
_TAG_RE = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_NAME_MAX = 255
_CHALLENGE_PARAM_RE = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')
_LINK_NEXT_RE = re.compile(r'<([^>]*)>\s*;[^,]*\brel\s*=\s*"?next"?', re.IGNORECASE)
_RETRY_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?")


# -- errors --------------------------------------------------------------------------------------


class RegistryError(Exception):
    """A registry call failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, codes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.codes = tuple(codes)  # distribution error codes, e.g. ("MANIFEST_UNKNOWN",)


class NotFound(RegistryError):
    """The repository, tag, manifest or blob does not exist (404)."""


class Unauthorized(RegistryError):
    """The registry or its token service refused our credentials (401, 403)."""


class TransientRegistryError(RegistryError):
    """A 5xx, a timeout or a connection failure: try again later, and assume nothing changed."""


class UntrustedRealm(RegistryError):
    """A challenge asked for our credentials at a realm we may not send them to."""


class RateLimited(TransientRegistryError):
    """429: the registry throttles us; ``retry_after`` is its ``Retry-After`` in seconds, if given."""

    def __init__(
        self, message: str, *, retry_after: float | None, status: int | None = 429, codes: Sequence[str] = ()
    ) -> None:
        super().__init__(message, status=status, codes=codes)
        self.retry_after = retry_after


# -- references ----------------------------------------------------------------------------------


def is_digest(value: str) -> bool:
    """True for ``sha256:<64 hex>`` or ``sha512:<128 hex>`` (lowercase, as registries write them)."""
    return _DIGEST_RE.fullmatch(value) is not None


def _check_digest(value: str, what: str = "digest") -> str:
    if not is_digest(value):
        raise ValueError(f"invalid {what} {value!r}: expected sha256:<64 lowercase hex digits>")
    return value


def _check_host(registry: str) -> str:
    match = _HOST_RE.fullmatch(registry)
    if match is None:
        raise ValueError(
            f"invalid registry host {registry!r}: expected a host name or IP with an optional :port"
        )
    port = match.group("port")
    if port is not None and not 0 < int(port) <= 65535:
        raise ValueError(f"invalid registry host {registry!r}: port {port} is out of range")
    return registry


def _reference_host(registry: str) -> str:
    """A reference's registry, lowercased unless the case is what marks it as a host.

    Docker reads the first path component as a registry only if it has a ``.`` or ``:``, is
    ``localhost``, or has uppercase letters; ``Foo/bar`` must keep its case to stay a host, and a
    lowercase single label could not be written down as a registry at all.
    """
    _check_host(registry)
    lowered = registry.lower()
    if "." in lowered or ":" in lowered or lowered == "localhost":
        return lowered
    if lowered == registry:
        raise ValueError(
            f"registry {registry!r} would read as a Docker Hub namespace: use a host with a dot or a port"
        )
    return registry


def check_repository(repository: str) -> str:
    """Validate a repository path (``library/python``); registries refuse anything else."""
    if not repository:
        raise ValueError("repository name is empty")
    if repository.lower() != repository:
        raise ValueError(f"invalid repository {repository!r}: repository names must be lowercase")
    if _REPOSITORY_RE.fullmatch(repository) is None:
        raise ValueError(
            f"invalid repository {repository!r}: use lowercase letters, digits and single separators "
            "(., _, __, -) between path components joined by /"
        )
    return repository


def _check_tag(tag: str) -> str:
    if _TAG_RE.fullmatch(tag) is None:
        raise ValueError(
            f"invalid tag {tag!r}: up to 128 letters, digits, _, . and -, not starting with . or -"
        )
    return tag


def _check_reference(reference: str) -> str:
    """A manifest reference is a tag or a digest."""
    if ":" in reference:
        return _check_digest(reference)
    return _check_tag(reference)


@dataclass(frozen=True)
class ImageReference:
    """A fully qualified image reference; ``str()`` gives ``registry/repository[:tag][@digest]``.

    Construction normalises like Docker (lowercase registry, ``index.docker.io`` → ``docker.io``,
    ``library/`` for official Docker Hub images) and validates every part.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        registry = _reference_host(self.registry)
        if registry == _LEGACY_DOCKER_HUB:
            registry = DEFAULT_REGISTRY
        repository = self.repository
        if registry == DEFAULT_REGISTRY and repository and "/" not in repository:
            repository = f"library/{repository}"
        check_repository(repository)
        if len(registry) + 1 + len(repository) > _NAME_MAX:
            raise ValueError(f"image name {registry}/{repository} is longer than {_NAME_MAX} characters")
        if self.tag is not None:
            _check_tag(self.tag)
        if self.digest is not None:
            _check_digest(self.digest)
        if self.tag is None and self.digest is None:
            raise ValueError(f"{registry}/{repository}: a reference needs a tag or a digest")
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "repository", repository)

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned (it wins over a tag), else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def endpoint(self) -> str:
        """The host that serves the API (Docker Hub's ``docker.io`` is served at registry-1)."""
        return DOCKER_HUB_ENDPOINT if self.registry == DEFAULT_REGISTRY else self.registry

    def with_digest(self, digest: str) -> ImageReference:
        return ImageReference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(ref: str) -> ImageReference:
    """Parse an image reference the way ``docker pull`` reads it.

    ``python:3.12`` → ``docker.io/library/python:3.12``; the first path component is a registry
    only if it has a ``.`` or ``:``, is ``localhost``, or has uppercase letters; the tag defaults
    to ``latest`` unless a digest pins the image. Raises ``ValueError`` saying what is wrong.
    """
    if not isinstance(ref, str) or not ref:
        raise ValueError("image reference is empty")
    if any(ch.isspace() for ch in ref):
        raise ValueError(f"invalid image reference {ref!r}: it contains whitespace")
    if "://" in ref:
        raise ValueError(f"invalid image reference {ref!r}: drop the URL scheme (write host/repository:tag)")
    name, at, digest_text = ref.partition("@")
    digest: str | None = None
    if at:
        digest = _check_digest(digest_text, f"digest in {ref!r}")
    tag: str | None = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not tag:
            raise ValueError(f"invalid image reference {ref!r}: empty tag after ':'")
    if not name:
        raise ValueError(f"invalid image reference {ref!r}: no repository name")
    first, sep, rest = name.partition("/")
    is_host = "." in first or ":" in first or first == "localhost" or first.lower() != first
    if sep and is_host:
        registry, repository = first, rest
    else:
        registry, repository = DEFAULT_REGISTRY, name
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    try:
        return ImageReference(registry, repository, tag, digest)
    except ValueError as exc:
        raise ValueError(f"invalid image reference {ref!r}: {exc}") from None


# -- manifests -----------------------------------------------------------------------------------


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


def _verify_digest(data: bytes, expected: str, what: str) -> None:
    algorithm = expected.split(":", 1)[0]
    actual = compute_digest(data, algorithm)
    if actual != expected:
        raise RegistryError(f"{what}: content digest is {actual}, expected {expected}")


# -- transport -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _display(url: str) -> str:
    """The URL without its query (upload state, token scopes) for error messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def registry_base(registry: str) -> str:
    """What to hand ``RegistryClient`` for a configured registry name: loopback speaks plain http.

    A registry on this machine is a local or test registry (Debian's docker-registry, a
    pull-through mirror), which serves no TLS; every other host is https only.
    """
    host = urlsplit(f"//{registry}").hostname or ""
    return f"http://{registry}" if "://" not in registry and is_loopback(host) else registry


# ACR login server suffixes: Azure public cloud, Azure China, Azure US Government.
ACR_SUFFIXES = (".azurecr.io", ".azurecr.cn", ".azurecr.us")


def is_acr(registry: str) -> bool:
    """An Azure Container Registry login server, in any cloud: reached with an Entra ID token
    through its token exchange. A URL or a port around the name is allowed. Only a host that
    ends in a known suffix counts, so that ``x.azurecr.io.example.com`` never receives a token."""
    host = urlsplit(registry if "://" in registry else f"//{registry}").hostname or ""
    return host.endswith(ACR_SUFFIXES) and host not in {s[1:] for s in ACR_SUFFIXES}


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()


def _parse_base(registry: str, *, insecure: bool) -> tuple[str, str]:
    """``(registry name, base URL)`` for a host or an ``http(s)://host`` base.

    Plain http is used only when asked: ``insecure=True``, or an explicit ``http://`` base on a
    loopback address (the local test registry).
    """
    text = registry.strip().rstrip("/")
    scheme = "http" if insecure else "https"
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in {"http", "https"} or parts.path or parts.query or parts.fragment:
            raise ValueError(f"invalid registry {registry!r}: expected host[:port] or http(s)://host[:port]")
        if parts.scheme == "http" and not insecure and not is_loopback(parts.hostname or ""):
            raise ValueError(
                f"refusing plain http for {registry!r}: use https, or pass insecure=True for a test registry"
            )
        scheme, text = parts.scheme, parts.netloc
    name = _check_host(text).lower()
    if name == _LEGACY_DOCKER_HUB:
        name = DEFAULT_REGISTRY
    endpoint = DOCKER_HUB_ENDPOINT if name == DEFAULT_REGISTRY else name
    return name, f"{scheme}://{endpoint}"


class _Transport:
    """One HTTP exchange: timeouts, TLS, bounded bodies, redirects and error classification."""

    def __init__(self, *, verify: bool | str, timeout: float, allow_http: bool, auth_origin: str) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.allow_http = allow_http
        self.auth_origin = auth_origin
        # Built by hand so that no handler raises for statuses or follows redirects behind our back:
        # the client classifies statuses itself and must not forward credentials to another host.
        self._opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(context=_tls_context(verify)),
        ):
            self._opener.add_handler(handler)

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        authorization: str | None = None,
        auth_origin: str | None = None,
        max_body: int = MAX_MANIFEST_BYTES,
    ) -> _Response:
        """Send one request; GET and HEAD follow redirects.

        ``authorization`` is sent only to ``auth_origin`` (default: the registry), never to the
        storage host a blob download redirects to.
        """
        origin = _origin(auth_origin or self.auth_origin)
        for _ in range(_MAX_REDIRECTS + 1):
            sent = authorization if _origin(url) == origin else None
            response = self._send_once(method, url, headers, body, sent, max_body)
            location = response.header("Location")
            if (
                response.status not in {301, 302, 303, 307, 308}
                or method not in {"GET", "HEAD"}
                or not location
            ):
                return response
            url = urljoin(url, location)
        raise RegistryError(f"{method} {_display(url)}: more than {_MAX_REDIRECTS} redirects")

    def _send_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        authorization: str | None,
        max_body: int,
    ) -> _Response:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in {"http", "https"} or (scheme == "http" and not self.allow_http):
            raise RegistryError(f"refusing to send {method} to {_display(url)}: only https is allowed here")
        request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (scheme checked above)
        request.add_header("User-Agent", _USER_AGENT)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if authorization is not None:
            request.add_header("Authorization", authorization)
        target = f"{method} {_display(url)}"
        try:
            with self._opener.open(request, timeout=self.timeout) as raw:
                status = int(raw.status)
                limit = max_body if 200 <= status < 300 else _MAX_ERROR_BODY
                declared = raw.headers.get("Content-Length")
                if (
                    200 <= status < 300
                    and declared
                    and declared.isdigit()
                    and int(declared) > limit
                    and method != "HEAD"
                ):
                    raise RegistryError(
                        f"{target}: response of {declared} bytes exceeds the {limit}-byte limit"
                    )
                data = b"" if method == "HEAD" else raw.read(limit + 1)
                if len(data) > limit:
                    if 200 <= status < 300:
                        raise RegistryError(f"{target}: response exceeds the {limit}-byte limit")
                    data = data[:limit]
                return _Response(status, raw.headers, data, url)
        except urllib.error.URLError as exc:
            raise _connection_error(target, exc.reason) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _connection_error(target, exc) from exc


def _connection_error(target: str, reason: object) -> RegistryError:
    if isinstance(reason, ssl.SSLCertVerificationError):
        # A certificate problem is configuration, not weather: retrying will not fix it.
        return RegistryError(f"{target}: TLS verification failed: {reason}")
    if isinstance(reason, TimeoutError):
        return TransientRegistryError(f"{target}: timed out")
    return TransientRegistryError(f"{target}: connection failed: {reason}")


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` in seconds from delta-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if _RETRY_SECONDS_RE.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def _error_details(body: bytes) -> tuple[list[str], str]:
    """Codes and messages from distribution's ``{"errors": [{"code", "message"}]}`` error body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return [], ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return [], ""
    codes = [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")]
    messages = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
    return codes, "; ".join(messages)


def _raise_for_status(response: _Response, target: str, expected: Sequence[int]) -> None:
    """Turn an unexpected status into the right ``RegistryError`` subclass."""
    status = response.status
    if status in expected:
        return
    codes, message = _error_details(response.body)
    detail = (
        f"{target}: HTTP {status}"
        + (f" {', '.join(codes)}" if codes else "")
        + (f": {message}" if message else "")
    )
    if status == 404:
        raise NotFound(detail, status=status, codes=codes)
    if status in {401, 403}:
        raise Unauthorized(detail, status=status, codes=codes)
    if status == 429:
        retry_after = parse_retry_after(response.header("Retry-After"))
        raise RateLimited(detail, retry_after=retry_after, status=status, codes=codes)
    if status == 408 or status >= 500:
        raise TransientRegistryError(detail, status=status, codes=codes)
    raise RegistryError(detail, status=status, codes=codes)


def _json_object(response: _Response, target: str) -> dict[str, Any]:
    try:
        data = json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{target}: the answer is not JSON") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{target}: the answer is not a JSON object")
    return data


# -- authentication ------------------------------------------------------------------------------


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
class _CachedToken:
    value: str
    expires_at: float


def _good_until(now: float, lifetime: float) -> float:
    """Stop using a token a little before it expires (clocks drift, requests take time)."""
    lifetime = max(0.0, lifetime)
    return now + lifetime - min(30.0, lifetime / 4)


def _jwt_claims(token: str) -> dict[str, Any] | None:
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
        self.service, self.base_url = _parse_base(login_server, insecure=insecure)
        self._credential = credential
        self._audience = audience
        self._tenant_id = tenant_id
        self._clock = clock
        self._transport = _Transport(
            verify=verify,
            timeout=timeout,
            allow_http=self.base_url.startswith("http://"),
            auth_origin=self.base_url,
        )
        self._lock = threading.Lock()
        self._refresh: _CachedToken | None = None
        self._access: dict[str, _CachedToken] = {}

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

    def _access_token(self, scope: str) -> _CachedToken:
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
            tid = (_jwt_claims(aad.token) or {}).get("tid")
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

    def _cache_entry(self, value: str, expires_in: object) -> _CachedToken:
        now = self._clock()
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
            return _CachedToken(value, _good_until(now, float(expires_in)))
        exp = (_jwt_claims(value) or {}).get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            return _CachedToken(value, _good_until(now, float(exp) - now))
        return _CachedToken(value, _good_until(now, _UNKNOWN_JWT_LIFETIME))

    def _post(self, path: str, fields: Sequence[tuple[str, str]]) -> dict[str, Any]:
        url = self.base_url + path
        body, headers = _form(fields)
        headers["Accept"] = "application/json"
        response = self._transport.send("POST", url, headers=headers, body=body, max_body=_MAX_TOKEN_BODY)
        target = f"POST {url}"
        _raise_for_status(response, target, (200,))
        return _json_object(response, target)


# -- the client ----------------------------------------------------------------------------------


class RegistryClient:
    """Talks to one registry (``docker.io``, ``mcr.microsoft.com``, ``myacr.azurecr.io``, ...).

    Authentication follows what the registry asks for: on ``401`` with a Bearer challenge it gets a
    token for the challenge's scope from the realm (anonymously, or with ``credentials``) or from
    ``token_provider`` (ACR with Entra ID), caches it per scope until shortly before it expires,
    and retries once; a Basic challenge is answered with ``credentials``. Nothing is retried
    otherwise: errors are raised as ``NotFound``, ``Unauthorized``, ``RateLimited``,
    ``TransientRegistryError`` or ``RegistryError`` for the caller to decide.

    ``credentials`` go only where they belong: to the registry itself (Basic), and to a token realm
    on the registry's own host name, Docker Hub's ``auth.docker.io``, or a host named in
    ``trusted_realm_hosts``, over https (plain http only on loopback). A registry that names any
    other realm gets ``UntrustedRealm`` instead of the password: a hijacked or hostile registry
    cannot collect it by pointing its challenge elsewhere.

    TLS is verified (``verify`` may name a CA bundle); plain http needs ``insecure=True`` or an
    ``http://`` loopback base. ``timeout`` bounds each connect and each read, in seconds.
    """

    def __init__(
        self,
        registry: str,
        *,
        credentials: tuple[str, str] | None = None,
        token_provider: TokenProvider | None = None,
        trusted_realm_hosts: Iterable[str] = (),
        verify: bool | str = True,
        insecure: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if credentials is not None and token_provider is not None:
            raise ValueError("pass credentials or a token_provider, not both")
        self.registry, self.base_url = _parse_base(registry, insecure=insecure)
        self._credentials = credentials
        self._token_provider = token_provider
        self._realm_hosts = (
            frozenset({urlsplit(self.base_url).hostname or ""})
            | _KNOWN_TOKEN_REALMS.get(self.registry, frozenset())
            | frozenset(h.strip().lower() for h in trusted_realm_hosts if h.strip())
        )
        self._max_blob_bytes = max_blob_bytes
        self._clock = clock
        self._transport = _Transport(
            verify=verify,
            timeout=timeout,
            allow_http=self.base_url.startswith("http://"),
            auth_origin=self.base_url,
        )
        self._lock = threading.Lock()
        self._bearer: Challenge | None = None  # realm and service, learned from the first challenge
        self._basic = False  # the registry asked for Basic credentials
        self._scope_alias: dict[str, str] = {}  # the scope we need -> the scope the registry named
        self._tokens: dict[str, _CachedToken] = {}  # realm tokens by scope

    # -- public API ------------------------------------------------------------------------------

    def resolve_digest(self, ref: str | ImageReference) -> str:
        """The digest a tag points at now (the index digest for multi-platform images).

        HEAD is used (Docker Hub does not count it against pull limits); when the registry omits
        ``Docker-Content-Digest`` the manifest is fetched and hashed instead.
        """
        image = self._own_reference(ref)
        url = self._url(image.repository, "manifests", image.reference)
        response = self._call(
            "HEAD", url, scope=_pull(image.repository), headers={"Accept": MANIFEST_ACCEPT}, expected=(200,)
        )
        digest = (response.header("Docker-Content-Digest") or "").strip()
        if digest and not is_digest(digest):
            raise RegistryError(f"HEAD {_display(url)}: malformed Docker-Content-Digest {digest!r}")
        if not digest:
            digest = self.get_manifest(image.repository, image.reference).digest
        if image.digest is not None and digest != image.digest:
            raise RegistryError(f"{image}: the registry answered with digest {digest}")
        return digest

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch a manifest or index by tag or digest, checking its content against the digest."""
        check_repository(repository)
        _check_reference(reference)
        url = self._url(repository, "manifests", reference)
        response = self._call(
            "GET", url, scope=_pull(repository), headers={"Accept": MANIFEST_ACCEPT}, expected=(200,)
        )
        target = f"GET {_display(url)}"
        header_digest = (response.header("Docker-Content-Digest") or "").strip()
        if is_digest(reference):
            _verify_digest(response.body, reference, target)
            digest = reference
        else:
            digest = compute_digest(response.body)
            if header_digest and is_digest(header_digest):
                _verify_digest(response.body, header_digest, target)
                digest = header_digest
        return Manifest.parse(response.body, digest=digest, content_type=response.header("Content-Type"))

    def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of a repository, in the registry's order, following ``Link`` pagination."""
        check_repository(repository)
        url = f"{self.base_url}/v2/{repository}/tags/list"
        if page_size is not None:
            url += "?" + urlencode({"n": page_size})
        # A repository emptied by deletes answers "tags": null.
        return self._paged_names(url, _pull(repository), "tags", repository)

    def get_blob(self, repository: str, digest: str, *, max_bytes: int | None = None) -> bytes:
        """A blob (typically an image config), size-bounded and checked against its digest."""
        check_repository(repository)
        _check_digest(digest)
        url = self._url(repository, "blobs", digest)
        limit = self._max_blob_bytes if max_bytes is None else max_bytes
        response = self._call("GET", url, scope=_pull(repository), expected=(200,), max_body=limit)
        _verify_digest(response.body, digest, f"GET {_display(url)}")
        return response.body

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest; every tag pointing at it goes too (registries refuse tags)."""
        check_repository(repository)
        if not is_digest(digest):
            raise ValueError(
                f"delete_manifest needs a digest, not {digest!r}: registries refuse deletes by tag"
            )
        url = self._url(repository, "manifests", digest)
        self._call("DELETE", url, scope=_delete(repository), expected=(200, 202, 204))

    def delete_tag(self, repository: str, tag: str) -> None:
        """Delete one tag, leaving its manifest (OCI 1.1 ``DELETE /manifests/<tag>``).

        Registries that cannot (distribution 2.8 answers 400 ``UNSUPPORTED``, others 405) raise
        ``RegistryError`` with that status: deleting the manifest instead would take every other
        tag with it, so the caller decides.
        """
        check_repository(repository)
        _check_tag(tag)
        url = self._url(repository, "manifests", tag)
        self._call("DELETE", url, scope=_delete(repository), expected=(200, 202, 204))

    def list_repositories(self, *, page_size: int | None = None) -> list[str]:
        """Every repository in the registry (``/v2/_catalog``), following ``Link`` pagination."""
        url = f"{self.base_url}/v2/_catalog"
        if page_size is not None:
            url += "?" + urlencode({"n": page_size})
        return self._paged_names(url, "registry:catalog:*", "repositories", self.registry)

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Upload a manifest under a tag or its own digest; returns its digest."""
        check_repository(repository)
        _check_reference(reference)
        digest = compute_digest(body)
        if is_digest(reference) and reference != digest:
            raise ValueError(f"the manifest's digest is {digest}, not {reference}")
        url = self._url(repository, "manifests", reference)
        response = self._call(
            "PUT",
            url,
            scope=_push(repository),
            headers={"Content-Type": media_type},
            body=body,
            expected=(200, 201),
        )
        self._check_echoed_digest(response, digest, f"PUT {_display(url)}")
        return digest

    def put_blob(self, repository: str, data: bytes) -> str:
        """Upload a blob in one piece (POST to open an upload, PUT with ``?digest=``); returns its digest."""
        check_repository(repository)
        digest = compute_digest(data)
        start = f"{self.base_url}/v2/{repository}/blobs/uploads/"
        opened = self._call(
            "POST",
            start,
            scope=_push(repository),
            headers={"Content-Type": "application/octet-stream"},
            body=b"",
            expected=(202,),
        )
        location = opened.header("Location")
        if not location:
            raise RegistryError(f"POST {_display(start)}: no Location for the upload")
        url = urljoin(start, location)
        url += ("&" if urlsplit(url).query else "?") + urlencode({"digest": digest})
        response = self._call(
            "PUT",
            url,
            scope=_push(repository),
            headers={"Content-Type": "application/octet-stream"},
            body=data,
            expected=(201,),
        )
        self._check_echoed_digest(response, digest, f"PUT {_display(url)}")
        return digest

    # -- internals -------------------------------------------------------------------------------

    def _paged_names(self, url: str, scope: str, key: str, owner: str) -> list[str]:
        """The string list ``key`` of every page, following same-origin ``Link: rel=next``."""
        names: list[str] = []
        seen: set[str] = set()
        for _ in range(_MAX_TAG_PAGES):
            seen.add(url)
            response = self._call("GET", url, scope=scope, expected=(200,))
            data = _json_object(response, f"GET {_display(url)}")
            page = data.get(key) or []
            if not isinstance(page, list) or not all(isinstance(n, str) for n in page):
                raise RegistryError(f"GET {_display(url)}: {key} must be a list of strings")
            names.extend(page)
            next_url = _next_link(response)
            if next_url is None:
                return names
            if _origin(next_url) != _origin(self.base_url):
                raise RegistryError(f"GET {_display(url)}: pagination link leaves the registry: {next_url}")
            if next_url in seen:
                raise RegistryError(f"GET {_display(url)}: pagination loops back to {_display(next_url)}")
            url = next_url
        raise RegistryError(f"{owner}: more than {_MAX_TAG_PAGES} pages of {key}")

    def _own_reference(self, ref: str | ImageReference) -> ImageReference:
        image = parse_reference(ref) if isinstance(ref, str) else ref
        if image.registry.lower() != self.registry:
            raise ValueError(f"{image} is not on {self.registry}, the registry this client talks to")
        return image

    def _url(self, repository: str, kind: str, reference: str) -> str:
        return f"{self.base_url}/v2/{repository}/{kind}/{reference}"

    @staticmethod
    def _check_echoed_digest(response: _Response, digest: str, target: str) -> None:
        echoed = (response.header("Docker-Content-Digest") or "").strip()
        if echoed and echoed != digest:
            raise RegistryError(f"{target}: the registry stored {echoed}, we sent {digest}")

    def _call(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        expected: Sequence[int],
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        max_body: int = MAX_MANIFEST_BYTES,
    ) -> _Response:
        """Send with the credentials we know the registry wants; on 401 learn, authenticate, retry once."""
        target = f"{method} {_display(url)}"
        authorization = self._authorization(scope, force=False)
        response = self._transport.send(
            method, url, headers=headers, body=body, authorization=authorization, max_body=max_body
        )
        if response.status == 401 and self._learn(response, scope):
            authorization = self._authorization(scope, force=True)
            if authorization is not None:
                response = self._transport.send(
                    method, url, headers=headers, body=body, authorization=authorization, max_body=max_body
                )
        _raise_for_status(response, target, expected)
        return response

    def _learn(self, response: _Response, scope: str) -> bool:
        """Record what a 401 asks for; False when we have nothing to answer it with."""
        challenges = parse_challenges(response.headers.get_all("WWW-Authenticate") or [])
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        with self._lock:
            if bearer is not None and (bearer.realm or self._token_provider is not None):
                self._bearer = bearer
                self._basic = False
                if bearer.scope:
                    self._scope_alias[scope] = bearer.scope
                return True
            if any(c.scheme == "basic" for c in challenges) and self._credentials is not None:
                self._basic = True
                return True
        return False

    def _authorization(self, scope: str, *, force: bool) -> str | None:
        """The Authorization header for ``scope``, fetching a token when needed; None = anonymous."""
        with self._lock:
            if self._basic and self._credentials is not None:
                return _basic_header(*self._credentials)
            wanted = self._scope_alias.get(scope, scope)
            if self._token_provider is not None:
                # Known to be a bearer registry: no need for an anonymous round trip first.
                return f"Bearer {self._token_provider.get_token(wanted, force_refresh=force)}"
            if self._bearer is None:
                return None
            cached = self._tokens.get(wanted)
            if cached is not None and not force and self._clock() < cached.expires_at:
                return f"Bearer {cached.value}"
            token = self._fetch_token(self._bearer, wanted)
            self._tokens[wanted] = token
            return f"Bearer {token.value}"

    def _check_realm(self, realm: str) -> None:
        """Refuse a realm our password may not go to (another host, or plain http off loopback)."""
        parts = urlsplit(realm)
        host = (parts.hostname or "").lower()
        if host not in self._realm_hosts:
            raise UntrustedRealm(
                f"{self.registry}: refusing to send the registry credentials to the token realm "
                f"{_display(realm)}, which is not on the registry's host; if it is the registry's own "
                "token service, name its host in SLIPWAY_REGISTRY_AUTH_REALMS"
            )
        if parts.scheme.lower() != "https" and not is_loopback(host):
            raise UntrustedRealm(
                f"{self.registry}: refusing to send the registry credentials over plain http to "
                f"{_display(realm)}"
            )

    def _fetch_token(self, challenge: Challenge, scope: str) -> _CachedToken:
        """GET the realm with service and scope (Basic credentials if we have them)."""
        realm = challenge.realm
        if not realm or urlsplit(realm).scheme not in {"http", "https"} or not urlsplit(realm).netloc:
            raise RegistryError(f"{self.registry}: the bearer challenge has no usable realm ({realm!r})")
        params = [("service", challenge.service)] if challenge.service else []
        params += [("scope", s) for s in scope.split()]
        url = realm + (("&" if urlsplit(realm).query else "?") + urlencode(params) if params else "")
        authorization = None
        if self._credentials is not None:
            self._check_realm(realm)
            authorization = _basic_header(*self._credentials)
        response = self._transport.send(
            "GET",
            url,
            headers={"Accept": "application/json"},
            authorization=authorization,
            auth_origin=_origin(realm),
            max_body=_MAX_TOKEN_BODY,
        )
        target = f"GET {_display(url)}"
        _raise_for_status(response, target, (200,))
        data = _json_object(response, target)
        value = data.get("token") or data.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryError(f"{target}: no token in the answer")
        expires_in = data.get("expires_in")
        lifetime = _DEFAULT_TOKEN_LIFETIME
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
            lifetime = float(expires_in)
        return _CachedToken(value, _good_until(self._clock(), lifetime))


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _delete(repository: str) -> str:
    return f"repository:{repository}:delete"


def _basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _next_link(response: _Response) -> str | None:
    for value in response.headers.get_all("Link") or []:
        match = _LINK_NEXT_RE.search(value)
        if match:
            return urljoin(response.url, str(match.group(1)))
    return None


__all__ = [
    "ACR_AUDIENCE",
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "DOCKER_HUB_ENDPOINT",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_MEDIA_TYPES",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_DOCKER_MANIFEST_LIST",
    "MEDIA_TYPE_OCI_CONFIG",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_LAYER",
    "MEDIA_TYPE_OCI_MANIFEST",
    "AcrTokenProvider",
    "Challenge",
    "Descriptor",
    "ImageReference",
    "Manifest",
    "NotFound",
    "Platform",
    "RateLimited",
    "RegistryClient",
    "RegistryError",
    "TokenProvider",
    "TransientRegistryError",
    "Unauthorized",
    "UntrustedRealm",
    "check_repository",
    "compute_digest",
    "is_digest",
    "parse_challenges",
    "parse_reference",
    "parse_retry_after",
]

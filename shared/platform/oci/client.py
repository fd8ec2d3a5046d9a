"""``RegistryClient``: resolve tags, read and write manifests, blobs and tags on one registry.

Base-image polling, quarantine and image retention talk to Docker Hub, MCR, GHCR and ACR through
it. It answers whatever auth dialect the registry asks for (``shared.platform.oci.auth``) and
raises a typed error for every failure (``shared.platform.oci.errors``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import urlencode, urljoin, urlsplit

from shared.model.image_refs import (
    ImageReference,
    check_digest,
    check_reference,
    check_repository,
    check_tag,
    is_digest,
    parse_image_reference,
)
from shared.platform.http.client import Response
from shared.platform.oci.auth import (
    CachedToken,
    Challenge,
    RealmTokens,
    TokenProvider,
    basic_header,
    parse_challenges,
)
from shared.platform.oci.errors import RegistryError
from shared.platform.oci.manifests import MANIFEST_ACCEPT, Manifest, compute_digest, verify_digest
from shared.platform.oci.transport import (
    DEFAULT_TIMEOUT,
    MAX_MANIFEST_BYTES,
    RegistryTransport,
    display,
    json_object,
    origin,
    parse_base,
    raise_for_status,
)

DEFAULT_MAX_BLOB_BYTES = 32 * 1024 * 1024  # configs and small artifacts, not whole layers
_MAX_TAG_PAGES = 10_000
_LINK_NEXT_RE = re.compile(r'<([^>]*)>\s*;[^,]*\brel\s*=\s*"?next"?', re.IGNORECASE)


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
        self.registry, self.base_url = parse_base(registry, insecure=insecure)
        self._credentials = credentials
        self._token_provider = token_provider
        self._max_blob_bytes = max_blob_bytes
        self._clock = clock
        self._transport = RegistryTransport(
            verify=verify,
            timeout=timeout,
            allow_http=self.base_url.startswith("http://"),
            auth_origin=self.base_url,
        )
        self._realms = RealmTokens(
            self.registry,
            self.base_url,
            self._transport,
            credentials=credentials,
            trusted_realm_hosts=trusted_realm_hosts,
            clock=clock,
        )
        self._lock = threading.Lock()
        self._bearer: Challenge | None = None  # realm and service, learned from the first challenge
        self._basic = False  # the registry asked for Basic credentials
        self._scope_alias: dict[str, str] = {}  # the scope we need -> the scope the registry named
        self._tokens: dict[str, CachedToken] = {}  # realm tokens by scope

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
            raise RegistryError(f"HEAD {display(url)}: malformed Docker-Content-Digest {digest!r}")
        if not digest:
            digest = self.get_manifest(image.repository, image.reference).digest
        if image.digest is not None and digest != image.digest:
            raise RegistryError(f"{image}: the registry answered with digest {digest}")
        return digest

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch a manifest or index by tag or digest, checking its content against the digest."""
        check_repository(repository)
        check_reference(reference)
        url = self._url(repository, "manifests", reference)
        response = self._call(
            "GET", url, scope=_pull(repository), headers={"Accept": MANIFEST_ACCEPT}, expected=(200,)
        )
        target = f"GET {display(url)}"
        header_digest = (response.header("Docker-Content-Digest") or "").strip()
        if is_digest(reference):
            verify_digest(response.body, reference, target)
            digest = reference
        else:
            digest = compute_digest(response.body)
            if header_digest and is_digest(header_digest):
                verify_digest(response.body, header_digest, target)
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
        check_digest(digest)
        url = self._url(repository, "blobs", digest)
        limit = self._max_blob_bytes if max_bytes is None else max_bytes
        response = self._call("GET", url, scope=_pull(repository), expected=(200,), max_body=limit)
        verify_digest(response.body, digest, f"GET {display(url)}")
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
        check_tag(tag)
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
        check_reference(reference)
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
        self._check_echoed_digest(response, digest, f"PUT {display(url)}")
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
            raise RegistryError(f"POST {display(start)}: no Location for the upload")
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
        self._check_echoed_digest(response, digest, f"PUT {display(url)}")
        return digest

    # -- internals -------------------------------------------------------------------------------

    def _paged_names(self, url: str, scope: str, key: str, owner: str) -> list[str]:
        """The string list ``key`` of every page, following same-origin ``Link: rel=next``."""
        names: list[str] = []
        seen: set[str] = set()
        for _ in range(_MAX_TAG_PAGES):
            seen.add(url)
            response = self._call("GET", url, scope=scope, expected=(200,))
            data = json_object(response, f"GET {display(url)}")
            page = data.get(key) or []
            if not isinstance(page, list) or not all(isinstance(n, str) for n in page):
                raise RegistryError(f"GET {display(url)}: {key} must be a list of strings")
            names.extend(page)
            next_url = _next_link(response)
            if next_url is None:
                return names
            if origin(next_url) != origin(self.base_url):
                raise RegistryError(f"GET {display(url)}: pagination link leaves the registry: {next_url}")
            if next_url in seen:
                raise RegistryError(f"GET {display(url)}: pagination loops back to {display(next_url)}")
            url = next_url
        raise RegistryError(f"{owner}: more than {_MAX_TAG_PAGES} pages of {key}")

    def _own_reference(self, ref: str | ImageReference) -> ImageReference:
        image = parse_image_reference(ref) if isinstance(ref, str) else ref
        if image.registry.lower() != self.registry:
            raise ValueError(f"{image} is not on {self.registry}, the registry this client talks to")
        return image

    def _url(self, repository: str, kind: str, reference: str) -> str:
        return f"{self.base_url}/v2/{repository}/{kind}/{reference}"

    @staticmethod
    def _check_echoed_digest(response: Response, digest: str, target: str) -> None:
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
    ) -> Response:
        """Send with the credentials we know the registry wants; on 401 learn, authenticate, retry once."""
        target = f"{method} {display(url)}"
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
        raise_for_status(response, target, expected)
        return response

    def _learn(self, response: Response, scope: str) -> bool:
        """Record what a 401 asks for; False when we have nothing to answer it with."""
        challenges = parse_challenges(response.header_values("WWW-Authenticate"))
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
                return basic_header(*self._credentials)
            wanted = self._scope_alias.get(scope, scope)
            if self._token_provider is not None:
                # Known to be a bearer registry: no need for an anonymous round trip first.
                return f"Bearer {self._token_provider.get_token(wanted, force_refresh=force)}"
            if self._bearer is None:
                return None
            cached = self._tokens.get(wanted)
            if cached is not None and not force and self._clock() < cached.expires_at:
                return f"Bearer {cached.value}"
            token = self._realms.fetch(self._bearer, wanted)
            self._tokens[wanted] = token
            return f"Bearer {token.value}"


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _delete(repository: str) -> str:
    return f"repository:{repository}:delete"


def _next_link(response: Response) -> str | None:
    for value in response.header_values("Link"):
        match = _LINK_NEXT_RE.search(value)
        if match:
            return urljoin(response.url, str(match.group(1)))
    return None


__all__ = ["DEFAULT_MAX_BLOB_BYTES", "RegistryClient"]

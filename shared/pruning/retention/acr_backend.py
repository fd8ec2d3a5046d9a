"""Retention on Azure Container Registry through ``azure-containerregistry`` (Entra ID auth).

ACR lists every manifest of a repository with its timestamps, tags, locks and media types, so
untagged leftovers are visible here (unlike on a plain distribution registry), and only the
JSON the graph needs is read: indexes (their children) and possible referrers (their subject),
never a plain image (``acr_listing``). Age is the manifest's ``createdTime``; a tag's time is its
``lastUpdateTime``. ``deleteEnabled: false`` on a manifest or a tag is a lock: never deleted. The
SDK is imported when a backend is built.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin

from shared.platform.oci import Manifest, RegistryError
from shared.pruning.retention.acr_listing import ListedManifest, graph_from_listing, raw_fields
from shared.pruning.retention.backend import parse_timestamp
from shared.pruning.retention.graph import RepositoryGraph, TagNode

if TYPE_CHECKING:
    from azure.containerregistry import ContainerRegistryClient
    from azure.core.credentials import TokenCredential

DEFAULT_AUDIENCE = "https://containerregistry.azure.net"


class AcrRetentionBackend:
    api = "acr"
    # acr purge's ceiling (shared.pruning.retention.prune.MAX_DELETE_CONCURRENCY); one SDK client, whose
    # pipeline and AcrTokenReuse serve the parallel DELETEs.
    delete_concurrency = 32

    def __init__(self, client: ContainerRegistryClient, registry: str, endpoint: str | None = None) -> None:
        self.client = client
        self.registry = registry
        self.endpoint = (endpoint or f"https://{registry}").rstrip("/")

    @classmethod
    def connect(
        cls,
        endpoint: str,
        credential: TokenCredential,
        *,
        audience: str = DEFAULT_AUDIENCE,
        **client_options: Any,
    ) -> AcrRetentionBackend:
        """A backend for ``endpoint`` (``https://myacr.azurecr.io``); options go to the SDK client.

        One client serves the whole pass, with ``AcrTokenReuse`` ahead of the SDK's challenge
        policy, so a call costs one round trip instead of four (see ``acr_tokens``).

        The SDK's ``HttpLoggingPolicy`` logs every request and response (URL, headers) at INFO,
        the level the Functions host collects: two records a call, ~140k for a pass at 100k
        manifests, formatted on the timer's CPU (~10% of a manifest read's, README "Scale").
        Slipway's own ``image_deleted`` event per deletion is the audit trail, so this client
        logs HTTP at DEBUG (``http_logging_level``, azure-core
        ``azure/core/pipeline/policies/_universal.py``); an ``http_logging_policy`` given wins.
        """
        from azure.containerregistry import ContainerRegistryClient
        from azure.core.pipeline.policies import HttpLoggingPolicy

        from shared.pruning.retention.acr_tokens import AcrTokenReuse

        if "://" not in endpoint:
            endpoint = f"https://{endpoint}"
        extra = client_options.pop("per_call_policies", [])
        if "transport" not in client_options and "session" not in client_options:
            client_options["session"] = _pooled_session(cls.delete_concurrency, endpoint, client_options)
            client_options.setdefault("session_owner", False)
        client_options.setdefault("http_logging_policy", HttpLoggingPolicy(http_logging_level=logging.DEBUG))
        policies = [*(extra if isinstance(extra, list | tuple) else [extra]), AcrTokenReuse()]
        client = ContainerRegistryClient(
            endpoint, credential, audience=audience, per_call_policies=policies, **client_options
        )
        return cls(client, endpoint.split("://", 1)[1].rstrip("/"), endpoint)

    def list_repositories(self) -> list[str]:
        return sorted(set(self.client.list_repository_names()))

    def read_tags(self, repository: str) -> list[TagNode]:
        return [
            TagNode(
                entry["name"],
                entry["digest"],
                parse_timestamp(entry.get("lastUpdateTime")) or parse_timestamp(entry.get("createdTime")),
                locked=_locked_raw(entry),
            )
            for entry in self._raw_pages(repository, "_tags", "tags")
            if isinstance(entry.get("name"), str) and isinstance(entry.get("digest"), str)
        ]

    read_everything = False  # True: read every manifest's JSON (the old way; tests compare both)

    def read_graph(self, repository: str) -> RepositoryGraph:
        """The listing, then the JSON of only the manifests ``acr_listing.needs_read`` names, read
        in parallel on the one client (``delete_concurrency`` at a time, in listing order)."""
        listed = self.list_manifests(repository)
        tags = {tag.name: tag for tag in self.read_tags(repository)}
        return graph_from_listing(
            repository,
            listed,
            lambda digests: self._read_many(repository, digests),
            tags,
            read_everything=self.read_everything,
        )

    def list_manifests(self, repository: str) -> list[ListedManifest]:
        """Every manifest of the listing, with its media types (see ``_raw_pages``)."""
        listed = []
        for entry in self._raw_pages(repository, "_manifests", "manifests"):
            if isinstance(entry.get("digest"), str):
                media_type, config, refs = raw_fields(entry)
                created, locked = parse_timestamp(entry.get("createdTime")), _locked_raw(entry)
                listed.append(ListedManifest(entry["digest"], created, locked, media_type, config, refs))
        return listed

    def _raw_pages(self, repository: str, resource: str, key: str) -> Iterator[dict[str, Any]]:
        """The entries under ``key`` of every page of ``GET /acr/v1/{repository}/{resource}``.

        The SDK's own listings (``list_manifest_properties``, ``list_tag_properties``) turn each
        page into msrest models (``_generated/_serialization.py`` ``Deserializer``): 5-17 ms of
        client CPU a page here against ~2 ms for the request (README, "Scale"), and 1.2.0's models
        drop ``mediaType`` and ``configMediaType``, which the graph needs. So the pages go through
        the SDK's generated client's ``send_request`` (``azure/containerregistry/_generated/
        _client.py``, ``ContainerRegistry.send_request``: "runs the network request through the
        client's chained policies"), the same pipeline as every other call (``AcrTokenReuse``,
        the SDK's challenge policy and Entra ID exchange, retries, TLS), and the JSON is read
        here. Pages follow the ``Link`` header as the SDK's ``_parse_next_link``
        (``_helpers.py``) does; the page size is the registry's default: ACR's API
        (azure-rest-api-specs, containerregistry data-plane 2021-07-01, parameter QueryNum "n")
        gives no maximum, and pages are ~1.4% of a pass's requests (bench.retention_pass).
        A status other than 200 raises ``HttpResponseError``, as the SDK's listing does.
        """
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        # The repository is quoted whole ("a/b" -> "a%2Fb"), as the SDK's Serializer.url quotes it.
        url: str | None = f"{self.endpoint}/acr/v1/{quote(repository, safe='')}/{resource}"
        while url is not None:
            request = HttpRequest("GET", url, headers={"Accept": "application/json"})
            response = self.client._client.send_request(request)  # private: see the docstring
            if response.status_code != 200:
                response.raise_for_status()
                raise HttpResponseError(response=response)
            page = response.json()
            entries = page.get(key) if isinstance(page, dict) else None
            yield from (e for e in (entries if isinstance(entries, list) else ()) if isinstance(e, dict))
            link = response.headers.get("Link")
            url = urljoin(url, link[1 : link.find(">")]) if link else None

    def _read_many(self, repository: str, digests: Sequence[str]) -> dict[str, Manifest]:
        with ThreadPoolExecutor(max_workers=self.delete_concurrency, thread_name_prefix="acr-read") as pool:
            return dict(zip(digests, pool.map(lambda d: self._read(repository, d), digests), strict=True))

    def _read(self, repository: str, digest: str) -> Manifest:
        result = self.client.get_manifest(repository, digest)
        return _parse(result.manifest, digest, result.media_type)

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.client.delete_manifest(repository, digest)  # the SDK treats 404 as done

    def delete_tag(self, repository: str, tag: str) -> None:
        self.client.delete_tag(repository, tag)


def _pooled_session(size: int, endpoint: str, client_options: dict[str, Any]) -> Any:
    """A ``requests`` session keeping ``size`` connections (its default keeps 10), so parallel
    DELETEs reuse their TLS connections. Retries stay off, as in azure-core's own session: the
    SDK pipeline's RetryPolicy retries (azure/core/pipeline/transport/_requests_basic.py).

    The environment (proxies for ``endpoint``, honouring ``NO_PROXY``; ``REQUESTS_CA_BUNDLE`` /
    ``CURL_CA_BUNDLE`` when no ``connection_verify`` is given) is read here once, as requests
    would read it for every call, and ``trust_env`` is then turned off: per call, requests
    otherwise walks ``os.environ`` for proxies twice and stats ``~/.netrc``: 10-25% of the
    client's CPU per call, 400 manifest reads on the loopback ACR compared (README, "Scale").
    Every call of the client goes to
    ``endpoint``, so the proxies of that one URL are the proxies of all of them. With
    ``use_env_settings=False`` (azure-core's option) the environment is not read at all.
    """
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    adapter = HTTPAdapter(
        pool_maxsize=size, max_retries=Retry(total=False, redirect=False, raise_on_status=False)
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if client_options.get("use_env_settings", True):
        verify = client_options.get("connection_verify")
        found = session.merge_environment_settings(endpoint, {}, None, verify, None)
        session.proxies = found["proxies"]
        if verify is None and found["verify"] is not True:
            client_options["connection_verify"] = found["verify"]
    session.trust_env = False
    return session


def _parse(content: Mapping[str, Any] | None, digest: str, media_type: str | None) -> Manifest:
    # The SDK hands back parsed JSON (it has checked the digest); only the structure matters here.
    if not isinstance(content, Mapping):
        raise RegistryError(f"manifest {digest}: the registry sent no JSON object")
    return Manifest.parse(json.dumps(content).encode(), digest=digest, content_type=media_type)


def _locked_raw(entry: Mapping[str, Any]) -> bool:
    """ACR refuses to delete what has ``deleteEnabled`` or ``writeEnabled`` false (a lock) in its
    ``changeableAttributes``."""
    attributes = entry.get("changeableAttributes")
    if not isinstance(attributes, Mapping):
        return False
    return attributes.get("deleteEnabled") is False or attributes.get("writeEnabled") is False

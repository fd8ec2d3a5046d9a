"""The Blob Storage side of the collector: list, read and conditionally delete cache blobs.

``CacheStore`` is the port the collector needs; ``AzureCacheStore`` implements it over
azure-storage-blob (Azure or Azurite); tests add an in-memory one. Every delete is conditional on
the ETag the collector saw (``If-Match``), so a blob or manifest rewritten since it was listed is
never deleted: the service answers 412 and the collector re-reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from shared.platform.errors import ServiceError
from shared.pruning.cache_gc.layout import BlobEntry, CacheLayout

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient

    from shared.model.config import CacheStorage

CONNECTION_SETTING = "SLIPWAY_CACHE_CONNECTION_STRING"
# The Blob batch API's limit per request: "The maximum number of sub operations that may be part of
# a batch", 256 (learn.microsoft.com/dotnet/api/microsoft.azure.storage.shared.protocol.constants
# .maxsuboperationperbatch; Azurite refuses more too, src/blob/handlers/BlobBatchHandler.ts).
MAX_BATCH = 256
LIST_PAGE_SIZE = 5000  # the service's maximum page
# Batch refused as a whole (not per item): an endpoint without the batch API.
_BATCH_UNSUPPORTED = frozenset({400, 405, 501})


class CacheStoreError(ServiceError):
    """Storage cannot be used (missing container, no access); one line for the operator."""


class ListingTokenRefusedError(Exception):
    """The service refused a stored continuation token: the caller lists from the start instead."""


class BlobPage(NamedTuple):
    """One List Blobs page, with the continuation tokens that list it again and the page after it.

    A token is the service's ``NextMarker``, "an opaque string value" to the client, passed back as
    ``marker`` for the next page (https://learn.microsoft.com/rest/api/storageservices/enumerating-blob-resources,
    "Retrieve partial list results with markers"); listings are "in alphabetical order" (same
    page), so a page listed again from its token starts where it started before, minus what was
    deleted, plus what was created there since.
    """

    blobs: Sequence[BlobEntry]
    token: str | None  # lists this page again (None: the first page)
    next_token: str | None  # lists the page after it (None: this was the last page)


class DeleteOutcome(Enum):
    DELETED = "deleted"
    GONE = "gone"  # 404: already deleted by someone else
    CHANGED = "changed"  # 412: rewritten since it was listed
    FAILED = "failed"  # anything else (reported, not retried)


class CacheStore(Protocol):
    """What the collector needs from storage."""

    @property
    def container(self) -> str: ...

    def list_manifests(self) -> list[BlobEntry]:
        """Every blob under the manifests prefix (one listing; names, ETags, times)."""
        ...

    def manifest_etags(self) -> dict[str, str]:
        """Key -> ETag of every manifest (one listing, the collector's re-check before a delete
        batch: it runs once per batch, so it must cost as little as a listing can)."""
        ...

    def read_manifest(self, key: str) -> tuple[bytes, str, datetime] | None:
        """Content, ETag and last-modified time of one manifest; None if it no longer exists."""
        ...

    def blob_pages(self, token: str | None = None) -> Iterator[BlobPage]:
        """The blobs under the blobs prefix, one listing page at a time, from ``token`` (a page's
        ``token`` or ``next_token`` of an earlier listing) or from the start. Raises
        ``ListingTokenRefusedError`` (before any page) when the service refuses ``token``."""
        ...

    def write_blob(self, key: str, data: bytes, *, etag: str | None) -> bool:
        """Write one blob (the collector's candidates document) only if it is unchanged: its ETag
        is still ``etag``, or (``etag`` None) it does not exist. False when that condition failed."""
        ...

    def delete(self, blobs: Sequence[BlobEntry]) -> list[DeleteOutcome]:
        """Delete at most MAX_BATCH blobs, each only if its ETag is unchanged; one outcome each."""
        ...


class AzureCacheStore:
    """``CacheStore`` over one container; the SDK is imported lazily (the timer's cold start)."""

    def __init__(self, container_client: ContainerClient, layout: CacheLayout) -> None:
        self._client = container_client
        self._layout = layout
        self._batch = True

    @property
    def container(self) -> str:
        name: str = self._client.container_name
        return name

    def list_manifests(self) -> list[BlobEntry]:
        return [entry for page in self._pages(self._layout.manifests_prefix) for entry in page]

    def manifest_etags(self) -> dict[str, str]:
        """Names and ETags from the raw listing XML, without the SDK's model deserialisation.

        ``list_blobs`` builds a ``BlobProperties`` per blob: about 300 us of CPU each, so 1.5 s per
        re-check at 5,000 manifests (measured against Azurite). ``list_blob_names`` requests the same
        List Blobs pages but skips that deserialisation, and its page iterator keeps each page's
        raw XML in ``_response`` (azure-sdk-for-python,
        sdk/storage/azure-storage-blob/azure/storage/blob/_list_blobs_helper.py,
        ``BlobNamesPaged._extract_data_cb``; ``_container_client.py`` ``list_blob_names``). Every
        ``<Blob>`` there carries ``<Name>`` and ``<Properties><Etag>`` (List Blobs response,
        https://learn.microsoft.com/rest/api/storageservices/list-blobs#response-body). That is a
        private attribute: when it is not the XML element expected, the full listing is used.
        """
        pages = self._client.list_blob_names(
            name_starts_with=self._layout.manifests_prefix, results_per_page=LIST_PAGE_SIZE
        ).by_page()
        found: dict[str, str] = {}
        for page in pages:
            etags = etags_from_listing(getattr(pages, "_response", None), len(list(page)))
            if etags is None:
                return {e.name: e.etag for e in self.list_manifests()}
            found.update(etags)
        return found

    def read_manifest(self, key: str) -> tuple[bytes, str, datetime] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self._client.download_blob(key)
            data = downloader.readall()
        except ResourceNotFoundError:
            return None
        return data, _quoted(downloader.properties.etag), downloader.properties.last_modified

    def blob_pages(self, token: str | None = None) -> Iterator[BlobPage]:
        """``list_blobs(...).by_page(continuation_token=token)``: azure-core's ``PageIterator``
        (azure/core/paging.py, ``__next__``) fetches a page with its ``continuation_token`` and then
        sets that attribute to the token the page returned; the blob listing's page iterator sends
        the token as ``marker`` and returns the response's ``next_marker`` (azure-storage-blob
        12.31, azure/storage/blob/_list_blobs_helper.py, ``BlobPropertiesPaged._get_next_cb`` and
        ``_extract_data_cb``). So before each page the attribute lists that page, after it the next.

        (The 2026-02-06 service version adds ``startFrom``, a name to list from, and this SDK has
        ``start_from``; Azurite 3.35 implements API 2025-11-05 and would ignore it, and the token
        works on every version.) The error a refused marker returns is not documented: a 400 to
        the first request, the only one that carries a stored token, is taken as a refusal.
        """
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        pages = self._client.list_blobs(
            name_starts_with=self._layout.blobs_prefix, results_per_page=LIST_PAGE_SIZE
        ).by_page(continuation_token=token)
        current = token
        while True:
            try:
                page = next(pages, None)
            except ResourceNotFoundError as exc:
                raise CacheStoreError(f"container {self.container!r} does not exist") from exc
            except HttpResponseError as exc:
                if current is not None and current == token and exc.status_code == 400:
                    raise ListingTokenRefusedError(str(exc).splitlines()[0]) from exc
                raise
            if page is None:
                return
            blobs = [BlobEntry(p.name, p.size, p.last_modified, _quoted(p.etag)) for p in page]
            following: str | None = getattr(pages, "continuation_token", None) or None
            yield BlobPage(blobs, current, following)
            if following is None:
                return
            current = following

    def write_blob(self, key: str, data: bytes, *, etag: str | None) -> bool:
        """``If-Match`` the ETag read, or ``If-None-Match: *`` (the SDK's ``overwrite=False``,
        azure/storage/blob/_upload_helpers.py) when there was none; 412 or 409 (exists): False
        (Put Blob's conditional headers, https://learn.microsoft.com/rest/api/storageservices/put-blob)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        try:
            if etag is None:
                self._client.upload_blob(key, data, overwrite=False)
            else:
                self._client.upload_blob(
                    key, data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                return False
            raise
        return True

    def _pages(self, prefix: str) -> Iterator[list[BlobEntry]]:
        from azure.core.exceptions import ResourceNotFoundError

        pages = self._client.list_blobs(name_starts_with=prefix, results_per_page=LIST_PAGE_SIZE).by_page()
        try:
            for page in pages:
                yield [BlobEntry(p.name, p.size, p.last_modified, _quoted(p.etag)) for p in page]
        except ResourceNotFoundError as exc:
            raise CacheStoreError(f"container {self.container!r} does not exist") from exc

    def delete(self, blobs: Sequence[BlobEntry]) -> list[DeleteOutcome]:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        if len(blobs) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} blobs per batch, got {len(blobs)}")
        if not blobs:
            return []
        if self._batch:
            items = [
                {
                    "name": b.name,
                    "etag": b.etag,
                    "match_condition": MatchConditions.IfNotModified,
                    "delete_snapshots": "include",
                }
                for b in blobs
            ]
            try:
                responses = self._client.delete_blobs(*items, raise_on_any_failure=False)
                return [_outcome(r.status_code) for r in responses]
            except HttpResponseError as exc:
                if exc.status_code not in _BATCH_UNSUPPORTED:
                    raise
                self._batch = False
        return [self._delete_one(b) for b in blobs]

    def _delete_one(self, blob: BlobEntry) -> DeleteOutcome:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        try:
            self._client.delete_blob(
                blob.name,
                etag=blob.etag,
                match_condition=MatchConditions.IfNotModified,
                delete_snapshots="include",
            )
        except HttpResponseError as exc:
            return _outcome(exc.status_code or 0)
        return DeleteOutcome.DELETED


def etags_from_listing(page: Any, expected: int) -> dict[str, str] | None:
    """Name -> ETag of one raw List Blobs page (an ElementTree ``EnumerationResults``); None when
    it is not that, or does not hold the ``expected`` number of blobs."""
    from urllib.parse import unquote

    blobs = page.find("Blobs") if page is not None and hasattr(page, "find") else None
    entries = [] if blobs is None else blobs.findall("Blob")
    if len(entries) != expected:
        return None
    found: dict[str, str] = {}
    for entry in entries:
        name = entry.find("Name")
        etag = entry.findtext("Properties/Etag")
        if name is None or name.text is None or not etag:
            return None
        # Names with characters XML cannot carry come percent-encoded (Encoded="true").
        found[unquote(name.text) if name.get("Encoded") == "true" else name.text] = _quoted(etag)
    return found


def _quoted(etag: str) -> str:
    """One form for comparisons: listings give ETags bare (``0x8D...``), downloads quoted."""
    return etag if etag.startswith(('"', "W/")) else f'"{etag}"'


def _outcome(status: int) -> DeleteOutcome:
    if 200 <= status < 300:
        return DeleteOutcome.DELETED
    if status == 404:
        return DeleteOutcome.GONE
    if status == 412:
        return DeleteOutcome.CHANGED
    return DeleteOutcome.FAILED


def cache_service(cache: CacheStorage, settings: Mapping[str, str], **options: Any) -> BlobServiceClient:
    """The cache's storage: ``SLIPWAY_CACHE_CONNECTION_STRING`` if set, else ``account_url`` with
    the app's identity (a managed identity in Azure, ``az login`` on a laptop); both read by
    ``shared.platform.storage``, as the ledger's and the state store's connections are.

    The identity follows ``shared.platform.identity``'s rule: ``SLIPWAY_CACHE_CONNECTION_STRING__clientId``
    if set, else ``AZURE_CLIENT_ID`` (the template's user-assigned identity; the app has no
    system-assigned one); ``__credential=managedidentity`` restricts to managed identity.
    """
    from shared.platform.storage import blob_service_at, blob_service_from_settings, is_development_storage

    if (settings.get(CONNECTION_SETTING) or "").strip():
        return blob_service_from_settings(settings, CONNECTION_SETTING, **options)
    if urlsplit(cache.account_url).scheme == "http" and not is_development_storage(cache.account_url):
        # No token goes over plain http (the SDK refuses it). Azurite's well-known development
        # account is what the local example points at: ``blob_service_at`` uses its public key,
        # as UseDevelopmentStorage=true does. Anything else needs a connection string.
        raise CacheStoreError(
            f"cache.account_url {cache.account_url} is plain http, where no Entra ID token is sent: "
            f"set {CONNECTION_SETTING} (for Azurite: UseDevelopmentStorage=true)"
        )
    return blob_service_at(cache.account_url, settings, CONNECTION_SETTING, **options)


def cache_store(cache: CacheStorage, settings: Mapping[str, str], **options: Any) -> AzureCacheStore:
    layout = CacheLayout(cache.prefix)
    container = cache_service(cache, settings, **options).get_container_client(cache.container)
    return AzureCacheStore(container, layout)

"""``BlobLedger``: records as blobs ``runs/<request_id>.json`` in one container (Azure or Azurite).

The conditional writes (``If-None-Match: *`` to claim, ``If-Match`` to replace, the write mark
that recognises our own write after a lost response) are ``shared.platform.documents.BlobDocuments``,
shared with the state store. What is the ledger's own: every write also stores the record's
summary as blob metadata, and an index (``blob_index``: a marker per active record, an entry
per record by creation hour, a blob per hour) keeps budgets, reconciliation, paging and expiry
O(active runs), O(page) or O(hours) rather than O(history).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.platform.documents import BlobDocuments, DocumentChanged, create_exclusive
from shared.platform.ledger.blob_index import ACTIVE_BUILT, CREATED_BUILT, HOURS_BUILT, BlobIndex
from shared.platform.ledger.paging import Cursor, hour, older, readable
from shared.platform.ledger.records import (
    DEFAULT_CONTAINER,
    RECORD_PREFIX,
    ConflictError,
    LedgerRecord,
    record_name,
)
from shared.platform.ledger.summary import RecordSummary, is_active
from shared.platform.logs import log_event
from shared.platform.storage import container_from_settings

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

logger = logging.getLogger("slipway.ledger")

CONTAINER_SETTING = "SLIPWAY_LEDGER_CONTAINER"
# Blob metadata naming this client's write, to recognise our own write after a lost response.
_WRITE_MARK = "slipwaywrite"
# Blob metadata carrying the record's summary, so that a listing answers budget questions alone.
_SUMMARY = "slipwaysummary"
# Properties requests of ``list_active`` in flight at once.
_HEAD_THREADS = 8
# Blob creation times are the server's, records' times the writer's.
_CLOCK_SLACK = timedelta(minutes=1)


class BlobLedger:
    """Records as blobs ``runs/<request_id>.json`` in one container; ETags guard every write.

    Writes are single-shot uploads (a record is far below the single-put limit), so a reader
    sees a whole record or none. Every write carries a random marker in the blob's metadata: when
    a response is lost and the SDK retries a write that did succeed, the retry fails its
    condition, and the marker shows the write was ours (otherwise a claim would look taken by
    someone else and the build would never run).

    The index (``blob_index``) is written around each record write, in the folder ledger's
    spirit (the reader tolerates a stale entry, never a missing one), with the order reversed
    where Blob Storage has no lock to hold across blobs:

    - a write that leaves the record active uploads ``active/<id>`` **first** (unconditionally,
      so its ETag changes), then the record: an active record never lacks its marker, and a
      crash in between leaves a marker whose record is settled or absent, which readers skip;
    - a write that settles the record reads the marker's ETag, writes the record, then deletes
      the marker ``If-Match`` that ETag. A writer reactivating the record meanwhile read the
      settled record after our write, so its upload of the marker came after our read and
      changed the ETag: the delete fails and its marker stays;
    - ``list_active`` lists the markers and reads each record's properties (its summary); a
      marker of a settled record is removed there: first the record's metadata is rewritten
      unchanged ``If-Match`` its ETag (a writer still holding that ETag now fails), then the
      marker ``If-Match`` the listed ETag (a writer who uploaded it since keeps it). A marker
      whose record does not exist is left: a create may be between its two uploads;
    - a create uploads its hour's blob (once per hour and instance), its hour entry and marker
      before the record; when the create finds a record (a redelivery), the entry is removed
      unless the existing record was created at that very time. Paging skips an entry whose
      record is missing or created at another time, and an hour without entries.
    """

    def __init__(self, container_client: ContainerClient) -> None:
        self._container = container_client
        self._documents = BlobDocuments(container_client, _WRITE_MARK)
        self._index = BlobIndex(container_client)

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], **options: Any) -> BlobLedger:
        """Container ``SLIPWAY_LEDGER_CONTAINER`` (default ``slipway-ledger``) in the host storage."""
        return cls(container_from_settings(settings, CONTAINER_SETTING, DEFAULT_CONTAINER, **options))

    @property
    def container_client(self) -> ContainerClient:
        return self._container

    def ensure_container(self) -> None:
        """Create the container if it does not exist (idempotent)."""
        self._documents.ensure_container()

    def create(self, record: LedgerRecord) -> bool:
        return self.create_versioned(record) is not None

    def create_versioned(self, record: LedgerRecord) -> str | None:
        """Conditional create (``If-None-Match: *``), after its index entry and (active) marker.
        Creates the container on first use."""
        self._index.put_entry(record.created_at, record.request_id)
        if is_active(RecordSummary.of(record)):
            self._index.put_marker(record.request_id)
        etag = self._documents.create(record_name(record.request_id), record.to_json(), _metadata(record))
        if etag is None:  # someone else's record: our entry is stale unless it names that record
            found = self._head(record.request_id)
            if found is None or found[0].created_at != record.created_at:
                self._index.drop_entry(record.created_at, record.request_id)
        return etag

    def get(self, request_id: str) -> tuple[LedgerRecord, str] | None:
        found = self._documents.read(record_name(request_id))
        return None if found is None else (LedgerRecord.from_json(found[0]), found[1])

    def replace(self, record: LedgerRecord, etag: str) -> str:
        """Overwrite with ``If-Match: <etag>``; ConflictError on 412 (changed) or 404 (gone).
        The marker is uploaded before (active) or removed after (settled): see the class."""
        name = record_name(record.request_id)
        marker = None
        if is_active(RecordSummary.of(record)):
            self._index.put_marker(record.request_id)
        else:
            marker = self._index.marker_etag(record.request_id)
        try:
            new_etag = self._documents.replace(name, record.to_json(), etag, _metadata(record))
        except DocumentChanged as exc:
            raise ConflictError(record.request_id, exc.reason) from exc
        if marker is not None:
            self._index.drop_marker(record.request_id, marker)
        return new_etag

    def _read_listed(self, name: str) -> tuple[LedgerRecord, str] | None:
        found = self._documents.read(name)
        if found is None:  # deleted since it was listed
            return None
        try:
            return LedgerRecord.from_json(found[0]), found[1]
        except ValidationError as exc:
            log_event(logger, "ledger_record_unreadable", level=logging.WARNING, blob=name, error=str(exc))
            return None

    def _head(self, request_id: str) -> tuple[RecordSummary, str, dict[str, str]] | None:
        """The record's summary, ETag and metadata from its properties (one request, no download
        unless an older version wrote it without a summary); None when there is no record."""
        from azure.core.exceptions import ResourceNotFoundError

        name = record_name(request_id)
        try:
            props = self._container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        metadata = dict(props.metadata or {})
        summary = self._summary(name, metadata)
        return None if summary is None else (summary, str(props.etag), metadata)

    def _listing(self) -> builtins.list[tuple[RecordSummary, str, str]] | None:
        """(summary, blob name, ETag) of every record from the metadata listing (one request per
        5,000 records): the way in before the index exists. None when there is no container."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            listed = list(self._container.list_blobs(name_starts_with=RECORD_PREFIX, include=["metadata"]))
        except ResourceNotFoundError:
            return None
        return [
            (summary, props.name, str(props.etag))
            for props in listed
            if props.name.endswith(".json")
            and (summary := self._summary(props.name, props.metadata or {})) is not None
        ]

    def _ensure_entries(self) -> builtins.list[tuple[RecordSummary, str, str]] | None:
        """Backfill the hour entries and hour blobs of a container an older version wrote (once):
        the full listing, which is returned for the caller to answer from. None when the index
        is built (``index/hours.v2`` is only written once ``index/created.v1`` is: one look; a
        container with ``created.v1`` but not ``hours.v2`` gets its hours from ``BlobIndex``)."""
        if self._index.built(HOURS_BUILT) or self._index.built(CREATED_BUILT):
            return None
        listed = self._listing()
        if listed is None:
            return []
        self._index.backfill_entries((summary.created_at, summary.request_id) for summary, _, _ in listed)
        self._index.mark_built(CREATED_BUILT)
        self._index.mark_built(HOURS_BUILT)
        return listed

    def list(self, *, limit: int | None = None, before: Cursor | None = None) -> Iterator[LedgerRecord]:
        for record, _etag in self.list_versioned(limit=limit, before=before):
            yield record

    def list_versioned(
        self, *, limit: int | None = None, before: Cursor | None = None
    ) -> Iterator[tuple[LedgerRecord, str]]:
        """Newest first by ``created_at`` (then request id), strictly older than ``before`` if given.

        Orders by the hour entries' names (the hour blobs' listing, newest hour first and read
        lazily, then one listing per hour until ``limit`` records are read); records are
        downloaded lazily, so ``limit`` bounds the downloads and the listing pages. A record that
        cannot be parsed is logged and skipped.
        """
        if limit is not None and limit <= 0:
            return
        listed = self._ensure_entries()
        if listed is not None:  # the first listing of an older container: answer from it
            keys = [(s.created_at, s.request_id, name) for s, name, _ in listed]
            keys = [key for key in keys if older(key[:2], before)]
            keys.sort(reverse=True)
            yield from readable((self._read_listed(name) for _, _, name in keys), limit)
            return
        yield from readable(self._paged(before), limit)

    def _paged(self, before: Cursor | None) -> Iterator[tuple[LedgerRecord, str] | None]:
        seen: set[str] = set()
        last_hour = hour(before[0]) if before is not None else None
        # Newest hour first and lazy: no listing page is asked for past the hour that fills the page.
        for at_hour in self._index.hours():
            if last_hour is not None and at_hour > last_hour:
                continue
            for created, request_id in sorted(
                (key for key in self._index.entries(at_hour) if older(key, before)), reverse=True
            ):
                read = None if request_id in seen else self._read_listed(record_name(request_id))
                if read is not None and read[0].created_at == created:
                    seen.add(request_id)
                    yield read
                else:  # gone, or a stale entry (a crash after it, a create that found a record)
                    yield None

    def list_summaries(self, *, since: datetime) -> Iterator[RecordSummary]:
        """From the listing's metadata alone: one request per 5,000 records, no download, except
        for a record written before summaries were stored (read once, then it has none either).
        For orphan recovery (rare) and ``runs show <run id>``: budgets read ``list_active``.

        Newest first by the records' own ``created_at``. Blobs last written more than a minute
        before ``since`` are not even parsed (a record is written when it is created or later;
        blob times are the server's, records' the writer's). Not ordered by blob time: an
        overwrite moves a blob's creation time on Azurite.
        """
        from azure.core.exceptions import ResourceNotFoundError

        try:
            listed = [
                (props.last_modified or props.creation_time, props.name, props.metadata or {})
                for props in self._container.list_blobs(name_starts_with=RECORD_PREFIX, include=["metadata"])
                if props.name.endswith(".json")
            ]
        except ResourceNotFoundError:
            return
        try:
            cutoff = since - _CLOCK_SLACK
        except OverflowError:  # since is datetime.min: everything
            cutoff = since
        summaries = [
            summary
            for written, name, metadata in listed
            if written >= cutoff and (summary := self._summary(name, metadata)) is not None
        ]
        summaries.sort(key=lambda s: (s.created_at, s.request_id), reverse=True)
        yield from summaries

    def _summary(self, name: str, metadata: Mapping[str, str]) -> RecordSummary | None:
        summary = RecordSummary.from_metadata(metadata.get(_SUMMARY, ""))
        if summary is None:
            read = self._read_listed(name)
            summary = RecordSummary.of(read[0]) if read is not None else None
        return summary

    def list_active(self) -> Iterator[RecordSummary]:
        """The active summaries: one listing of ``active/`` and one properties read per marker,
        O(active runs) whatever the history. Markers of settled records are removed on the way.

        A container an older version wrote has no markers: the first call answers from the full
        metadata listing, uploads a marker per active record, then ``index/active.v1``.
        """
        if not self._index.built(ACTIVE_BUILT):
            listed = self._listing()
            if listed is None:
                return
            active = [summary for summary, _, _ in listed if is_active(summary)]
            for summary in active:
                self._index.put_marker(summary.request_id)
            self._index.mark_built(ACTIVE_BUILT)
        else:
            active = []
            from concurrent.futures import ThreadPoolExecutor

            marked = self._index.markers()
            # One properties request per marker, a few at a time (latency, not work: each is
            # independent, and the listing that decides what is counted is already made).
            with ThreadPoolExecutor(max(1, min(_HEAD_THREADS, len(marked)))) as pool:
                heads = list(pool.map(self._head, [request_id for request_id, _ in marked]))
            for (request_id, marker_etag), found in zip(marked, heads, strict=True):
                if found is None:
                    continue  # no record (yet): a create may be between its marker and its record
                summary, etag, metadata = found
                if is_active(summary):
                    active.append(summary)
                else:
                    self._drop_stale_marker(request_id, marker_etag, etag, metadata)
        yield from sorted(active, key=lambda s: (s.created_at, s.request_id), reverse=True)

    def _drop_stale_marker(
        self, request_id: str, marker_etag: str, etag: str, metadata: dict[str, str]
    ) -> None:
        """Remove the marker of a record that is settled at ``etag`` (see the class docstring)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        blob = self._container.get_blob_client(record_name(request_id))
        try:  # a writer still holding ``etag`` (about to reactivate the record) now fails
            blob.set_blob_metadata(metadata, etag=etag, match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                return  # written or deleted since: its writer handled the marker
            raise
        self._index.drop_marker(request_id, marker_etag)

    def expire(self, *, before: datetime, export: Path | None = None) -> builtins.list[str]:
        """Delete records created and last updated before ``before`` (see FolderLedger.expire),
        each conditional on the ETag read (``If-Match``): a record written since is kept.

        Reads the hours up to ``before``'s hour (one listing, newest first, so the retention
        window's newer hours are read too), the
        entries of each (one listing per hour) and one properties request per record there:
        after the first pass, what expires since the last one. The record goes first, then its
        marker (``If-Match`` as read before) and its entry; an hour strictly older than
        ``before``'s left without entries loses its hour blob (``BlobIndex.drop_hour``).
        Exported first when asked.
        """
        from azure.core import MatchConditions

        expired: builtins.list[str] = []
        self._ensure_entries()
        last_hour = hour(before)
        for at_hour in self._index.hours_through(last_hour):
            kept = 0
            for created, request_id in self._index.entries(at_hour):
                if created >= before:
                    kept += 1
                    continue
                found = self._head(request_id)
                if found is None or found[0].created_at != created:
                    self._index.drop_entry(created, request_id)  # a stale entry (no create is that old)
                    continue
                summary, etag, _metadata_now = found
                if max(summary.created_at, summary.updated_at) >= before:
                    kept += 1
                    continue
                marker = self._index.marker_etag(request_id)
                name = record_name(request_id)
                if export is not None:
                    downloader = self._container.download_blob(
                        name, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
                    export.mkdir(parents=True, exist_ok=True)
                    create_exclusive(export / f"{request_id}.json", downloader.readall())
                try:
                    self._documents.delete(name, etag)
                except DocumentChanged:
                    kept += 1
                    continue
                if marker is not None:
                    self._index.drop_marker(request_id, marker)
                self._index.drop_entry(created, request_id)
                expired.append(request_id)
            if not kept and at_hour < last_hour:
                self._index.drop_hour(at_hour)
        return expired


def _metadata(record: LedgerRecord) -> dict[str, str]:
    return {_SUMMARY: RecordSummary.of(record).to_metadata()}

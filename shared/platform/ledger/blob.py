"""``BlobLedger``: records as blobs ``runs/<request_id>.json`` in one container (Azure or Azurite).

The conditional writes (``If-None-Match: *`` to claim, ``If-Match`` to replace, the write mark
that recognises our own write after a lost response) are ``shared.platform.documents.BlobDocuments``,
shared with the state store. What is the ledger's own: every write also stores the record's
summary as blob metadata, so one listing request per 5,000 records answers the budgets'
questions without downloading a record per run.
"""

from __future__ import annotations

import builtins
import itertools
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.platform.documents import BlobDocuments, DocumentChanged, create_exclusive
from shared.platform.ledger.paging import Cursor, older, readable
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
# Blob creation times are the server's, records' times the writer's.
_CLOCK_SLACK = timedelta(minutes=1)


class BlobLedger:
    """Records as blobs ``runs/<request_id>.json`` in one container; ETags guard every write.

    Writes are single-shot uploads (a record is far below the single-put limit), so a reader
    sees a whole record or none. Every write carries a random marker in the blob's metadata: when
    a response is lost and the SDK retries a write that did succeed, the retry fails its
    condition, and the marker shows the write was ours (otherwise a claim would look taken by
    someone else and the build would never run).
    """

    def __init__(self, container_client: ContainerClient) -> None:
        self._container = container_client
        self._documents = BlobDocuments(container_client, _WRITE_MARK)

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
        """Conditional create (``If-None-Match: *``). Creates the container on first use."""
        return self._documents.create(record_name(record.request_id), record.to_json(), _metadata(record))

    def get(self, request_id: str) -> tuple[LedgerRecord, str] | None:
        found = self._documents.read(record_name(request_id))
        return None if found is None else (LedgerRecord.from_json(found[0]), found[1])

    def replace(self, record: LedgerRecord, etag: str) -> str:
        """Overwrite with ``If-Match: <etag>``; ConflictError on 412 (changed) or 404 (gone)."""
        name = record_name(record.request_id)
        try:
            return self._documents.replace(name, record.to_json(), etag, _metadata(record))
        except DocumentChanged as exc:
            raise ConflictError(record.request_id, exc.reason) from exc

    def _read_listed(self, name: str) -> tuple[LedgerRecord, str] | None:
        found = self._documents.read(name)
        if found is None:  # deleted since it was listed
            return None
        try:
            return LedgerRecord.from_json(found[0]), found[1]
        except ValidationError as exc:
            log_event(logger, "ledger_record_unreadable", level=logging.WARNING, blob=name, error=str(exc))
            return None

    def list(self, *, limit: int | None = None, before: Cursor | None = None) -> Iterator[LedgerRecord]:
        for record, _etag in self.list_versioned(limit=limit, before=before):
            yield record

    def list_versioned(
        self, *, limit: int | None = None, before: Cursor | None = None
    ) -> Iterator[tuple[LedgerRecord, str]]:
        """Newest first by ``created_at`` (then request id), strictly older than ``before`` if given.

        Ordered from the listing's summaries (one request per 5,000 records, names and metadata
        only); records are downloaded lazily, so ``limit`` bounds the downloads. A record that
        cannot be parsed is logged and skipped, so one bad blob does not hide the others.
        """
        from azure.core.exceptions import ResourceNotFoundError

        if limit is not None and limit <= 0:
            return
        try:
            listed = [
                (summary, props.name)
                for props in self._container.list_blobs(name_starts_with=RECORD_PREFIX, include=["metadata"])
                if props.name.endswith(".json")
                and (summary := self._summary(props.name, props.metadata or {})) is not None
                and older((summary.created_at, summary.request_id), before)
            ]
        except ResourceNotFoundError:  # no container yet: no records
            return
        listed.sort(key=lambda item: (item[0].created_at, item[0].request_id), reverse=True)
        yield from readable((self._read_listed(name) for _summary, name in listed), limit)

    def list_summaries(self, *, since: datetime) -> Iterator[RecordSummary]:
        """From the listing's metadata alone: one request per 5,000 records, no download, except
        for a record written before summaries were stored (read once, then it has none either).

        Newest first by blob creation time; stops at the first blob created more than a minute
        before ``since`` (creation times are the server's, records' times the writer's).
        """
        from azure.core.exceptions import ResourceNotFoundError

        try:
            listed = [
                (props.creation_time or props.last_modified, props.name, props.metadata or {})
                for props in self._container.list_blobs(name_starts_with=RECORD_PREFIX, include=["metadata"])
                if props.name.endswith(".json")
            ]
        except ResourceNotFoundError:
            return
        listed.sort(key=lambda item: item[0], reverse=True)
        try:
            cutoff = since - _CLOCK_SLACK
        except OverflowError:  # since is datetime.min: everything
            cutoff = since
        for created, group in itertools.groupby(listed, key=lambda item: item[0]):
            if created < cutoff:
                return
            summaries = [s for _, name, metadata in group if (s := self._summary(name, metadata)) is not None]
            # Blob times have one-second granularity: within one, the record's own time decides.
            summaries.sort(key=lambda s: (s.created_at, s.request_id), reverse=True)
            yield from summaries

    def _summary(self, name: str, metadata: Mapping[str, str]) -> RecordSummary | None:
        summary = RecordSummary.from_metadata(metadata.get(_SUMMARY, ""))
        if summary is None:
            read = self._read_listed(name)
            summary = RecordSummary.of(read[0]) if read is not None else None
        return summary

    def list_active(self) -> Iterator[RecordSummary]:
        """The active summaries, filtered from the metadata listing (one request per 5,000 records,
        no record is downloaded): O(records) requests, not O(active runs).

        Not blob index tags: "it might take some time before the blob index updates" after a
        write (https://learn.microsoft.com/azure/storage/blobs/storage-manage-find-blobs,
        "Finding data using blob index tags"), and the budgets need a listing that sees every
        claim written before it (see ``shared.dispatch.budgets``).
        """
        for summary in self.list_summaries(since=datetime.min.replace(tzinfo=UTC)):
            if is_active(summary):
                yield summary

    def expire(self, *, before: datetime, export: Path | None = None) -> builtins.list[str]:
        """Delete records created and last updated before ``before`` (see FolderLedger.expire),
        each conditional on the ETag listed (``If-Match``): a record written since is kept.
        Exported first when asked. One listing request per 5,000 records, then one per delete."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceNotFoundError

        expired: builtins.list[str] = []
        try:
            listed = list(self._container.list_blobs(name_starts_with=RECORD_PREFIX, include=["metadata"]))
        except ResourceNotFoundError:
            return expired
        for props in listed:
            if not props.name.endswith(".json"):
                continue
            summary = self._summary(props.name, props.metadata or {})
            if summary is None or max(summary.created_at, summary.updated_at) >= before:
                continue
            if export is not None:
                downloader = self._container.download_blob(
                    props.name, etag=props.etag, match_condition=MatchConditions.IfNotModified
                )
                export.mkdir(parents=True, exist_ok=True)
                create_exclusive(export / f"{summary.request_id}.json", downloader.readall())
            try:
                self._documents.delete(props.name, props.etag)
            except DocumentChanged:
                continue
            expired.append(summary.request_id)
        return expired


def _metadata(record: LedgerRecord) -> dict[str, str]:
    return {_SUMMARY: RecordSummary.of(record).to_metadata()}

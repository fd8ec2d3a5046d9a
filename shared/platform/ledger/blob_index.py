"""The Blob ledger's index: an empty marker blob per active record, an entry per record by hour.

Budgets and reconciliation ask "which records are active" on every dispatch and timer tick, and
``runs list`` asks for the newest page: listing every record's metadata (one request per 5,000
records) makes both grow with history. Two prefixes answer them instead:

- ``active/<request_id>``: one empty blob per record that may be active (``is_active``); listing
  the prefix costs O(active runs). A marker says only "look at this record": the record's own
  metadata (its summary, written with it) decides, read with one request per marker.
- ``index/created/<YYYY-MM-DDTHH>/<created>~<id>.json``: one empty blob per record, under its
  creation hour (the folder ledger's ``index/settled`` naming): a page lists the newest hours
  until it has enough names, then reads only its records.

Not blob index tags: "it might take some time before the blob index updates" after a write
(https://learn.microsoft.com/azure/storage/blobs/storage-manage-find-blobs), while a listing
sees every completed write: "after the service performs an insert or update operation,
subsequent read or list operations return the latest update"
(https://learn.microsoft.com/azure/storage/blobs/concurrency-manage). The same page: a blob's
ETag "is updated every time a write operation is performed on an object", so an unconditional
re-upload of a marker changes its ETag, which the conditional deletes below rely on.

``index/active.v1`` and ``index/created.v1`` say that every record has its marker or entry; a
container an older version wrote has neither, so the ledger falls back to the full listing
once and backfills (``BlobLedger``).
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from shared.platform.ledger.paging import Cursor, entry_key, entry_name, hour

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

ACTIVE_PREFIX = "active/"
CREATED_PREFIX = "index/created/"
ACTIVE_BUILT = "index/active.v1"
CREATED_BUILT = "index/created.v1"
# Backfilling an older container writes one small blob per record: that many at a time.
_BACKFILL_THREADS = 16


class BlobIndex:
    """Marker and entry blobs of one ledger container (see the module docstring)."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container
        self._built: set[str] = set()

    # ------------------------------------------------------------------ writes

    def _put(self, name: str) -> str:
        """Upload an empty blob (overwriting: a new ETag every time); creates the container first
        use. Returns the ETag."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        blob = self._container.get_blob_client(name)
        try:
            result = blob.upload_blob(b"", overwrite=True)
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) != "ContainerNotFound":
                raise
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container()
            result = blob.upload_blob(b"", overwrite=True)
        return str(result["etag"])

    def _delete(self, name: str, etag: str | None = None) -> bool:
        """Delete ``name`` (only while it has ``etag``, when given); False when it was gone or changed."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        try:
            if etag is None:
                self._container.delete_blob(name)
            else:
                self._container.delete_blob(name, etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            return False
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return False
            raise
        return True

    def put_marker(self, request_id: str) -> str:
        """Before a write that leaves the record active: the record never lacks its marker."""
        return self._put(ACTIVE_PREFIX + request_id)

    def marker_etag(self, request_id: str) -> str | None:
        """The marker's ETag (None: no marker), read *before* a write that settles the record."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return str(self._container.get_blob_client(ACTIVE_PREFIX + request_id).get_blob_properties().etag)
        except ResourceNotFoundError:
            return None

    def drop_marker(self, request_id: str, etag: str) -> bool:
        """Delete the marker if no writer re-uploaded it since ``etag`` was read (``If-Match``)."""
        return self._delete(ACTIVE_PREFIX + request_id, etag)

    def markers(self) -> builtins.list[tuple[str, str]]:
        """(request id, marker ETag) of every marker: one listing request per 5,000 markers."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return [
                (props.name.removeprefix(ACTIVE_PREFIX), str(props.etag))
                for props in self._container.list_blobs(name_starts_with=ACTIVE_PREFIX)
            ]
        except ResourceNotFoundError:  # no container yet
            return []

    def _entry(self, created_at: datetime, request_id: str) -> str:
        return f"{CREATED_PREFIX}{hour(created_at)}/{entry_name(created_at, request_id)}"

    def put_entry(self, created_at: datetime, request_id: str) -> None:
        """Before a record's create: a record never lacks its entry (an entry may lack its record)."""
        self._put(self._entry(created_at, request_id))

    def drop_entry(self, created_at: datetime, request_id: str) -> None:
        self._delete(self._entry(created_at, request_id))

    # ------------------------------------------------------------------ reads

    def hours(self) -> builtins.list[str]:
        """Creation hours that have entries, newest first (one request per 5,000 hours)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            names = [
                item.name.removeprefix(CREATED_PREFIX).rstrip("/")
                for item in self._container.walk_blobs(name_starts_with=CREATED_PREFIX, delimiter="/")
            ]
        except ResourceNotFoundError:
            return []
        return sorted(names, reverse=True)

    def entries(self, at_hour: str) -> builtins.list[Cursor]:
        """(created_at, request_id) of the entries of one hour, from their names alone."""
        from azure.core.exceptions import ResourceNotFoundError

        prefix = f"{CREATED_PREFIX}{at_hour}/"
        try:
            names = [props.name for props in self._container.list_blobs(name_starts_with=prefix)]
        except ResourceNotFoundError:
            return []
        return [key for name in names if (key := entry_key(name.removeprefix(prefix))) is not None]

    # ------------------------------------------------------------------ the version marks

    def built(self, mark: str) -> bool:
        """Whether ``mark`` (``ACTIVE_BUILT``, ``CREATED_BUILT``) exists; remembered once seen."""
        from azure.core.exceptions import ResourceNotFoundError

        if mark in self._built:
            return True
        try:
            self._container.get_blob_client(mark).get_blob_properties()
        except ResourceNotFoundError:
            return False
        self._built.add(mark)
        return True

    def mark_built(self, mark: str) -> None:
        self._put(mark)
        self._built.add(mark)

    def backfill_entries(self, keys: Iterable[Cursor]) -> None:
        """An entry for each (created_at, request_id), ``_BACKFILL_THREADS`` uploads at a time."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(_BACKFILL_THREADS) as pool:
            for _ in pool.map(lambda key: self.put_entry(*key), keys):
                pass

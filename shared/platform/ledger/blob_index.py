"""The Blob ledger's index: an empty marker blob per active record, an entry per record by hour.

Budgets and reconciliation ask "which records are active" on every dispatch and timer tick, and
``runs list`` asks for the newest page: listing every record's metadata (one request per 5,000
records) makes both grow with history. Three prefixes answer them instead:

- ``active/<request_id>``: one empty blob per record that may be active (``is_active``); listing
  the prefix costs O(active runs). A marker says only "look at this record": the record's own
  metadata (its summary, written with it) decides, read with one request per marker.
- ``index/created/<YYYY-MM-DDTHH>/<created>~<id>.json``: one empty blob per record, under its
  creation hour (the folder ledger's ``index/settled`` naming): a page lists the newest hours
  until it has enough names, then reads only its records.
- ``index/hours/<10**10 - YYYYMMDDHH, 10 digits>~<YYYY-MM-DDTHH>``: one empty blob per creation
  hour that has entries (``hour_blob_name``), listed *without* a delimiter. Rolling the entries up
  by ``delimiter=/`` would answer the same, but the service documents no cost bound for that
  roll-up, and Azurite sorts every entry under the prefix to make it (2 s at 50k records). A
  listing "returns entities in alphabetical order", up to 5,000 a request
  (https://learn.microsoft.com/rest/api/storageservices/enumerating-blob-resources): the inverted
  key makes that newest hour first, so a page reads listing pages only until it has its records
  (O(page), not O(hours)); expiry, which wants the hours up to its cut, reads the hours newer than
  the cut too, at most the retention window's (15 days or more: ~360 names a request).

Not blob index tags: "it might take some time before the blob index updates" after a write
(https://learn.microsoft.com/azure/storage/blobs/storage-manage-find-blobs), while a listing
sees every completed write: "after the service performs an insert or update operation,
subsequent read or list operations return the latest update"
(https://learn.microsoft.com/azure/storage/blobs/concurrency-manage). The same page: a blob's
ETag "is updated every time a write operation is performed on an object", so an unconditional
re-upload of a marker changes its ETag, which the conditional deletes below rely on.

**Hour blobs.** An entry never lacks its hour blob: ``put_entry`` uploads the hour's blob before
the entry, unless this instance already did (``_hours_written``: one request per hour and
instance, not per record). Remembering is safe because an hour blob, once written, is removed
only by ``drop_hour``, which expiry calls for hours strictly older than its cut's hour, while
every create is stamped with its writer's clock (``created_at`` is the claim's *now*) and the
cut is *now* minus the retention, at least ``MIN_RETENTION`` (15 days): an hour a create writes
is never one expiry removes, unless a writer's clock is 15 days behind. Removal is
conservative all the same: the hour's entries are listed again just before the delete, and
once more after it, and a late entry puts the hour blob back; the instance that removes an hour
forgets it. A stale hour blob (its entries gone) costs a page one empty listing until the
next expiry pass removes it.

``index/active.v1``, ``index/created.v1`` and ``index/hours.v2`` say that every record has its
marker, its entry, and every entry its hour blob; a container an older version wrote lacks them,
so the ledger falls back to a full listing once and backfills (``BlobLedger``, ``hours``). A
container with ``index/hours.v1`` (one blob ``index/hours/<YYYY-MM-DDTHH>`` per hour, oldest first)
gets the v2 names of those hours, loses the v1 blobs, then gets ``index/hours.v2``.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from shared.platform.ledger.paging import Cursor, entry_key, entry_name, hour

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

ACTIVE_PREFIX = "active/"
CREATED_PREFIX = "index/created/"
HOURS_PREFIX = "index/hours/"
ACTIVE_BUILT = "index/active.v1"
CREATED_BUILT = "index/created.v1"
HOURS_BUILT = "index/hours.v2"
# The mark of the hour blobs' first layout, ``index/hours/<YYYY-MM-DDTHH>`` (oldest first).
HOURS_V1_BUILT = "index/hours.v1"
# Names per request of the hours listing (``maxresults``): None is the service's default and
# maximum, "if the maximum number of results is not specified in the request or if it's greater
# than 5,000, the server returns up to the maximum of 5,000 items"
# (https://learn.microsoft.com/rest/api/storageservices/enumerating-blob-resources). Tests lower
# it to see that a page stops asking for the next one.
HOURS_PER_REQUEST: int | None = None
# Backfilling an older container writes one small blob per record: that many at a time.
_BACKFILL_THREADS = 16


def hour_blob_name(at_hour: str) -> str:
    """The hour blob of ``hour()``'s ``YYYY-MM-DDTHH``: ``10**10 - YYYYMMDDHH``, zero-padded to 10
    digits (years 1 to 9999 give 876877 to 9998989900), so names sort newest hour first; the
    readable hour follows ``~``."""
    stamp = int(at_hour.replace("-", "").replace("T", ""))
    return f"{HOURS_PREFIX}{10**10 - stamp:010d}~{at_hour}"


def blob_hour(name: str) -> str | None:
    """``hour_blob_name``'s hour back; None for a name without ``~`` (a v1 hour blob)."""
    _key, sep, at_hour = name.removeprefix(HOURS_PREFIX).partition("~")
    return at_hour if sep else None


class BlobIndex:
    """Marker and entry blobs of one ledger container (see the module docstring)."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container
        self._built: set[str] = set()
        # Hours whose blob this instance uploaded (see "Hour blobs" in the module docstring).
        self._hours_written: set[str] = set()

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
        """Before a record's create: a record never lacks its entry (an entry may lack its record),
        nor an entry its hour blob (uploaded first, once per hour and instance)."""
        self._put_hours([hour(created_at)])
        self._put(self._entry(created_at, request_id))

    def drop_entry(self, created_at: datetime, request_id: str) -> None:
        self._delete(self._entry(created_at, request_id))

    def _put_hours(self, hours: Iterable[str]) -> None:
        """The hour blobs this instance has not written yet, ``_BACKFILL_THREADS`` at a time."""
        from concurrent.futures import ThreadPoolExecutor

        missing = sorted(set(hours) - self._hours_written)
        if len(missing) == 1:
            self._put(hour_blob_name(missing[0]))
        elif missing:
            with ThreadPoolExecutor(min(_BACKFILL_THREADS, len(missing))) as pool:
                for _ in pool.map(lambda at_hour: self._put(hour_blob_name(at_hour)), missing):
                    pass
        self._hours_written.update(missing)

    def drop_hour(self, at_hour: str) -> bool:
        """Remove the blob of an hour that has no entries (expiry, for hours strictly older than
        its cut: see the module docstring); False when the hour still has entries.

        The entries are listed again right before the delete, and once more after it: an entry
        that appeared meanwhile (only a writer whose clock is a retention behind could add one)
        gets its hour blob back."""
        if self.entries(at_hour):
            return False
        self._hours_written.discard(at_hour)
        self._delete(hour_blob_name(at_hour))
        if self.entries(at_hour):
            self._put_hours([at_hour])
            return False
        return True

    # ------------------------------------------------------------------ reads

    def hours(self) -> Iterator[str]:
        """Creation hours that have entries, newest first, lazily: the listing of ``index/hours/``
        (no delimiter) asks for its next 5,000 names only when the caller reads past the last.
        ``list_blobs`` returns an ``azure.core.paging.ItemPaged`` whose ``__next__`` chains
        ``by_page()``, and its ``PageIterator.__next__`` sends one request per page asked for
        (azure-core 1.41.0, ``azure/core/paging.py``; azure-storage-blob 12.31.1, ``list_blobs``
        in ``_container_client.py``, "will lazily follow the continuation tokens")."""
        return self._hour_names()

    def hours_through(self, last: str) -> builtins.list[str]:
        """The hours up to ``last`` included, oldest first. The listing is newest first, so it
        reads the hours after ``last`` too (expiry's: the retention window's, see the module
        docstring)."""
        return sorted(at_hour for at_hour in self._hour_names() if at_hour <= last)

    def _hour_names(self) -> Iterator[str]:
        from azure.core.exceptions import ResourceNotFoundError

        self._ensure_hours()
        try:
            listed = self._container.list_blobs(
                name_starts_with=HOURS_PREFIX, results_per_page=HOURS_PER_REQUEST
            )
            for props in listed:
                if (at_hour := blob_hour(props.name)) is not None:  # v1 names: see _ensure_hours
                    yield at_hour
        except ResourceNotFoundError:  # no container yet
            return

    def _ensure_hours(self) -> None:
        """A container without ``index/hours.v2`` (once): its hours are the v1 hour blobs' names
        when it has ``index/hours.v1``, else (the version before the hour blobs) the entries rolled
        up by ``delimiter=/`` (that request grows with history on Azurite). Uploads their v2 blobs,
        deletes the v1 ones, then writes ``index/hours.v2``; a pass cut short is done again."""
        from azure.core.exceptions import ResourceNotFoundError

        if self.built(HOURS_BUILT):
            return
        try:
            v1 = [
                props.name
                for props in self._container.list_blobs(name_starts_with=HOURS_PREFIX)
                if blob_hour(props.name) is None
            ]
            if self.built(HOURS_V1_BUILT):
                derived = [name.removeprefix(HOURS_PREFIX) for name in v1]
            else:
                derived = [
                    item.name.removeprefix(CREATED_PREFIX).rstrip("/")
                    for item in self._container.walk_blobs(name_starts_with=CREATED_PREFIX, delimiter="/")
                ]
        except ResourceNotFoundError:  # no container yet: nothing to derive, nothing to mark
            return
        self._put_hours(derived)
        for name in v1:
            self._delete(name)
        self.mark_built(HOURS_BUILT)

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
        """Whether ``mark`` (``ACTIVE_BUILT``, ``CREATED_BUILT``, ``HOURS_BUILT``, ...) exists;
        remembered once seen."""
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
        """An entry for each (created_at, request_id), ``_BACKFILL_THREADS`` uploads at a time,
        after the blobs of their hours (the caller then marks ``HOURS_BUILT`` too)."""
        from concurrent.futures import ThreadPoolExecutor

        keys = builtins.list(keys)
        self._put_hours(hour(created_at) for created_at, _ in keys)
        with ThreadPoolExecutor(_BACKFILL_THREADS) as pool:
            for _ in pool.map(lambda key: self._put(self._entry(*key)), keys):
                pass

"""``FolderLedger``: records as files in a local folder (``slipway serve``, tests), with a summary index.

The folder form of the Blob ledger's conditional writes is ``shared.platform.documents`` (exclusive
create, replace if unchanged, one ``flock`` per folder), shared with the folder state store. What
is the ledger's own is the index of summaries that answers budgets, listings and expiry without
reading the ~36 KB records (see ``FolderLedger``).
"""

from __future__ import annotations

import builtins
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from shared.platform.documents import (
    DocumentChanged,
    content_etag,
    create_exclusive,
    folder_lock,
    replace_if_unchanged,
)
from shared.platform.ledger.paging import Cursor, entry_key, older, readable
from shared.platform.ledger.paging import entry_name as _entry_name_of
from shared.platform.ledger.paging import hour as _hour
from shared.platform.ledger.records import RECORD_PREFIX, ConflictError, LedgerRecord, record_name
from shared.platform.ledger.summary import RecordSummary, is_active
from shared.platform.logs import log_event

logger = logging.getLogger("slipway.ledger")


class FolderLedger:
    """Records as files ``<root>/runs/<request_id>.json``, for local mode and tests (POSIX).

    A record file only ever appears complete: it is written to a temporary file, synced, then
    published with ``link(2)`` (create: fails if the name exists, so it is an exclusive create
    like O_CREAT|O_EXCL, without a window where a half-written claim is visible) or
    ``os.replace`` (replace). Writers also hold an exclusive ``flock`` on ``<root>/.lock``, so
    the ETag check and the rename of ``replace`` are atomic across threads and processes.
    Readers need no lock.

    Records are ~36 KB (task YAML, run request, history), so the questions asked on every
    request and timer tick are answered from a small index of summaries (a few hundred bytes
    each), written under the same lock after the record is published and before the write
    returns:

    - ``index/active/<created>~<id>.json``: records that may still start a run or are followed
      (``is_active``): what budgets and reconciliation read, O(active runs);
    - ``index/settled/<created YYYY-MM-DDTHH>/<created>~<id>.json``: the rest, by hour of creation (a
      record's creation time never changes, so the entry's place is known from the record
      alone): ``list`` and ``expire`` read only the hours they need, a page about one hour's
      worth of entries whatever the history.

    The order (record, then new entry, then the old entry removed) means a crash between them
    leaves at worst a stale or missing entry for a write that never returned: its caller started
    no run, and the record's next write repairs the entry. A folder written before the index
    existed is indexed once, on first read.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._index = self.root / "index"
        self._marker = self._index / ".v1"  # every record has its entry
        self.entry_reads = 0  # index entries read, for the tests and the benchmark
        self.record_reads = 0  # whole records read

    def _path(self, request_id: str) -> Path:
        return self.root / record_name(request_id)

    def create(self, record: LedgerRecord) -> bool:
        return self.create_versioned(record) is not None

    def create_versioned(self, record: LedgerRecord) -> str | None:
        data = record.to_json()
        with folder_lock(self.root):
            self._build_index()
            if not create_exclusive(self._path(record.request_id), data):
                return None
            self._write_entry(RecordSummary.of(record))
            return content_etag(data)

    def get(self, request_id: str) -> tuple[LedgerRecord, str] | None:
        try:
            data = self._path(request_id).read_bytes()
        except FileNotFoundError:
            return None
        self.record_reads += 1
        return LedgerRecord.from_json(data), content_etag(data)

    def replace(self, record: LedgerRecord, etag: str) -> str:
        with folder_lock(self.root):
            self._build_index()
            try:
                new_etag = replace_if_unchanged(self._path(record.request_id), record.to_json(), etag)
            except DocumentChanged as exc:
                raise ConflictError(record.request_id, exc.reason) from None
            self._write_entry(RecordSummary.of(record))
            return new_etag

    # ------------------------------------------------------------------ the summary index

    def _active_entry(self, summary: RecordSummary) -> Path:
        return self._index / "active" / _entry_name(summary)

    def _settled_entry(self, summary: RecordSummary) -> Path:
        return self._index / "settled" / _hour(summary.created_at) / _entry_name(summary)

    def _write_entry(self, summary: RecordSummary) -> None:
        """Publish ``summary`` where its state belongs, then drop it from the other place."""
        active, settled = self._active_entry(summary), self._settled_entry(summary)
        new, old = (active, settled) if is_active(summary) else (settled, active)
        new.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=new.parent, prefix=".tmp-", suffix=".part")
        with os.fdopen(fd, "w") as handle:
            handle.write(summary.to_metadata())
        os.replace(temp, new)
        old.unlink(missing_ok=True)

    def _read_entries(self, folder: Path) -> builtins.list[RecordSummary]:
        summaries: builtins.list[RecordSummary] = []
        with suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith(".json"):
                    continue
                try:
                    with open(entry.path) as handle:
                        text = handle.read()
                except FileNotFoundError:  # moved between active and settled since the listing
                    continue
                self.entry_reads += 1
                summary = RecordSummary.from_metadata(text)
                if summary is not None:
                    summaries.append(summary)
        return summaries

    @staticmethod
    def _entry_keys(folder: Path) -> builtins.list[Cursor]:
        """(created_at, request_id) of each entry in ``folder``, from the names alone."""
        keys: builtins.list[Cursor] = []
        with suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and (key := _entry_key(entry.name)) is not None:
                    keys.append(key)
        return keys

    def _settled_hours(self) -> builtins.list[str]:
        """Creation hours (``_hour``) that have settled entries, newest first."""
        with suppress(FileNotFoundError), os.scandir(self._index / "settled") as entries:
            return sorted((e.name for e in entries if not e.name.startswith(".")), reverse=True)
        return []

    def _ensure_index(self) -> None:
        """Index a folder written before the index existed (once; every record is read)."""
        if not self._marker.exists():
            with folder_lock(self.root):
                self._build_index()

    def _build_index(self) -> None:
        """``_ensure_index``'s work, for a caller holding the lock: writers call it first, so a
        folder's first write indexes what an older version left before adding to it."""
        if self._marker.exists():
            return
        runs = self.root / RECORD_PREFIX.rstrip("/")
        for path in runs.glob("*.json") if runs.is_dir() else ():
            if path.name.startswith("."):
                continue
            try:
                self._write_entry(RecordSummary.of(LedgerRecord.from_json(path.read_bytes())))
            except ValidationError as exc:
                log_event(
                    logger,
                    "ledger_record_unreadable",
                    level=logging.WARNING,
                    path=str(path),
                    error=str(exc),
                )
        self._index.mkdir(parents=True, exist_ok=True)
        self._marker.touch()

    @staticmethod
    def _newest_first(summaries: builtins.list[RecordSummary]) -> builtins.list[RecordSummary]:
        latest: dict[str, RecordSummary] = {}
        for summary in summaries:  # after a crash an id can have two entries: the newer one holds
            kept = latest.get(summary.request_id)
            if kept is None or summary.updated_at > kept.updated_at:
                latest[summary.request_id] = summary
        return sorted(latest.values(), key=lambda s: (s.created_at, s.request_id), reverse=True)

    def list_active(self) -> Iterator[RecordSummary]:
        """Only the active entries: O(runs that may start or are followed), whatever the history."""
        self._ensure_index()
        yield from self._newest_first(self._read_entries(self._index / "active"))

    def list_summaries(self, *, since: datetime) -> Iterator[RecordSummary]:
        """The active entries and the settled hours from ``since``'s hour on (no record is read)."""
        self._ensure_index()
        first_hour = _hour(since) if since > datetime.min.replace(tzinfo=UTC) else ""
        found = self._read_entries(self._index / "active")
        for hour in self._settled_hours():
            if hour < first_hour:
                break
            found.extend(self._read_entries(self._index / "settled" / hour))
        yield from (s for s in self._newest_first(found) if s.created_at >= since)

    def list(self, *, limit: int | None = None, before: Cursor | None = None) -> Iterator[LedgerRecord]:
        for record, _etag in self.list_versioned(limit=limit, before=before):
            yield record

    def list_versioned(
        self, *, limit: int | None = None, before: Cursor | None = None
    ) -> Iterator[tuple[LedgerRecord, str]]:
        """Newest first by ``created_at`` (then request id), strictly older than ``before`` if given.

        Orders by the entries' names alone (``_entry_name``: creation time and id), from the
        active entries and the newest settled hours until ``limit`` are found, then reads only
        those records. A record that cannot be parsed is logged and skipped.
        """
        if limit is not None and limit <= 0:
            return
        self._ensure_index()
        keys = [k for k in self._entry_keys(self._index / "active") if older(k, before)]
        settled = 0
        for hour in self._settled_hours():
            if before is not None and hour > _hour(before[0]):
                continue
            if limit is not None and settled >= limit:
                break  # hours are newest first: every later hour is older than what was found
            found = [k for k in self._entry_keys(self._index / "settled" / hour) if older(k, before)]
            settled += len(found)
            keys += found
        # A request id can be in both places after a crash between two writes: once is enough.
        newest_first = dict.fromkeys(request_id for _created, request_id in sorted(keys, reverse=True))
        yield from readable((self._read_record(request_id) for request_id in newest_first), limit)

    def _read_record(self, request_id: str) -> tuple[LedgerRecord, str] | None:
        try:
            return self.get(request_id)
        except FileNotFoundError:
            return None
        except ValidationError as exc:
            log_event(
                logger,
                "ledger_record_unreadable",
                level=logging.WARNING,
                request_id=request_id,
                error=str(exc),
            )
            return None

    def expire(self, *, before: datetime, export: Path | None = None) -> builtins.list[str]:
        """Delete the records created and last updated before ``before``; returns their ids.

        Reads the active entries (a record left active that long, a claim whose worker died, is
        read by no one: budgets and recovery look 14 days back, see ``MIN_RETENTION``) and the
        settled hours up to ``before``'s hour. With ``export``, each record is copied to
        ``<export>/<id>.json`` (synced) before it is deleted. The record goes first, then its
        entry: a crash between leaves an entry whose record is gone, removed next time.
        """
        self._ensure_index()
        expired: builtins.list[str] = []
        last_hour = _hour(before)
        folders = [self._index / "active"]
        folders += [self._index / "settled" / hour for hour in self._settled_hours() if hour <= last_hour]
        for folder in folders:
            for summary in self._read_entries(folder):
                if max(summary.created_at, summary.updated_at) >= before:
                    continue
                with folder_lock(self.root):
                    if self._expire_one(summary, folder / _entry_name(summary), export):
                        expired.append(summary.request_id)
            if folder.parent.name == "settled":
                with folder_lock(self.root), suppress(OSError):
                    folder.rmdir()  # only when empty; under the lock, as writers create entries
        return expired

    def _expire_one(self, summary: RecordSummary, entry: Path, export: Path | None) -> bool:
        """Under the lock: delete the record if it is still what ``summary`` says."""
        path = self._path(summary.request_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            entry.unlink(missing_ok=True)
            return False
        if RecordSummary.of(LedgerRecord.from_json(data)) != summary:
            return False  # written since the entry was read: its new entry decides
        if export is not None:
            export.mkdir(parents=True, exist_ok=True)
            create_exclusive(export / f"{summary.request_id}.json", data)
        path.unlink()
        entry.unlink(missing_ok=True)
        return True


def _entry_name(summary: RecordSummary) -> str:
    return _entry_name_of(summary.created_at, summary.request_id)


_entry_key = entry_key

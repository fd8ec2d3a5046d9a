"""The ``Ledger`` port: what the dispatcher, budgets, reconciler and CLI need of a record store.

``BlobLedger`` (Azure Storage or Azurite) and ``FolderLedger`` (a local folder) implement it.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from shared.platform.ledger.paging import Cursor
from shared.platform.ledger.records import LedgerRecord
from shared.platform.ledger.summary import RecordSummary


@runtime_checkable
class Ledger(Protocol):
    """Persistence of ledger records with optimistic concurrency."""

    def create(self, record: LedgerRecord) -> bool:
        """Store a new record. False when one with that id exists; never overwrites."""
        ...

    def create_versioned(self, record: LedgerRecord) -> str | None:
        """``create``, returning the new record's ETag (None when one existed): no read back."""
        ...

    def get(self, request_id: str) -> tuple[LedgerRecord, str] | None:
        """The record and its ETag, or None when there is none."""
        ...

    def replace(self, record: LedgerRecord, etag: str) -> str:
        """Overwrite only if the stored record still has ``etag``; returns the new ETag.

        Raises ConflictError when it changed or no longer exists.
        """
        ...

    def list(self, *, limit: int | None = None, before: Cursor | None = None) -> Iterator[LedgerRecord]:
        """Records, newest first (see each store for how "newest" is decided); with ``before``,
        only those whose ``(created_at, request_id)`` is older (the next page of a listing)."""
        ...

    def list_versioned(
        self, *, limit: int | None = None, before: Cursor | None = None
    ) -> Iterator[tuple[LedgerRecord, str]]:
        """``list`` with each record's ETag, for a caller that may ``replace`` what it reads."""
        ...

    def list_summaries(self, *, since: datetime) -> Iterator[RecordSummary]:
        """Summaries of the records created since ``since``, newest first (older ones may follow:
        callers stop at the first one older than they care about)."""
        ...

    def list_active(self) -> Iterator[RecordSummary]:
        """Summaries of the active records (``is_active``), newest first; others may follow."""
        ...

    def expire(self, *, before: datetime, export: Path | None = None) -> builtins.list[str]:
        """Delete records created and last updated before ``before`` (exported to ``export``
        first when given); returns the ids deleted. Callers keep ``before`` at least
        ``MIN_RETENTION`` back, so no reader of the ledger is affected."""
        ...

"""Paging through a newest-first listing: the ``--before`` cursor and the lazy reads of a page.

A listing is ordered by ``(created_at, request_id)``, which never change after the claim, so the
last record shown is a stable place to continue from (``slipway runs list --before``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from shared.platform.ledger.records import LedgerRecord, aware, validate_request_id
from shared.platform.ledger.summary import RecordSummary

# A position in a newest-first listing: (created_at, request_id) of the last record shown.
Cursor = tuple[datetime, str]


def format_cursor(record: LedgerRecord | RecordSummary) -> str:
    """The ``--before`` value that continues a listing after ``record``."""
    return f"{record.created_at.astimezone(UTC).isoformat()}/{record.request_id}"


def parse_cursor(text: str) -> Cursor:
    """``format_cursor``'s text back; ValueError naming the expected form."""
    stamp, sep, request_id = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError("no '/'")
        return aware(datetime.fromisoformat(stamp)), validate_request_id(request_id)
    except ValueError:
        raise ValueError(f"invalid cursor {text!r}: expected <created_at ISO time>/<request id>") from None


def readable(
    reads: Iterable[tuple[LedgerRecord, str] | None], limit: int | None
) -> Iterator[tuple[LedgerRecord, str]]:
    """The reads that found a record, at most ``limit``: reads are lazy, so the downloads stop there."""
    return itertools.islice((read for read in reads if read is not None), limit)


def older(key: Cursor, before: Cursor | None) -> bool:
    """Whether ``key`` comes after ``before`` in a newest-first listing (always, without one)."""
    return before is None or key < before

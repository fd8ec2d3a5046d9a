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


_STAMP = "%Y%m%dT%H%M%S%f"


def entry_name(created_at: datetime, request_id: str) -> str:
    """An index entry's name, ``<created_at UTC, µs>~<request id>.json``: listings order by names
    without opening the entries (created_at never changes after the claim). Both stores use it."""
    return f"{created_at.astimezone(UTC).strftime(_STAMP)}~{request_id}.json"


def entry_key(name: str) -> Cursor | None:
    """``entry_name``'s (created_at, request_id) back; None for a name that is not an entry."""
    stamp, sep, rest = name.partition("~")
    if not sep or not rest.endswith(".json"):
        return None
    try:
        return datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC), rest.removesuffix(".json")
    except ValueError:
        return None


def hour(when: datetime) -> str:
    """An entry's bucket: its UTC creation hour, ``2026-12-03T11`` (sorts as it reads)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H")

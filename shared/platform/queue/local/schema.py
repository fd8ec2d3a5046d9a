"""The local queue's SQLite layout, its time encoding and the row → ``ReceivedMessage`` mapping.

Storage (one file may hold several queues, told apart by the ``queue`` column)::

    messages(seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the sequence number, never reused
             queue, sub_queue ('active' | 'deadletter'), message_id, body BLOB, content_type,
             subject, correlation_id, properties (JSON), scheduled_at, enqueued_at,
             delivery_count, lock_token, locked_until, dl_reason, dl_description)
    duplicates(queue, message_id, expires_at, PRIMARY KEY (queue, message_id))
    intake(id = 1, generation, offset)    -- how far the intake journal is folded in

Times are integer microseconds since the Unix epoch (UTC): exact, and they compare as numbers.
``enqueued_at`` is when the message becomes receivable (the scheduled time for a scheduled
message, as in Service Bus). A lock is ``lock_token`` + ``locked_until``.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.platform.queue.port import NOT_LOCKED, MessageState, ReceivedMessage

ACTIVE = "active"
DEAD_LETTER = "deadletter"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)

# The coalescing look-ahead asks for the active messages of one coalesce key on every dispatch:
# an index on this expression answers it without reading every body (the query must spell the
# expression the same way for SQLite to use the index). Expression indexes exist since SQLite 3.9.
COALESCE_KEY = (
    "CASE WHEN json_valid(CAST(body AS TEXT)) THEN json_extract(CAST(body AS TEXT), '$.coalesce_key') END"
)

_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS messages (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    queue           TEXT    NOT NULL,
    sub_queue       TEXT    NOT NULL CHECK (sub_queue IN ('active', 'deadletter')),
    message_id      TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    content_type    TEXT,
    subject         TEXT,
    correlation_id  TEXT,
    properties      TEXT    NOT NULL,
    scheduled_at    INTEGER,
    enqueued_at     INTEGER NOT NULL,
    delivery_count  INTEGER NOT NULL DEFAULT 0,
    lock_token      TEXT,
    locked_until    INTEGER,
    dl_reason       TEXT,
    dl_description  TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, sub_queue, seq);
CREATE INDEX IF NOT EXISTS messages_by_lock ON messages (queue, locked_until) WHERE lock_token IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_enqueue ON messages (queue, sub_queue, enqueued_at);
CREATE INDEX IF NOT EXISTS messages_by_coalesce_key ON messages (queue, sub_queue, ({coalesce_key}));
CREATE TABLE IF NOT EXISTS duplicates (
    queue       TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (queue, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS duplicates_by_expiry ON duplicates (queue, expires_at);
CREATE TABLE IF NOT EXISTS intake (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  TEXT    NOT NULL,
    offset      INTEGER NOT NULL
);
"""
SCHEMA = _SCHEMA_TEMPLATE.replace("{coalesce_key}", COALESCE_KEY)

COLUMNS = (
    "seq, sub_queue, message_id, body, content_type, subject, correlation_id, properties, "
    "scheduled_at, enqueued_at, delivery_count, lock_token, locked_until, dl_reason, dl_description"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_us(value: datetime) -> int:
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the queue needs timezone-aware UTC times")
    return (value - EPOCH) // ONE_US


def from_us(value: int) -> datetime:
    return EPOCH + value * ONE_US


def row_message(
    row: sqlite3.Row,
    now: int,
    *,
    lock_token: str,
    locked_until: int | None,
    delivery_count: int | None,
) -> ReceivedMessage:
    """A ``messages`` row (selected as ``COLUMNS``) as a receiver or browser sees it at ``now``."""
    properties: dict[str, Any] = json.loads(row["properties"])
    scheduled_at: int | None = row["scheduled_at"]
    return ReceivedMessage(
        message_id=row["message_id"],
        body=bytes(row["body"]),
        content_type=row["content_type"],
        subject=row["subject"],
        correlation_id=row["correlation_id"],
        application_properties=properties,
        scheduled_enqueue_time=None if scheduled_at is None else from_us(scheduled_at),
        sequence_number=row["seq"],
        delivery_count=row["delivery_count"] if delivery_count is None else delivery_count,
        enqueued_time=from_us(row["enqueued_at"]),
        lock_token=lock_token,
        locked_until=NOT_LOCKED if locked_until is None else from_us(locked_until),
        dead_letter_reason=row["dl_reason"],
        dead_letter_description=row["dl_description"],
        state=MessageState.SCHEDULED if row["enqueued_at"] > now else MessageState.ACTIVE,
    )

"""A Service Bus-shaped queue in one SQLite file, for ``slipway serve`` and the tests.

There is no Service Bus emulator here, so this keeps the semantics the dispatcher relies on:
duplicate detection by message id, peek-lock with lock expiry and redelivery, a delivery count
that dead-letters with ``MaxDeliveryCountExceeded``, a dead-letter sub-queue, scheduled
messages. Every time-based rule reads the injected ``clock``, so tests never sleep.

Storage (one file may hold several queues, told apart by the ``queue`` column)::

    messages(seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the sequence number, never reused
             queue, sub_queue ('active' | 'deadletter'), message_id, body BLOB, content_type,
             subject, correlation_id, properties (JSON), scheduled_at, enqueued_at,
             delivery_count, lock_token, locked_until, dl_reason, dl_description)
    duplicates(queue, message_id, expires_at, PRIMARY KEY (queue, message_id))
    intake(id = 1, generation, offset)    -- how far the intake journal is folded in

Sending appends to the intake journal beside the file (``shared/platform/queue/intake.py``): one locked
``write`` instead of a SQLite transaction, which is most of a webhook's cost otherwise. Every
other operation runs in a write transaction that first folds new journal records into
``messages``, applying duplicate detection with each record's own send time, so what receivers
and browsers see is exactly what a SQLite ``send`` would have produced.

Times are integer microseconds since the Unix epoch (UTC): exact, and they compare as numbers.
``enqueued_at`` is when the message becomes receivable (the scheduled time for a scheduled
message, as in Service Bus). A lock is ``lock_token`` + ``locked_until``; an expired lock is
released lazily at the start of every operation (``_expire_locks``), which is where redelivery
and ``MaxDeliveryCountExceeded`` happen. A dead-lettered message keeps its sequence number and
delivery count; the dead-letter sub-queue never dead-letters again, as in Service Bus.

Concurrency: WAL mode, one connection per thread (and per process), a busy timeout, and every
state change in a ``BEGIN IMMEDIATE`` transaction, so two receivers never lock the same message.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.platform.queue.intake import HEADER_LEN, ROTATE_BYTES, IntakeJournal, IntakeMessage, encode_record
from shared.platform.queue.port import (
    MAX_DELIVERY_COUNT_EXCEEDED,
    NOT_LOCKED,
    QUEUE_DUPLICATE_DETECTION_WINDOW,
    QUEUE_LOCK_DURATION,
    QUEUE_MAX_DELIVERY_COUNT,
    LockLostError,
    MessageState,
    OutgoingMessage,
    QueueError,
    ReceivedMessage,
)

_ACTIVE = "active"
_DEAD_LETTER = "deadletter"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

# The coalescing look-ahead asks for the active messages of one coalesce key on every dispatch:
# an index on this expression answers it without reading every body (the query must spell the
# expression the same way for SQLite to use the index). Expression indexes exist since SQLite 3.9.
_COALESCE_KEY = (
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
_SCHEMA = _SCHEMA_TEMPLATE.replace("{coalesce_key}", _COALESCE_KEY)

_COLUMNS = (
    "seq, sub_queue, message_id, body, content_type, subject, correlation_id, properties, "
    "scheduled_at, enqueued_at, delivery_count, lock_token, locked_until, dl_reason, dl_description"
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _to_us(value: datetime) -> int:
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the queue needs timezone-aware UTC times")
    return (value - _EPOCH) // _ONE_US


def _from_us(value: int) -> datetime:
    return _EPOCH + value * _ONE_US


class _ThreadConnection:
    """One thread's SQLite connection, closed when the thread (and so its thread-local) goes away."""

    __slots__ = ("__weakref__", "conn", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()

    def close(self) -> None:
        if self.pid == os.getpid():  # never close a handle inherited across fork: it belongs to the parent
            self.conn.close()

    def __del__(self) -> None:
        self.close()


class LocalQueue:
    """One named queue and its dead-letter sub-queue in a SQLite file; safe across threads and processes."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str = "build-requests",
        lock_duration: timedelta = QUEUE_LOCK_DURATION,
        max_delivery_count: int = QUEUE_MAX_DELIVERY_COUNT,
        duplicate_detection_window: timedelta = QUEUE_DUPLICATE_DETECTION_WINDOW,
        clock: Callable[[], datetime] = _utcnow,
        busy_timeout: timedelta = timedelta(seconds=10),
    ) -> None:
        """Create the file and schema if needed (idempotent, so every process may do it)."""
        if lock_duration <= timedelta(0) or duplicate_detection_window < timedelta(0):
            raise ValueError("lock_duration must be positive and duplicate_detection_window not negative")
        if max_delivery_count < 1:
            raise ValueError("max_delivery_count must be at least 1")
        self.path = Path(path)
        self.name = name
        self.lock_duration = lock_duration
        self.max_delivery_count = max_delivery_count
        self.duplicate_detection_window = duplicate_detection_window
        self._clock = clock
        self._busy_timeout = busy_timeout.total_seconds()
        self._local = threading.local()
        # Weak, so a finished thread's connection closes with the thread (the local host's HTTP
        # server runs a thread per request), while close() can still reach the live ones.
        self._holders: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._holders_lock = threading.Lock()
        self._closed = False
        conn = self._connection()
        with self._translate_errors():
            # WAL is a property of the file: set once, every later connection inherits it.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        try:
            self._intake = IntakeJournal(self.path.with_name(self.path.name + "-intake"))
        except OSError as exc:
            raise QueueError(f"local queue {self.path}: intake journal: {exc}") from exc
        self._folded_key: tuple[int, int, int] | None = None

    # --- connections and transactions ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection; a forked child opens its own (SQLite handles must not cross fork)."""
        if self._closed:
            raise QueueError(f"local queue {self.path} is closed")
        holder: _ThreadConnection | None = getattr(self._local, "holder", None)
        if holder is None or holder.pid != os.getpid():
            with self._translate_errors():
                conn = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout,
                    isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                    check_same_thread=False,  # only so close() may close it; each thread uses its own
                )
                conn.row_factory = sqlite3.Row
                # NORMAL is durable across process crashes in WAL mode; an OS crash may lose the last commit.
                conn.execute("PRAGMA synchronous=NORMAL")
            holder = _ThreadConnection(conn)
            self._local.holder = holder
            with self._holders_lock:
                self._holders.add(holder)
        return holder.conn

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """SQLite failures (locked too long, disk full) become QueueError, which callers already handle."""
        try:
            yield
        except sqlite3.Error as exc:
            raise QueueError(f"local queue {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """A ``BEGIN IMMEDIATE`` transaction (the write lock up front, so read-then-update never races)."""
        with self._translate_errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """A write transaction; yields the connection and ``now``.

        Sent messages are folded in and expired locks are released first, so every operation sees
        the queue as Service Bus would at that instant.
        """
        conn = self._connection()
        with self._transaction(conn):
            folded = self._fold_intake(conn)
            now = _to_us(self._clock())
            self._expire_locks(conn, now)
            yield conn, now
        if folded is not None:
            self._folded_key = folded
            self._rotate_intake(conn)

    # --- the intake journal -------------------------------------------------------------------

    def _fold_intake(self, conn: sqlite3.Connection) -> tuple[int, int, int] | None:
        """Insert journal records sent since the last fold; returns the journal's stat key after it."""
        key = self._intake.stat_key()
        if key is None or key == self._folded_key:
            return None
        row = conn.execute("SELECT generation, offset FROM intake WHERE id = 1").fetchone()
        generation, offset = (row[0], row[1]) if row else (None, HEADER_LEN)
        try:
            batch = self._intake.read(generation, offset)
        except OSError as exc:
            raise QueueError(f"local queue {self.path}: intake journal: {exc}") from exc
        if batch is None:
            return None
        for entry in batch.messages:
            self._insert(conn, entry)
        conn.execute(
            "INSERT INTO intake (id, generation, offset) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET generation = excluded.generation, offset = excluded.offset",
            (batch.generation, batch.end_offset),
        )
        # Only "all folded" is worth remembering: a partial tail must be looked at again.
        return key if batch.end_offset == batch.file_size else None

    def _rotate_intake(self, conn: sqlite3.Connection) -> None:
        """Start a fresh journal once the old one is folded and big (its own transaction, see intake.py)."""
        with self._translate_errors():
            row = conn.execute("SELECT generation, offset FROM intake WHERE id = 1").fetchone()
        if row is None or row[1] < ROTATE_BYTES:
            return
        with self._transaction(conn):
            generation = self._intake.rotate_if_folded(row[0], row[1])
            if generation is not None:
                conn.execute(
                    "UPDATE intake SET generation = ?, offset = ? WHERE id = 1", (generation, HEADER_LEN)
                )
        self._folded_key = None

    @staticmethod
    def _insert(conn: sqlite3.Connection, entry: IntakeMessage) -> None:
        """One sent message into ``messages``, unless a live duplicate-detection entry holds its id."""
        message, now, window = entry.message, entry.sent_at_us, entry.duplicate_window_us
        if window > 0:
            # One statement: claims the id unless a live entry holds it (an expired entry is
            # taken over).
            claimed = conn.execute(
                "INSERT INTO duplicates (queue, message_id, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (queue, message_id) DO UPDATE SET expires_at = excluded.expires_at"
                " WHERE duplicates.expires_at <= ?",
                (entry.queue, message.message_id, now + window, now),
            ).rowcount
            if not claimed:
                return
        scheduled = None if message.scheduled_enqueue_time is None else _to_us(message.scheduled_enqueue_time)
        conn.execute(
            "INSERT INTO messages (queue, sub_queue, message_id, body, content_type, subject,"
            " correlation_id, properties, scheduled_at, enqueued_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.queue,
                _ACTIVE,
                message.message_id,
                bytes(message.body),
                message.content_type,
                message.subject,
                message.correlation_id,
                json.dumps(dict(message.application_properties), sort_keys=True),
                scheduled,
                max(now, scheduled) if scheduled is not None else now,
            ),
        )

    def close(self) -> None:
        """Close every connection this object opened; call it when no other thread is using the queue."""
        self._closed = True
        with self._holders_lock:
            holders, self._holders = list(self._holders), weakref.WeakSet()
        for holder in holders:
            holder.close()
        self._intake.close()

    def __enter__(self) -> LocalQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending ------------------------------------------------------------------------------

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        """Enqueue a batch atomically; a duplicate id inside the detection window is silently dropped.

        Durable when it returns (one record appended to the intake journal); duplicate detection
        applies when the record is folded in, with the time it was sent.
        """
        if not messages:
            return
        if self._closed:
            raise QueueError(f"local queue {self.path} is closed")
        record = encode_record(
            self.name, _to_us(self._clock()), self.duplicate_detection_window // _ONE_US, messages
        )
        self._intake.append(record)

    def cancel_scheduled(self, sequence_number: int) -> None:
        """Remove a still-scheduled message; as in Service Bus, its id stays in the duplicate history."""
        with self._write() as (conn, now):
            deleted = conn.execute(
                "DELETE FROM messages WHERE queue = ? AND sub_queue = ? AND seq = ?"
                " AND scheduled_at IS NOT NULL AND enqueued_at > ?",
                (self.name, _ACTIVE, sequence_number, now),
            ).rowcount
        if not deleted:
            raise QueueError(f"no scheduled message with sequence number {sequence_number} in {self.name}")

    # --- peek-lock ----------------------------------------------------------------------------

    def receive(self, max_count: int = 1) -> list[ReceivedMessage]:
        """Lock up to ``max_count`` receivable messages, oldest sequence number first."""
        return self._receive(_ACTIVE, max_count)

    def receive_dead_letter(self, max_count: int = 1) -> list[ReceivedMessage]:
        """Lock dead-lettered messages, so a replay tool can re-send a copy and then ``complete`` them."""
        return self._receive(_DEAD_LETTER, max_count)

    def _receive(self, sub_queue: str, max_count: int) -> list[ReceivedMessage]:
        if max_count < 1:
            raise ValueError("max_count must be at least 1")
        with self._write() as (conn, now):
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM messages"  # noqa: S608 - constant column list
                " WHERE queue = ? AND sub_queue = ? AND lock_token IS NULL AND enqueued_at <= ?"
                " ORDER BY seq LIMIT ?",
                (self.name, sub_queue, now, max_count),
            ).fetchall()
            locked_until = now + self.lock_duration // _ONE_US
            received = []
            for row in rows:
                token = str(uuid.uuid4())
                conn.execute(
                    "UPDATE messages SET lock_token = ?, locked_until = ?,"
                    " delivery_count = delivery_count + 1 WHERE seq = ?",
                    (token, locked_until, row["seq"]),
                )
                received.append(
                    self._message(
                        row,
                        now,
                        lock_token=token,
                        locked_until=locked_until,
                        delivery_count=row["delivery_count"] + 1,
                    )
                )
            return received

    def resend_dead_letters(
        self, choose: Callable[[ReceivedMessage], OutgoingMessage | None], *, max_count: int = 1000
    ) -> list[tuple[ReceivedMessage, OutgoingMessage]]:
        """Replay: for each dead letter ``choose`` maps to a copy, send the copy, then complete it.

        Up to ``max_count`` dead letters are looked at (locked, so two replays never take the same
        one); the ones not chosen are released untouched. Send-then-complete is not atomic: a
        crash in between leaves the dead letter in place, and the dispatcher's ledger absorbs a
        second replay of it.
        """
        taken = self.receive_dead_letter(max_count) if max_count > 0 else []
        resent: list[tuple[ReceivedMessage, OutgoingMessage]] = []
        try:
            for message in taken:
                copy = choose(message)
                if copy is None:
                    continue
                self.send([copy])
                self.complete(message)
                resent.append((message, copy))
        finally:
            done = {m.sequence_number for m, _ in resent}
            for message in taken:
                if message.sequence_number not in done:
                    self.abandon(message)
        return resent

    def _locked_row(self, conn: sqlite3.Connection, message: ReceivedMessage) -> sqlite3.Row:
        """The row ``message`` still holds a live lock on (expired locks were released by ``_write``)."""
        row: sqlite3.Row | None = conn.execute(
            "SELECT seq, sub_queue, delivery_count FROM messages"
            " WHERE queue = ? AND seq = ? AND lock_token = ?",
            (self.name, message.sequence_number, message.lock_token or None),
        ).fetchone()
        if row is None:
            raise LockLostError(
                f"the lock on message {message.message_id!r} (sequence {message.sequence_number}) "
                "expired or was superseded; it has been or will be redelivered"
            )
        return row

    def complete(self, message: ReceivedMessage) -> None:
        """Remove the message for good (from the queue or, for a replay tool, the dead-letter sub-queue)."""
        with self._write() as (conn, _now):
            row = self._locked_row(conn, message)
            conn.execute("DELETE FROM messages WHERE seq = ?", (row["seq"],))

    def abandon(self, message: ReceivedMessage) -> None:
        """Release the lock now; at ``max_delivery_count`` deliveries the message is dead-lettered instead."""
        with self._write() as (conn, _now):
            row = self._locked_row(conn, message)
            if row["sub_queue"] == _ACTIVE and row["delivery_count"] >= self.max_delivery_count:
                self._move_to_dead_letter(
                    conn, row["seq"], MAX_DELIVERY_COUNT_EXCEEDED, self._max_delivery_description()
                )
            else:
                conn.execute(
                    "UPDATE messages SET lock_token = NULL, locked_until = NULL WHERE seq = ?", (row["seq"],)
                )

    def renew_lock(self, message: ReceivedMessage) -> datetime:
        """Extend a live lock by ``lock_duration`` from now; returns the new ``locked_until``."""
        with self._write() as (conn, now):
            row = self._locked_row(conn, message)
            locked_until = now + self.lock_duration // _ONE_US
            conn.execute("UPDATE messages SET locked_until = ? WHERE seq = ?", (locked_until, row["seq"]))
        return _from_us(locked_until)

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> None:
        """Move a locked message to the dead-letter sub-queue, keeping why for the operator."""
        with self._write() as (conn, _now):
            row = self._locked_row(conn, message)
            if row["sub_queue"] == _DEAD_LETTER:
                raise QueueError("a message in the dead-letter sub-queue cannot be dead-lettered again")
            self._move_to_dead_letter(conn, row["seq"], reason, description)

    def _max_delivery_description(self) -> str:
        return f"Message could not be consumed after {self.max_delivery_count} delivery attempts."

    @staticmethod
    def _move_to_dead_letter(conn: sqlite3.Connection, seq: int, reason: str, description: str) -> None:
        conn.execute(
            "UPDATE messages SET sub_queue = ?, lock_token = NULL, locked_until = NULL,"
            " dl_reason = ?, dl_description = ? WHERE seq = ?",
            (_DEAD_LETTER, reason, description, seq),
        )

    def _expire_locks(self, conn: sqlite3.Connection, now: int) -> None:
        """Release expired locks: redeliver, or dead-letter what has used up its deliveries."""
        conn.execute(
            "UPDATE messages SET sub_queue = ?, lock_token = NULL, locked_until = NULL, dl_reason = ?,"
            " dl_description = ?"
            " WHERE queue = ? AND sub_queue = ? AND lock_token IS NOT NULL AND locked_until <= ?"
            " AND delivery_count >= ?",
            (
                _DEAD_LETTER,
                MAX_DELIVERY_COUNT_EXCEEDED,
                self._max_delivery_description(),
                self.name,
                _ACTIVE,
                now,
                self.max_delivery_count,
            ),
        )
        conn.execute(
            "UPDATE messages SET lock_token = NULL, locked_until = NULL"
            " WHERE queue = ? AND lock_token IS NOT NULL AND locked_until <= ?",
            (self.name, now),
        )
        # Forget ids whose detection window has passed (sends no longer sweep, to stay fast).
        conn.execute("DELETE FROM duplicates WHERE queue = ? AND expires_at <= ?", (self.name, now))

    # --- browsing -----------------------------------------------------------------------------

    def peek(self, *, dead_letter: bool = False, max_count: int = 100) -> list[ReceivedMessage]:
        """Every message in sequence order, locked and scheduled ones included, without locking any."""
        with self._write() as (conn, now):
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE queue = ? AND sub_queue = ?"  # noqa: S608
                " ORDER BY seq LIMIT ?",
                (self.name, _DEAD_LETTER if dead_letter else _ACTIVE, max_count),
            ).fetchall()
            return [
                self._message(row, now, lock_token="", locked_until=row["locked_until"], delivery_count=None)
                for row in rows
            ]

    def pending_with_coalesce_key(self, coalesce_key: str) -> list[bytes]:
        """Bodies of active and scheduled messages whose BuildRequest has ``coalesce_key``.

        One indexed query at dispatch time (the coalescing look-ahead), whatever the queue's length;
        senders write nothing extra.
        """
        with self._write() as (conn, _now):
            rows = conn.execute(
                f"SELECT body FROM messages WHERE queue = ? AND sub_queue = ? AND {_COALESCE_KEY} = ?"  # noqa: S608
                " ORDER BY seq",
                (self.name, _ACTIVE, coalesce_key),
            ).fetchall()
        return [bytes(row[0]) for row in rows]

    def count(self, *, dead_letter: bool = False) -> int:
        """Like Service Bus's active message count: locked messages count, scheduled ones do not."""
        with self._write() as (conn, now):
            if dead_letter:
                row = conn.execute(
                    "SELECT COUNT(*) FROM messages WHERE queue = ? AND sub_queue = ?",
                    (self.name, _DEAD_LETTER),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT COUNT(*) FROM messages WHERE queue = ? AND sub_queue = ? AND enqueued_at <= ?",
                    (self.name, _ACTIVE, now),
                ).fetchone()
            return int(row[0])

    def wait_for_message(self, timeout: float, *, poll_interval: float = 0.05) -> bool:
        """Poll cheaply (read-only) until a message could be received or ``timeout`` seconds pass.

        Lets the local host sleep between receives without holding the write lock; a message
        whose lock has expired counts as receivable.
        """
        deadline = time.monotonic() + timeout
        conn = self._connection()
        while True:
            if self._intake.stat_key() != self._folded_key:
                with self._write():
                    pass  # fold what was sent, so the query below sees it
            now = _to_us(self._clock())
            with self._translate_errors():
                ready = conn.execute(
                    "SELECT 1 FROM messages WHERE queue = ? AND sub_queue = ? AND enqueued_at <= ?"
                    " AND (lock_token IS NULL OR locked_until <= ?) LIMIT 1",
                    (self.name, _ACTIVE, now, now),
                ).fetchone()
            if ready:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(poll_interval, remaining))

    # --- mapping ------------------------------------------------------------------------------

    @staticmethod
    def _message(
        row: sqlite3.Row,
        now: int,
        *,
        lock_token: str,
        locked_until: int | None,
        delivery_count: int | None,
    ) -> ReceivedMessage:
        properties: dict[str, Any] = json.loads(row["properties"])
        scheduled_at: int | None = row["scheduled_at"]
        return ReceivedMessage(
            message_id=row["message_id"],
            body=bytes(row["body"]),
            content_type=row["content_type"],
            subject=row["subject"],
            correlation_id=row["correlation_id"],
            application_properties=properties,
            scheduled_enqueue_time=None if scheduled_at is None else _from_us(scheduled_at),
            sequence_number=row["seq"],
            delivery_count=row["delivery_count"] if delivery_count is None else delivery_count,
            enqueued_time=_from_us(row["enqueued_at"]),
            lock_token=lock_token,
            locked_until=NOT_LOCKED if locked_until is None else _from_us(locked_until),
            dead_letter_reason=row["dl_reason"],
            dead_letter_description=row["dl_description"],
            state=MessageState.SCHEDULED if row["enqueued_at"] > now else MessageState.ACTIVE,
        )

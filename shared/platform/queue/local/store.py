"""The local queue's storage: per-thread SQLite connections, write transactions, the journal fold.

Every operation runs in a ``BEGIN IMMEDIATE`` transaction (``QueueStore._write``) that first
folds new intake-journal records into ``messages`` (duplicate detection applied with each
record's own send time, see ``journal.py``) and then releases expired locks, which is where
redelivery and ``MaxDeliveryCountExceeded`` happen. So receivers and browsers see exactly what
Service Bus would show at that instant, and a send never pays for a SQLite transaction.

Concurrency: WAL mode, one connection per thread (and per process), a busy timeout, and every
state change in a ``BEGIN IMMEDIATE`` transaction, so two receivers never lock the same message.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Self

from shared.platform.queue.local.journal import IntakeJournal, IntakeMessage
from shared.platform.queue.local.schema import ACTIVE, DEAD_LETTER, SCHEMA, to_us, utcnow
from shared.platform.queue.port import (
    MAX_DELIVERY_COUNT_EXCEEDED,
    QUEUE_DUPLICATE_DETECTION_WINDOW,
    QUEUE_LOCK_DURATION,
    QUEUE_MAX_DELIVERY_COUNT,
    QueueError,
)


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


class QueueStore:
    """One named queue's SQLite file and intake journal; safe across threads and processes."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str = "build-requests",
        lock_duration: timedelta = QUEUE_LOCK_DURATION,
        max_delivery_count: int = QUEUE_MAX_DELIVERY_COUNT,
        duplicate_detection_window: timedelta = QUEUE_DUPLICATE_DETECTION_WINDOW,
        clock: Callable[[], datetime] = utcnow,
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
            conn.executescript(SCHEMA)
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
            now = to_us(self._clock())
            self._expire_locks(conn, now)
            yield conn, now
        if folded is not None:
            self._folded_key = folded
            self._rotate_intake(conn)

    def close(self) -> None:
        """Close every connection this object opened; call it when no other thread is using the queue."""
        self._closed = True
        with self._holders_lock:
            holders, self._holders = list(self._holders), weakref.WeakSet()
        for holder in holders:
            holder.close()
        self._intake.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the intake journal -------------------------------------------------------------------

    def _fold_intake(self, conn: sqlite3.Connection) -> tuple[int, int, int] | None:
        """Insert journal records sent since the last fold; returns the journal's stat key after it."""
        key = self._intake.stat_key()
        if key is None or key == self._folded_key:
            return None
        row = conn.execute("SELECT generation, offset FROM intake WHERE id = 1").fetchone()
        try:
            batch = self._intake.read(row[0], row[1]) if row else self._intake.read()
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
        """Start a fresh journal once the old one is folded and big (its own transaction, see journal.py)."""
        with self._translate_errors():
            row = conn.execute("SELECT generation, offset FROM intake WHERE id = 1").fetchone()
        if row is None or not self._intake.worth_rotating(row[1]):
            return
        with self._transaction(conn):
            fresh = self._intake.rotate(row[0], row[1])
            if fresh is not None:
                conn.execute("UPDATE intake SET generation = ?, offset = ? WHERE id = 1", fresh)
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
        scheduled = None if message.scheduled_enqueue_time is None else to_us(message.scheduled_enqueue_time)
        conn.execute(
            "INSERT INTO messages (queue, sub_queue, message_id, body, content_type, subject,"
            " correlation_id, properties, scheduled_at, enqueued_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.queue,
                ACTIVE,
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

    # --- lock expiry (the start of every transaction) -----------------------------------------

    def _max_delivery_description(self) -> str:
        return f"Message could not be consumed after {self.max_delivery_count} delivery attempts."

    def _expire_locks(self, conn: sqlite3.Connection, now: int) -> None:
        """Release expired locks: redeliver, or dead-letter what has used up its deliveries."""
        conn.execute(
            "UPDATE messages SET sub_queue = ?, lock_token = NULL, locked_until = NULL, dl_reason = ?,"
            " dl_description = ?"
            " WHERE queue = ? AND sub_queue = ? AND lock_token IS NOT NULL AND locked_until <= ?"
            " AND delivery_count >= ?",
            (
                DEAD_LETTER,
                MAX_DELIVERY_COUNT_EXCEEDED,
                self._max_delivery_description(),
                self.name,
                ACTIVE,
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

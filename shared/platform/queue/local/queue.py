"""A Service Bus-shaped queue in one SQLite file, for ``slipway serve`` and the tests.

There is no Service Bus emulator here, so this keeps the semantics the dispatcher relies on:
duplicate detection by message id, peek-lock with lock expiry and redelivery, a delivery count
that dead-letters with ``MaxDeliveryCountExceeded``, a dead-letter sub-queue, scheduled
messages. Every time-based rule reads the injected ``clock``, so tests never sleep.

Sending appends one record to the intake journal beside the file (``journal.py``): one locked
``write`` instead of a SQLite transaction, which is most of a webhook's cost otherwise. Every
other operation runs in a write transaction (``store.py``) that first folds new records in and
releases expired locks, so what receivers and browsers see is exactly what a SQLite ``send``
would have produced. A dead-lettered message keeps its sequence number and delivery count; the
dead-letter sub-queue never dead-letters again, as in Service Bus. The tables: ``schema.py``.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from shared.platform.queue.local.schema import (
    ACTIVE,
    COALESCE_KEY,
    COLUMNS,
    DEAD_LETTER,
    ONE_US,
    from_us,
    row_message,
    to_us,
)
from shared.platform.queue.local.store import QueueStore
from shared.platform.queue.port import (
    MAX_DELIVERY_COUNT_EXCEEDED,
    DeadLetterChoice,
    LockLostError,
    OutgoingMessage,
    QueueError,
    ReceivedMessage,
    copy_to_send,
)


class LocalQueue(QueueStore):
    """One named queue and its dead-letter sub-queue in a SQLite file; safe across threads and processes."""

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
        self._intake.append_batch(
            self.name, to_us(self._clock()), self.duplicate_detection_window // ONE_US, messages
        )

    def duplicate_held(self, message_id: str) -> bool:
        """Whether a message sent now with ``message_id`` would be dropped: a message with that id
        was sent within the duplicate-detection window (the operator's ``queue send`` says so)."""
        with self._write() as (conn, now):
            row = conn.execute(
                "SELECT 1 FROM duplicates WHERE queue = ? AND message_id = ? AND expires_at > ?",
                (self.name, message_id, now),
            ).fetchone()
        return row is not None

    def cancel_scheduled(self, sequence_number: int) -> None:
        """Remove a still-scheduled message; as in Service Bus, its id stays in the duplicate history."""
        with self._write() as (conn, now):
            deleted = conn.execute(
                "DELETE FROM messages WHERE queue = ? AND sub_queue = ? AND seq = ?"
                " AND scheduled_at IS NOT NULL AND enqueued_at > ?",
                (self.name, ACTIVE, sequence_number, now),
            ).rowcount
        if not deleted:
            raise QueueError(f"no scheduled message with sequence number {sequence_number} in {self.name}")

    # --- peek-lock ----------------------------------------------------------------------------

    def receive(self, max_count: int = 1) -> list[ReceivedMessage]:
        """Lock up to ``max_count`` receivable messages, oldest sequence number first."""
        return self._receive(ACTIVE, max_count)

    def receive_dead_letter(self, max_count: int = 1) -> list[ReceivedMessage]:
        """Lock dead-lettered messages, so a replay tool can re-send a copy (or not) and ``complete`` them."""
        return self._receive(DEAD_LETTER, max_count)

    def _receive(self, sub_queue: str, max_count: int) -> list[ReceivedMessage]:
        if max_count < 1:
            raise ValueError("max_count must be at least 1")
        with self._write() as (conn, now):
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM messages"  # noqa: S608 - constant column list
                " WHERE queue = ? AND sub_queue = ? AND lock_token IS NULL AND enqueued_at <= ?"
                " ORDER BY seq LIMIT ?",
                (self.name, sub_queue, now, max_count),
            ).fetchall()
            locked_until = now + self.lock_duration // ONE_US
            received = []
            for row in rows:
                token = str(uuid.uuid4())
                conn.execute(
                    "UPDATE messages SET lock_token = ?, locked_until = ?,"
                    " delivery_count = delivery_count + 1 WHERE seq = ?",
                    (token, locked_until, row["seq"]),
                )
                received.append(
                    row_message(
                        row,
                        now,
                        lock_token=token,
                        locked_until=locked_until,
                        delivery_count=row["delivery_count"] + 1,
                    )
                )
            return received

    def settle_dead_letters(
        self, choose: Callable[[ReceivedMessage], DeadLetterChoice], *, max_count: int = 1000
    ) -> list[tuple[ReceivedMessage, OutgoingMessage | None]]:
        """Replay: ``choose`` says what becomes of each dead letter, which is then done in turn.

        A copy: sent, then the dead letter completed. ``DeadLetterAction.COMPLETE``: completed, no
        copy. None: released untouched. Up to ``max_count`` dead letters are looked at (locked, so
        two replays never take the same one). Send-then-complete is not atomic: a crash in between
        leaves the dead letter in place, and the dispatcher's ledger absorbs a second replay of it.
        The dead letters settled, each with the copy sent for it (None: completed only).
        """
        taken = self.receive_dead_letter(max_count) if max_count > 0 else []
        settled: list[tuple[ReceivedMessage, OutgoingMessage | None]] = []
        try:
            for message in taken:
                choice = choose(message)
                if choice is None:
                    continue
                copy = copy_to_send(choice)
                if copy is not None:
                    self.send([copy])
                self.complete(message)
                settled.append((message, copy))
        finally:
            done = {m.sequence_number for m, _ in settled}
            for message in taken:
                if message.sequence_number not in done:
                    self.abandon(message)
        return settled

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
            if row["sub_queue"] == ACTIVE and row["delivery_count"] >= self.max_delivery_count:
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
            locked_until = now + self.lock_duration // ONE_US
            conn.execute("UPDATE messages SET locked_until = ? WHERE seq = ?", (locked_until, row["seq"]))
        return from_us(locked_until)

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> None:
        """Move a locked message to the dead-letter sub-queue, keeping why for the operator."""
        with self._write() as (conn, _now):
            row = self._locked_row(conn, message)
            if row["sub_queue"] == DEAD_LETTER:
                raise QueueError("a message in the dead-letter sub-queue cannot be dead-lettered again")
            self._move_to_dead_letter(conn, row["seq"], reason, description)

    @staticmethod
    def _move_to_dead_letter(conn: sqlite3.Connection, seq: int, reason: str, description: str) -> None:
        conn.execute(
            "UPDATE messages SET sub_queue = ?, lock_token = NULL, locked_until = NULL,"
            " dl_reason = ?, dl_description = ? WHERE seq = ?",
            (DEAD_LETTER, reason, description, seq),
        )

    # --- browsing -----------------------------------------------------------------------------

    def peek(self, *, dead_letter: bool = False, max_count: int = 100) -> list[ReceivedMessage]:
        """Every message in sequence order, locked and scheduled ones included, without locking any."""
        with self._write() as (conn, now):
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM messages WHERE queue = ? AND sub_queue = ?"  # noqa: S608
                " ORDER BY seq LIMIT ?",
                (self.name, DEAD_LETTER if dead_letter else ACTIVE, max_count),
            ).fetchall()
            return [
                row_message(row, now, lock_token="", locked_until=row["locked_until"], delivery_count=None)
                for row in rows
            ]

    def pending_with_coalesce_key(self, coalesce_key: str) -> list[bytes]:
        """Bodies of active and scheduled messages whose BuildRequest has ``coalesce_key``.

        One indexed query at dispatch time (the coalescing look-ahead), whatever the queue's length;
        senders write nothing extra.
        """
        with self._write() as (conn, _now):
            rows = conn.execute(
                f"SELECT body FROM messages WHERE queue = ? AND sub_queue = ? AND {COALESCE_KEY} = ?"  # noqa: S608
                " ORDER BY seq",
                (self.name, ACTIVE, coalesce_key),
            ).fetchall()
        return [bytes(row[0]) for row in rows]

    def count(self, *, dead_letter: bool = False) -> int:
        """Like Service Bus's active message count: locked messages count, scheduled ones do not."""
        with self._write() as (conn, now):
            if dead_letter:
                row = conn.execute(
                    "SELECT COUNT(*) FROM messages WHERE queue = ? AND sub_queue = ?",
                    (self.name, DEAD_LETTER),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT COUNT(*) FROM messages WHERE queue = ? AND sub_queue = ? AND enqueued_at <= ?",
                    (self.name, ACTIVE, now),
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
            now = to_us(self._clock())
            with self._translate_errors():
                ready = conn.execute(
                    "SELECT 1 FROM messages WHERE queue = ? AND sub_queue = ? AND enqueued_at <= ?"
                    " AND (lock_token IS NULL OR locked_until <= ?) LIMIT 1",
                    (self.name, ACTIVE, now, now),
                ).fetchone()
            if ready:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(poll_interval, remaining))

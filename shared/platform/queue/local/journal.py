"""The local queue's intake journal: a send is one locked ``write()`` to an append-only file.

Everything about the file's format lives here; the queue (``store.py``) only keeps the
(generation, offset) this module hands back, in SQLite, and asks whether to rotate.

A SQLite transaction costs tens of microseconds even in WAL mode, more than everything else a
webhook does. So ``LocalQueue.send`` appends the batch here and returns, and the next operation
that reads the queue (receive, peek, count: all of them run in a SQLite write transaction) folds
the new records into SQLite first, applying duplicate detection with each record's own send
time. The guarantee is the one WAL mode with ``synchronous=NORMAL`` gave before: a batch is
durable once ``send`` returns, across a crash of the process (the bytes are in the OS); an OS
crash may lose the last sends.

File layout::

    header  b"SLWYINTK" + 32 hex generation + b"\\n"             (41 bytes)
    record  b"\\x1eSLW" + <u32 payload length> + <u32 crc32(payload)> + payload
    payload <u32 count> then per message: <u32 meta length> <u32 body length> meta(JSON) body

Concurrency: writers hold ``flock(LOCK_EX)`` for the single ``write`` of a record, readers hold
``LOCK_SH`` while reading, so nobody ever sees half a record. How far the journal is folded is
stored in SQLite (generation + offset) in the same transaction as the folded messages, so a
crash while folding folds again from the same place. Rotation (when everything is folded and
the file is large) renames a fresh file over the old one; a writer that locked the old file
notices it was replaced (``st_nlink == 0``) and reopens. Threads of one process share the append
descriptor, and ``flock`` does not exclude them from each other (the lock belongs to the open file
description they share), so a thread lock is held for the whole append: no thread can close or
reopen the descriptor while another writes through it. The generation tells a reader that the
file was replaced after the offset it stored, which only happens once all of the old file was
folded, so it starts at the new file's first record.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.platform.compact_json import compact_json
from shared.platform.queue.port import OutgoingMessage, QueueError

logger = logging.getLogger("slipway.queue.intake")

MAGIC = b"SLWYINTK"
RECORD_MAGIC = b"\x1eSLW"
HEADER_LEN = len(MAGIC) + 32 + 1
_RECORD_HEAD = struct.Struct("<4sII")
_U32 = struct.Struct("<I")
_PAIR = struct.Struct("<II")
# Rotate once everything is folded and the file is at least this big.
ROTATE_BYTES = 1 << 20


@dataclass(frozen=True)
class IntakeMessage:
    """One message as the journal recorded it, with what the sender knew when it sent it."""

    queue: str
    sent_at_us: int
    duplicate_window_us: int
    message: OutgoingMessage


@dataclass(frozen=True)
class IntakeBatch:
    """Records read from the journal, and where the next read starts."""

    generation: str
    messages: list[IntakeMessage]
    end_offset: int
    file_size: int


def _header(generation: str) -> bytes:
    return MAGIC + generation.encode() + b"\n"


def _new_generation() -> str:
    return uuid.uuid4().hex


def encode_record(
    queue: str, sent_at_us: int, duplicate_window_us: int, messages: Sequence[OutgoingMessage]
) -> bytes:
    parts = [_U32.pack(len(messages))]
    for message in messages:
        fields = [
            queue,
            sent_at_us,
            duplicate_window_us,
            message.message_id,
            message.content_type,
            message.subject,
            message.correlation_id,
            properties if type(properties := message.application_properties) is dict else dict(properties),
            None if (when := message.scheduled_enqueue_time) is None else when.isoformat(),
        ]
        meta = compact_json(fields)
        body = message.body if type(message.body) is bytes else bytes(message.body)
        parts += [_PAIR.pack(len(meta), len(body)), meta, body]
    payload = b"".join(parts)
    return _RECORD_HEAD.pack(RECORD_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> list[IntakeMessage]:
    from datetime import datetime

    (count,) = _U32.unpack_from(payload, 0)
    position = _U32.size
    decoded: list[IntakeMessage] = []
    for _ in range(count):
        meta_len, body_len = _PAIR.unpack_from(payload, position)
        position += _PAIR.size
        meta: list[Any] = json.loads(payload[position : position + meta_len])
        position += meta_len
        body = payload[position : position + body_len]
        position += body_len
        queue, sent_at, window, message_id, content_type, subject, correlation_id, properties, when = meta
        decoded.append(
            IntakeMessage(
                queue=queue,
                sent_at_us=sent_at,
                duplicate_window_us=window,
                message=OutgoingMessage(
                    message_id=message_id,
                    body=body,
                    content_type=content_type,
                    subject=subject,
                    correlation_id=correlation_id,
                    application_properties=properties,
                    scheduled_enqueue_time=None if when is None else datetime.fromisoformat(when),
                ),
            )
        )
    if position != len(payload):
        raise ValueError("trailing bytes in record")
    return decoded


# A forked child must open its own descriptor: flock locks belong to the open file description,
# which a child shares with its parent, so a shared one would not exclude the parent. Counted at
# fork rather than compared with os.getpid(), which is a system call on every send.
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_count_fork)


class IntakeJournal:
    """The append-only file beside a local queue's SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._forks = _forks
        # Guards ``_fd`` across this process's threads (see the module docstring).
        self._thread_lock = threading.Lock()
        self.ensure()

    # --- writing ------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the file with its header unless it exists (every process may call this)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size == 0:
                os.write(fd, _header(_new_generation()))
        finally:
            os.close(fd)

    def _locked_fd(self) -> int:
        """This process's append descriptor, locked, on the file currently at ``path``."""
        for _ in range(100):
            if self._fd is None or self._forks != _forks:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._forks = _forks
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            stat = os.fstat(fd)
            if stat.st_nlink > 0 and stat.st_size >= HEADER_LEN:
                return fd
            # Rotated away (or deleted) while we waited for the lock: use the new file.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._fd = None
            if stat.st_nlink > 0 or not self.path.exists():
                self.ensure()
        raise QueueError(f"intake journal {self.path} keeps being replaced")

    def append_batch(
        self, queue: str, sent_at_us: int, duplicate_window_us: int, messages: Sequence[OutgoingMessage]
    ) -> None:
        """Record one send (a batch of ``queue``'s messages) as one record."""
        self.append(encode_record(queue, sent_at_us, duplicate_window_us, messages))

    def append(self, record: bytes) -> None:
        """One ``write`` under the lock; a short write (disk full) is cut off again and raised."""
        with self._thread_lock:
            try:
                fd = self._locked_fd()
            except OSError as exc:
                raise QueueError(f"local queue intake {self.path}: {exc}") from exc
            try:
                try:
                    written = os.write(fd, record)
                except OSError as exc:  # nothing was written
                    raise QueueError(f"local queue intake {self.path}: {exc}") from exc
                if written != len(record):  # disk full part-way: cut the partial record off again
                    os.ftruncate(fd, os.fstat(fd).st_size - written)
                    raise QueueError(
                        f"local queue intake {self.path}: short write ({written} of {len(record)})"
                    )
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None and self._forks == _forks:
                os.close(self._fd)
            self._fd = None

    # --- reading ------------------------------------------------------------------------------

    def stat_key(self) -> tuple[int, int, int] | None:
        """Changes whenever the file does: a cheap test for "anything new since I last folded"."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def read(self, generation: str | None = None, offset: int = HEADER_LEN) -> IntakeBatch | None:
        """Every whole record after ``offset`` (from the start if the file's generation differs).

        ``generation`` and ``offset`` are where the previous read ended (``IntakeBatch``); none
        yet: the whole file.
        """
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - locked and closed below
        except FileNotFoundError:
            return None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            try:
                header = handle.read(HEADER_LEN)
                if len(header) < HEADER_LEN or not header.startswith(MAGIC):
                    raise QueueError(f"intake journal {self.path} has no valid header")
                file_generation = header[len(MAGIC) : -1].decode()
                start = offset if file_generation == generation else HEADER_LEN
                handle.seek(start)
                data = handle.read()
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        messages, consumed = self._parse(data, start)
        return IntakeBatch(file_generation, messages, start + consumed, start + len(data))

    def _parse(self, data: bytes, base: int) -> tuple[list[IntakeMessage], int]:
        messages: list[IntakeMessage] = []
        position = 0
        while position + _RECORD_HEAD.size <= len(data):
            magic, length, crc = _RECORD_HEAD.unpack_from(data, position)
            start = position + _RECORD_HEAD.size
            if magic == RECORD_MAGIC and start + length <= len(data):
                payload = data[start : start + length]
                if zlib.crc32(payload) == crc:
                    try:
                        messages.extend(_decode_payload(payload))
                        position = start + length
                        continue
                    except (ValueError, struct.error, TypeError) as exc:
                        reason = f"undecodable record ({exc})"
                else:
                    reason = "checksum mismatch"
            elif magic == RECORD_MAGIC:
                # Writers hold the lock for their whole write, so a record running past the end
                # was torn (an OS crash, or a header damaged the same way), never "still coming".
                reason = "record cut short"
            else:
                reason = "no record marker"
            # Torn by an OS crash: say so, loudly, and resume at the next record marker.
            resume = data.find(RECORD_MAGIC, position + 1)
            skipped_to = len(data) if resume < 0 else resume
            logger.error(
                "intake journal %s: %s at offset %d; %d bytes skipped",
                self.path,
                reason,
                base + position,
                skipped_to - position,
            )
            position = skipped_to
        return messages, position

    # --- rotation -----------------------------------------------------------------------------

    @staticmethod
    def worth_rotating(offset: int) -> bool:
        """Whether a journal folded up to ``offset`` is big enough to start afresh."""
        return offset >= ROTATE_BYTES

    def rotate(self, generation: str, offset: int) -> tuple[str, int] | None:
        """``rotate_if_folded``, answering where reading the fresh file starts (generation, offset)."""
        new_generation = self.rotate_if_folded(generation, offset)
        return None if new_generation is None else (new_generation, HEADER_LEN)

    def rotate_if_folded(self, generation: str, offset: int) -> str | None:
        """Replace the file by an empty one if everything up to its end was folded.

        Call inside the SQLite transaction that then stores ``(new generation, HEADER_LEN)``;
        returns the new generation, or None when nothing was done.
        """
        with open(self.path, "rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                header = handle.read(HEADER_LEN)
                size = os.fstat(handle.fileno()).st_size
                if header[len(MAGIC) : -1].decode() != generation or size != offset or size < ROTATE_BYTES:
                    return None
                new_generation = _new_generation()
                temporary = self.path.with_name(self.path.name + ".new")
                temporary.write_bytes(_header(new_generation))
                os.replace(temporary, self.path)
                return new_generation
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

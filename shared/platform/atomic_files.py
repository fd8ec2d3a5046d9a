"""Atomic, conditional file writes: the local stand-in for Blob Storage's ETag conditions.

The folder ledger and the folder state store both need the same three things: an exclusive
create (a claim that must never be won twice), a replace that only succeeds if the file still
has the content the caller read, and an ETag to compare. Writers hold an exclusive ``flock`` on
``<root>/.lock``, so check-and-write is atomic across threads and processes; a document only ever
appears whole (temporary file, fsync, then ``link(2)`` or ``os.replace``); readers need no lock.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class FileChanged(Exception):
    """A conditional write found the file missing or different from what the caller read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def content_etag(data: bytes) -> str:
    """A local document's ETag: the hash of its bytes (a write based on a stale read cannot match)."""
    return hashlib.sha256(data).hexdigest()


@contextmanager
def folder_lock(root: Path) -> Iterator[None]:
    """The store's write lock. flock locks belong to the open file description, so each writer
    opens its own: threads of one process exclude each other as processes do."""
    import fcntl  # POSIX only; imported here so that importing the stores works elsewhere

    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_temp(folder: Path, data: bytes) -> Path:
    fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _sync_folder(folder: Path) -> None:
    """Make the new directory entry durable (a claim that vanishes after a crash is a double run)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: Path, data: bytes) -> bool:
    """Publish ``data`` at ``path`` unless a file is there; call it holding ``folder_lock``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _write_temp(path.parent, data)
    try:
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            # A filesystem without hard links: the lock held makes check-then-rename exclusive
            # among this module's writers, which are the only writers.
            if path.exists():
                return False
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _sync_folder(path.parent)
    return True


def replace_if_unchanged(path: Path, data: bytes, etag: str | None) -> str:
    """Replace ``path`` if its content still has ``etag`` (None: any existing file); call it holding
    ``folder_lock``. Returns the new ETag; raises ``FileChanged``."""
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        raise FileChanged("it no longer exists") from None
    if etag is not None and content_etag(current) != etag:
        raise FileChanged("it changed since it was read")
    temp = _write_temp(path.parent, data)
    try:
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _sync_folder(path.parent)
    return content_etag(data)


def delete_if_unchanged(path: Path, etag: str | None) -> bool:
    """Delete ``path`` (if ``etag`` is given, only with that content); call it holding ``folder_lock``.

    False when there was nothing to delete and no ETag was required.
    """
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        if etag is not None:
            raise FileChanged("it no longer exists") from None
        return False
    if etag is not None and content_etag(current) != etag:
        raise FileChanged("it changed since it was read")
    path.unlink()
    return True

"""Whole JSON documents with conditional writes: Blob Storage's ETag conditions, and their folder form.

The ledger and the state store both keep small documents that racing writers update: an
exclusive create (a claim that must never be won twice), a replace that only succeeds if the
document still has the ETag the caller read, and a conditional delete. ``BlobDocuments`` does that
over one container (``If-None-Match: *``, ``If-Match``); the functions below do it in a local
folder. There, writers hold an exclusive ``flock`` on ``<root>/.lock``, so check-and-write is
atomic across threads and processes; a document only ever appears whole (temporary file, fsync,
then ``link(2)`` or ``os.replace``); readers need no lock. The Azure SDKs are imported lazily.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, ContainerClient


class DocumentChanged(Exception):
    """A conditional write found the document missing or different from what the caller read."""

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
    ``folder_lock``. Returns the new ETag; raises ``DocumentChanged``."""
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        raise DocumentChanged("it no longer exists") from None
    if etag is not None and content_etag(current) != etag:
        raise DocumentChanged("it changed since it was read")
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
            raise DocumentChanged("it no longer exists") from None
        return False
    if etag is not None and content_etag(current) != etag:
        raise DocumentChanged("it changed since it was read")
    path.unlink()
    return True


# --------------------------------------------------------------------------- Blob Storage


class BlobDocuments:
    """Documents as blobs in one container; ETags guard every write.

    Writes are single-shot uploads (documents are far below the single-put limit), so a reader
    sees a whole document or none. Every write carries a random marker in the blob's metadata
    under ``mark_key``: when a response is lost and the SDK retries a write that did succeed, the
    retry fails its condition, and the marker shows the write was ours (otherwise a claim would
    look taken by someone else, and an update lost).
    """

    def __init__(self, container: ContainerClient, mark_key: str) -> None:
        self.container = container
        self._mark_key = mark_key

    def ensure_container(self) -> None:
        """Create the container if it does not exist (idempotent)."""
        from azure.core.exceptions import ResourceExistsError

        with suppress(ResourceExistsError):
            self.container.create_container()

    def read(self, name: str) -> tuple[bytes, str] | None:
        """The blob's content and ETag, or None when there is none (or no container)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self.container.get_blob_client(name).download_blob()
            data = downloader.readall()
        except ResourceNotFoundError:
            return None
        etag: str = downloader.properties.etag
        return data, etag

    def create(self, name: str, data: bytes, metadata: Mapping[str, str] | None = None) -> str | None:
        """Conditional create (``If-None-Match: *``); the new ETag, or None when the blob exists.
        Creates the container on first use."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        blob = self.container.get_blob_client(name)
        mark = uuid.uuid4().hex
        # IfMissing sends If-None-Match: * (no etag argument with it: the SDK would reject it).
        condition = {"match_condition": MatchConditions.IfMissing}
        try:
            try:
                return self._upload(blob, data, mark, metadata, condition)
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) != "ContainerNotFound":
                    raise
                self.ensure_container()
                return self._upload(blob, data, mark, metadata, condition)
        except HttpResponseError as exc:
            # 409 BlobAlreadyExists (412 from some services): a blob exists. It may be ours,
            # when the SDK retried an upload whose response was lost.
            if exc.status_code in (409, 412):
                return self._written_by(blob, mark)
            raise

    def replace(self, name: str, data: bytes, etag: str, metadata: Mapping[str, str] | None = None) -> str:
        """Overwrite with ``If-Match: <etag>``; the new ETag. ``DocumentChanged`` on 412 (changed)
        or 404 (gone), unless the blob now holds this very write."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        blob = self.container.get_blob_client(name)
        mark = uuid.uuid4().hex
        condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            return self._upload(blob, data, mark, metadata, condition)
        except HttpResponseError as exc:
            if exc.status_code not in (404, 409, 412):
                raise
            own = self._written_by(blob, mark)
            if own is not None:
                return own
            reason = "it no longer exists" if exc.status_code == 404 else "it changed since it was read"
            raise DocumentChanged(reason) from exc

    def delete(self, name: str, etag: str | None = None) -> bool:
        """Delete the blob (only if it still has ``etag``, when given); False when it was absent
        and no ETag was required. ``DocumentChanged`` when ``etag`` no longer matches."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        blob = self.container.get_blob_client(name)
        try:
            if etag is None:
                blob.delete_blob()
            else:
                blob.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            if etag is not None:
                raise DocumentChanged("it no longer exists") from None
            return False
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise DocumentChanged("it changed since it was read") from exc
            raise
        return True

    def _upload(
        self,
        blob: BlobClient,
        data: bytes,
        mark: str,
        metadata: Mapping[str, str] | None,
        conditions: Mapping[str, Any],
    ) -> str:
        from azure.storage.blob import ContentSettings

        result = blob.upload_blob(
            data,
            blob_type="BlockBlob",
            overwrite=True,
            content_settings=ContentSettings(content_type="application/json"),
            metadata={self._mark_key: mark, **(metadata or {})},
            **conditions,
        )
        new_etag: str = result["etag"]
        return new_etag

    def _written_by(self, blob: BlobClient, mark: str) -> str | None:
        """The blob's ETag if its current content is the write carrying ``mark``, else None."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            properties = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        if (properties.metadata or {}).get(self._mark_key) != mark:
            return None
        etag: str = properties.etag
        return etag

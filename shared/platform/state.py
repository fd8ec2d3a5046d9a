"""A small key/value store of JSON documents with conditional writes, for state between invocations.

Functions keep nothing between invocations that they can rely on, yet several features need a
little memory: the commit each target last built (base-image rebuilds), and later the digests a
poller last saw or the last slot a schedule fired. Each of those is one small JSON document
under a key such as ``last-build/web.json``. Writers race (two dispatchers, two timers), so
every write is conditional: ``create`` only when the key is absent, ``replace`` only when the
stored document still has the ETag the writer read. ``update`` wraps that read-modify-write loop.

Two stores implement ``StateStore``: ``BlobStateStore`` (container ``SLIPWAY_STATE_CONTAINER`` in
the Functions host storage, or Azurite) and ``FolderStateStore`` (a local folder, the default of
``slipway serve``). The Azure SDKs are imported inside functions only.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shared.platform.atomic_files import (
    FileChanged,
    content_etag,
    create_exclusive,
    delete_if_unchanged,
    folder_lock,
    replace_if_unchanged,
)
from shared.platform.ledger import blob_service_from_settings, storage_configured

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, ContainerClient

STATE_CONTAINER_SETTING = "SLIPWAY_STATE_CONTAINER"
DEFAULT_STATE_CONTAINER = "slipway-state"
# Keys become blob names and relative file paths: plain segments only, nothing that could climb
# out of the store or hide as a dot file.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_KEY_RE = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT}){{0,7}}$")
# Blob metadata naming this client's write, to recognise our own write after a lost response.
_WRITE_MARK = "slipwaystatewrite"
UPDATE_ATTEMPTS = 8


class StateConflict(Exception):
    """A conditional write lost: the document changed since it was read, or is gone."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"state {key}: {reason}")
        self.key = key
        self.reason = reason


def validate_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key) or ".." in key:
        raise ValueError(f"invalid state key {key!r}: expected segments of [A-Za-z0-9._-] separated by '/'")
    return key


@dataclass(frozen=True)
class Versioned:
    """A stored document and the ETag a conditional write must name."""

    value: dict[str, Any]
    etag: str


@runtime_checkable
class StateStore(Protocol):
    """JSON documents by key, with optimistic concurrency."""

    def get(self, key: str) -> Versioned | None:
        """The document and its ETag, or None when there is none."""
        ...

    def create(self, key: str, value: Mapping[str, Any]) -> str | None:
        """Store a new document; its ETag, or None when the key exists (never overwrites)."""
        ...

    def replace(self, key: str, value: Mapping[str, Any], etag: str) -> str:
        """Overwrite only if the stored document still has ``etag``; the new ETag.

        Raises ``StateConflict`` when it changed or no longer exists.
        """
        ...

    def delete(self, key: str, *, etag: str | None = None) -> bool:
        """Remove the key (only if it still has ``etag``, when given); False when it was absent.

        Raises ``StateConflict`` when ``etag`` no longer matches.
        """
        ...

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``, in no particular order."""
        ...


def _encode(value: Mapping[str, Any]) -> bytes:
    """Indented and sorted: a document stays readable in Storage Explorer and diffs cleanly."""
    return json.dumps(dict(value), indent=2, sort_keys=True, default=str).encode()


def _decode(key: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"state {key} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"state {key} is not a JSON object")
    return value


def update(
    store: StateStore,
    key: str,
    change: Callable[[dict[str, Any] | None], Mapping[str, Any] | None],
    *,
    attempts: int = UPDATE_ATTEMPTS,
) -> Mapping[str, Any] | None:
    """Read, ``change``, write conditionally; re-read and try again when another writer won.

    ``change`` gets the current document (None when absent) and returns the new one, or None to
    leave the store as it is. Returns what is stored afterwards as far as this writer knows.
    Raises ``StateConflict`` when every attempt lost a race.
    """
    for _ in range(attempts):
        current = store.get(key)
        wanted = change(None if current is None else current.value)
        if wanted is None:
            return None if current is None else current.value
        if current is None:
            if store.create(key, wanted) is not None:
                return wanted
            continue
        try:
            store.replace(key, wanted, current.etag)
        except StateConflict:
            continue
        return wanted
    raise StateConflict(key, f"still contended after {attempts} attempts")


def state_from_settings(settings: Mapping[str, str], *, state_dir: Path) -> StateStore:
    """Blob when the host storage is configured (Azure, or Azurite locally), else a local folder."""
    if storage_configured(settings):
        return BlobStateStore.from_settings(settings)
    return FolderStateStore(Path(state_dir) / "state")


# --------------------------------------------------------------------------- Blob Storage


class BlobStateStore:
    """Documents as blobs named by their key in one container; ETags guard every write.

    As in the ledger, every write carries a random marker in the blob's metadata: when the SDK
    retries a write whose response was lost, the retry fails its condition, and the marker shows
    that the write was ours after all.
    """

    def __init__(self, container_client: ContainerClient) -> None:
        self._container = container_client

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], **options: Any) -> BlobStateStore:
        """Container ``SLIPWAY_STATE_CONTAINER`` (default ``slipway-state``) in the host storage."""
        name = (settings.get(STATE_CONTAINER_SETTING) or "").strip() or DEFAULT_STATE_CONTAINER
        return cls(blob_service_from_settings(settings, **options).get_container_client(name))

    @property
    def container_client(self) -> ContainerClient:
        return self._container

    def ensure_container(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with suppress(ResourceExistsError):
            self._container.create_container()

    def get(self, key: str) -> Versioned | None:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._container.get_blob_client(validate_key(key))
        try:
            downloader = blob.download_blob()
            data = downloader.readall()
        except ResourceNotFoundError:
            return None
        etag: str = downloader.properties.etag
        return Versioned(_decode(key, data), etag)

    def create(self, key: str, value: Mapping[str, Any]) -> str | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        blob = self._container.get_blob_client(validate_key(key))
        data, mark = _encode(value), uuid.uuid4().hex
        try:
            try:
                return self._upload(blob, data, mark, match_condition=MatchConditions.IfMissing)
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) != "ContainerNotFound":
                    raise
                self.ensure_container()
                return self._upload(blob, data, mark, match_condition=MatchConditions.IfMissing)
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):  # it exists; perhaps because our lost write landed
                return self._written_by(blob, mark)
            raise

    def replace(self, key: str, value: Mapping[str, Any], etag: str) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        blob = self._container.get_blob_client(validate_key(key))
        mark = uuid.uuid4().hex
        try:
            return self._upload(
                blob, _encode(value), mark, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except HttpResponseError as exc:
            if exc.status_code not in (404, 409, 412):
                raise
            own = self._written_by(blob, mark)
            if own is not None:
                return own
            reason = "it no longer exists" if exc.status_code == 404 else "it changed since it was read"
            raise StateConflict(key, reason) from exc

    def delete(self, key: str, *, etag: str | None = None) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        blob = self._container.get_blob_client(validate_key(key))
        try:
            if etag is None:
                blob.delete_blob()
            else:
                blob.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            if etag is not None:
                raise StateConflict(key, "it no longer exists") from None
            return False
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise StateConflict(key, "it changed since it was read") from exc
            raise
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            names = [props.name for props in self._container.list_blobs(name_starts_with=prefix or None)]
        except ResourceNotFoundError:  # no container yet: no documents
            return
        yield from names

    @staticmethod
    def _upload(blob: BlobClient, data: bytes, mark: str, **conditions: Any) -> str:
        from azure.storage.blob import ContentSettings

        result = blob.upload_blob(
            data,
            blob_type="BlockBlob",
            overwrite=True,
            content_settings=ContentSettings(content_type="application/json"),
            metadata={_WRITE_MARK: mark},
            **conditions,
        )
        etag: str = result["etag"]
        return etag

    @staticmethod
    def _written_by(blob: BlobClient, mark: str) -> str | None:
        """The blob's ETag if its current content is the write carrying ``mark``, else None."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            properties = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        if (properties.metadata or {}).get(_WRITE_MARK) != mark:
            return None
        etag: str = properties.etag
        return etag


# --------------------------------------------------------------------------- local folder


class FolderStateStore:
    """Documents as files ``<root>/<key>``, for local mode and tests (POSIX).

    A document only ever appears whole: it is written to a temporary file, synced, then published
    with ``link(2)`` (create: fails if the name exists) or ``os.replace`` (replace). Writers hold
    an exclusive ``flock`` on ``<root>/.lock``, so the ETag check and the rename are atomic across
    threads and processes. Readers need no lock.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def get(self, key: str) -> Versioned | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return Versioned(_decode(key, data), content_etag(data))

    def create(self, key: str, value: Mapping[str, Any]) -> str | None:
        data = _encode(value)
        with folder_lock(self.root):
            return content_etag(data) if create_exclusive(self._path(key), data) else None

    def replace(self, key: str, value: Mapping[str, Any], etag: str) -> str:
        with folder_lock(self.root):
            try:
                return replace_if_unchanged(self._path(key), _encode(value), etag)
            except FileChanged as exc:
                raise StateConflict(key, exc.reason) from None

    def delete(self, key: str, *, etag: str | None = None) -> bool:
        with folder_lock(self.root):
            try:
                return delete_if_unchanged(self._path(key), etag)
            except FileChanged as exc:
                raise StateConflict(key, exc.reason) from None

    def keys(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*")):
            if not path.is_file():
                continue
            key = path.relative_to(self.root).as_posix()
            if any(part.startswith(".") for part in key.split("/")):
                continue  # the lock file and unpublished temporary files
            if key.startswith(prefix):
                yield key

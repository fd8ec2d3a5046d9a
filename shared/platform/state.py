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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shared.platform.documents import (
    BlobDocuments,
    DocumentChanged,
    content_etag,
    create_exclusive,
    delete_if_unchanged,
    folder_lock,
    replace_if_unchanged,
)
from shared.platform.storage import container_from_settings, storage_configured

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

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

    The conditional writes are ``shared.platform.documents.BlobDocuments``, as in the ledger:
    every write carries a random marker in the blob's metadata, so that when the SDK retries a
    write whose response was lost, the marker shows that the write was ours after all.
    """

    def __init__(self, container_client: ContainerClient) -> None:
        self._container = container_client
        self._documents = BlobDocuments(container_client, _WRITE_MARK)

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], **options: Any) -> BlobStateStore:
        """Container ``SLIPWAY_STATE_CONTAINER`` (default ``slipway-state``) in the host storage."""
        return cls(
            container_from_settings(settings, STATE_CONTAINER_SETTING, DEFAULT_STATE_CONTAINER, **options)
        )

    @property
    def container_client(self) -> ContainerClient:
        return self._container

    def ensure_container(self) -> None:
        self._documents.ensure_container()

    def get(self, key: str) -> Versioned | None:
        found = self._documents.read(validate_key(key))
        return None if found is None else Versioned(_decode(key, found[0]), found[1])

    def create(self, key: str, value: Mapping[str, Any]) -> str | None:
        return self._documents.create(validate_key(key), _encode(value))

    def replace(self, key: str, value: Mapping[str, Any], etag: str) -> str:
        try:
            return self._documents.replace(validate_key(key), _encode(value), etag)
        except DocumentChanged as exc:
            raise StateConflict(key, exc.reason) from exc

    def delete(self, key: str, *, etag: str | None = None) -> bool:
        try:
            return self._documents.delete(validate_key(key), etag)
        except DocumentChanged as exc:
            raise StateConflict(key, exc.reason) from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            names = [props.name for props in self._container.list_blobs(name_starts_with=prefix or None)]
        except ResourceNotFoundError:  # no container yet: no documents
            return
        yield from names


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
            except DocumentChanged as exc:
                raise StateConflict(key, exc.reason) from None

    def delete(self, key: str, *, etag: str | None = None) -> bool:
        with folder_lock(self.root):
            try:
                return delete_if_unchanged(self._path(key), etag)
            except DocumentChanged as exc:
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

"""The doctor's checks of where the app keeps things: the queue, the ledger and state containers
(or folders), a probe write where the ledger writes, and the BuildKit cache container."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.app.doctor.report import Failed, Status, error_text, first_line, status_code
from shared.app.runtime import service_bus_configured
from shared.platform.ledger import BlobLedger
from shared.platform.ledger.blob import CONTAINER_SETTING as LEDGER_CONTAINER_SETTING
from shared.platform.state import STATE_CONTAINER_SETTING, BlobStateStore
from shared.platform.storage import STORAGE_SETTING, storage_configured

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from shared.app.doctor.core import Doctor

PROBE_PREFIX = "slipway-doctor-probe-"
# Storage clients for the checks: one attempt, bounded waits. The SDK's default retries back off
# for over a minute on an endpoint that refuses connections; the doctor should say so at once.
_FAIL_FAST: dict[str, Any] = {"retry_total": 0, "connection_timeout": 10, "read_timeout": 30}
_CONTRIBUTOR = "Storage Blob Data Contributor"


def check_queue(doc: Doctor) -> str:
    from shared.platform.queue.port import QueueError

    queue_name = doc.runtime.queue_name
    if service_bus_configured(doc.settings):
        from shared.platform.queue.servicebus import ServiceBusQueue

        try:
            queue = ServiceBusQueue.from_settings(doc.settings, queue_name=queue_name)
            try:
                peeked = queue.peek(max_count=1)
            finally:
                queue.close()
        except QueueError as exc:
            raise Failed(
                f"Service Bus queue {queue_name!r}: {exc}",
                "check ServiceBusConnection__fullyQualifiedNamespace and BUILD_QUEUE; grant the identity "
                "Azure Service Bus Data Receiver (and Data Sender) on the queue",
            ) from exc
        return f"Service Bus queue {queue_name!r} peeked ({len(peeked)} message(s) at the head)"
    path = doc.runtime.state_dir / "queue.sqlite3"
    if not path.exists():
        return f"local queue {path} does not exist yet (created on first use)"
    from shared.platform.queue.local import LocalQueue

    try:
        with LocalQueue(path, name=queue_name) as local:
            count = local.count()
    except QueueError as exc:
        raise Failed(f"local queue {path}: {exc}", f"check {path} (or move it away to start afresh)") from exc
    return f"local queue {path}: {count} message(s) ready"


@contextmanager
def _storage_errors(what: str, role: str, setting: str | None = None) -> Iterator[None]:
    from azure.core.exceptions import AzureError, ResourceNotFoundError, ServiceRequestError

    try:
        yield
    except ServiceRequestError as exc:  # no answer at all: the address, or the service is down
        raise Failed(
            f"{what}: cannot connect: {first_line(exc)}",
            "check the account URL or connection setting, and that the storage (or Azurite) is running",
        ) from exc
    except ResourceNotFoundError as exc:
        raise Failed(
            f"{what} does not exist",
            "create it (the azd template does; the doctor never creates containers)"
            + (f" or set {setting} to the one the app uses" if setting else "")
            + f", then grant {role}",
        ) from exc
    except AzureError as exc:
        denied = status_code(exc) in (401, 403)
        raise Failed(
            f"{what}: {error_text(exc)}",
            f"grant the identity {role} on it" if denied else f"check the storage settings; {role} is needed",
        ) from exc


def _container(doc: Doctor, store: type[BlobLedger | BlobStateStore]) -> ContainerClient:
    """The container the app's own store would use (its setting, or the default name)."""
    try:
        return store.from_settings(doc.settings, **_FAIL_FAST).container_client
    except ValueError as exc:
        raise Failed(str(exc), f"set {STORAGE_SETTING} (or its identity-based form)") from exc


def _check_container(doc: Doctor, store: type[BlobLedger | BlobStateStore], what: str, setting: str) -> str:
    if not storage_configured(doc.settings):
        folder = doc.runtime.state_dir / what
        where = "exists" if folder.is_dir() else "does not exist yet (created on first use)"
        return f"local {what} folder {folder} {where}"
    container = _container(doc, store)
    name = container.container_name
    with _storage_errors(f"{what} container {name!r}", _CONTRIBUTOR, setting):
        container.get_container_properties()
        next(iter(container.list_blobs(results_per_page=1).by_page()), None)
    return f"{what} container {name!r} readable"


def check_ledger(doc: Doctor) -> str:
    return _check_container(doc, BlobLedger, "ledger", LEDGER_CONTAINER_SETTING)


def check_state(doc: Doctor) -> str:
    return _check_container(doc, BlobStateStore, "state", STATE_CONTAINER_SETTING)


def check_ledger_write(doc: Doctor) -> tuple[Status, str] | str:
    """Write a probe blob where the ledger writes, with the ledger's condition, then delete it."""
    probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    if not storage_configured(doc.settings):
        return _probe_folder(doc.runtime.state_dir / "ledger", probe)
    if doc.failed("ledger"):
        return Status.SKIP, "the ledger container is not readable"
    container = _container(doc, BlobLedger)
    name = container.container_name
    blob = container.get_blob_client(probe)
    with _storage_errors(f"write to ledger container {name!r}", _CONTRIBUTOR):
        blob.upload_blob(b"slipway doctor probe", overwrite=False)
        blob.delete_blob()
    return f"probe blob written to {name!r} and deleted"


def _probe_folder(folder: Path, probe: str) -> str:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise Failed(f"{existing or folder} is not a directory", "set SLIPWAY_STATE_DIR to a writable place")
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise Failed(f"{existing} is not writable", f"make {existing} writable or set SLIPWAY_STATE_DIR")
        return f"{folder} does not exist yet; {existing} is writable"
    path = folder / probe
    try:
        path.write_bytes(b"slipway doctor probe")
    except OSError as exc:
        raise Failed(f"{folder}: {exc.strerror or exc}", f"make {folder} writable") from exc
    path.unlink()
    return f"probe file written to {folder} and deleted"


def check_cache(doc: Doctor) -> tuple[Status, str] | str:
    if doc.config is None:
        return Status.SKIP, "configuration not loaded"
    cache = doc.config.cache
    if cache is None:
        return Status.SKIP, "no cache: section"
    from shared.pruning.cache_gc.store import CONNECTION_SETTING, CacheStoreError, cache_service

    if doc.mode == "local" and not (doc.settings.get(CONNECTION_SETTING) or "").strip():
        return Status.SKIP, f"local mode: set {CONNECTION_SETTING} (e.g. for Azurite) to check it"
    what = f"cache container {cache.container!r} at {cache.account_url}"
    try:
        service = cache_service(cache, doc.settings, **_FAIL_FAST)
        container = service.get_container_client(cache.container)
    except (ValueError, CacheStoreError) as exc:
        raise Failed(
            f"{what}: {exc}",
            f"use an https account_url (Entra ID), or set {CONNECTION_SETTING} to a connection string",
        ) from exc
    with _storage_errors(what, f"{_CONTRIBUTOR} (the cache collector deletes)"):
        next(
            iter(container.list_blobs(name_starts_with=cache.prefix or None, results_per_page=1).by_page()),
            None,
        )
    return f"{what} readable"

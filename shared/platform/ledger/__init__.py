"""The dispatch ledger: one record per build request id, claimed before any ACR run starts.

Service Bus delivers at least once and senders retry, so the dispatcher claims a request id
with a conditional create (Blob ``If-None-Match: *``, or an exclusive file create locally)
before it calls ACR. A redelivered message finds the record and starts nothing. Later writes
go through ``replace`` with the ETag the writer read (``If-Match``), so two deliveries racing
on the same record cannot both win. The record then holds what an operator needs
(``slipway runs list/show``): status, run id, timestamps, the task YAML and the redacted run
request. This is the shape of Powertools' idempotency persistence layer, over Blob ETags.

Two stores implement the ``Ledger`` protocol: ``BlobLedger`` (Azure Storage or Azurite) and
``FolderLedger`` (a local folder, the default of ``slipway serve``). The Azure SDKs are
imported inside functions only: the Functions worker imports this module on every cold start.
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.platform.atomic_files import (
    FileChanged,
    content_etag,
    create_exclusive,
    folder_lock,
    replace_if_unchanged,
)
from shared.platform.logs import log_event

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient

logger = logging.getLogger("slipway.ledger")

DEFAULT_CONTAINER = "slipway-ledger"
RECORD_PREFIX = "runs/"
STORAGE_SETTING = "AzureWebJobsStorage"
# The endpoint and key that ``UseDevelopmentStorage=true`` stands for (Azurite's public defaults).
DEVELOPMENT_STORAGE_BLOB_ENDPOINT = "http://127.0.0.1:10000/devstoreaccount1"
DEVELOPMENT_STORAGE_ACCOUNT = "devstoreaccount1"
DEVELOPMENT_STORAGE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

# A request id becomes a blob name and a file name: no separators, no leading dot, bounded length
# (``<id>.json`` must fit in 255 bytes). BuildRequest ids (``[a-z0-9][a-z0-9.-]*``) all qualify.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# Blob metadata naming this client's write, to recognise our own write after a lost response.
_WRITE_MARK = "slipwaywrite"
# Blob metadata carrying the record's summary, so that a listing answers budget questions alone.
_SUMMARY = "slipwaysummary"


class RunStatus(StrEnum):
    """Where a request is in its life. ACR's own run states go to ``LedgerRecord.run_status``."""

    DISPATCHING = "dispatching"  # claimed; the run is being started
    DISPATCHED = "dispatched"  # ACR accepted the run (``run_id`` is set)
    RETRYING = "retrying"  # starting failed transiently; the next delivery reclaims the record once
    FAILED = "failed"  # ACR refused the run for good (``error`` says why)
    SUPERSEDED = "superseded"  # a newer request for the same coalesce key made this one moot


def validate_request_id(request_id: str) -> str:
    """Refuse ids that could escape ``runs/`` or are not valid as a file name."""
    if not _REQUEST_ID_RE.match(request_id):
        raise ValueError(
            f"invalid ledger request id {request_id!r}: expected [A-Za-z0-9][A-Za-z0-9._-]{{0,199}}"
        )
    return request_id


def record_name(request_id: str) -> str:
    """Blob name (and path under a FolderLedger's root) of a record: ``runs/<request_id>.json``."""
    return f"{RECORD_PREFIX}{validate_request_id(request_id)}.json"


class LedgerRecord(BaseModel):
    """One build request's claim and outcome. Never holds secrets: ``run_request`` is redacted."""

    # "allow": during a rolling deploy an older instance may read a record a newer one wrote.
    # It keeps the fields it does not know and writes them back unchanged, instead of failing
    # (forbid) or dropping them (ignore). Known fields are still validated strictly.
    model_config = ConfigDict(extra="allow")

    request_id: str
    target: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    correlation_id: str
    payload_hash: str = Field(
        description="Fingerprint of the request, to catch a different build under a reused id."
    )
    request: dict[str, Any] = Field(description="The BuildRequest as JSON.")
    backend: str | None = None
    run_id: str | None = None
    run_status: str | None = Field(
        default=None, description="ACR's run status (Queued, Running, Succeeded, ...)."
    )
    task_yaml: str | None = None
    result_marker: str | None = Field(
        default=None,
        description="What the run's report lines start with (slipway-result-<nonce>:); None: the "
        "plain slipway-result: of runs started before markers had a nonce.",
    )
    run_request: dict[str, Any] | None = Field(
        default=None, description="The run request sent, secrets redacted."
    )
    error: str | None = None
    failure_reason: str | None = Field(
        default=None, description="Why a failed request was dead-lettered (RunRejected, RetriesExhausted...)."
    )
    dead_letter_message_id: str | None = Field(
        default=None,
        description="The message dead-lettered for this failure; other copies of the request are "
        "completed as duplicates, so the request sits in the dead-letter queue once.",
    )
    start_uncertain_at: datetime | None = Field(
        default=None,
        description="A start call got no answer (timeout, reset) at this claim: ACR may have created "
        "the run, so the next attempt looks for it first.",
    )
    run_started_at: datetime | None = Field(default=None, description="When ACR started the run.")
    run_finished_at: datetime | None = Field(default=None, description="When the run ended.")
    run_error: str | None = Field(default=None, description="ACR's error message for a run that failed.")
    following: bool = Field(
        default=True,
        description="Reconciliation still follows the run; false once it ended or was given up on.",
    )
    commit_status: str | None = Field(
        default=None, description="The last commit status posted to the Git host (pending, success...)."
    )
    attempts: int = 0
    history: list[dict[str, Any]] = Field(
        default_factory=list, description='Small audit trail of {"at", "event", "detail"} entries.'
    )

    @field_validator("request_id")
    @classmethod
    def _request_id(cls, value: str) -> str:
        return validate_request_id(value)

    @field_validator("created_at", "updated_at")
    @classmethod
    def _timezone_aware(cls, value: datetime) -> datetime:
        # Records from several machines are sorted together; a naive time would be ambiguous and
        # cannot even be compared with an aware one. Naive means UTC here.
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def with_event(self, now: datetime, event: str, detail: object, **changes: Any) -> LedgerRecord:
        """This record with ``changes``, updated at ``now``, and one more history entry."""
        entry = {"at": now.isoformat(), "event": event, "detail": detail}
        return self.model_copy(update={**changes, "updated_at": now, "history": [*self.history, entry]})

    def to_json(self) -> bytes:
        """The stored form: indented, so a record is readable in Storage Explorer or an editor."""
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def from_json(cls, data: str | bytes) -> LedgerRecord:
        return cls.model_validate_json(data)


@dataclass(frozen=True)
class RecordSummary:
    """What the run budgets and orphan recovery read of every recent record.

    ``BlobLedger`` stores it as blob metadata on every write, so one listing request per 5,000
    records answers "how many runs are in flight" without downloading a record per run.
    """

    request_id: str
    target: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    backend: str | None = None
    run_id: str | None = None
    run_status: str | None = None
    following: bool = True
    start_uncertain_at: datetime | None = None

    @classmethod
    def of(cls, record: LedgerRecord) -> RecordSummary:
        return cls(
            request_id=record.request_id,
            target=record.target,
            status=record.status,
            created_at=record.created_at,
            updated_at=record.updated_at,
            backend=record.backend,
            run_id=record.run_id,
            run_status=record.run_status,
            following=record.following,
            start_uncertain_at=record.start_uncertain_at,
        )

    def to_metadata(self) -> str:
        """Compact ASCII JSON (a metadata value is an HTTP header value)."""
        fields = {name: getattr(self, name) for name in _SUMMARY_FIELDS}
        for name in ("created_at", "updated_at", "start_uncertain_at"):
            if fields[name] is not None:
                fields[name] = fields[name].isoformat()
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_metadata(cls, text: str) -> RecordSummary | None:
        """None when the text is not a summary this version understands (then read the record)."""
        try:
            fields = json.loads(text)
            for name in ("created_at", "updated_at", "start_uncertain_at"):
                if fields.get(name) is not None:
                    fields[name] = _aware(datetime.fromisoformat(fields[name]))
            fields["status"] = RunStatus(fields["status"])
            return cls(**{name: fields[name] for name in _SUMMARY_FIELDS if name in fields})
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def is_active(summary: RecordSummary) -> bool:
    """Whether a record may still start a run or is followed: what budgets and reconciliation
    look at. Everything ``budgets.may_start_run`` or the reconciler counts is active; the rest
    (failed, superseded, a run no longer followed) is settled and only ages towards expiry."""
    if summary.status in (RunStatus.DISPATCHING, RunStatus.RETRYING):
        return True
    return summary.status is RunStatus.DISPATCHED and summary.following


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_SUMMARY_FIELDS = tuple(f.name for f in dataclass_fields(RecordSummary))


# A position in a newest-first listing: (created_at, request_id) of the last record shown.
Cursor = tuple[datetime, str]


def format_cursor(record: LedgerRecord | RecordSummary) -> str:
    """The ``--before`` value that continues a listing after ``record``."""
    return f"{record.created_at.astimezone(UTC).isoformat()}/{record.request_id}"


def parse_cursor(text: str) -> Cursor:
    """``format_cursor``'s text back; ValueError naming the expected form."""
    stamp, sep, request_id = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError("no '/'")
        return _aware(datetime.fromisoformat(stamp)), validate_request_id(request_id)
    except ValueError:
        raise ValueError(f"invalid cursor {text!r}: expected <created_at ISO time>/<request id>") from None


class ConflictError(Exception):
    """The record exists already, changed since it was read (ETag mismatch), or is gone."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__(f"ledger record {request_id}: {reason}")
        self.request_id = request_id
        self.reason = reason


@runtime_checkable
class Ledger(Protocol):
    """Persistence of ledger records with optimistic concurrency."""

    def create(self, record: LedgerRecord) -> bool:
        """Store a new record. False when one with that id exists; never overwrites."""
        ...

    def create_versioned(self, record: LedgerRecord) -> str | None:
        """``create``, returning the new record's ETag (None when one existed): no read back."""
        ...

    def get(self, request_id: str) -> tuple[LedgerRecord, str] | None:
        """The record and its ETag, or None when there is none."""
        ...

    def replace(self, record: LedgerRecord, etag: str) -> str:
        """Overwrite only if the stored record still has ``etag``; returns the new ETag.

        Raises ConflictError when it changed or no longer exists.
        """
        ...

    def list(self, *, limit: int | None = None, before: Cursor | None = None) -> Iterator[LedgerRecord]:
        """Records, newest first (see each store for how "newest" is decided); with ``before``,
        only those whose ``(created_at, request_id)`` is older (the next page of a listing)."""
        ...

    def list_versioned(
        self, *, limit: int | None = None, before: Cursor | None = None
    ) -> Iterator[tuple[LedgerRecord, str]]:
        """``list`` with each record's ETag, for a caller that may ``replace`` what it reads."""
        ...

    def list_summaries(self, *, since: datetime) -> Iterator[RecordSummary]:
        """Summaries of the records created since ``since``, newest first (older ones may follow:
        callers stop at the first one older than they care about)."""
        ...

    def list_active(self) -> Iterator[RecordSummary]:
        """Summaries of the active records (``is_active``), newest first; others may follow."""
        ...

    def expire(self, *, before: datetime, export: Path | None = None) -> builtins.list[str]:
        """Delete records created and last updated before ``before`` (exported to ``export``
        first when given); returns the ids deleted. Callers keep ``before`` at least
        ``MIN_RETENTION`` back, so no reader of the ledger is affected."""
        ...


def payload_hash(body: str | bytes) -> str:
    """sha256 (hex) of a request body, for telling a retry from a different payload under one key.

    A JSON body is hashed in canonical form (sorted keys, no insignificant whitespace), so that a
    message re-serialised by another tool (Service Bus Explorer, another SDK) is not mistaken for
    a different payload. A body that is not JSON is hashed as it is; it cannot collide with a
    canonical form, which is always valid JSON.
    """
    raw = body.encode() if isinstance(body, str) else body
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        canonical = raw
    return hashlib.sha256(canonical).hexdigest()


# --------------------------------------------------------------------------- settings


def _setting(settings: Mapping[str, str], name: str) -> str | None:
    value = settings.get(name)
    return value.strip() if value and value.strip() else None


def storage_configured(settings: Mapping[str, str], prefix: str = STORAGE_SETTING) -> bool:
    """True when the Functions host storage is set, as a connection string or identity-based."""
    return any(
        _setting(settings, name)
        for name in (prefix, f"{prefix}__blobServiceUri", f"{prefix}__serviceUri", f"{prefix}__accountName")
    )


def _parse_connection_string(value: str) -> dict[str, str]:
    """``Key=Value;...`` with case-insensitive keys (values may contain ``=``, as keys do)."""
    parts: dict[str, str] = {}
    for item in value.split(";"):
        if item.strip():
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError("the storage connection string is malformed (expected Key=Value;...)")
            parts[key.strip().lower()] = val.strip()
    return parts


def storage_credential(settings: Mapping[str, str], prefix: str = STORAGE_SETTING) -> TokenCredential:
    """The identity for the ``<prefix>__*`` storage connection, by ``shared.platform.identity``'s one rule:
    ``<prefix>__clientId``, else ``AZURE_CLIENT_ID``; ``__credential=managedidentity`` as the host."""
    from shared.platform.identity import credential

    return credential(settings, prefix)


def blob_service_from_settings(
    settings: Mapping[str, str], prefix: str = STORAGE_SETTING, **options: Any
) -> BlobServiceClient:
    """A BlobServiceClient for the storage the Functions host uses (``AzureWebJobsStorage``).

    Accepts what the host accepts: a connection string (``UseDevelopmentStorage=true`` means
    Azurite on its default port), or identity-based ``__blobServiceUri`` (``__serviceUri``) or
    ``__accountName`` with a token credential. ``options`` go to the client (``slipway doctor``
    asks for no retries: the SDK's default backoff waits over a minute on a dead endpoint).
    """
    from azure.storage.blob import BlobServiceClient

    connection = _setting(settings, prefix)
    if connection:
        parts = _parse_connection_string(connection)
        if parts.get("usedevelopmentstorage", "").lower() == "true":
            # Parsed here rather than by the SDK, which only accepts the exact lowercase "true".
            return BlobServiceClient(
                DEVELOPMENT_STORAGE_BLOB_ENDPOINT,
                credential={
                    "account_name": DEVELOPMENT_STORAGE_ACCOUNT,
                    "account_key": DEVELOPMENT_STORAGE_KEY,
                },
                **options,
            )
        return BlobServiceClient.from_connection_string(connection, **options)
    service_uri = _setting(settings, f"{prefix}__blobServiceUri") or _setting(
        settings, f"{prefix}__serviceUri"
    )
    account = _setting(settings, f"{prefix}__accountName")
    if not service_uri and account:
        service_uri = f"https://{account}.blob.core.windows.net"
    if not service_uri:
        raise ValueError(
            f"no blob storage configured: set {prefix} (connection string) or "
            f"{prefix}__blobServiceUri / {prefix}__accountName (managed identity)"
        )
    return BlobServiceClient(
        service_uri.rstrip("/"), credential=storage_credential(settings, prefix), **options
    )


RETENTION_SETTING = "SLIPWAY_LEDGER_RETENTION"
EXPORT_SETTING = "SLIPWAY_LEDGER_EXPORT_DIR"
# Budgets and orphan recovery look back 14 days (``budgets.LOOKBACK``, ``run_recovery``): a
# retention at least this long never removes a record either of them could read.
MIN_RETENTION = timedelta(days=15)


def retention_from_settings(settings: Mapping[str, str]) -> timedelta | None:
    """``SLIPWAY_LEDGER_RETENTION`` (``30d``, ``6w``...): how long records are kept unwritten.
    Unset: forever. Shorter than ``MIN_RETENTION``: a ValueError saying so."""
    from shared.model.durations import parse_duration

    text = _setting(settings, RETENTION_SETTING)
    if text is None:
        return None
    try:
        retention = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{RETENTION_SETTING}: {exc}") from None
    if retention < MIN_RETENTION:
        raise ValueError(
            f"{RETENTION_SETTING}={text} is shorter than {MIN_RETENTION.days} days: "
            "budgets and orphan recovery read records 14 days back"
        )
    return retention


def export_from_settings(settings: Mapping[str, str]) -> Path | None:
    """``SLIPWAY_LEDGER_EXPORT_DIR``: where expired records are copied before deletion."""
    text = _setting(settings, EXPORT_SETTING)
    return Path(text) if text else None


def _readable(
    reads: Iterable[tuple[LedgerRecord, str] | None], limit: int | None
) -> Iterator[tuple[LedgerRecord, str]]:
    """The reads that found a record, at most ``limit``: reads are lazy, so the downloads stop there."""
    return itertools.islice((read for read in reads if read is not None), limit)


def ledger_from_settings(settings: Mapping[str, str], *, state_dir: Path) -> Ledger:
    """Blob when the host storage is configured (Azure, or Azurite locally), else a local folder."""
    if storage_configured(settings):
        return BlobLedger.from_settings(settings)
    return FolderLedger(Path(state_dir) / "ledger")


# --------------------------------------------------------------------------- Blob Storage


class BlobLedger:
    """Records as blobs ``runs/<request_id>.json`` in one container; ETags guard every write.

    Writes are single-shot uploads (a record is far below the single-put limit), so a reader
    sees a whole record or none. Every write carries a random marker in the blob's metadata: when
    a response is lost and the SDK retries a write that did succeed, the retry fails its
    condition, and the marker shows the write was ours (otherwise a claim would look taken by
    someone else and the build would never run).
    """

    def __init__(self, container_client: ContainerClient) -> None:
        self._container = container_client

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], **options: Any) -> BlobLedger:
        """Container ``SLIPWAY_LEDGER_CONTAINER`` (default ``slipway-ledger``) in the host storage."""
        container = _setting(settings, "SLIPWAY_LEDGER_CONTAINER") or DEFAULT_CONTAINER
        return cls(blob_service_from_settings(settings, **options).get_container_client(container))

    @property
    def container_client(self) -> ContainerClient:
        return self._container

    def ensure_container(self) -> None:
        """Create the container if it does not exist (idempotent)."""
        from azure.core.exceptions import ResourceExistsError

        with suppress(ResourceExistsError):
            self._container.create_container()

    def create(self, record: LedgerRecord) -> bool:
        return self.create_versioned(record) is not None

    def create_versioned(self, record: LedgerRecord) -> str | None:
        """Conditional create (``If-None-Match: *``). Creates the container on first use."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        blob = self._container.get_blob_client(record_name(record.request_id))
        data = record.to_json()
        mark = uuid.uuid4().hex
        metadata = _metadata(record, mark)
        try:
            try:
                return self._upload_new(blob, data, metadata)
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) != "ContainerNotFound":
                    raise
                self.ensure_container()
                return self._upload_new(blob, data, metadata)
        except HttpResponseError as exc:
            # 409 BlobAlreadyExists (412 from some services): a record exists. It may be ours,
            # when the SDK retried an upload whose response was lost.
            if exc.status_code in (409, 412):
                return self._written_by(blob, mark)
            raise

    def get(self, request_id: str) -> tuple[LedgerRecord, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._container.get_blob_client(record_name(request_id))
        try:
            downloader = blob.download_blob()
            data = downloader.readall()
        except ResourceNotFoundError:
            return None
        etag = downloader.properties.etag
        return LedgerRecord.from_json(data), etag

    def replace(self, record: LedgerRecord, etag: str) -> str:
        """Overwrite with ``If-Match: <etag>``; ConflictError on 412 (changed) or 404 (gone)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError
        from azure.storage.blob import ContentSettings

        blob = self._container.get_blob_client(record_name(record.request_id))
        mark = uuid.uuid4().hex
        try:
            result = blob.upload_blob(
                record.to_json(),
                blob_type="BlockBlob",
                overwrite=True,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                content_settings=ContentSettings(content_type="application/json"),
                metadata=_metadata(record, mark),
            )
        except HttpResponseError as exc:
            if exc.status_code not in (404, 409, 412):
                raise
            own_etag = self._written_by(blob, mark)
            if own_etag is not None:
                return own_etag
            reason = "it no longer exists" if exc.status_code == 404 else "it changed since it was read"
            raise ConflictError(record.request_id, reason) from exc
        new_etag: str = result["etag"]
        return new_etag

    def _upload_new(self, blob: BlobClient, data: bytes, metadata: dict[str, str]) -> str:
        from azure.core import MatchConditions
        from azure.storage.blob import ContentSettings

        # IfMissing sends If-None-Match: * (no etag argument with it: the SDK would reject it).
        result = blob.upload_blob(
            data,
            blob_type="BlockBlob",
            match_condition=MatchConditions.IfMissing,
            content_settings=ContentSettings(content_type="application/json"),
            metadata=metadata,
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

    def _read_listed(self, name: str) -> tuple[LedgerRecord, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self._container.download_blob(name)
            data = downloader.readall()
        except ResourceNotFoundError:  # deleted since it was listed
            return None
        try:
            return LedgerRecord.from_json(data), downloader.properties.etag
        except ValidationError as exc:
            log_event(logger, "ledger_record_unreadable", level=logging.WARNING, blob=name, error=str(exc))
            return None

    def list(self, *, limit: int | None = None, before: Cursor | None = None) -> Iterator[LedgerRecord]:
        for record, _etag in self.list_versioned(limit=limit, before=before):
            yield record

    def list_versioned(
        self, *, limit: int | None = None, before: Cursor | None = None
    ) -> Iterator[tuple[LedgerRecord, str]]:
        """Newest first by ``created_at`` (then request id), strictly older than ``before`` if given.

        Ordered from the listing's summaries (one request per 5,000 records, names and metadata
        only); records are downloaded lazily, so ``limit`` bounds the downloads. A record that
        cannot be parsed is logged and skipped, so one bad blob does not hide the others.
        """
        from azure.core.exceptions import ResourceNotFoundError

        if limit is not None and limit <= 0:
            return
        try:
            listed = [
                (summary, props.name)
                for props in self._container.list_blobs(name_starts_with=RECORD_PREFIX, include=["metadata"])
                if props.name.endswith(".json")
                and (summary := self._summary(props.name, props.metadata or {})) is not None
                and _older(summary, before)
            ]
        except ResourceNotFoundError:  # no container yet: no records
            return
        listed.sort(key=lambda item: (item[0].created_at, item[0].request_id), reverse=True)
        yield from _readable((self._read_listed(name) for _summary, name in listed), limit)

    def list_summaries(self, *, since: datetime) -> Iterator[RecordSummary]:
        """From the listing's metadata alone: one request per 5,000 records, no download, except
        for a record written before summaries were stored (read once, then it has none either).

        Newest first by blob creation time; stops at the first blob created more than a minute
        before ``since`` (creation times are the server's, records' times the writer's).
        """
        from azure.core.exceptions import ResourceNotFoundError

        try:
            listed = [
                (props.creation_time or props.last_modified, props.name, props.metadata or {})
                for props in self._container.list_blobs(name_starts_with=RECORD_PREFIX, include=["metadata"])
                if props.name.endswith(".json")
            ]
        except ResourceNotFoundError:
            return
        listed.sort(key=lambda item: item[0], reverse=True)
        try:
            cutoff = since - _CLOCK_SLACK
        except OverflowError:  # since is datetime.min: everything
            cutoff = since
        for created, group in itertools.groupby(listed, key=lambda item: item[0]):
            if created < cutoff:
                return
            summaries = [s for _, name, metadata in group if (s := self._summary(name, metadata)) is not None]
            # Blob times have one-second granularity: within one, the record's own time decides.
            summaries.sort(key=lambda s: (s.created_at, s.request_id), reverse=True)
            yield from summaries

    def _summary(self, name: str, metadata: Mapping[str, str]) -> RecordSummary | None:
        summary = RecordSummary.from_metadata(metadata.get(_SUMMARY, ""))
        if summary is None:
            read = self._read_listed(name)
            summary = RecordSummary.of(read[0]) if read is not None else None
        return summary

    def list_active(self) -> Iterator[RecordSummary]:
        """The active summaries, filtered from the metadata listing (one request per 5,000 records,
        no record is downloaded): O(records) requests, not O(active runs).

        Not blob index tags: "it might take some time before the blob index updates" after a
        write (https://learn.microsoft.com/azure/storage/blobs/storage-manage-find-blobs,
        "Finding data using blob index tags"), and the budgets need a listing that sees every
        claim written before it (see ``shared.dispatch.budgets``).
        """
        for summary in self.list_summaries(since=datetime.min.replace(tzinfo=UTC)):
            if is_active(summary):
                yield summary

    def expire(self, *, before: datetime, export: Path | None = None) -> builtins.list[str]:
        """Delete records created and last updated before ``before`` (see FolderLedger.expire),
        each conditional on the ETag listed (``If-Match``): a record written since is kept.
        Exported first when asked. One listing request per 5,000 records, then one per delete."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        expired: builtins.list[str] = []
        try:
            listed = list(self._container.list_blobs(name_starts_with=RECORD_PREFIX, include=["metadata"]))
        except ResourceNotFoundError:
            return expired
        for props in listed:
            if not props.name.endswith(".json"):
                continue
            summary = self._summary(props.name, props.metadata or {})
            if summary is None or max(summary.created_at, summary.updated_at) >= before:
                continue
            if export is not None:
                downloader = self._container.download_blob(
                    props.name, etag=props.etag, match_condition=MatchConditions.IfNotModified
                )
                export.mkdir(parents=True, exist_ok=True)
                create_exclusive(export / f"{summary.request_id}.json", downloader.readall())
            try:
                self._container.delete_blob(
                    props.name, etag=props.etag, match_condition=MatchConditions.IfNotModified
                )
            except HttpResponseError as exc:
                if exc.status_code not in (404, 412):
                    raise
                continue
            expired.append(summary.request_id)
        return expired


def _metadata(record: LedgerRecord, mark: str) -> dict[str, str]:
    return {_WRITE_MARK: mark, _SUMMARY: RecordSummary.of(record).to_metadata()}


_CLOCK_SLACK = timedelta(minutes=1)


# --------------------------------------------------------------------------- local folder


class FolderLedger:
    """Records as files ``<root>/runs/<request_id>.json``, for local mode and tests (POSIX).

    A record file only ever appears complete: it is written to a temporary file, synced, then
    published with ``link(2)`` (create: fails if the name exists, so it is an exclusive create
    like O_CREAT|O_EXCL, without a window where a half-written claim is visible) or
    ``os.replace`` (replace). Writers also hold an exclusive ``flock`` on ``<root>/.lock``, so
    the ETag check and the rename of ``replace`` are atomic across threads and processes.
    Readers need no lock.

    Records are ~36 KB (task YAML, run request, history), so the questions asked on every
    request and timer tick are answered from a small index of summaries (a few hundred bytes
    each), written under the same lock after the record is published and before the write
    returns:

    - ``index/active/<created>~<id>.json``: records that may still start a run or are followed
      (``is_active``): what budgets and reconciliation read, O(active runs);
    - ``index/settled/<created YYYY-MM-DDTHH>/<created>~<id>.json``: the rest, by hour of creation (a
      record's creation time never changes, so the entry's place is known from the record
      alone): ``list`` and ``expire`` read only the hours they need, a page about one hour's
      worth of entries whatever the history.

    The order (record, then new entry, then the old entry removed) means a crash between them
    leaves at worst a stale or missing entry for a write that never returned: its caller started
    no run, and the record's next write repairs the entry. A folder written before the index
    existed is indexed once, on first read.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._index = self.root / "index"
        self._marker = self._index / ".v1"  # every record has its entry
        self.entry_reads = 0  # index entries read, for the tests and the benchmark
        self.record_reads = 0  # whole records read

    def _path(self, request_id: str) -> Path:
        return self.root / record_name(request_id)

    def create(self, record: LedgerRecord) -> bool:
        return self.create_versioned(record) is not None

    def create_versioned(self, record: LedgerRecord) -> str | None:
        data = record.to_json()
        with folder_lock(self.root):
            self._build_index()
            if not create_exclusive(self._path(record.request_id), data):
                return None
            self._write_entry(RecordSummary.of(record))
            return content_etag(data)

    def get(self, request_id: str) -> tuple[LedgerRecord, str] | None:
        try:
            data = self._path(request_id).read_bytes()
        except FileNotFoundError:
            return None
        self.record_reads += 1
        return LedgerRecord.from_json(data), content_etag(data)

    def replace(self, record: LedgerRecord, etag: str) -> str:
        with folder_lock(self.root):
            self._build_index()
            try:
                new_etag = replace_if_unchanged(self._path(record.request_id), record.to_json(), etag)
            except FileChanged as exc:
                raise ConflictError(record.request_id, exc.reason) from None
            self._write_entry(RecordSummary.of(record))
            return new_etag

    # ------------------------------------------------------------------ the summary index

    def _active_entry(self, summary: RecordSummary) -> Path:
        return self._index / "active" / _entry_name(summary)

    def _settled_entry(self, summary: RecordSummary) -> Path:
        return self._index / "settled" / _hour(summary.created_at) / _entry_name(summary)

    def _write_entry(self, summary: RecordSummary) -> None:
        """Publish ``summary`` where its state belongs, then drop it from the other place."""
        active, settled = self._active_entry(summary), self._settled_entry(summary)
        new, old = (active, settled) if is_active(summary) else (settled, active)
        new.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=new.parent, prefix=".tmp-", suffix=".part")
        with os.fdopen(fd, "w") as handle:
            handle.write(summary.to_metadata())
        os.replace(temp, new)
        old.unlink(missing_ok=True)

    def _read_entries(self, folder: Path) -> builtins.list[RecordSummary]:
        summaries: builtins.list[RecordSummary] = []
        with suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith(".json"):
                    continue
                try:
                    with open(entry.path) as handle:
                        text = handle.read()
                except FileNotFoundError:  # moved between active and settled since the listing
                    continue
                self.entry_reads += 1
                summary = RecordSummary.from_metadata(text)
                if summary is not None:
                    summaries.append(summary)
        return summaries

    @staticmethod
    def _entry_keys(folder: Path) -> builtins.list[Cursor]:
        """(created_at, request_id) of each entry in ``folder``, from the names alone."""
        keys: builtins.list[Cursor] = []
        with suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and (key := _entry_key(entry.name)) is not None:
                    keys.append(key)
        return keys

    def _settled_hours(self) -> builtins.list[str]:
        """Creation hours (``_hour``) that have settled entries, newest first."""
        with suppress(FileNotFoundError), os.scandir(self._index / "settled") as entries:
            return sorted((e.name for e in entries if not e.name.startswith(".")), reverse=True)
        return []

    def _ensure_index(self) -> None:
        """Index a folder written before the index existed (once; every record is read)."""
        if not self._marker.exists():
            with folder_lock(self.root):
                self._build_index()

    def _build_index(self) -> None:
        """``_ensure_index``'s work, for a caller holding the lock: writers call it first, so a
        folder's first write indexes what an older version left before adding to it."""
        if self._marker.exists():
            return
        runs = self.root / RECORD_PREFIX.rstrip("/")
        for path in runs.glob("*.json") if runs.is_dir() else ():
            if path.name.startswith("."):
                continue
            try:
                self._write_entry(RecordSummary.of(LedgerRecord.from_json(path.read_bytes())))
            except ValidationError as exc:
                log_event(
                    logger,
                    "ledger_record_unreadable",
                    level=logging.WARNING,
                    path=str(path),
                    error=str(exc),
                )
        self._index.mkdir(parents=True, exist_ok=True)
        self._marker.touch()

    @staticmethod
    def _newest_first(summaries: builtins.list[RecordSummary]) -> builtins.list[RecordSummary]:
        latest: dict[str, RecordSummary] = {}
        for summary in summaries:  # after a crash an id can have two entries: the newer one holds
            kept = latest.get(summary.request_id)
            if kept is None or summary.updated_at > kept.updated_at:
                latest[summary.request_id] = summary
        return sorted(latest.values(), key=lambda s: (s.created_at, s.request_id), reverse=True)

    def list_active(self) -> Iterator[RecordSummary]:
        """Only the active entries: O(runs that may start or are followed), whatever the history."""
        self._ensure_index()
        yield from self._newest_first(self._read_entries(self._index / "active"))

    def list_summaries(self, *, since: datetime) -> Iterator[RecordSummary]:
        """The active entries and the settled hours from ``since``'s hour on (no record is read)."""
        self._ensure_index()
        first_hour = _hour(since) if since > datetime.min.replace(tzinfo=UTC) else ""
        found = self._read_entries(self._index / "active")
        for hour in self._settled_hours():
            if hour < first_hour:
                break
            found.extend(self._read_entries(self._index / "settled" / hour))
        yield from (s for s in self._newest_first(found) if s.created_at >= since)

    def list(self, *, limit: int | None = None, before: Cursor | None = None) -> Iterator[LedgerRecord]:
        for record, _etag in self.list_versioned(limit=limit, before=before):
            yield record

    def list_versioned(
        self, *, limit: int | None = None, before: Cursor | None = None
    ) -> Iterator[tuple[LedgerRecord, str]]:
        """Newest first by ``created_at`` (then request id), strictly older than ``before`` if given.

        Orders by the entries' names alone (``_entry_name``: creation time and id), from the
        active entries and the newest settled hours until ``limit`` are found, then reads only
        those records. A record that cannot be parsed is logged and skipped.
        """
        if limit is not None and limit <= 0:
            return
        self._ensure_index()
        keys = [k for k in self._entry_keys(self._index / "active") if _older_key(k, before)]
        settled = 0
        for hour in self._settled_hours():
            if before is not None and hour > _hour(before[0]):
                continue
            if limit is not None and settled >= limit:
                break  # hours are newest first: every later hour is older than what was found
            found = [k for k in self._entry_keys(self._index / "settled" / hour) if _older_key(k, before)]
            settled += len(found)
            keys += found
        # A request id can be in both places after a crash between two writes: once is enough.
        newest_first = dict.fromkeys(request_id for _created, request_id in sorted(keys, reverse=True))
        yield from _readable((self._read_record(request_id) for request_id in newest_first), limit)

    def _read_record(self, request_id: str) -> tuple[LedgerRecord, str] | None:
        try:
            return self.get(request_id)
        except FileNotFoundError:
            return None
        except ValidationError as exc:
            log_event(
                logger,
                "ledger_record_unreadable",
                level=logging.WARNING,
                request_id=request_id,
                error=str(exc),
            )
            return None

    def expire(self, *, before: datetime, export: Path | None = None) -> builtins.list[str]:
        """Delete the records created and last updated before ``before``; returns their ids.

        Reads the active entries (a record left active that long, a claim whose worker died, is
        read by no one: budgets and recovery look 14 days back, see ``MIN_RETENTION``) and the
        settled hours up to ``before``'s hour. With ``export``, each record is copied to
        ``<export>/<id>.json`` (synced) before it is deleted. The record goes first, then its
        entry: a crash between leaves an entry whose record is gone, removed next time.
        """
        self._ensure_index()
        expired: builtins.list[str] = []
        last_hour = _hour(before)
        folders = [self._index / "active"]
        folders += [self._index / "settled" / hour for hour in self._settled_hours() if hour <= last_hour]
        for folder in folders:
            for summary in self._read_entries(folder):
                if max(summary.created_at, summary.updated_at) >= before:
                    continue
                with folder_lock(self.root):
                    if self._expire_one(summary, folder / _entry_name(summary), export):
                        expired.append(summary.request_id)
            if folder.parent.name == "settled":
                with folder_lock(self.root), suppress(OSError):
                    folder.rmdir()  # only when empty; under the lock, as writers create entries
        return expired

    def _expire_one(self, summary: RecordSummary, entry: Path, export: Path | None) -> bool:
        """Under the lock: delete the record if it is still what ``summary`` says."""
        path = self._path(summary.request_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            entry.unlink(missing_ok=True)
            return False
        if RecordSummary.of(LedgerRecord.from_json(data)) != summary:
            return False  # written since the entry was read: its new entry decides
        if export is not None:
            export.mkdir(parents=True, exist_ok=True)
            create_exclusive(export / f"{summary.request_id}.json", data)
        path.unlink()
        entry.unlink(missing_ok=True)
        return True


_STAMP = "%Y%m%dT%H%M%S%f"


def _entry_name(summary: RecordSummary) -> str:
    """An index entry's file name, ``<created_at UTC, µs>~<request id>.json``: listings order by
    names without opening the entries (created_at never changes after the claim)."""
    return f"{summary.created_at.astimezone(UTC).strftime(_STAMP)}~{summary.request_id}.json"


def _entry_key(name: str) -> Cursor | None:
    stamp, sep, rest = name.partition("~")
    if not sep or not rest.endswith(".json"):
        return None
    try:
        return datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC), rest.removesuffix(".json")
    except ValueError:
        return None


def _older_key(key: Cursor, before: Cursor | None) -> bool:
    return before is None or key < before


def _hour(when: datetime) -> str:
    """A settled entry's bucket: its UTC creation hour, ``2026-12-03T11`` (sorts as it reads)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H")


def _older(summary: RecordSummary, before: Cursor | None) -> bool:
    return before is None or (summary.created_at, summary.request_id) < before

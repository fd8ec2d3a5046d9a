"""The ledger's record: one build request's claim and outcome, and the names it is stored under.

The record is the stored schema (indented JSON, one per request id, ``runs/<id>.json`` in a
container or a folder) and holds what an operator needs (``slipway runs list/show``): status,
run id, timestamps, the task YAML and the redacted run request. Every store validates ids
through ``validate_request_id``, since an id becomes a blob name and a file name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_CONTAINER = "slipway-ledger"
RECORD_PREFIX = "runs/"

# A request id becomes a blob name and a file name: no separators, no leading dot, bounded length
# (``<id>.json`` must fit in 255 bytes). BuildRequest ids (``[a-z0-9][a-z0-9.-]*``) all qualify.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class RunStatus(StrEnum):
    """Where a request is in its life. ACR's own run states go to ``LedgerRecord.run_status``."""

    DISPATCHING = "dispatching"  # claimed; the run is being started
    DISPATCHED = "dispatched"  # ACR accepted the run (``run_id`` is set)
    RETRYING = "retrying"  # starting failed transiently; the next delivery reclaims the record once
    FAILED = "failed"  # ACR refused the run for good (``error`` says why)
    SUPERSEDED = "superseded"  # a newer request for the same coalesce key made this one moot
    # An operator cancelled it (``slipway cancel``): before it started (no run), or its ACR run,
    # which reconciliation follows until ACR says it ended (``following``).
    CANCELLED = "cancelled"


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
    cancelled_by: str | None = Field(
        default=None, description="Who cancelled the request (``slipway cancel``); why is in the history."
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
        return aware(value)

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


def aware(value: datetime) -> datetime:
    """``value`` with UTC as its zone when it has none (naive means UTC in the ledger)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class ConflictError(Exception):
    """The record exists already, changed since it was read (ETag mismatch), or is gone."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__(f"ledger record {request_id}: {reason}")
        self.request_id = request_id
        self.reason = reason

"""A record's summary: the few fields budgets, recovery and listings read of every recent record.

Records are ~36 KB (task YAML, run request, history); the questions asked on every request and
timer tick need a few hundred bytes of each. Both stores keep this summary beside the record
(Blob metadata, a folder index), in the compact JSON ``to_metadata`` writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime

from shared.platform.ledger.records import LedgerRecord, RunStatus, aware


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
                    fields[name] = aware(datetime.fromisoformat(fields[name]))
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
    # A cancelled run is followed until ACR says it ended (a pending request cancelled is not).
    return summary.status in (RunStatus.DISPATCHED, RunStatus.CANCELLED) and summary.following


_SUMMARY_FIELDS = tuple(f.name for f in dataclass_fields(RecordSummary))

"""What ``slipway runs`` reads of the ledger: a record by request or run id, the filtered pages of
``runs list``, and the derived columns (trigger, duration, portal link)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.app.cli import CliError

if TYPE_CHECKING:
    from shared.acr.run_backend import AcrBackend
    from shared.app.runtime import Runtime
    from shared.platform.ledger import Cursor, Ledger, LedgerRecord, RecordSummary

# A filtered page reads at most this many records (matching or not) before it stops and hands
# out the cursor to go on from: a filter that matches nothing costs a bounded page, not the history.
SCAN_LIMIT = 500


def find_record(ledger: Ledger, ident: str) -> LedgerRecord | None:
    """The record of a request id, else of an ACR run id (from the summaries: a Blob ledger answers
    from one listing instead of downloading every record, then reads that one record)."""
    try:
        found = ledger.get(ident)
    except ValueError:  # not a valid request id: maybe a run id
        found = None
    if found is None:
        every = ledger.list_summaries(since=datetime(1970, 1, 1, tzinfo=UTC))
        match = next((s for s in every if s.run_id == ident), None)
        found = ledger.get(match.request_id) if match is not None else None
    return found[0] if found else None


def require_record(ledger: Ledger, ident: str) -> LedgerRecord:
    record = find_record(ledger, ident)
    if record is None:
        raise CliError(f"no run with request id or run id {ident!r}")
    return record


def trigger_of(record: LedgerRecord) -> str | None:
    """What caused the request (push, tag, base-image, schedule, replay, rerun...), as recorded."""
    trigger = record.request.get("trigger")
    kind = trigger.get("kind") if isinstance(trigger, dict) else None
    return str(kind) if kind else None


def duration_seconds(record: LedgerRecord, now: datetime) -> float | None:
    """run_started_at to run_finished_at; for a run still going, the time it has run so far."""
    from shared.acr.run_backend import TERMINAL_RUN_STATUSES

    started = record.run_started_at
    if started is None:
        return None
    if record.run_finished_at is not None:
        return max(0.0, (record.run_finished_at - started).total_seconds())
    if record.run_status in TERMINAL_RUN_STATUSES:
        return None  # ended, end time unknown
    return max(0.0, (now - started).total_seconds())


def duration_text(record: LedgerRecord, now: datetime) -> str | None:
    from datetime import timedelta

    from shared.model.durations import format_duration

    seconds = duration_seconds(record, now)
    if seconds is None:
        return None
    text = format_duration(timedelta(seconds=round(seconds)))
    return text if record.run_finished_at is not None else f"running {text}"


def summary(record: LedgerRecord, now: datetime) -> dict[str, Any]:
    """One row of ``runs list --json`` (and the head of ``runs show --json``): see the README."""
    source = record.request.get("source", {})
    return {
        "request_id": record.request_id,
        "target": record.target,
        "status": str(record.status),
        "backend": record.backend,
        "run_id": record.run_id,
        "run_status": record.run_status,
        "trigger": trigger_of(record),
        "ref": source.get("ref"),
        "commit": source.get("commit"),
        "correlation_id": record.correlation_id,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "error": record.error,
        "run_started_at": record.run_started_at.isoformat() if record.run_started_at else None,
        "run_finished_at": record.run_finished_at.isoformat() if record.run_finished_at else None,
        "duration_seconds": duration_seconds(record, now),
        "run_error": record.run_error,
        "following": record.following,
        "commit_status": record.commit_status,
    }


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: a duration back from now (``2h``, ``3d``) or an ISO time (naive means UTC)."""
    from shared.model.durations import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError as duration_error:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"{duration_error}, nor an ISO time (2026-12-01T08:00Z)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RunFilter:
    """``runs list``'s filters; an empty one keeps everything."""

    target: str | None = None
    statuses: tuple[str, ...] = ()  # ledger statuses or ACR run statuses, any case
    ref: str | None = None
    since: datetime | None = None

    @property
    def active(self) -> bool:
        return bool(self.target or self.statuses or self.ref or self.since)

    @property
    def on_summaries(self) -> bool:
        """Whether part of the filter can be decided from a record's summary alone."""
        return bool(self.target or self.statuses)

    def matches_summary(self, summary: LedgerRecord | RecordSummary) -> bool:
        """The target and status filters, which a summary (or a record) answers."""
        if self.target is not None and summary.target != self.target:
            return False
        if self.statuses:
            have = {str(summary.status).lower(), (summary.run_status or "").lower()}
            if not have & {s.lower() for s in self.statuses}:
                return False
        return True

    def matches(self, record: LedgerRecord) -> bool:
        if not self.matches_summary(record):
            return False
        if self.ref is not None:
            ref = str(record.request.get("source", {}).get("ref") or "")
            wanted = self.ref
            if ref != wanted and ref not in (f"refs/heads/{wanted}", f"refs/tags/{wanted}"):
                return False
        return True


@dataclass(frozen=True)
class Page:
    records: list[LedgerRecord]
    after: LedgerRecord | None  # the next page starts after this record (None: nothing older)
    scanned: int  # records read for this page
    scan_limited: bool  # the page stopped at SCAN_LIMIT, not at --limit


def select(
    ledger: Ledger,
    where: RunFilter,
    *,
    limit: int,
    before: Cursor | None,
    scan_limit: int | None = None,
    by_summaries: bool | None = None,
) -> Page:
    """One page of matching records, newest first, filtered while paging.

    The ledger lists newest first and reads records lazily, so the page stops at ``limit``
    matches, at the first record older than ``since`` (nothing older can match), or after
    ``scan_limit`` records read; the cursor continues right after the last record read, so
    ``--before`` pages through a filtered listing as through a plain one.

    ``by_summaries`` (default: on a Blob ledger, whose listing carries every summary anyway)
    decides the target and status filters from the summaries, so only records that pass them
    are downloaded."""
    records: list[LedgerRecord] = []
    if not where.active:
        records = list(ledger.list(limit=limit, before=before))
        full = len(records) == limit
        return Page(records, records[-1] if full else None, len(records), False)
    scan_limit = SCAN_LIMIT if scan_limit is None else scan_limit
    if by_summaries is None:
        from shared.platform.ledger import BlobLedger

        by_summaries = isinstance(ledger, BlobLedger)
    listing = _by_summaries(ledger, where, before) if by_summaries and where.on_summaries else None
    if listing is None:
        listing = ledger.list(before=before)
    scanned = 0
    for record in listing:
        if where.since is not None and record.created_at < where.since:
            break  # newest first: nothing older can match
        scanned += 1
        if where.matches(record):
            records.append(record)
            if len(records) >= limit:
                return Page(records, record, scanned, False)
        if scanned >= scan_limit:
            return Page(records, record, scanned, True)
    return Page(records, None, scanned, False)


def _by_summaries(ledger: Ledger, where: RunFilter, before: Cursor | None) -> Iterator[LedgerRecord]:
    """Records newest first, read only when their summary passes the target and status filters."""
    from shared.platform.ledger.paging import older

    since = where.since or datetime(1970, 1, 1, tzinfo=UTC)
    keep = [
        s
        for s in ledger.list_summaries(since=since)
        if older((s.created_at, s.request_id), before) and s.created_at >= since and where.matches_summary(s)
    ]
    keep.sort(key=lambda s: (s.created_at, s.request_id), reverse=True)
    seen: set[str] = set()
    for summary in keep:
        if summary.request_id in seen:  # listed twice (a crash between two writes): read once
            continue
        seen.add(summary.request_id)
        found = ledger.get(summary.request_id)
        if found is not None:
            yield found[0]


def wait_for_dispatch(
    rt: Runtime,
    record: LedgerRecord,
    *,
    interval: float,
    sleep: Callable[[float], None],
    show: Callable[[str], None],
) -> LedgerRecord:
    """The record once it has a run, or once it ended without one (failed, superseded, cancelled):
    a request still being dispatched (or retried) is read again from the ledger every ``interval``."""
    from shared.platform.ledger import RunStatus

    while record.run_id is None and record.status not in (
        RunStatus.FAILED,
        RunStatus.SUPERSEDED,
        RunStatus.CANCELLED,
    ):
        show(f"{record.request_id}: {record.status}, no run yet")
        sleep(interval)
        found = rt.ledger().get(record.request_id)
        if found is not None:
            record = found[0]
    return record


def acr_backend_for(rt: Runtime, record: LedgerRecord) -> AcrBackend | None:
    """The ACR backend to read the record's run with; None for a dry run (no ACR run exists).

    A record of an ACR run read where no ACR is configured is a one-line error naming the settings."""
    from shared.acr.run_backend import AcrBackend

    if record.backend != "acr" or not record.run_id:
        return None
    backend = rt.backend()
    if not isinstance(backend, AcrBackend):
        raise CliError(
            f"{record.request_id} ran on ACR (run {record.run_id}), but no registry is configured here: "
            "set ACR_SUBSCRIPTION_ID, ACR_RESOURCE_GROUP and ACR_NAME"
        )
    return backend


def portal_link(settings: Mapping[str, str], record: LedgerRecord) -> str | None:
    """The run in the Azure portal (the same link commit statuses carry; never the SAS log link)."""
    from shared.runs.commit_status.model import portal_run_url

    names = [settings.get(k) for k in ("ACR_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME")]
    if record.backend != "acr" or not record.run_id or not all(names):
        return None
    subscription, group, registry = (str(n) for n in names)
    return portal_run_url(
        subscription, group, registry, record.run_id, tenant=settings.get("SLIPWAY_PORTAL_TENANT", "")
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def status_values(statuses: Sequence[str] | None) -> tuple[str, ...]:
    """``--status a,b --status c`` -> (a, b, c); ValueError naming the known statuses for another."""
    values = tuple(s.strip() for group in statuses or () for s in group.split(",") if s.strip())
    if not values:
        return values
    known = known_statuses()
    unknown = [v for v in values if v.lower() not in {k.lower() for k in known}]
    if unknown:
        raise ValueError(f"unknown status {', '.join(unknown)} (known: {', '.join(known)})")
    return values


def known_statuses() -> list[str]:
    """The ledger's statuses, then ACR's run statuses as the management SDK's ``RunStatus`` enum
    lists them, then the dry-run backend's."""
    from azure.mgmt.containerregistry.v2025_03_01_preview.models import RunStatus as AcrRunStatus

    from shared.platform.ledger import RunStatus

    return [*(s.value for s in RunStatus), *(s.value for s in AcrRunStatus), "DryRun"]

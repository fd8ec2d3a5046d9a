"""``runs list`` filters while paging: whatever the history, filter, page size and scan bound,
following the ``--before`` cursors yields exactly the filtered history, newest first."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.app.commands._runs_records import RunFilter, select
from shared.platform.ledger import FolderLedger, LedgerRecord, RunStatus, parse_cursor
from shared.platform.ledger.paging import format_cursor

START = datetime(2026, 12, 1, tzinfo=UTC)
TARGETS = ("web", "api")
REFS = ("refs/heads/main", "refs/tags/v1")

_record = st.tuples(
    st.integers(min_value=0, max_value=72 * 60),  # minutes after START: some share an hour
    st.sampled_from(TARGETS),
    st.sampled_from(REFS),
    st.sampled_from([RunStatus.DISPATCHED, RunStatus.FAILED, RunStatus.SUPERSEDED]),
    st.sampled_from(["Succeeded", "Failed", "Running"]),
)


def _build(index: int, spec: tuple[int, str, str, RunStatus, str]) -> LedgerRecord:
    minutes, target, ref, status, run_status = spec
    created = START + timedelta(minutes=minutes)
    return LedgerRecord(
        request_id=f"req-{index:03d}",
        target=target,
        status=status,
        created_at=created,
        updated_at=created,
        correlation_id="c",
        payload_hash="h",
        request={"source": {"ref": ref}, "trigger": {"kind": "push"}},
        run_status=run_status if status is RunStatus.DISPATCHED else None,
        following=False,
    )


@settings(max_examples=40, deadline=None)
@given(
    specs=st.lists(_record, max_size=25),
    target=st.sampled_from([None, *TARGETS]),
    statuses=st.sampled_from([(), ("failed",), ("running", "superseded")]),
    ref=st.sampled_from([None, "main", "refs/tags/v1"]),
    since_minutes=st.sampled_from([None, 0, 36 * 60]),
    limit=st.integers(min_value=1, max_value=6),
    scan_limit=st.integers(min_value=1, max_value=10),
    by_summaries=st.booleans(),
)
def test_pages_of_a_filtered_listing_add_up_to_the_filtered_history(
    specs: list[tuple[int, str, str, RunStatus, str]],
    target: str | None,
    statuses: tuple[str, ...],
    ref: str | None,
    since_minutes: int | None,
    limit: int,
    scan_limit: int,
    by_summaries: bool,
) -> None:
    records = [_build(i, spec) for i, spec in enumerate(specs)]
    since = START + timedelta(minutes=since_minutes) if since_minutes is not None else None
    where = RunFilter(target=target, statuses=statuses, ref=ref, since=since)

    def wanted(r: LedgerRecord) -> bool:
        # The filter's meaning, written out independently of RunFilter.matches.
        status_names = {str(r.status), (r.run_status or "").lower()}
        return (
            (target is None or r.target == target)
            and (not statuses or bool(status_names & set(statuses)))
            and (ref is None or r.request["source"]["ref"] in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}"))
            and (since is None or r.created_at >= since)
        )

    def wanted_summary(r: LedgerRecord) -> bool:
        return (target is None or r.target == target) and (
            not statuses or bool({str(r.status), (r.run_status or "").lower()} & set(statuses))
        )

    expected = [
        r.request_id
        for r in sorted(records, key=lambda r: (r.created_at, r.request_id), reverse=True)
        if wanted(r)
    ]
    with tempfile.TemporaryDirectory() as root:
        ledger = FolderLedger(Path(root))
        for record in records:
            assert ledger.create(record)
        got: list[str] = []
        before = None
        for _page in range(len(records) + 2):
            reads = ledger.record_reads
            page = select(
                ledger, where, limit=limit, before=before, scan_limit=scan_limit, by_summaries=by_summaries
            )
            assert len(page.records) <= limit
            if where.active:
                assert ledger.record_reads - reads <= scan_limit + 1  # +1: the one older than since
            if by_summaries and where.on_summaries:  # only records whose summary passed are read
                assert ledger.record_reads - reads <= sum(1 for r in records if wanted_summary(r))
            got += [r.request_id for r in page.records]
            if page.after is None:
                break
            before = parse_cursor(format_cursor(page.after))  # through its text, as the CLI does
        else:
            raise AssertionError("the pages never ended")
    assert got == expected

"""The ledger's summary index, paging and expiry: what budgets, reconciliation and ``runs list``
read must not grow with history (issue #22, item 1).

The folder ledger is checked by counting the record files it reads (a wrapper around
``Path.read_bytes``, the only way it reads a record); both stores by what they return.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.acr.run_backend import RunHandle
from shared.dispatch.budgets import check_budget, claim_standing, may_start_run
from shared.model.config import parse_config
from shared.platform.ledger import (
    BlobLedger,
    FolderLedger,
    Ledger,
    LedgerRecord,
    RecordSummary,
    RunStatus,
    format_cursor,
    is_active,
    parse_cursor,
    retention_from_settings,
)
from shared.runs.reconcile import Reconciler
from tests.support.azurite import AzuriteServer
from tests.support.dispatch_harness import CONFIG
from tests.test_ledger import make_record

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["blob", "folder"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    if request.param == "blob":
        azurite: AzuriteServer = request.getfixturevalue("azurite")
        return BlobLedger(azurite.new_container("ledger-index"))
    return FolderLedger(tmp_path / "ledger")


@pytest.fixture
def record_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the ledger record files read (``runs/*.json``) while the test runs."""
    reads: list[str] = []
    real = Path.read_bytes

    def counting(path: Path) -> bytes:
        if path.parent.name == "runs" and path.suffix == ".json":
            reads.append(path.name)
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", counting)
    yield reads


def settled(request_id: str, created_at: datetime, **changes: Any) -> LedgerRecord:
    return make_record(
        request_id,
        status=RunStatus.DISPATCHED,
        backend="acr",
        run_id=f"run-{request_id}",
        run_status="Succeeded",
        following=False,
        created_at=created_at,
        updated_at=created_at + timedelta(minutes=5),
        **changes,
    )


def running(request_id: str, created_at: datetime) -> LedgerRecord:
    return make_record(
        request_id,
        status=RunStatus.DISPATCHED,
        backend="acr",
        run_id=f"run-{request_id}",
        run_status="Running",
        created_at=created_at,
        updated_at=created_at,
    )


def fill(ledger: Ledger, count: int, *, days: int = 10) -> list[LedgerRecord]:
    """``count`` settled records spread over the ``days`` before NOW."""
    records = [
        settled(f"app.old{i:04d}", NOW - timedelta(days=days) + timedelta(minutes=i * days * 1440 // count))
        for i in range(count)
    ]
    for record in records:
        assert ledger.create(record)
    return records


# --------------------------------------------------------------------------- what is active


summaries = st.builds(
    RecordSummary,
    request_id=st.just("app.x"),
    target=st.just("app"),
    status=st.sampled_from(RunStatus),
    created_at=st.just(NOW - timedelta(hours=1)),
    updated_at=st.sampled_from([NOW - timedelta(hours=1), NOW - timedelta(hours=10)]),
    backend=st.sampled_from(["acr", "dry-run", None]),
    run_id=st.sampled_from(["run-1", None]),
    run_status=st.sampled_from([None, "Queued", "Running", "Succeeded", "Failed"]),
    following=st.booleans(),
    start_uncertain_at=st.sampled_from([None, NOW - timedelta(hours=1)]),
)


@given(summaries)
def test_every_record_a_budget_or_the_reconciler_counts_is_active(summary: RecordSummary) -> None:
    """The index holds only active records: it must hold every one the readers could count."""
    follows = summary.following and summary.status is RunStatus.DISPATCHED  # Reconciler._follows
    if may_start_run(summary, now=NOW) or follows:
        assert is_active(summary)


def test_list_active_holds_exactly_the_active_records(ledger: Ledger) -> None:
    live = running("app.live", NOW)
    done = settled("app.done", NOW)
    claim = make_record("app.claim", created_at=NOW, updated_at=NOW)  # dispatching
    failed = make_record("app.failed", status=RunStatus.FAILED, created_at=NOW, updated_at=NOW)
    for record in (live, done, claim, failed):
        assert ledger.create(record)
    assert {s.request_id for s in ledger.list_active()} == {"app.live", "app.claim"}

    found = ledger.get("app.live")
    assert found is not None
    ledger.replace(found[0].model_copy(update={"following": False, "run_status": "Succeeded"}), found[1])
    found = ledger.get("app.failed")
    assert found is not None
    ledger.replace(found[0].model_copy(update={"status": RunStatus.DISPATCHING}), found[1])  # a replay
    assert {s.request_id for s in ledger.list_active()} == {"app.claim", "app.failed"}
    # ... and every record is still listed, with its latest summary.
    listed = {s.request_id: s for s in ledger.list_summaries(since=NOW - timedelta(days=1))}
    assert set(listed) == {"app.live", "app.done", "app.claim", "app.failed"}
    assert listed["app.live"].following is False and listed["app.failed"].status is RunStatus.DISPATCHING


# --------------------------------------------------------------------------- cost: the folder ledger


BUDGET_CONFIG = parse_config(
    CONFIG.format(dispatch="  quiet_period: 0s\n  max_concurrent_runs: 2", target_extra=""), source="test"
)


def test_a_budget_check_reads_no_record(tmp_path: Path, record_reads: list[str]) -> None:
    ledger = FolderLedger(tmp_path / "ledger")
    fill(ledger, 300)
    ledger.create(running("app.live", NOW - timedelta(minutes=3)))
    claim = make_record("app.claim", created_at=NOW, updated_at=NOW)
    ledger.create(claim)
    record_reads.clear()
    target = BUDGET_CONFIG.targets[0]

    assert check_budget(ledger, BUDGET_CONFIG, target, now=NOW).over is True  # 2 of 2
    standing = claim_standing(ledger, BUDGET_CONFIG, target, RecordSummary.of(claim), now=NOW)
    assert standing.over is False and "2 runs" in standing.detail
    assert record_reads == []
    assert ledger.entry_reads == 4  # the two active entries, twice: no settled entry either


class FinishedReader:
    name = "acr"

    def get(self, run_id: str) -> RunHandle:
        return RunHandle(run_id, "Succeeded", "acr")


def test_a_reconcile_pass_reads_only_the_followed_record(tmp_path: Path, record_reads: list[str]) -> None:
    ledger = FolderLedger(tmp_path / "ledger")
    fill(ledger, 300)
    ledger.create(running("app.live", NOW - timedelta(minutes=3)))
    record_reads.clear()

    report = Reconciler(ledger=ledger, backend=FinishedReader(), clock=lambda: NOW).run()
    assert report.finished == ["app.live"]
    assert record_reads == ["app.live.json"] * 2  # its read, and the ETag check of its replace
    assert list(ledger.list_active()) == []


def test_a_page_reads_only_its_records(tmp_path: Path, record_reads: list[str]) -> None:
    ledger = FolderLedger(tmp_path / "ledger")
    records = fill(ledger, 300)
    record_reads.clear()
    page = list(ledger.list(limit=5))
    newest = sorted(records, key=lambda r: r.created_at, reverse=True)[:5]
    assert [r.request_id for r in page] == [r.request_id for r in newest]
    assert len(record_reads) == 5
    # Ordered by the index entries' names alone: no entry is opened either.
    assert ledger.entry_reads == 0


def test_a_folder_written_before_the_index_is_indexed_on_first_read(tmp_path: Path) -> None:
    ledger = FolderLedger(tmp_path / "ledger")
    fill(ledger, 5)
    ledger.create(running("app.live", NOW))
    shutil.rmtree(tmp_path / "ledger" / "index")  # as an older version left it

    reopened = FolderLedger(tmp_path / "ledger")
    assert [s.request_id for s in reopened.list_active()] == ["app.live"]
    assert len(list(reopened.list_summaries(since=NOW - timedelta(days=30)))) == 6


def test_after_a_crash_between_entries_the_newer_summary_holds(tmp_path: Path) -> None:
    ledger = FolderLedger(tmp_path / "ledger")
    ledger.create(running("app.live", NOW))
    [entry] = (tmp_path / "ledger" / "index" / "active").glob("*~app.live.json")
    stale = entry.read_text()
    found = ledger.get("app.live")
    assert found is not None
    ledger.replace(
        found[0].model_copy(update={"following": False, "updated_at": NOW + timedelta(minutes=1)}), found[1]
    )
    # The old active entry comes back, as if the process died before removing it.
    entry.write_text(stale)
    [summary] = ledger.list_summaries(since=NOW - timedelta(days=1))
    assert summary.following is False
    assert [r.request_id for r in ledger.list()] == ["app.live"]  # listed once


# --------------------------------------------------------------------------- paging


def test_pages_follow_each_other_without_gaps_or_repeats(ledger: Ledger) -> None:
    # Two records share a creation time: the request id breaks the tie.
    times = [NOW - timedelta(days=d, hours=h) for d in range(3) for h in (0, 5)] + [NOW]
    for i, created in enumerate(times):
        ledger.create(settled(f"app.p{i}", created))
    ledger.create(running("app.live", NOW - timedelta(days=1, hours=1)))
    expected = [r.request_id for r in ledger.list()]
    assert len(expected) == len(times) + 1

    pages: list[list[str]] = []
    before = None
    while True:
        page = list(ledger.list(limit=3, before=before))
        if not page:
            break
        pages.append([r.request_id for r in page])
        before = parse_cursor(format_cursor(page[-1]))
    assert [i for page in pages for i in page] == expected
    assert all(len(page) == 3 for page in pages[:-1])


def test_a_malformed_cursor_is_refused() -> None:
    with pytest.raises(ValueError, match="expected <created_at ISO time>/<request id>"):
        parse_cursor("yesterday")
    with pytest.raises(ValueError, match="invalid cursor"):
        parse_cursor("2026-12-03T12:00:00+00:00/../etc")


# --------------------------------------------------------------------------- expiry


def test_expiry_removes_only_old_records_and_exports_them(ledger: Ledger, tmp_path: Path) -> None:
    old = settled("app.old", NOW - timedelta(days=40))
    old_running = running("app.old-running", NOW - timedelta(days=40))
    touched = settled("app.touched", NOW - timedelta(days=40)).model_copy(update={"updated_at": NOW})
    recent = settled("app.recent", NOW - timedelta(days=2))
    for record in (old, old_running, touched, recent):
        assert ledger.create(record)
    export = tmp_path / "export"

    # A run left followed for 40 days is read by no one (budgets look back 14): it goes too.
    expired = ledger.expire(before=NOW - timedelta(days=30), export=export)
    assert sorted(expired) == ["app.old", "app.old-running"]
    assert ledger.get("app.old") is None and ledger.get("app.old-running") is None
    assert LedgerRecord.from_json((export / "app.old.json").read_bytes()) == old
    remaining = {s.request_id for s in ledger.list_summaries(since=NOW - timedelta(days=60))}
    assert remaining == {"app.touched", "app.recent"}
    assert list(ledger.list_active()) == []
    assert ledger.expire(before=NOW - timedelta(days=30)) == []


def test_the_reconcile_timer_expires_with_the_configured_retention(tmp_path: Path) -> None:
    ledger = FolderLedger(tmp_path / "ledger")
    for i in range(10):
        ledger.create(settled(f"app.old{i}", NOW - timedelta(days=40 + i)))
    ledger.create(settled("app.recent", NOW - timedelta(days=1)))
    retention = retention_from_settings({"SLIPWAY_LEDGER_RETENTION": "30d"})
    assert retention == timedelta(days=30)

    report = Reconciler(ledger=ledger, backend=FinishedReader(), clock=lambda: NOW, retention=retention).run()
    assert report.expired == 10 and report.as_log()["expired"] == 10
    assert [r.request_id for r in ledger.list()] == ["app.recent"]
    # Nothing is left of the expired days in the index either.
    assert [p.name for p in (tmp_path / "ledger" / "index" / "settled").iterdir()] == [
        (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H")
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [("3d", "shorter than 15 days"), ("soon", "SLIPWAY_LEDGER_RETENTION: duration 'soon'")],
)
def test_a_bad_retention_is_refused_clearly(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retention_from_settings({"SLIPWAY_LEDGER_RETENTION": value})


def test_without_a_retention_nothing_expires() -> None:
    assert retention_from_settings({}) is None
    assert retention_from_settings({"SLIPWAY_LEDGER_RETENTION": "  "}) is None


# --------------------------------------------------------------------------- slipway runs list


def test_runs_list_pages_with_the_cursor_it_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.app.cli import main
    from shared.app.runtime import Runtime, set_runtime

    for key in (
        "ServiceBusConnection",
        "ServiceBusConnection__fullyQualifiedNamespace",
        "AzureWebJobsStorage",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(tmp_path / "state"))
    ledger = FolderLedger(tmp_path / "state" / "ledger")
    for i in range(5):
        ledger.create(settled(f"app.r{i}", NOW - timedelta(hours=i)))
    set_runtime(Runtime())
    try:
        seen: list[str] = []
        argv = ["runs", "list", "--limit", "2", "--json"]
        while True:
            assert main(argv) == 0
            page = json.loads(capsys.readouterr().out)
            seen += [row["request_id"] for row in page["runs"]]
            if page["next"] is None:
                break
            argv = ["runs", "list", "--limit", "2", "--json", "--before", page["next"]]
        assert seen == [f"app.r{i}" for i in range(5)]

        assert main(["runs", "list", "--limit", "2"]) == 0
        more = "more: slipway runs list --limit 2 --before 2026-12-03T11:00:00+00:00/app.r1"
        assert more in capsys.readouterr().out
        assert main(["runs", "list", "--before", "last-tuesday"]) == 2
        assert "expected <created_at ISO time>/<request id>" in capsys.readouterr().err
    finally:
        set_runtime(None)


def test_a_record_written_during_expiry_is_kept(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Expiry decides from a listing; a record rewritten since (a replay reopening it) must stay."""
    ledger.create(settled("app.old", NOW - timedelta(days=40)))

    def reopen() -> None:
        found = ledger.get("app.old")
        assert found is not None
        ledger.replace(found[0].model_copy(update={"status": RunStatus.RETRYING}), found[1])

    if isinstance(ledger, BlobLedger):
        # It decides from each record's properties (the hour entries only name the records).
        real_head = ledger._head

        def head_then_reopen(request_id: str) -> Any:
            found = real_head(request_id)
            if found is not None and found[0].status is not RunStatus.RETRYING:
                reopen()
            return found

        monkeypatch.setattr(ledger, "_head", head_then_reopen)
    else:
        assert isinstance(ledger, FolderLedger)
        real_read = ledger._read_entries

        def read_then_reopen(folder: Path) -> list[RecordSummary]:
            read = real_read(folder)
            if read:
                reopen()
            return read

        monkeypatch.setattr(ledger, "_read_entries", read_then_reopen)

    assert ledger.expire(before=NOW - timedelta(days=30)) == []
    found = ledger.get("app.old")
    assert found is not None and found[0].status is RunStatus.RETRYING


@settings(max_examples=25, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=72), min_size=0, max_size=25),
    limit=st.integers(min_value=1, max_value=7),
)
def test_paging_the_folder_ledger_lists_everything_once_in_order(offsets: list[int], limit: int) -> None:
    """Creation times fall on few hours, with ties: pages still concatenate to the full listing."""
    with tempfile.TemporaryDirectory() as root:
        ledger = FolderLedger(Path(root))
        for i, hours in enumerate(offsets):
            record = settled(f"app.p{i}", NOW - timedelta(hours=hours))
            ledger.create(record if i % 3 else running(f"app.p{i}", record.created_at))
        expected = sorted(
            ((NOW - timedelta(hours=h), f"app.p{i}") for i, h in enumerate(offsets)), reverse=True
        )
        listed: list[tuple[datetime, str]] = []
        before = None
        while page := list(ledger.list(limit=limit, before=before)):
            assert len(page) <= limit
            listed += [(r.created_at, r.request_id) for r in page]
            before = (page[-1].created_at, page[-1].request_id)
        assert listed == expected

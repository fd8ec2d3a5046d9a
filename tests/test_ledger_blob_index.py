"""The Blob ledger's index (``active/`` markers, hour entries) against Azurite (issue #22, item 1).

The rule the budgets rest on: an active record never lacks its marker, whatever the interleaving
of writers, crashes between two uploads, and readers removing stale markers. What budgets and
pages cost is counted in requests, from the client's own request hook.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from shared.dispatch.budgets import check_budget, claim_standing
from shared.platform.ledger import (
    BlobLedger,
    ConflictError,
    LedgerRecord,
    RecordSummary,
    RunStatus,
    is_active,
)
from tests.support.azurite import AzuriteServer
from tests.test_ledger import make_record
from tests.test_ledger_index import BUDGET_CONFIG, NOW, running, settled

ACTIVE = "active/"


class Requests:
    """A raw request hook: what the client sent, as ``METHOD path?query``."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, request: Any) -> None:
        http = request.http_request
        self.sent.append(f"{http.method} {http.url.split('/', 3)[-1]}")

    def listings(self) -> list[str]:
        return [line for line in self.sent if "comp=list" in line]


def blob_ledger(azurite: AzuriteServer, hook: Callable[[Any], None] | None = None) -> BlobLedger:
    name = azurite.new_container("blob-index").container_name
    options: dict[str, Any] = {} if hook is None else {"raw_request_hook": hook}
    ledger = BlobLedger(ContainerClient.from_connection_string(azurite.connection_string, name, **options))
    list(ledger.list_active())  # a new container: its first readers find nothing to index
    list(ledger.list())
    return ledger


def same_container(ledger: BlobLedger, azurite: AzuriteServer) -> BlobLedger:
    """Another instance on the same container: its own clients, as another Function instance."""
    name = ledger.container_client.container_name
    return BlobLedger(ContainerClient.from_connection_string(azurite.connection_string, name))


def markers(ledger: BlobLedger) -> set[str]:
    return {b.name.removeprefix(ACTIVE) for b in ledger.container_client.list_blobs(name_starts_with=ACTIVE)}


def active_ids(ledger: BlobLedger) -> set[str]:
    return {s.request_id for s in ledger.list_active()}


def assert_every_active_record_has_its_marker(ledger: BlobLedger) -> None:
    found = markers(ledger)
    for blob in ledger.container_client.list_blobs(name_starts_with="runs/"):
        record = LedgerRecord.from_json(ledger.container_client.download_blob(blob.name).readall())
        if is_active(RecordSummary.of(record)):
            assert record.request_id in found, record.request_id


def reopen(ledger: BlobLedger, request_id: str, status: RunStatus = RunStatus.DISPATCHING) -> str:
    found = ledger.get(request_id)
    assert found is not None
    return ledger.replace(found[0].model_copy(update={"status": status}), found[1])


def finish(ledger: BlobLedger, request_id: str) -> str:
    found = ledger.get(request_id)
    assert found is not None
    update = {"status": RunStatus.DISPATCHED, "run_id": "r", "run_status": "Succeeded", "following": False}
    return ledger.replace(found[0].model_copy(update=update), found[1])


# --------------------------------------------------------------------------- the markers follow the writes


def test_markers_follow_every_write(azurite: AzuriteServer) -> None:
    ledger = blob_ledger(azurite)
    ledger.create(running("app.live", NOW))
    ledger.create(settled("app.done", NOW))
    ledger.create(make_record("app.claim", created_at=NOW, updated_at=NOW))
    assert markers(ledger) == {"app.live", "app.claim"}

    finish(ledger, "app.live")
    reopen(ledger, "app.done")  # a replay makes a settled record claimable again
    assert markers(ledger) == {"app.claim", "app.done"}
    assert active_ids(ledger) == {"app.claim", "app.done"}


def test_a_redelivered_create_leaves_no_second_entry(azurite: AzuriteServer) -> None:
    ledger = blob_ledger(azurite)
    first = settled("app.once", NOW - timedelta(hours=3))
    assert ledger.create(first)
    # The same request delivered again an hour later: the create finds the record.
    assert not ledger.create(settled("app.once", NOW))
    entries = list(ledger.container_client.list_blobs(name_starts_with="index/created/"))
    assert len(entries) == 1
    assert [r.request_id for r in ledger.list()] == ["app.once"]


# --------------------------------------------------------------------------- crashes between two uploads


class Crash(Exception):
    pass


def test_a_crash_after_the_marker_before_the_create(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marker first: the claim that never got written leaves a marker and no record. It counts
    for nothing, and the request's next delivery creates the record under it."""
    ledger = blob_ledger(azurite)
    claim = make_record("app.claim", created_at=NOW, updated_at=NOW)
    documents = ledger._documents
    real_create = documents.create

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    monkeypatch.setattr(documents, "create", crash)
    with pytest.raises(Crash):
        ledger.create(claim)
    assert markers(ledger) == {"app.claim"} and ledger.get("app.claim") is None
    assert active_ids(ledger) == set()
    assert [r.request_id for r in ledger.list()] == []  # the entry without its record is skipped

    monkeypatch.setattr(documents, "create", real_create)
    assert ledger.create(claim)  # the redelivery
    assert active_ids(ledger) == {"app.claim"}
    assert [r.request_id for r in ledger.list()] == ["app.claim"]


def test_a_crash_after_the_marker_before_a_reopening_replace(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker of a settled record whose reopening never got written: skipped, then removed."""
    ledger = blob_ledger(azurite)
    ledger.create(settled("app.done", NOW))
    documents = ledger._documents
    real_replace = documents.replace

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    monkeypatch.setattr(documents, "replace", crash)
    with pytest.raises(Crash):
        reopen(ledger, "app.done")
    monkeypatch.setattr(documents, "replace", real_replace)
    assert markers(ledger) == {"app.done"}

    assert active_ids(ledger) == set()
    assert markers(ledger) == set()  # removed by the listing that found it stale
    found = ledger.get("app.done")
    assert found is not None and found[0] == settled("app.done", NOW)  # the record is unchanged


def test_a_crash_after_settling_before_the_marker_is_removed(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = blob_ledger(azurite)
    ledger.create(running("app.live", NOW))
    index = ledger._index

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise Crash

    monkeypatch.setattr(index, "drop_marker", crash)
    with pytest.raises(Crash):
        finish(ledger, "app.live")
    monkeypatch.undo()
    assert markers(ledger) == {"app.live"}
    assert active_ids(ledger) == set()
    assert markers(ledger) == set()
    reopen(ledger, "app.live")  # and it can be reactivated as ever
    assert active_ids(ledger) == {"app.live"}


# --------------------------------------------------------------------------- races on one marker


def test_settling_while_another_writer_reopens_keeps_the_marker(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settler's marker delete comes after a replay reopened the record: it must fail."""
    ledger = blob_ledger(azurite)
    other = same_container(ledger, azurite)
    ledger.create(running("app.live", NOW))
    index = ledger._index
    real_drop = index.drop_marker

    def reopen_first(request_id: str, etag: str) -> bool:
        reopen(other, request_id)  # reads the settled record, uploads the marker, reopens it
        return real_drop(request_id, etag)

    monkeypatch.setattr(index, "drop_marker", reopen_first)
    finish(ledger, "app.live")
    assert markers(ledger) == {"app.live"}
    assert active_ids(other) == {"app.live"}


def test_a_stale_marker_removed_under_a_reopening_writer(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer uploads the marker of a settled record; before it writes the record, a reader
    finds the marker stale and removes it. The writer must then fail, not leave an active record
    without its marker."""
    ledger = blob_ledger(azurite)
    reader = same_container(ledger, azurite)
    ledger.create(settled("app.done", NOW))
    documents = ledger._documents
    real_replace = documents.replace

    def read_in_between(*args: Any, **kwargs: Any) -> Any:
        assert active_ids(reader) == set()  # the record is still settled: the marker goes
        return real_replace(*args, **kwargs)

    monkeypatch.setattr(documents, "replace", read_in_between)
    with pytest.raises(ConflictError):
        reopen(ledger, "app.done")
    monkeypatch.undo()
    assert_every_active_record_has_its_marker(ledger)
    reopen(ledger, "app.done")  # read again, it reopens
    assert active_ids(reader) == {"app.done"}


def test_concurrent_writers_and_readers_never_leave_an_active_record_unmarked(azurite: AzuriteServer) -> None:
    """Writers claim, settle and reopen a few records at random (losing ETag races as they
    come) while a reader removes stale markers; afterwards every active record has its marker,
    and ``list_active`` lists exactly the active records."""
    ledger = blob_ledger(azurite)
    ids = [f"app.c{i}" for i in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine = same_container(ledger, azurite)
        try:
            for _ in range(25):
                request_id = rng.choice(ids)
                found = mine.get(request_id)
                if found is None:
                    mine.create(make_record(request_id, created_at=NOW, updated_at=NOW))
                    continue
                status = rng.choice([RunStatus.DISPATCHING, RunStatus.RETRYING, RunStatus.FAILED])
                update: dict[str, Any] = {"status": status, "start_uncertain_at": None}
                if rng.random() < 0.3:
                    update = {"status": RunStatus.DISPATCHED, "following": rng.random() < 0.5}
                with contextlib.suppress(ConflictError):  # another writer got there first
                    mine.replace(found[0].model_copy(update=update), found[1])
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        mine = same_container(ledger, azurite)
        try:
            while not stop.is_set():
                list(mine.list_active())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    stop.set()
    watcher.join(timeout=60)
    assert not errors, errors
    assert_every_active_record_has_its_marker(ledger)
    expected = set()
    for request_id in ids:
        found = ledger.get(request_id)
        if found is not None and is_active(RecordSummary.of(found[0])):
            expected.add(request_id)
    assert active_ids(ledger) == expected
    assert markers(ledger) == expected  # the listing just made removed every stale one


# --------------------------------------------------------------------------- an older container


def written_by_an_older_version(ledger: BlobLedger) -> None:
    """Drop the index, as a container written before it existed looks."""
    container = ledger.container_client
    for blob in list(container.list_blobs()):
        if not blob.name.startswith("runs/"):
            container.delete_blob(blob.name)


def test_an_older_container_is_indexed_once_and_stays_correct(azurite: AzuriteServer) -> None:
    seed = blob_ledger(azurite)
    for i in range(6):
        seed.create(settled(f"app.old{i}", NOW - timedelta(hours=i)))
    seed.create(running("app.live", NOW - timedelta(minutes=5)))
    seed.create(running("app.ended", NOW - timedelta(minutes=9)))
    expected = [r.request_id for r in seed.list()]
    written_by_an_older_version(seed)

    requests = Requests()
    name = seed.container_client.container_name
    upgraded = BlobLedger(
        ContainerClient.from_connection_string(azurite.connection_string, name, raw_request_hook=requests)
    )
    assert active_ids(upgraded) == {"app.live", "app.ended"}
    assert markers(upgraded) == {"app.live", "app.ended"}
    assert any("prefix=runs" in line for line in requests.listings())  # the full listing, once

    finish(upgraded, "app.ended")
    requests.sent.clear()
    assert active_ids(upgraded) == {"app.live"}
    assert not any("prefix=runs" in line for line in requests.listings())  # now from the markers

    # Paging backfills the hour entries once, then pages from them.
    pages: list[str] = []
    before = None
    while page := list(upgraded.list(limit=3, before=before)):
        pages += [r.request_id for r in page]
        before = (page[-1].created_at, page[-1].request_id)
    assert pages == expected
    entries = list(upgraded.container_client.list_blobs(name_starts_with="index/created/"))
    assert len(entries) == len(expected)

    # Another instance of the new version sees the index as built.
    again = same_container(upgraded, azurite)
    assert active_ids(again) == {"app.live"}
    assert [r.request_id for r in again.list(limit=2)] == expected[:2]


def test_expiry_on_an_older_container(azurite: AzuriteServer) -> None:
    ledger = blob_ledger(azurite)
    ledger.create(settled("app.ancient", NOW - timedelta(days=40)))
    ledger.create(running("app.stuck", NOW - timedelta(days=40)))
    ledger.create(settled("app.recent", NOW - timedelta(days=1)))
    written_by_an_older_version(ledger)
    upgraded = same_container(ledger, azurite)
    assert sorted(upgraded.expire(before=NOW - timedelta(days=30))) == ["app.ancient", "app.stuck"]
    assert [r.request_id for r in upgraded.list()] == ["app.recent"]
    assert active_ids(upgraded) == set() and markers(upgraded) == set()


# --------------------------------------------------------------------------- cost in requests


def budget_check_requests(azurite: AzuriteServer, settled_records: int) -> list[str]:
    requests = Requests()
    ledger = blob_ledger(azurite, requests)
    for i in range(settled_records):
        ledger.create(settled(f"app.old{i:04d}", NOW - timedelta(days=10) + timedelta(minutes=i)))
    ledger.create(running("app.live", NOW - timedelta(minutes=3)))
    claim = make_record("app.claim", created_at=NOW, updated_at=NOW)
    ledger.create(claim)
    list(ledger.list_active())  # the first call of an instance also checks the index is built
    requests.sent.clear()
    target = BUDGET_CONFIG.targets[0]
    assert check_budget(ledger, BUDGET_CONFIG, target, now=NOW).over is True  # 2 of 2
    standing = claim_standing(ledger, BUDGET_CONFIG, target, RecordSummary.of(claim), now=NOW)
    assert standing.over is False and "2 runs" in standing.detail
    return requests.sent


def test_a_budget_check_costs_the_same_whatever_the_history(azurite: AzuriteServer) -> None:
    few, many = budget_check_requests(azurite, 3), budget_check_requests(azurite, 120)
    assert len(few) == len(many)
    # Each look: one listing of the markers and one properties read per active record (two);
    # no record is downloaded, nothing else is listed.
    listings = [line for line in many if "comp=list" in line]
    assert len(listings) == 2 and all("prefix=active" in line for line in listings)
    reads = sorted(line.split("?")[0].rsplit("/", 2)[-2:] for line in many if line not in listings)
    assert reads == [["runs", f"app.{name}.json"] for name in ("claim", "claim", "live", "live")]
    assert all(line.startswith("HEAD ") for line in many if line not in listings)
    assert len(many) == 6


def test_a_page_costs_the_same_whatever_the_history(azurite: AzuriteServer) -> None:
    def page_requests(count: int) -> int:
        requests = Requests()
        ledger = blob_ledger(azurite, requests)
        for i in range(count):  # one an hour: a page of 5 reads the newest hours only
            ledger.create(settled(f"app.p{i:04d}", NOW - timedelta(hours=i)))
        list(ledger.list(limit=1))
        requests.sent.clear()
        page = list(ledger.list(limit=5))
        assert [r.request_id for r in page] == [f"app.p{i:04d}" for i in range(5)]
        return len(requests.sent)

    assert page_requests(8) == page_requests(60)

"""The Blob ledger's hour blobs (``index/hours/<inverted key>~<hour>``) against Azurite (issue #22,
item 1).

Pages and expiry learn the creation hours from a listing of ``index/hours/`` without a delimiter
(a roll-up of the entries by ``delimiter=/`` grows with history on Azurite), newest hour first.
What must hold: an entry never lacks its hour blob (through creates, expiry and both migrations),
pages stay in order across hours, a page asks for no listing page of the hours past the one that
fills it, and the requests of a page or an expiry pass do not grow with records.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.blob import ContainerClient
from hypothesis import given
from hypothesis import strategies as st

from shared.platform.ledger import BlobLedger, LedgerRecord, blob_index
from shared.platform.ledger.blob_index import hour_blob_name
from shared.platform.ledger.paging import hour
from tests.support.azurite import AzuriteServer
from tests.test_ledger_blob_index import Requests, blob_ledger, same_container, written_by_an_older_version
from tests.test_ledger_index import NOW, running, settled

# The layout the index writes, spelled out here rather than imported from the code under test.
HOURS = "index/hours/"
ENTRIES = "index/created/"
HOURS_MARK = "index/hours.v2"
V1_MARK = "index/hours.v1"  # the first layout: index/hours/<YYYY-MM-DDTHH>, oldest first
# index/hours/<10 digits>~<YYYY-MM-DDTHH>: the readable hour after "~".
HOUR_BLOB = re.compile(r"index/hours/(\d{10})~(\d{4}-\d\d-\d\dT\d\d)")


def hour_blobs(ledger: BlobLedger) -> set[str]:
    """The hours of the hour blobs; fails on a name of another shape (a v1 hour blob)."""
    names = [b.name for b in ledger.container_client.list_blobs(name_starts_with=HOURS)]
    matches = [HOUR_BLOB.fullmatch(name) for name in names]
    assert all(matches), names
    return {match.group(2) for match in matches if match}


def listed_hours(ledger: BlobLedger) -> list[str]:
    """The hours in listing order (the service's name order)."""
    names = ledger.container_client.list_blobs(name_starts_with=HOURS)
    return [b.name.partition("~")[2] for b in names]


def entry_hours(ledger: BlobLedger) -> set[str]:
    names = ledger.container_client.list_blobs(name_starts_with=ENTRIES)
    return {b.name.removeprefix(ENTRIES).split("/", 1)[0] for b in names}


def hook_ledger(azurite: AzuriteServer, ledger: BlobLedger, requests: Requests) -> BlobLedger:
    """A new instance on ``ledger``'s container whose requests are recorded."""
    name = ledger.container_client.container_name
    return BlobLedger(
        ContainerClient.from_connection_string(azurite.connection_string, name, raw_request_hook=requests)
    )


def page_through(ledger: BlobLedger, limit: int) -> list[str]:
    shown: list[str] = []
    before = None
    while page := list(ledger.list(limit=limit, before=before)):
        shown += [r.request_id for r in page]
        before = (page[-1].created_at, page[-1].request_id)
    return shown


def newest_first(records: list[LedgerRecord]) -> list[str]:
    return [r.request_id for r in sorted(records, key=lambda r: (r.created_at, r.request_id), reverse=True)]


def no_delimiter(requests: Requests) -> bool:
    return not any("delimiter=" in line for line in requests.listings())


# --------------------------------------------------------------------------- writes and pages


def test_every_entry_has_its_hour_blob_and_pages_follow_the_hours(azurite: AzuriteServer) -> None:
    ledger = blob_ledger(azurite)
    # Hours out of order, several records in some, two at the same instant (the id decides).
    offsets = [0, 5, 61, 62, 63, 180, 181, 300, 300, 1500, 1501, 3000]
    records = [settled(f"app.r{i:02d}", NOW - timedelta(minutes=m)) for i, m in enumerate(offsets)]
    for record in reversed(records):
        assert ledger.create(record)
    assert hour_blobs(ledger) == entry_hours(ledger) == {hour(r.created_at) for r in records}
    assert listed_hours(ledger) == sorted(hour_blobs(ledger), reverse=True)  # newest first
    assert page_through(ledger, 1) == page_through(ledger, 5) == newest_first(records)

    # --before lands in the middle of an hour and skips the newer hours.
    cursor = (records[3].created_at, records[3].request_id)
    assert [r.request_id for r in ledger.list(limit=3, before=cursor)] == newest_first(records)[4:7]

    requests = Requests()
    reader = hook_ledger(azurite, ledger, requests)
    assert page_through(reader, 4) == newest_first(records)
    assert no_delimiter(requests)
    assert any("prefix=index%2Fhours%2F" in line for line in requests.listings())


def test_an_instance_uploads_each_hour_blob_once(azurite: AzuriteServer) -> None:
    requests = Requests()
    ledger = blob_ledger(azurite, requests)
    requests.sent.clear()
    for i in range(4):
        ledger.create(settled(f"app.same{i}", NOW - timedelta(minutes=10 + i)))
    puts = [line for line in requests.sent if line.startswith("PUT ") and "index/hours/" in line]
    assert len(puts) == 1
    # A stale hour blob (a redelivery an hour later, whose entry is removed) is skipped by pages.
    assert not ledger.create(settled("app.same0", NOW + timedelta(hours=1)))
    assert hour(NOW + timedelta(hours=1)) in hour_blobs(ledger)
    assert [r.request_id for r in ledger.list()] == ["app.same0", "app.same1", "app.same2", "app.same3"]


def test_a_page_stops_listing_the_hours_once_it_has_its_records(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hours per listing request instead of 5,000 (``maxresults``), one record per hour over 9
    hours: a page that reads every hour before its first record would ask for 5 pages."""
    ledger = blob_ledger(azurite)
    records = [settled(f"app.h{i}", NOW - timedelta(hours=i, minutes=1)) for i in range(9)]
    for record in records:
        ledger.create(record)
    monkeypatch.setattr(blob_index, "HOURS_PER_REQUEST", 2)

    def hour_listings(limit: int, before: tuple[datetime, str] | None = None) -> tuple[list[str], int]:
        requests = Requests()
        shown = [
            r.request_id for r in hook_ledger(azurite, ledger, requests).list(limit=limit, before=before)
        ]
        listings = [line for line in requests.listings() if "prefix=index%2Fhours%2F" in line]
        assert all("maxresults=2" in line for line in listings)  # the lower size reached the service
        return shown, len(listings)

    assert hour_listings(1) == (newest_first(records)[:1], 1)
    assert hour_listings(2) == (newest_first(records)[:2], 1)
    assert hour_listings(3) == (newest_first(records)[:3], 2)
    assert hour_listings(5) == (newest_first(records)[:5], 3)
    assert hour_listings(20) == (newest_first(records), 5)
    cursor = (records[4].created_at, records[4].request_id)  # the hours before it are skipped
    assert hour_listings(1, cursor) == (newest_first(records)[5:6], 3)


@given(
    st.lists(
        st.datetimes(
            min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31, 23, 59), timezones=st.just(UTC)
        ),
        min_size=2,
        max_size=20,
    )
)
def test_hour_blob_names_sort_newest_hour_first(moments: list[datetime]) -> None:
    names = {hour_blob_name(hour(moment)): moment for moment in moments}
    for name, moment in names.items():
        match = HOUR_BLOB.fullmatch(name)
        assert match is not None and match.group(2) == hour(moment)
    # Name order (the listing's) is the reverse of time order, one name per hour.
    ordered = [names[name] for name in sorted(names)]
    assert ordered == sorted(ordered, reverse=True)
    assert len(names) == len({moment.replace(minute=0, second=0, microsecond=0) for moment in moments})


# --------------------------------------------------------------------------- expiry


def test_expiry_removes_emptied_hour_blobs_and_keeps_the_others(azurite: AzuriteServer) -> None:
    ledger = blob_ledger(azurite)
    cut = NOW - timedelta(days=30, minutes=30)  # mid-hour
    gone = [settled(f"app.gone{i}", cut - timedelta(days=2, minutes=i)) for i in range(3)]
    # An old hour where one record was written recently (a replay): it stays, so does its hour.
    touched = settled("app.touched", cut - timedelta(days=1, minutes=1))
    mixed = [
        settled("app.old", cut - timedelta(days=1)),
        touched.model_copy(update={"updated_at": NOW - timedelta(days=1)}),
    ]
    # The cut's own hour: a record before the cut expires, but the hour is not strictly older.
    at_cut = [
        settled("app.cut0", cut - timedelta(minutes=10)),
        settled("app.cut1", cut + timedelta(seconds=1)),
    ]
    recent = [settled("app.recent", NOW - timedelta(days=1)), running("app.live", NOW - timedelta(minutes=3))]
    for record in gone + mixed + at_cut + recent:
        assert ledger.create(record)
    assert hour(mixed[0].created_at) == hour(mixed[1].created_at)  # the test's premises
    assert hour(at_cut[0].created_at) == hour(cut)

    expired = ledger.expire(before=cut)
    assert sorted(expired) == sorted(["app.gone0", "app.gone1", "app.gone2", "app.old", "app.cut0"])
    left = {hour(mixed[0].created_at), hour(cut), hour(recent[0].created_at), hour(recent[1].created_at)}
    assert hour_blobs(ledger) == entry_hours(ledger) == left
    assert [r.request_id for r in ledger.list()] == ["app.live", "app.recent", "app.cut1", "app.touched"]

    # The next pass, a day later: the cut's hour is strictly older now and its record expired.
    later = cut + timedelta(days=1)
    assert ledger.expire(before=later) == ["app.cut1"]
    assert hour(cut) not in hour_blobs(ledger)


def test_a_create_after_expiry_writes_its_hour_again(azurite: AzuriteServer) -> None:
    """In an hour this very instance wrote and expiry then removed, and in a new hour."""
    ledger = blob_ledger(azurite)
    old = NOW - timedelta(days=40)
    ledger.create(settled("app.old", old))
    other = same_container(ledger, azurite)
    other.create(settled("app.other", old + timedelta(minutes=1)))  # both instances know the hour
    assert ledger.expire(before=NOW - timedelta(days=30)) == ["app.old", "app.other"]
    assert hour_blobs(ledger) == set()

    ledger.create(settled("app.back", old + timedelta(minutes=2)))  # it forgot the hour it removed
    ledger.create(settled("app.new", NOW))
    assert hour_blobs(ledger) == entry_hours(ledger) == {hour(old), hour(NOW)}
    assert [r.request_id for r in same_container(ledger, azurite).list()] == ["app.new", "app.back"]


def test_an_entry_written_while_its_hour_is_removed_gets_its_hour_back(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window drop_hour leaves: a (clock-skewed) create between the last listing of the
    hour's entries and the delete of its hour blob. The listing after the delete puts it back."""
    ledger = blob_ledger(azurite)
    old = NOW - timedelta(days=40)
    ledger.create(settled("app.old", old))
    late = same_container(ledger, azurite)
    index = ledger._index
    real_delete = index._delete

    def create_first(name: str, etag: str | None = None) -> bool:
        if name.startswith(HOURS):
            late.create(settled("app.late", old + timedelta(minutes=1)))
        return real_delete(name, etag)

    monkeypatch.setattr(index, "_delete", create_first)
    assert ledger.expire(before=NOW - timedelta(days=30)) == ["app.old"]
    assert hour_blobs(ledger) == entry_hours(ledger) == {hour(old)}
    assert [r.request_id for r in ledger.list()] == ["app.late"]


# --------------------------------------------------------------------------- migration


def written_by_the_previous_version(ledger: BlobLedger) -> None:
    """Entries, markers and ``index/created.v1`` but no hour blobs, as the version before them
    left a container."""
    container = ledger.container_client
    for blob in list(container.list_blobs(name_starts_with="index/hours")):
        container.delete_blob(blob.name)
    assert any(b.name == "index/created.v1" for b in container.list_blobs(name_starts_with="index/"))


def six_hours_apart_and_one_running(
    azurite: AzuriteServer, tag: str, *, every: int
) -> tuple[BlobLedger, list[LedgerRecord]]:
    """A ledger holding six settled records ``every`` hours apart and one running record."""
    seed = blob_ledger(azurite)
    records = [settled(f"app.{tag}{i}", NOW - timedelta(hours=i * every, minutes=i)) for i in range(6)]
    records.append(running("app.live", NOW - timedelta(minutes=2)))
    for record in records:
        seed.create(record)
    return seed, records


def test_a_container_of_the_previous_version_gets_its_hour_blobs_once(azurite: AzuriteServer) -> None:
    seed, records = six_hours_apart_and_one_running(azurite, "m", every=5)
    written_by_the_previous_version(seed)

    requests = Requests()
    upgraded = hook_ledger(azurite, seed, requests)
    assert [r.request_id for r in upgraded.list(limit=3)] == newest_first(records)[:3]
    walks = [line for line in requests.listings() if "delimiter=" in line]
    assert len(walks) == 1  # the entries rolled up once, to derive the hours
    assert hour_blobs(upgraded) == entry_hours(upgraded) == {hour(r.created_at) for r in records}
    assert HOURS_MARK in {b.name for b in upgraded.container_client.list_blobs(name_starts_with="index/")}

    requests.sent.clear()
    assert page_through(upgraded, 2) == newest_first(records)
    again = Requests()
    assert page_through(hook_ledger(azurite, seed, again), 3) == newest_first(records)
    assert no_delimiter(requests) and no_delimiter(again)


def written_by_v1(ledger: BlobLedger) -> None:
    """The first hour-blob layout: ``index/hours/<YYYY-MM-DDTHH>`` and ``index/hours.v1``."""
    container = ledger.container_client
    at_hours = hour_blobs(ledger)
    for blob in list(container.list_blobs(name_starts_with="index/hours")):
        container.delete_blob(blob.name)
    for name in [HOURS + at_hour for at_hour in at_hours] + [V1_MARK]:
        container.upload_blob(name, b"")


def test_a_v1_container_gets_v2_hour_blobs_once(azurite: AzuriteServer) -> None:
    seed, records = six_hours_apart_and_one_running(azurite, "v", every=7)
    written_by_v1(seed)
    v1_names = {b.name for b in seed.container_client.list_blobs(name_starts_with=HOURS)}
    assert v1_names == {HOURS + hour(r.created_at) for r in records}

    requests = Requests()
    upgraded = hook_ledger(azurite, seed, requests)
    assert [r.request_id for r in upgraded.list(limit=3)] == newest_first(records)[:3]
    assert no_delimiter(requests)  # the v1 names gave the hours: no roll-up
    assert hour_blobs(upgraded) == entry_hours(upgraded) == {hour(r.created_at) for r in records}
    names = {b.name for b in upgraded.container_client.list_blobs(name_starts_with="index/")}
    assert HOURS_MARK in names and not names & v1_names
    assert listed_hours(upgraded) == sorted(hour_blobs(upgraded), reverse=True)

    again = Requests()
    assert page_through(hook_ledger(azurite, seed, again), 2) == newest_first(records)
    assert not any(line.startswith(("PUT ", "DELETE ")) for line in again.sent)  # migrated once


def test_a_v1_migration_cut_short_is_done_again(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut after the v2 blobs and one v1 delete: the next instance finishes it."""
    seed = blob_ledger(azurite)
    records = [settled(f"app.c{i}", NOW - timedelta(hours=i * 3)) for i in range(4)]
    for record in records:
        seed.create(record)
    written_by_v1(seed)
    cut = same_container(seed, azurite)
    deletes = 0

    def crash_on_second(name: str, etag: str | None = None) -> bool:
        nonlocal deletes
        deletes += 1
        if deletes == 2:
            raise RuntimeError("instance stopped")
        return real_delete(name, etag)

    real_delete = cut._index._delete
    monkeypatch.setattr(cut._index, "_delete", crash_on_second)
    with pytest.raises(RuntimeError):
        list(cut.list(limit=1))
    names = {b.name for b in seed.container_client.list_blobs(name_starts_with="index/hours")}
    assert HOURS_MARK not in names and V1_MARK in names
    assert sum(1 for name in names if "~" in name) == len(records)  # v2 and v1 side by side

    upgraded = same_container(seed, azurite)
    assert page_through(upgraded, 3) == newest_first(records)
    assert hour_blobs(upgraded) == entry_hours(upgraded)


@pytest.mark.parametrize(
    "written_by", [written_by_v1, written_by_the_previous_version], ids=["v1", "previous"]
)
def test_expiry_on_a_container_an_earlier_version_wrote(
    azurite: AzuriteServer, written_by: Callable[[BlobLedger], None]
) -> None:
    seed = blob_ledger(azurite)
    seed.create(settled("app.ancient", NOW - timedelta(days=40)))
    seed.create(settled("app.recent", NOW - timedelta(days=1)))
    written_by(seed)
    upgraded = same_container(seed, azurite)
    assert upgraded.expire(before=NOW - timedelta(days=30)) == ["app.ancient"]
    assert hour_blobs(upgraded) == entry_hours(upgraded) == {hour(NOW - timedelta(days=1))}
    assert [r.request_id for r in upgraded.list()] == ["app.recent"]


def test_a_container_without_any_index_gets_hour_blobs_with_its_entries(azurite: AzuriteServer) -> None:
    seed = blob_ledger(azurite)
    records = [settled(f"app.o{i}", NOW - timedelta(hours=i * 3)) for i in range(5)]
    for record in records:
        seed.create(record)
    written_by_an_older_version(seed)  # only runs/ is left
    assert hour_blobs(seed) == set()

    requests = Requests()
    upgraded = hook_ledger(azurite, seed, requests)
    assert page_through(upgraded, 2) == newest_first(records)
    assert hour_blobs(upgraded) == entry_hours(upgraded) == {hour(r.created_at) for r in records}
    assert no_delimiter(requests)  # the full listing gave the hours: nothing to roll up
    names = {b.name for b in upgraded.container_client.list_blobs(name_starts_with="index/")}
    assert {"index/created.v1", HOURS_MARK} <= names


# --------------------------------------------------------------------------- cost in requests


def filled(azurite: AzuriteServer, count: int) -> tuple[BlobLedger, Requests]:
    """``count`` settled records: 10 in the newest hour, the rest spread over the 20 days before
    (one hour blob per record there, so hours grow with records too)."""
    requests = Requests()
    ledger = blob_ledger(azurite, requests)
    for i in range(10):
        ledger.create(settled(f"app.n{i:02d}", NOW - timedelta(minutes=i + 1)))
    for i in range(count - 10):
        ledger.create(settled(f"app.s{i:04d}", NOW - timedelta(days=1) - timedelta(hours=i * 480 // count)))
    list(ledger.list(limit=1))
    ledger.expire(before=NOW - timedelta(days=30))  # every first call has been made
    return ledger, requests


def operation_requests(ledger: BlobLedger, requests: Requests) -> dict[str, list[str]]:
    sent: dict[str, list[str]] = {}
    cursor: tuple[datetime, str] = (NOW - timedelta(minutes=5, seconds=30), "app.~")
    operations: dict[str, Any] = {
        "page": lambda: [r.request_id for r in ledger.list(limit=5)],
        "before": lambda: [r.request_id for r in ledger.list(limit=5, before=cursor)],
        "expire": lambda: ledger.expire(before=NOW - timedelta(days=30)),
    }
    for name, operation in operations.items():
        requests.sent.clear()
        operation()
        sent[name] = list(requests.sent)
    return sent


def test_pages_and_expiry_cost_the_same_requests_whatever_the_history(azurite: AzuriteServer) -> None:
    few, many = (operation_requests(*filled(azurite, count)) for count in (12, 150))
    for name in ("page", "before", "expire"):
        assert len(few[name]) == len(many[name]), name
        listings = [line for line in many[name] if "comp=list" in line]
        assert not any("delimiter=" in line for line in listings), name
    # A page: the hours, the newest hour's entries, its 5 records. Expiry with nothing to
    # expire: the hours up to the cut (none), one listing.
    assert len(many["page"]) == len(many["before"]) == 7
    assert len(many["expire"]) == 1

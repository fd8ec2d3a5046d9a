"""A bounded run's sweep resumes from the listing's continuation token (issue 22.4): the next run
lists from the page where the last one stopped, a refused token means listing from the start, and
every blob is visited within a bounded number of runs whatever changes between them. Over the
in-memory store of ``test_cache_gc`` (tokens as Azurite makes them: the last name of a page);
``test_cache_gc_azurite`` has the same on Azurite."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.pruning.cache_gc.candidates import parse_state, render_candidates
from shared.pruning.cache_gc.collector import CacheCollector
from shared.pruning.cache_gc.layout import CacheLayout
from shared.pruning.cache_gc.planner import Policy
from shared.pruning.cache_gc.report import CacheReport
from shared.pruning.cache_gc.store import AzureCacheStore, BlobPage, ListingTokenRefusedError
from tests.test_cache_gc import HOUR, NOW, MemoryStore, as_if_recorded, digest, manifest_json

OLD = NOW - 48 * HOUR


class ListingStore(MemoryStore):
    """Counts listing requests and listed names; refuses tokens issued before ``invalidate``."""

    def __init__(self, layout: CacheLayout, grace: timedelta, page_size: int) -> None:
        super().__init__(layout, grace, page_size=page_size)
        self.requests: list[str | None] = []  # the token of every page requested
        self.names_listed = 0
        self.refused = 0
        self._epoch = 0

    def invalidate(self) -> None:
        """What a service may do after the container changed: earlier tokens no longer work."""
        self._epoch += 1

    def blob_pages(self, token: str | None = None) -> Iterator[BlobPage]:
        name = None
        if token is not None:
            epoch, _, name = token.partition(" ")
            if int(epoch) != self._epoch:
                self.refused += 1
                raise ListingTokenRefusedError("marker refused")
        epoch = str(self._epoch)
        for page in super().blob_pages(name):
            self.requests.append(token)
            self.names_listed += len(page.blobs)
            following = None if page.next_token is None else f"{epoch} {page.next_token}"
            yield BlobPage(page.blobs, token, following)
            token = following


def _seeded(orphans: int, page_size: int = 50) -> ListingStore:
    """Five manifests keeping blobs 1-5 (listed first), then ``orphans`` old orphans."""
    layout = CacheLayout("ci")
    store = ListingStore(layout, HOUR, page_size)
    for n in range(1, 6):
        store.put(layout.blob_key(digest(n)), b"x", OLD)
        store.put(layout.manifest_key(f"m{n}"), manifest_json([digest(n)]), OLD)
    for n in range(1000, 1000 + orphans):
        store.put(layout.blob_key(digest(n)), b"x", OLD)
    return store


def _collect(store: MemoryStore, max_deletes: int | None, batch_size: int = 10) -> CacheReport:
    policy = Policy(grace=HOUR)
    collector = CacheCollector(
        store, store.layout, policy, clock=lambda: NOW, batch_size=batch_size, max_deletes=max_deletes
    )
    report = collector.collect()
    assert report.complete and store.violations == [], report
    return report


def test_a_resumed_run_lists_from_the_page_where_the_last_one_stopped() -> None:
    store = _seeded(orphans=200)
    as_if_recorded(store)
    first = _collect(store, max_deletes=45)
    # Page 1: blobs 1-5 and orphans 1000-1044; page 2 starts at 1045. The run stops in page 2, before
    # its sixth batch (the fifth was 1040-1049): the document holds that blob and page 2's token.
    assert (first.blobs_deleted, first.stopped_after, first.listing_pages) == (50, digest(1049), 2)
    state = parse_state(store.items[store.layout.candidates_key][0])
    assert state is not None and state.resume_after == digest(1049)
    assert state.resume_token == store.requests[1] is not None
    store.requests, store.names_listed = [], 0
    second = _collect(store, max_deletes=45)
    # One request, from page 2's token: 1000-1049 are gone, so it lists 1050-1099, all new to the
    # lap; after five batches the bound is reached at the end of that page: the document now holds
    # its last blob and the token of the page after it.
    assert store.requests == [state.resume_token] and store.names_listed == 50
    assert (second.resumed_after, second.blobs_listed, second.blobs_deleted) == (digest(1049), 50, 50)
    assert second.stopped_after == digest(1099)
    state = parse_state(store.items[store.layout.candidates_key][0])
    assert state is not None and state.resume_token is not None and state.resume_token.endswith(digest(1099))
    # The whole backlog: no run lists a page from the start of the container again.
    runs = [first, second]
    listed = 100 + store.names_listed
    while runs[-1].stopped_after is not None:
        store.requests, store.names_listed = [], 0
        runs.append(_collect(store, max_deletes=45))
        assert store.requests[0] is not None
        listed += store.names_listed
    assert [r.blobs_deleted for r in runs] == [50, 50, 50, 50]
    # Every name once (1000-1199 and the five live blobs), but 1050-1094: the first run stopped in
    # their page. A run lists again at most the one page it resumes in.
    assert listed == 205 + 45 <= 205 + (len(runs) - 1) * store.page_size
    assert sorted(n for n in store.items if n.startswith(store.layout.blobs_prefix)) == [
        store.layout.blob_key(digest(n)) for n in range(1, 6)
    ]


def test_a_refused_token_lists_from_the_start_and_skips_what_was_swept() -> None:
    store = _seeded(orphans=200)
    as_if_recorded(store)
    first = _collect(store, max_deletes=45)
    store.put(store.layout.blob_key(digest(1003)), b"x", OLD)  # the container changes ...
    store.invalidate()  # ... and the service no longer takes the tokens it gave before
    store.requests = []
    second = _collect(store, max_deletes=45)
    assert second.resume_token_refused and store.refused == 1
    assert store.requests[0] is None  # listed from the start
    # Nothing swept twice (1003 is behind the resume point: the next lap sees it), nothing skipped.
    assert second.resumed_after == first.stopped_after == digest(1049)
    assert second.blobs_deleted == 50 and store.layout.blob_key(digest(1050)) not in store.items
    state = parse_state(store.items[store.layout.candidates_key][0])
    assert state is not None and state.resume_token is not None  # a token of the new listing
    store.requests = []
    third = _collect(store, max_deletes=45)
    assert not third.resume_token_refused and store.requests[0] == state.resume_token
    while third.stopped_after is not None:
        third = _collect(store, max_deletes=45)
    lap = _collect(store, max_deletes=45)  # a new lap from the start: 1003 is recorded now
    assert lap.resumed_after is None and lap.blobs_candidates == 1
    assert digest(1003) in parse_state(store.items[store.layout.candidates_key][0]).candidates  # type: ignore[union-attr]


def test_the_document_is_replaced_only_if_no_other_run_replaced_it() -> None:
    store = _seeded(orphans=30)
    key = store.layout.candidates_key
    other = render_candidates({}, resume_after=digest(7))

    listing = store.blob_pages

    def racing_run(token: str | None = None) -> Iterator[BlobPage]:
        store.write_blob(key, other, force=True)  # another collector writes while this one sweeps
        return listing(token)

    store.blob_pages = racing_run  # type: ignore[method-assign]
    report = _collect(store, max_deletes=None)
    assert report.state_conflict and report.blobs_candidates == 30
    assert store.items[key][0] == other  # this run's record is dropped: deletions wait a run
    store.blob_pages = listing  # type: ignore[method-assign]
    again = _collect(store, max_deletes=None)
    assert not again.state_conflict and again.resumed_after == digest(7)
    state = parse_state(store.items[key][0])
    assert state is not None and len(state.candidates) == 30


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    orphans=st.integers(1, 60),
    page_size=st.integers(1, 9),
    batch=st.integers(1, 12),
    bound=st.integers(1, 30),
    changes=st.lists(
        st.tuples(st.sampled_from(["add", "remove", "invalidate", "none"]), st.integers(0, 7_000)),
        min_size=1,
        max_size=40,
    ),
)
def test_every_blob_is_visited_within_a_bounded_number_of_runs(
    orphans: int, page_size: int, batch: int, bound: int, changes: list[tuple[str, int]]
) -> None:
    """Whatever changes between runs (blobs added anywhere, removed, tokens refused), an orphan that
    is there from run r on is deleted (it was ripe) or recorded (it was new) by run r + K, where K is
    two laps: the runs a lap takes are at most one per page plus one per batch, plus one."""
    layout = CacheLayout()
    store = ListingStore(layout, HOUR, page_size)
    store.put(layout.manifest_key("keep"), manifest_json([digest(0)]), OLD)
    store.put(layout.blob_key(digest(0)), b"x", OLD)
    for n in range(1, orphans + 1):
        store.put(layout.blob_key(digest(100 * n)), b"x", OLD)
    as_if_recorded(store)
    most = orphans + 1 + len(changes)  # blobs there can ever be
    lap = math.ceil(most / page_size) + math.ceil(most / batch) + 1
    limit = 2 * lap
    since: dict[str, int] = {layout.blob_key(digest(100 * n)): 0 for n in range(1, orphans + 1)}
    for run, (kind, n) in enumerate([*changes, *[("none", 0)] * (limit + 1)], 1):
        report = _collect(store, max_deletes=bound, batch_size=batch)
        state = parse_state(store.items[layout.candidates_key][0])
        assert state is not None
        for name in list(since):
            seen = state.candidates.get(name.removeprefix(layout.blobs_prefix))
            if name not in store.items or (seen is not None and seen.first_seen == NOW):
                del since[name]  # deleted (it was ripe), or recorded by a run (it was new): visited
        assert all(run - first <= limit for first in since.values()), (since, run, report)
        assert layout.blob_key(digest(0)) in store.items
        if kind == "add":
            name = layout.blob_key(digest(1 + n % (100 * orphans + 100)))  # anywhere in the listing
            if name not in store.items:
                store.put(name, b"x", OLD)
                since[name] = run
        elif kind == "remove":
            names = sorted(since)
            if names:
                victim = names[n % len(names)]
                del store.items[victim]
                del since[victim]
        elif kind == "invalidate":
            store.invalidate()
    assert since == {}


def test_the_azure_store_takes_a_400_to_a_stored_token_as_a_refusal() -> None:
    """Only the first request carries a stored token; a 400 there is a refusal (list from the start),
    a 400 anywhere else is an error."""
    from azure.core.exceptions import HttpResponseError

    class Pages:
        continuation_token: str | None = None

        def __iter__(self) -> Pages:
            return self

        def __next__(self) -> list[Any]:
            error = HttpResponseError(message="One of the request inputs is out of range.")
            error.status_code = 400
            raise error

    class Client:
        container_name = "cache"

        def list_blobs(self, **_options: Any) -> Any:
            return type("Listing", (), {"by_page": lambda _self, continuation_token=None: Pages()})()

    store = AzureCacheStore(Client(), CacheLayout())  # type: ignore[arg-type]
    with pytest.raises(ListingTokenRefusedError):
        next(store.blob_pages("2!96!stale"))
    with pytest.raises(HttpResponseError):
        next(store.blob_pages(None))

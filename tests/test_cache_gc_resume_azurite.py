"""Resuming a bounded sweep from the listing's continuation token, against Azurite (issue 22.4).

Azurite's ``NextMarker`` is a blob name and its listing continues after it (Azurite 3.35,
``LokiBlobMetadataStore.listBlobs``: ``obj.name > marker``), so a token keeps working when the
container changes; the real service's marker is opaque. Listing pages are made small (100 names)
so a few hundred blobs span several pages. The blobs are seconds old: the policy has no grace and
no settle time, so a run deletes what the run before it recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from shared.pruning.cache_gc import store as store_module
from shared.pruning.cache_gc.candidates import parse_state, render_candidates
from shared.pruning.cache_gc.collector import CacheCollector
from shared.pruning.cache_gc.layout import CacheLayout
from shared.pruning.cache_gc.planner import Policy
from shared.pruning.cache_gc.report import CacheReport
from shared.pruning.cache_gc.store import AzureCacheStore, BlobPage
from tests.support.azurite import AzuriteServer

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

POLICY = Policy(grace=timedelta(0))
PAGE = 100


class CountingStore(AzureCacheStore):
    """The Azure store, counting the blob listing's requests (their tokens) and the names listed."""

    def __init__(self, container: ContainerClient, layout: CacheLayout) -> None:
        super().__init__(container, layout)
        self.tokens: list[str | None] = []
        self.names: list[str] = []

    def blob_pages(self, token: str | None = None) -> Iterator[BlobPage]:
        for page in super().blob_pages(token):
            self.tokens.append(page.token)
            self.names += [b.name for b in page.blobs]
            yield page


def _digest() -> str:
    return f"sha256:{uuid.uuid4().hex * 2}"


def _seed(container: ContainerClient, layout: CacheLayout, orphans: int) -> tuple[str, list[str]]:
    """One manifest keeping one blob, and ``orphans`` unreferenced blobs; (kept, orphans)."""
    kept = layout.blob_key(_digest())
    container.upload_blob(kept, b"kept")
    layers = f'{{"layers": [{{"blob": "{kept.removeprefix(layout.blobs_prefix)}"}}], "records": []}}'
    container.upload_blob(layout.manifest_key("main"), layers.encode())
    names = [layout.blob_key(_digest()) for _ in range(orphans)]
    for name in names:
        container.upload_blob(name, b"orphan")
    return kept, sorted(names)


def _collect(store: CountingStore, layout: CacheLayout, max_deletes: int | None = None) -> CacheReport:
    store.tokens, store.names = [], []
    report = CacheCollector(store, layout, POLICY, batch_size=50, max_deletes=max_deletes).collect()
    assert report.complete and not report.state_conflict, report
    return report


@pytest.fixture
def container(azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> ContainerClient:
    monkeypatch.setattr(store_module, "LIST_PAGE_SIZE", PAGE)
    return azurite.new_container("resume")


def _blobs(container: ContainerClient, layout: CacheLayout) -> set[str]:
    return {b.name for b in container.list_blobs(name_starts_with=layout.blobs_prefix)}


def test_a_bounded_run_resumes_from_its_token_and_the_lap_lists_each_page_about_once(
    container: ContainerClient,
) -> None:
    layout = CacheLayout("ci")
    kept, orphans = _seed(container, layout, 450)
    store = CountingStore(container, layout)
    recording = _collect(store, layout)
    assert (recording.blobs_candidates, recording.listing_pages) == (450, 5)
    first = _collect(store, layout, max_deletes=120)
    first_page = store.names[:PAGE]
    # Stopped once 120 were deleted (before a batch, or at the end of a page after flushing what it
    # held): what lies up to the stop point is gone, the rest is there.
    assert first.stopped_after is not None and 120 <= first.blobs_deleted < 120 + PAGE
    stop = layout.blob_key(first.stopped_after)
    left = _blobs(container, layout)
    assert [n for n in orphans if n in left] == [n for n in orphans if n > stop]
    state = parse_state(container.download_blob(layout.candidates_key).readall())
    assert state is not None and state.resume_after == first.stopped_after
    assert state.resume_token is not None
    second = _collect(store, layout, max_deletes=120)
    # The first request carries the token: the first page is not listed again, nor anything up to
    # the page that holds the stop point.
    assert store.tokens[0] == state.resume_token and second.resumed_after == first.stopped_after
    assert min(store.names) > first_page[-1] and second.blobs_deleted >= 120
    listed = len(store.names)
    while second.stopped_after is not None:
        second = _collect(store, layout, max_deletes=120)
        listed += len(store.names)
    assert _blobs(container, layout) == {kept}
    # The lap from the first bounded run on lists 451 names once, plus at most a page per resume.
    assert listed <= 451 + 2 * PAGE


def test_a_container_changed_between_runs_is_swept_within_two_laps(container: ContainerClient) -> None:
    """The blob the token names is gone (Azurite's token is the last name of a page, deleted by the
    run), the next one after the resume point is deleted by someone else, blobs appear before and
    after the resume point: the token still works, what lies ahead is swept in this lap, what
    appeared behind in the next, and the kept blob stays."""
    layout = CacheLayout()
    kept, orphans = _seed(container, layout, 300)
    store = CountingStore(container, layout)
    _collect(store, layout)  # records the 300
    first = _collect(store, layout, max_deletes=60)
    resume = layout.blob_key(first.stopped_after or "")
    state = parse_state(container.download_blob(layout.candidates_key).readall())
    assert state is not None and state.resume_token is not None
    after = min(n for n in orphans if n > resume)
    container.delete_blob(after)
    behind = layout.blob_key("sha256:" + "0" * 64)  # sorts first: behind the resume point
    ahead = layout.blob_key("sha256:" + "f" * 64)  # sorts last: ahead of it
    container.upload_blob(behind, b"late")
    container.upload_blob(ahead, b"late")
    reports = [_collect(store, layout, max_deletes=60)]
    assert not reports[0].resume_token_refused and store.tokens[0] == state.resume_token
    assert min(store.names) > orphans[0] and after not in store.names
    while reports[-1].stopped_after is not None:
        reports.append(_collect(store, layout, max_deletes=60))
    assert sum(r.blobs_candidates for r in reports) >= 1  # ``ahead`` recorded in this lap
    assert behind in _blobs(container, layout)  # not seen yet: behind the lap's position
    for _ in range(2):  # the next lap records ``behind``; the one after deletes both
        report = _collect(store, layout)
        assert report.stopped_after is None
    assert _blobs(container, layout) == {kept}


def test_the_candidates_document_is_written_only_if_unchanged(container: ContainerClient) -> None:
    """Put Blob with If-Match (the document read) or If-None-Match: * (none was there): a run
    that raced another collector's write leaves that write in place."""
    layout = CacheLayout()
    _seed(container, layout, 20)
    store = AzureCacheStore(container, layout)
    theirs = render_candidates({}, resume_after="sha256:" + "a" * 64)
    assert store.write_blob(layout.candidates_key, theirs, etag=None)
    assert not store.write_blob(layout.candidates_key, b"mine", etag=None)  # it exists now
    etag = container.get_blob_client(layout.candidates_key).get_blob_properties().etag
    assert not store.write_blob(layout.candidates_key, b"mine", etag='"0x8D000000000000"')
    assert store.write_blob(layout.candidates_key, theirs, etag=etag)
    assert container.download_blob(layout.candidates_key).readall() == theirs

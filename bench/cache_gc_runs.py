"""Part 1b of ``bench.cache_gc``: ``CacheCollector`` itself over a generated store (no storage).

The store holds the same 5,000 manifests as the planning part and a listing of ``total`` blobs in
name order, as the service lists them (``heapq.merge`` of the referenced digests and evenly spread
unreferenced ones), served page by page from a continuation token (the page's index): the page a
token names is computed directly, so resuming costs the store nothing, as a marker costs the
service nothing. Deletes succeed and cost nothing; the listing does not change.

Printed, each against a floor measured in the same run (one pass over the blob listing,
``json.loads`` of every manifest and one parse of the manifest listing), from paired runs (floor
and collector back to back, alternating order; min/median/max of the per-pair ratios):

- the recording run (nothing ripe yet) and a deleting run bounded as the timer bounds it;
- a full cycle of bounded runs (``max_seconds``): the recording lap, then the deleting lap (every
  unreferenced blob ripe), each run's time against the limit, the names each lap listed against
  the container's, and what listing from the start on every resume would have listed.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from bench.cache_gc_data import NOW, POLICY, generate_manifests, listing_xml
from shared.pruning.cache_gc.layout import BlobEntry, CacheLayout
from shared.pruning.cache_gc.planner import Policy
from shared.pruning.cache_gc.report import CacheReport
from shared.pruning.cache_gc.store import LIST_PAGE_SIZE, BlobPage, DeleteOutcome, etags_from_listing

HOUR = timedelta(hours=1)
_TIMES = [NOW - timedelta(hours=h) for h in range(0, 60 * 24, 7)]


def paired(floor: Callable[[], float], subject: Callable[[], float], pairs: int) -> list[tuple[float, float]]:
    """(floor, subject) seconds of each pair, run back to back, the order alternating per pair."""
    out = []
    for index in range(pairs):
        if index % 2:
            s = subject()
            f = floor()
        else:
            f = floor()
            s = subject()
        out.append((f, s))
    return out


def ratios_line(results: list[tuple[float, float]]) -> str:
    ratios = sorted(s / f for f, s in results)
    return (
        f"ratio min {ratios[0]:.2f} / median {statistics.median(ratios):.2f} / max {ratios[-1]:.2f} "
        f"({len(ratios)} pairs)"
    )


class GeneratedStore:
    """``CacheStore`` over the generated manifests and a name-ordered listing of ``total`` blobs."""

    container = "generated"

    def __init__(self, total: int) -> None:
        self.layout = CacheLayout()
        manifests, referenced = generate_manifests()
        self.total = total
        self.manifests = {
            self.layout.manifest_key(n): (d, f'"0x{i:x}"', t) for i, (n, d, t) in enumerate(manifests)
        }
        self.xml = listing_xml([(k, etag[1:-1]) for k, (_d, etag, _t) in self.manifests.items()])
        # Name order: the referenced digests among ``total - len(referenced)`` unreferenced ones
        # spread evenly over the digest space; ``_positions[r]`` is where referenced[r] is listed.
        self.referenced = sorted(set(referenced))
        self.unreferenced = max(0, total - len(self.referenced))
        self.stride = 2**256 // max(1, self.unreferenced)
        self._positions = [
            r + min(self.unreferenced, -(-int(d[7:], 16) // self.stride))
            for r, d in enumerate(self.referenced)
        ]
        self.documents: dict[str, tuple[bytes, int]] = {}
        self.listings = 0
        self.listing_seconds = 0.0
        self.downloads = 0
        self.pages_listed = 0
        self.skipped_by_token = 0  # names before each resumed listing's first page

    def list_manifests(self) -> list[BlobEntry]:
        return [BlobEntry(k, len(d), t, e) for k, (d, e, t) in self.manifests.items()]

    def manifest_etags(self) -> dict[str, str]:
        from xml.etree import ElementTree

        started = time.perf_counter()
        page = ElementTree.fromstring(self.xml)  # noqa: S314 (generated here)
        found = etags_from_listing(page, len(self.manifests))
        assert found is not None
        self.listings += 1
        self.listing_seconds += time.perf_counter() - started
        return found

    def read_manifest(self, key: str) -> tuple[bytes, str, datetime] | None:
        if key in self.documents:
            data, version = self.documents[key]
            return data, f'"doc{version}"', NOW
        found = self.manifests.get(key)
        if found is None:
            return None
        self.downloads += 1
        return found

    def names(self, start: int = 0) -> Iterator[str]:
        """The listing's names from position ``start``, in name order."""
        r = bisect.bisect_left(self._positions, start)
        u = start - r
        spread = (f"sha256:{i * self.stride:064x}" for i in range(u, self.unreferenced))
        return heapq.merge(self.referenced[r:], spread)

    def blob_pages(self, token: str | None = None) -> Iterator[BlobPage]:
        page_index = 0 if token is None else int(token)
        start = page_index * LIST_PAGE_SIZE
        self.skipped_by_token += start
        total = len(self.referenced) + self.unreferenced
        prefix = self.layout.blobs_prefix
        names = self.names(start)
        position = start
        while position < total:
            page = [
                BlobEntry(prefix + name, 1000 + (i & 1023), _TIMES[i % len(_TIMES)], '"0x1"')
                for i, name in zip(range(position, position + LIST_PAGE_SIZE), names, strict=False)
            ]
            position += len(page)
            self.pages_listed += 1
            yield BlobPage(page, str(page_index), str(page_index + 1) if position < total else None)
            page_index += 1

    def write_blob(self, key: str, data: bytes, *, etag: str | None) -> bool:
        version = self.documents[key][1] if key in self.documents else None
        if (None if version is None else f'"doc{version}"') != etag:
            return False
        self.documents[key] = (data, (version or 0) + 1)
        return True

    def delete(self, blobs: Any) -> list[DeleteOutcome]:
        return [DeleteOutcome.DELETED] * len(blobs)


def run_floor(store: GeneratedStore) -> float:
    from xml.etree import ElementTree

    started = time.perf_counter()
    for data, _etag, _t in store.manifests.values():
        json.loads(data)
    ElementTree.fromstring(store.xml)  # noqa: S314 (generated here)
    for page in store.blob_pages():
        for entry in page.blobs:
            _ = entry.name
    return time.perf_counter() - started


_RUN_POLICY = Policy(grace=POLICY.grace, max_age=POLICY.max_age, keep_names=POLICY.keep_names, settle=HOUR)


def _collect(store: GeneratedStore, at: datetime, **bounds: Any) -> CacheReport:
    from shared.pruning.cache_gc.collector import CacheCollector

    report = CacheCollector(store, store.layout, _RUN_POLICY, clock=lambda: at, **bounds).collect()
    assert report.complete and not report.state_conflict, report
    return report


def runs_part(total: int, max_deletes: int, pairs: int) -> None:
    print(f"== collector runs: 5000 manifests, {total:,} blobs (generated store, name order)")
    store = GeneratedStore(total)
    key = store.layout.candidates_key

    def recording() -> float:
        store.documents.pop(key, None)
        return _collect(store, NOW).duration_seconds

    results = paired(lambda: run_floor(store), recording, pairs)
    recorded = dict(store.documents)
    print(f"floor (one listing pass, json.loads of the manifests, one manifest listing): {_span(results, 0)}")
    print(f"recording run (nothing ripe)          : {_span(results, 1)}; {ratios_line(results)}")

    def bounded() -> float:
        store.documents = dict(recorded)
        store.listings, store.listing_seconds = 0, 0.0
        return _collect(store, NOW + 2 * HOUR, max_deletes=max_deletes).duration_seconds

    results = paired(lambda: run_floor(store), bounded, pairs)
    print(
        f"deleting run, <= {max_deletes:,} deletes    : {_span(results, 1)}; {ratios_line(results)}; "
        f"{store.listings} re-check listings ({store.listing_seconds:.2f} s)"
    )


def _span(results: list[tuple[float, float]], side: int) -> str:
    values = sorted(r[side] for r in results)
    return f"{values[0]:.2f}-{values[-1]:.2f} s"


def cycle_part(total: int, max_seconds: float, timer_limit: float) -> None:
    """One lap recording, one lap deleting, each as bounded runs; the floor before each lap."""
    print(
        f"== a full cycle of bounded runs: {total:,} blobs, max_seconds {max_seconds:g} "
        f"(the timer's function timeout: {timer_limit:g} s)"
    )
    store = GeneratedStore(total)
    for label, at in (("recording lap", NOW), ("deleting lap", NOW + 2 * HOUR)):
        floor = run_floor(store)
        store.pages_listed, store.skipped_by_token = 0, 0
        reports: list[CacheReport] = []
        for run in itertools.count(1):
            report = _collect(store, at, max_seconds=max_seconds)
            reports.append(report)
            if report.stopped_after is None:
                break
            assert run < 1000
        durations = [r.duration_seconds for r in reports]
        listed = store.pages_listed * LIST_PAGE_SIZE
        skipped = store.skipped_by_token
        print(
            f"{label}: {len(reports)} runs, {sum(durations):.1f} s in all (ratio to floor "
            f"{sum(durations) / floor:.1f}, floor {floor:.2f} s); longest run {max(durations):.1f} s "
            f"(limit {timer_limit:g} s, ratio {max(durations) / timer_limit:.2f}); "
            f"deleted {sum(r.blobs_deleted for r in reports):,}, recorded {reports[-1].blobs_candidates:,}"
        )
        print(
            f"{'':>15}pages listed {store.pages_listed:,} (~{listed:,} names, "
            f"{listed / total:.2f}x the container); resuming from the start would have listed "
            f"{skipped:,} more ({(listed + skipped) / total:.2f}x)"
        )

"""The collector's cost per run (issue 22.4): the re-check before a delete batch lists once and
downloads only what changed, batches that delete nothing list nothing, and a run's work is bounded
and resumed by the next run. Counted over the in-memory store of ``test_cache_gc``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.pruning.cache_gc.candidates import Candidate, parse_state, render_candidates
from shared.pruning.cache_gc.collector import CacheCollector
from shared.pruning.cache_gc.layout import BlobEntry, CacheLayout
from shared.pruning.cache_gc.planner import Policy
from shared.pruning.cache_gc.report import CacheReport
from tests.test_cache_gc import HOUR, NOW, MemoryStore, as_if_recorded, digest, manifest_json

OLD = NOW - 48 * HOUR


class CountingStore(MemoryStore):
    """Counts manifest listings and manifest downloads (the candidates document is not one)."""

    def __init__(self, layout: CacheLayout, grace: timedelta, page_size: int = 50) -> None:
        super().__init__(layout, grace, page_size=page_size)
        self.listings = 0
        self.downloads: list[str] = []

    def list_manifests(self) -> list[BlobEntry]:
        self.listings += 1
        return super().list_manifests()

    def manifest_etags(self) -> dict[str, str]:
        self.listings += 1
        return super().manifest_etags()

    def read_manifest(self, key: str) -> tuple[bytes, str, datetime] | None:
        if key != self.layout.candidates_key:
            self.downloads.append(key)
        return super().read_manifest(key)


def _seeded(blobs: int = 200, manifests: int = 5) -> CountingStore:
    """``manifests`` names referencing blobs 1..manifests, and ``blobs`` old orphans after them."""
    layout = CacheLayout("ci")
    store = CountingStore(layout, HOUR)
    for n in range(1, manifests + 1):
        store.put(layout.blob_key(digest(n)), b"x", OLD)
        store.put(layout.manifest_key(f"m{n}"), manifest_json([digest(n)]), OLD)
    for n in range(1000, 1000 + blobs):
        store.put(layout.blob_key(digest(n)), b"x", OLD)
    return store


def _collect(
    store: MemoryStore,
    max_deletes: int | None = None,
    max_seconds: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> CacheReport:
    collector = CacheCollector(
        store,
        store.layout,
        Policy(grace=HOUR),
        clock=lambda: NOW,
        batch_size=10,
        max_deletes=max_deletes,
        max_seconds=max_seconds,
        monotonic=monotonic,
    )
    report = collector.collect()
    assert report.complete and store.violations == [], report
    return report


def test_the_recheck_before_each_delete_batch_downloads_nothing_when_nothing_changed() -> None:
    store = _seeded()
    as_if_recorded(store)
    report = _collect(store)
    assert report.blobs_deleted == 200
    # One listing to plan, one before the sweep, one before each of the 20 delete batches ...
    assert store.listings == report.manifest_listings == 2 + 20
    # ... and each manifest downloaded once: by the first read, never by a re-check.
    assert sorted(store.downloads) == sorted(store.layout.manifest_key(f"m{n}") for n in range(1, 6))
    assert report.manifests_reread == 0


def test_the_recheck_downloads_only_the_manifest_that_changed() -> None:
    store = _seeded()
    as_if_recorded(store)
    layout = store.layout
    deletes = iter(range(1000))

    def exporter() -> None:  # after the third delete batch: m3 is exported again, reusing blob 1150
        if next(deletes) == 2:
            store.export("m3", [digest(3), digest(1150)])

    store.before_delete = exporter
    report = _collect(store)
    first_read = [layout.manifest_key(f"m{n}") for n in range(1, 6)]
    assert sorted(store.downloads) == sorted([*first_read, layout.manifest_key("m3")])
    assert report.manifests_reread == 1
    assert layout.blob_key(digest(1150)) in store.items and report.blobs_deleted == 199


def test_batches_that_delete_nothing_list_no_manifests() -> None:
    """The first phase (nothing recorded yet) records 200 candidates with two listings, not 22."""
    store = _seeded()
    report = _collect(store)
    assert (report.blobs_deleted, report.blobs_candidates) == (0, 200)
    assert store.listings == 2 and len(store.downloads) == 5


def _runs_until_done(
    store: MemoryStore,
    max_deletes: int | None = None,
    max_seconds: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> list[CacheReport]:
    reports = [_collect(store, max_deletes, max_seconds, monotonic)]
    while reports[-1].stopped_after is not None:
        assert len(reports) < 100
        reports.append(_collect(store, max_deletes, max_seconds, monotonic))
    return reports


def test_max_deletes_stops_a_run_and_the_next_run_resumes_after_it() -> None:
    store = _seeded()
    as_if_recorded(store)
    layout = store.layout
    first = _collect(store, max_deletes=45)
    # Once 45 is reached (after the fifth batch of 10) the run stops before its next batch.
    assert first.blobs_deleted == 50 and first.stopped_after == digest(1049)
    state = parse_state(store.items[layout.candidates_key][0])
    assert state is not None and state.resume_after == digest(1049)
    assert sorted(state.candidates) == [digest(n) for n in range(1050, 1200)]  # carried over
    later = _runs_until_done(store, max_deletes=45)
    assert [r.blobs_deleted for r in later] == [50, 50, 50]
    assert [r.resumed_after for r in later] == [digest(1049), digest(1099), digest(1149)]
    assert later[-1].stopped_after is None and later[-1].blobs_listed == 50
    left = sorted(n for n in store.items if n.startswith(layout.blobs_prefix))
    assert left == [layout.blob_key(digest(n)) for n in range(1, 6)]
    state = parse_state(store.items[layout.candidates_key][0])
    assert state is not None and state == (dict[str, Candidate](), None, None)


def test_max_seconds_stops_a_run_by_its_own_clock() -> None:
    store = _seeded()
    as_if_recorded(store)
    ticks = iter(range(10_000))
    report = _collect(store, max_seconds=3, monotonic=lambda: float(next(ticks)))
    # Clock read at the start (0), then before each batch after the first (1, 2, 3): stop at 3.
    assert report.blobs_deleted == 30 and report.stopped_after == digest(1029)


def test_a_resumed_lap_keeps_the_two_phase_rule() -> None:
    """Bounded runs record in their stretch only, and carry the rest: a blob still needs two runs."""
    store = _seeded(blobs=100)
    reports = _runs_until_done(store, max_seconds=2, monotonic=lambda: 0.0)  # time never runs out
    assert len(reports) == 1 and reports[0].blobs_candidates == 100 and store.deleted == []
    ticks = iter(range(10_000))
    bounded = _runs_until_done(store, max_seconds=4, monotonic=lambda: float(next(ticks)))
    # The first run reads its clock at the start, before batches 2-4 and at the end of the first
    # page (50 names: 45 orphans, 5 live; tick 4): it flushes the 5 pending and stops there.
    assert [r.blobs_deleted for r in bounded] == [45, 40, 15]


def test_bounds_must_be_positive() -> None:
    store = _seeded(blobs=1)
    with pytest.raises(ValueError, match="max_deletes"):
        CacheCollector(store, store.layout, Policy(grace=HOUR), max_deletes=0)
    with pytest.raises(ValueError, match="max_seconds"):
        CacheCollector(store, store.layout, Policy(grace=HOUR), max_seconds=0)


def test_the_resume_line_round_trips_and_older_documents_still_parse() -> None:
    found = {digest(1): Candidate('"0x1"', NOW.replace(microsecond=0))}
    assert parse_state(render_candidates(found, resume_after=digest(7))) == (found, digest(7), None)
    assert parse_state(render_candidates(found)) == (found, None, None)
    assert parse_state(b"slipway-cache-gc-candidates 1\n" + digest(1).encode() + b' "0x1" 0\n') is not None
    # A resume line anywhere but first is not this format: nothing is ripe.
    body = render_candidates(found).decode() + f"resume {digest(7)}\n"
    assert parse_state(body.encode()) is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blobs=st.integers(1, 60),
    referenced=st.sets(st.integers(0, 59), max_size=20),
    batch=st.integers(1, 12),
    bound=st.integers(1, 30),
)
def test_bounded_laps_delete_exactly_the_unreferenced(
    blobs: int, referenced: set[int], batch: int, bound: int
) -> None:
    """Whatever the bound: after a recording lap and a deleting lap every unreferenced blob is gone,
    every referenced one is there, and no run deleted a referenced blob."""
    layout = CacheLayout()
    store = MemoryStore(layout, HOUR, page_size=7)
    for n in range(blobs):
        store.put(layout.blob_key(digest(n)), b"x", OLD)
    live = {n for n in referenced if n < blobs}
    store.put(layout.manifest_key("keep"), manifest_json([digest(n) for n in sorted(live)]), OLD)

    def lap(limit: int | None) -> None:
        for _ in range(200):
            report = CacheCollector(
                store, layout, Policy(grace=HOUR), clock=lambda: NOW, batch_size=batch, max_deletes=limit
            ).collect()
            assert report.complete and store.violations == []
            if report.stopped_after is None:
                return
        raise AssertionError("the runs never finished a lap")

    lap(None)  # records every unreferenced blob
    assert store.deleted == []
    lap(bound)
    left = {n for n in range(blobs) if layout.blob_key(digest(n)) in store.items}
    assert left == live


def test_the_timers_bounds_come_from_settings() -> None:
    from shared.pruning.cache_gc.prune import DEFAULT_MAX_SECONDS, work_bounds

    assert work_bounds({}) == (None, DEFAULT_MAX_SECONDS)
    settings = {"SLIPWAY_CACHE_PRUNE_MAX_DELETES": "5000", "SLIPWAY_CACHE_PRUNE_MAX_SECONDS": " 60 "}
    assert work_bounds(settings) == (5000, 60)


@pytest.mark.parametrize("value", ["0", "-3", "4m", "1.5"])
def test_a_bad_bound_setting_is_one_clear_error_before_anything_runs(
    value: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.app.runtime import Runtime
    from shared.pruning.cache_gc.prune import PruneSettingError, prune_on_schedule
    from tests.support.timer_parts import timer_parts

    caplog.set_level(logging.INFO, logger="slipway.cache_gc")
    path = tmp_path / "slipway.yaml"
    # An http account_url that is not Azurite's would fail later: the setting must fail first.
    path.write_text(
        "registry: r.azurecr.io\ncache:\n  account_url: http://127.0.0.1:10000/otheracct\n"
        "  container: buildkit-cache\n"
    )
    settings = {"SLIPWAY_CONFIG": str(path), "SLIPWAY_CACHE_PRUNE_MAX_SECONDS": value}
    with pytest.raises(PruneSettingError, match=f"SLIPWAY_CACHE_PRUNE_MAX_SECONDS .*{value!r}"):
        prune_on_schedule(*timer_parts(Runtime(settings, app_root=tmp_path)))
    [line] = [json.loads(r.getMessage()) for r in caplog.records]
    assert line["event"] == "cache_prune_failed" and "SLIPWAY_CACHE_PRUNE_MAX_SECONDS" in line["error"]

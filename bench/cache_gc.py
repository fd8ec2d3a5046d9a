"""Cache collection at scale: the planner over a generated listing, and the collector on Azurite.

Every ratio comes from paired runs: the floor and the collector back to back, the order
alternating from pair to pair, one ratio per pair, printed as min / median / max.

Part 1, planning (no storage): 5,000 manifests with realistic sharing (``bench.cache_gc_data``)
and a streamed listing of 1,000,000 blobs. The collector's work (parse the manifests, expire,
mark, classify every blob) against ``json.loads`` of the same manifests and a bare iteration of
the same listing. Each side runs in its own process, so its peak RSS is its own; shown at 250k and
1M blobs (the goal: the same RSS at both). Goals: ratio <= 2, RSS independent of the number of
unreferenced blobs.

Part 1b, the collector's runs over a generated store (``bench.cache_gc_runs``): the recording run
and a deleting run bounded by ``--max-deletes``; then a full cycle of runs bounded by
``--max-seconds`` (a recording lap and a deleting lap over the 1M blobs), each run's time against
the timer's 300 s, and the names each lap listed (each resumed run lists from its token).

Part 2, on Azurite (a fresh process per run: its delete cost grows with the container and its
background sweep stalls after tens of thousands of deletions): a few thousand blobs, most of them
unreferenced, the rest referenced by a few hundred manifests (``--azurite-manifests``). Deletion
is two-phase, so an untimed first run records them; the collector's wall time (the second,
deleting run) against (a) listing the blobs and batch-deleting the same unreferenced set with no
logic (paired), and (b) deleting that set one blob at a time (once). Then a deleting lap of runs
bounded by 500 deletes, listing 500 names a page, against (a): the pages it listed.
Goals: <= 1.5x (a), faster than (b). Never a pass/fail.

    .venv/bin/python -m bench.cache_gc [--part plan|runs|cycle|azurite|all] [--blobs 1000000]
        [--pairs 3] [--max-deletes 25600] [--max-seconds 60] [--azurite-blobs 3000]
        [--azurite-manifests 300]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bench.cache_gc_data import (
    NAMES_PER_TARGET,
    NOW,
    POLICY,
    TARGETS,
    digest,
    generate_manifests,
    listing_pages,
    manifest_bytes,
)
from bench.cache_gc_runs import cycle_part, paired, ratios_line, runs_part
from shared.pruning.cache_gc.layout import CacheLayout, parse_manifest
from shared.pruning.cache_gc.planner import MarkSweepPlanner, Policy

ROOT = Path(__file__).resolve().parents[1]


def _child(mode: str, total: int) -> dict[str, Any]:
    layout = CacheLayout()
    manifests, referenced = generate_manifests()
    started = time.perf_counter()
    counts: dict[str, int] = {}
    if mode == "floor":
        for _name, data, _exported in manifests:
            json.loads(data)
        manifests_done = time.perf_counter()
        for page in listing_pages(total, referenced, layout):
            for entry in page:
                _ = entry.name
        counts["listed"] = total
    else:
        intern: dict[str, str] = {}
        parsed = [parse_manifest(n, d, etag='"1"', last_modified=t, intern=intern) for n, d, t in manifests]
        planner = MarkSweepPlanner(layout, POLICY, NOW, parsed)
        manifests_done = time.perf_counter()
        live = grace = delete = 0
        for page in listing_pages(total, referenced, layout):
            decided = planner.classify_page(page)  # what the collector's sweep does per page
            live += decided.live
            grace += decided.grace
            delete += len(decided.doomed)
        counts = {"live": live, "grace": grace, "delete": delete}
        counts["manifests_expired"] = len(planner.expired)
        counts["live_set"] = len(planner.live)
    finished = time.perf_counter()
    seconds = finished - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode,
        "blobs": total,
        "seconds": seconds,
        "manifest_seconds": manifests_done - started,
        "listing_seconds": finished - manifests_done,
        "peak_rss_mib": peak_kib / 1024,
        "counts": counts,
    }


def _run_child(mode: str, total: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.cache_gc", "--child", mode, "--blobs", str(total)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def plan_part(total: int, pairs: int) -> None:
    print(f"== planning: {TARGETS * NAMES_PER_TARGET} manifests, streamed listing (no storage)")
    for blobs in sorted({total // 4, total}):
        floors: list[dict[str, Any]] = []
        plans: list[dict[str, Any]] = []

        def child(mode: str, into: list[dict[str, Any]], blobs: int = blobs) -> float:
            into.append(_run_child(mode, blobs))
            return float(into[-1]["seconds"])

        results = paired(partial(child, "floor", floors), partial(child, "plan", plans), pairs)
        fastest = min(floors, key=lambda r: r["seconds"])
        best = min(plans, key=lambda r: r["seconds"])
        counts = best["counts"]
        print(
            f"{blobs:>9,} blobs: floor best {fastest['seconds']:.2f} s "
            f"({blobs / fastest['seconds']:,.0f} blobs/s, peak RSS {fastest['peak_rss_mib']:.0f} MiB) | "
            f"collector best {best['seconds']:.2f} s ({blobs / best['seconds']:,.0f} blobs/s, "
            f"peak RSS {best['peak_rss_mib']:.0f} MiB)"
        )
        print(f"{'':>16} collector/floor {ratios_line(results)} (goal <= 2)")
        print(
            f"{'':>16} manifests: floor {fastest['manifest_seconds']:.2f} s, collector "
            f"{best['manifest_seconds']:.2f} s; listing: floor {fastest['listing_seconds']:.2f} s, "
            f"collector {best['listing_seconds']:.2f} s"
        )
        print(
            f"{'':>16} live {counts['live']:,}, grace {counts['grace']:,}, delete {counts['delete']:,}; "
            f"{counts['manifests_expired']:,} names expired; live set {counts['live_set']:,} digests"
        )


# --- part 2: Azurite ---------------------------------------------------------------------------


MANIFESTS = 300


def _set_manifests(count: int) -> None:
    global MANIFESTS
    MANIFESTS = count


def _seed(container: Any, layout: CacheLayout, blobs: int) -> list[str]:
    """``blobs`` blobs, a fifth referenced by MANIFESTS manifests; returns the unreferenced names."""
    rng = random.Random(2)
    names = [layout.blob_key(digest(rng)) for _ in range(blobs)]
    live = names[: blobs // 5]
    manifests = {
        layout.manifest_key(f"name-{i}"): manifest_bytes(
            rng, [n.removeprefix(layout.blobs_prefix) for n in live[i::MANIFESTS]]
        )
        for i in range(MANIFESTS)
    }
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: container.upload_blob(n, b"layer-bytes"), names))
        list(pool.map(lambda item: container.upload_blob(item[0], item[1]), manifests.items()))
    return names[blobs // 5 :]


def _timed_on_fresh_azurite(blobs: int, run: Any, prepare: Any = None) -> tuple[float, int]:
    from tests.support.azurite import start_azurite

    server = start_azurite()
    try:
        container = server.new_container("bench")
        layout = CacheLayout()
        doomed = _seed(container, layout, blobs)
        if prepare is not None:
            prepare(container, layout)
        started = time.perf_counter()
        deleted: int = run(container, layout, doomed)
        seconds = time.perf_counter() - started
        left = sum(1 for _ in container.list_blobs(name_starts_with=layout.blobs_prefix))
        assert left == blobs - len(doomed), (left, blobs, len(doomed))
        return seconds, deleted
    finally:
        server.stop()


_BENCH_POLICY = Policy(grace=timedelta(0))  # the blobs are seconds old; settle 0 too


def _record_candidates(container: Any, layout: CacheLayout) -> None:
    """The first phase (untimed): a run that records the unreferenced blobs and deletes nothing."""
    from shared.pruning.cache_gc.collector import CacheCollector
    from shared.pruning.cache_gc.store import AzureCacheStore

    report = CacheCollector(AzureCacheStore(container, layout), layout, _BENCH_POLICY).collect()
    assert report.complete and report.blobs_deleted == 0, report


def _collector(container: Any, layout: CacheLayout, doomed: list[str]) -> int:
    """The second phase, timed: the run that deletes what the first recorded."""
    from shared.pruning.cache_gc.collector import CacheCollector
    from shared.pruning.cache_gc.store import AzureCacheStore

    report = CacheCollector(AzureCacheStore(container, layout), layout, _BENCH_POLICY).collect()
    assert report.complete and report.blobs_deleted == len(doomed), report
    return report.blobs_deleted


def _list_and_batch(container: Any, layout: CacheLayout, doomed: list[str]) -> int:
    targets, batch, deleted = set(doomed), [], 0
    for blob in container.list_blobs(name_starts_with=layout.blobs_prefix):
        if blob.name in targets:
            batch.append(blob.name)
            if len(batch) == 256:
                deleted += sum(1 for r in container.delete_blobs(*batch) if r.status_code == 202)
                batch = []
    if batch:
        deleted += sum(1 for r in container.delete_blobs(*batch) if r.status_code == 202)
    return deleted


def _one_by_one(container: Any, layout: CacheLayout, doomed: list[str]) -> int:
    for name in doomed:
        container.delete_blob(name)
    return len(doomed)


def _bounded_lap(container: Any, layout: CacheLayout, doomed: list[str]) -> int:
    """The deleting lap as bounded runs (500 deletes each), 500 names a listing page."""
    from shared.pruning.cache_gc import store as store_module
    from shared.pruning.cache_gc.collector import CacheCollector

    saved, store_module.LIST_PAGE_SIZE = store_module.LIST_PAGE_SIZE, 500
    try:
        store = store_module.AzureCacheStore(container, layout)
        deleted = pages = runs = 0
        while True:
            report = CacheCollector(store, layout, _BENCH_POLICY, max_deletes=500).collect()
            assert report.complete and not report.resume_token_refused, report
            deleted, pages, runs = deleted + report.blobs_deleted, pages + report.listing_pages, runs + 1
            if report.stopped_after is None:
                break
        _LAP.update(runs=runs, pages=pages)
        assert deleted == len(doomed), (deleted, len(doomed))
        return deleted
    finally:
        store_module.LIST_PAGE_SIZE = saved


_LAP: dict[str, int] = {}


def azurite_part(blobs: int, pairs: int) -> None:
    print(
        f"== on Azurite: {blobs:,} blobs, {MANIFESTS} manifests, {blobs - blobs // 5:,} unreferenced "
        "(a fresh Azurite per run)"
    )
    counted: list[int] = []

    def collector() -> float:
        seconds, deleted = _timed_on_fresh_azurite(blobs, _collector, _record_candidates)
        counted.append(deleted)
        return seconds

    def batch() -> float:
        return _timed_on_fresh_azurite(blobs, _list_and_batch)[0]

    results = paired(batch, collector, pairs)
    single, _ = _timed_on_fresh_azurite(blobs, _one_by_one)
    floor = statistics.median(f for f, _ in results)
    collected = statistics.median(c for _, c in results)
    rate = counted[0] / collected
    print(f"collector                        : {collected:6.2f} s median ({rate:,.0f} deletions/s)")
    print(f"(a) list + batch delete, no logic: {floor:6.2f} s median")
    print(f"collector/(a): {ratios_line(results)} (goal <= 1.5)")
    print(
        f"(b) delete one by one            : {single:6.2f} s; "
        f"collector/(b) {collected / single:.2f} (goal < 1)"
    )
    lap, _ = _timed_on_fresh_azurite(blobs, _bounded_lap, _record_candidates)
    print(
        f"deleting lap, runs of <= 500 deletes: {lap:.2f} s in {_LAP['runs']} runs, ratio to (a) "
        f"{lap / floor:.2f}; {_LAP['pages']} listing pages of 500 (the container: {-(-blobs // 500)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["plan", "runs", "cycle", "azurite", "all"], default="all")
    parser.add_argument("--blobs", type=int, default=1_000_000, help="listing size for planning")
    parser.add_argument("--pairs", type=int, default=3, help="paired floor/collector runs per figure")
    parser.add_argument("--azurite-blobs", type=int, default=3000, help="blobs per Azurite run")
    parser.add_argument("--azurite-manifests", type=int, default=MANIFESTS, help="manifests on Azurite")
    parser.add_argument("--max-deletes", type=int, default=25_600, help="the bounded deleting run's bound")
    parser.add_argument("--max-seconds", type=float, default=60, help="the cycle's bound per run")
    parser.add_argument("--child", choices=["floor", "plan"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    _set_manifests(args.azurite_manifests)
    if args.child:
        print(json.dumps(_child(args.child, args.blobs)))
        return
    if args.part in ("plan", "all"):
        plan_part(args.blobs, args.pairs)
    if args.part in ("runs", "all"):
        runs_part(args.blobs, args.max_deletes, args.pairs)
    if args.part in ("cycle", "all"):
        cycle_part(args.blobs, args.max_seconds, TIMER_LIMIT)
    if args.part in ("azurite", "all"):
        azurite_part(args.azurite_blobs, args.pairs)


# host.json's functionTimeout for the prune_cache timer (shared.pruning.cache_gc.prune).
TIMER_LIMIT = 300.0


if __name__ == "__main__":
    main()

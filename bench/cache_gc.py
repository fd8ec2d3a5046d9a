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

Part 2, on Azurite (``bench.cache_gc_azurite``): the collector's deleting run against (a)
listing the blobs and batch-deleting the same unreferenced set with no logic and (b) deleting that
set one blob at a time, in rounds of three runs on fresh Azurite processes (the collector between
the floors, which swap places each round: one ratio per round against each), with the requests
each run made by kind and the CPU time of Azurite and of this process. Then a deleting lap of runs
bounded by 500 deletes, listing 500 names a page, against (a): the pages it listed.
``--part azurite-parallel`` (not in ``all``): floor (a) against the same batches sent
``--in-flight`` at a time, paired.
Goals: <= 1.5x (a) and, on Azurite, <= 1.5x (b): Azurite deletes a blob at the same cost in a
batch or alone (README, "Benchmark"); faster than (b) is a goal on Blob Storage. Never a pass/fail.

    .venv/bin/python -m bench.cache_gc [--part plan|runs|cycle|azurite|azurite-parallel|all]
        [--blobs 1000000] [--pairs 3] [--max-deletes 25600] [--max-seconds 60]
        [--azurite-blobs 3000] [--azurite-manifests 300] [--in-flight 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.cache_gc_azurite import MANIFESTS, azurite_part, parallel_part, set_manifests
from bench.cache_gc_data import (
    NAMES_PER_TARGET,
    NOW,
    POLICY,
    TARGETS,
    generate_manifests,
    listing_pages,
)
from bench.cache_gc_runs import cycle_part, paired, ratios_line, runs_part
from shared.pruning.cache_gc.layout import CacheLayout, parse_manifest
from shared.pruning.cache_gc.planner import MarkSweepPlanner

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", choices=["plan", "runs", "cycle", "azurite", "azurite-parallel", "all"], default="all"
    )
    parser.add_argument("--blobs", type=int, default=1_000_000, help="listing size for planning")
    parser.add_argument("--pairs", type=int, default=3, help="paired floor/collector runs per figure")
    parser.add_argument("--azurite-blobs", type=int, default=3000, help="blobs per Azurite run")
    parser.add_argument("--azurite-manifests", type=int, default=MANIFESTS, help="manifests on Azurite")
    parser.add_argument("--in-flight", type=int, default=4, help="azurite-parallel: batches in flight")
    parser.add_argument("--max-deletes", type=int, default=25_600, help="the bounded deleting run's bound")
    parser.add_argument("--max-seconds", type=float, default=60, help="the cycle's bound per run")
    parser.add_argument("--child", choices=["floor", "plan"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_manifests(args.azurite_manifests)
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
    if args.part == "azurite-parallel":
        parallel_part(args.azurite_blobs, args.pairs, args.in_flight)


# host.json's functionTimeout for the prune_cache timer (shared.pruning.cache_gc.prune).
TIMER_LIMIT = 300.0


if __name__ == "__main__":
    main()

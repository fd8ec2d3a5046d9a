"""Part 2 of ``bench.cache_gc``: the collector's deleting run on Azurite, against two floors.

A few thousand blobs, a fifth referenced by a few hundred manifests (``set_manifests``), the rest
unreferenced; a fresh Azurite process per run (its delete cost grows with the container, and its
background sweep stalls after tens of thousands of deletions). Deletion is two-phase, so an
untimed first run records the candidates and the timed run is the one that deletes them. The
floors delete the same unreferenced set with no logic: (a) listing the blobs and batch-deleting
them, (b) deleting them one request at a time.

Rounds of three runs, the collector in the middle: (a), collector, (b), then (b), collector, (a),
alternating; so the collector runs back to back with each floor, in alternating order, and each
round gives one ratio against each floor (min / median / max over the rounds). Besides the wall
time, every timed run counts its requests by kind (method and target, through a wrapped SDK
transport: count and seconds spent in the transport, summed over threads), this process's CPU
time and the Azurite process's CPU time (``/proc/<pid>/stat``): Azurite is one Node.js process,
so its CPU time is what the service did for the run, without the time it waited for a core
(it still varies under load, less than the wall time).
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.cache_gc_data import digest, manifest_bytes
from bench.cache_gc_runs import ratios_line
from shared.pruning.cache_gc.layout import CacheLayout
from shared.pruning.cache_gc.planner import Policy

MANIFESTS = 300
_BENCH_POLICY = Policy(grace=timedelta(0))  # the blobs are seconds old; settle 0 too


def set_manifests(count: int) -> None:
    global MANIFESTS
    MANIFESTS = count


@dataclass
class Run:
    """One timed run: wall seconds, CPU seconds (this process, Azurite), requests by kind."""

    seconds: float
    client_cpu: float
    azurite_cpu: float
    deleted: int
    requests: dict[str, tuple[int, float]] = field(default_factory=dict)


def request_kind(method: str, url: str) -> str:
    """``POST batch``, ``GET list blobs``, ``GET manifest``, ``PUT candidates``, ``DELETE blob``..."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if query.get("comp") == ["batch"]:
        return f"{method} batch"
    if query.get("comp") == ["list"]:
        prefix = query.get("prefix", [""])[0]
        return f"{method} list " + ("manifests" if "manifests/" in prefix else "blobs")
    path = parts.path
    target = "candidates" if "/slipway-gc/" in path else "manifest" if "/manifests/" in path else "blob"
    return f"{method} {target}"


def _counting_transport() -> tuple[Any, dict[str, list[float]]]:
    """An SDK transport that times every request it sends, by ``request_kind``."""
    from azure.core.pipeline.transport import RequestsTransport

    counts: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    lock = threading.Lock()

    class CountingTransport(RequestsTransport):  # type: ignore[misc]
        def send(self, request: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().send(request, **kwargs)
            finally:
                spent = time.perf_counter() - started
                with lock:
                    entry = counts[request_kind(request.method, request.url)]
                    entry[0] += 1
                    entry[1] += spent

    return CountingTransport(), counts


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (proc(5): fields 14 and 15 of ``stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


RunFn = Callable[[Any, CacheLayout, list[str]], int]


Prepare = Callable[[Any, CacheLayout], None]


def on_fresh_azurite(blobs: int, run: RunFn, prepare: Prepare | None = None) -> Run:
    """Seed a fresh Azurite, ``prepare`` (untimed), then time ``run`` through a counting client."""
    from azure.storage.blob import ContainerClient

    from tests.support.azurite import start_azurite

    server = start_azurite()
    try:
        seeding = server.new_container("bench")
        layout = CacheLayout()
        doomed = _seed(seeding, layout, blobs)
        if prepare is not None:
            prepare(seeding, layout)
        transport, counts = _counting_transport()
        container = ContainerClient.from_connection_string(
            server.connection_string, seeding.container_name, transport=transport
        )
        with container:
            azurite_before, client_before = _cpu_seconds(server.process.pid), time.process_time()
            started = time.perf_counter()
            deleted = run(container, layout, doomed)
            seconds = time.perf_counter() - started
            client_cpu = time.process_time() - client_before
            azurite_cpu = _cpu_seconds(server.process.pid) - azurite_before
        left = sum(1 for _ in seeding.list_blobs(name_starts_with=layout.blobs_prefix))
        assert left == blobs - len(doomed), (left, blobs, len(doomed))
        requests = {kind: (int(n), s) for kind, (n, s) in counts.items()}
        return Run(seconds, client_cpu, azurite_cpu, deleted, requests)
    finally:
        server.stop()


def record_candidates(container: Any, layout: CacheLayout) -> None:
    """The first phase (untimed): a run that records the unreferenced blobs and deletes nothing."""
    from shared.pruning.cache_gc.collector import CacheCollector
    from shared.pruning.cache_gc.store import AzureCacheStore

    report = CacheCollector(AzureCacheStore(container, layout), layout, _BENCH_POLICY).collect()
    assert report.complete and report.blobs_deleted == 0, report


def collector(container: Any, layout: CacheLayout, doomed: list[str]) -> int:
    """The second phase, timed: the run that deletes what the first recorded."""
    from shared.pruning.cache_gc.collector import CacheCollector
    from shared.pruning.cache_gc.store import AzureCacheStore

    report = CacheCollector(AzureCacheStore(container, layout), layout, _BENCH_POLICY).collect()
    assert report.complete and report.blobs_deleted == len(doomed), report
    return report.blobs_deleted


def list_and_batch(container: Any, layout: CacheLayout, doomed: list[str]) -> int:
    """Floor (a): one listing, then the unreferenced set in batches of 256, no logic."""
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


def one_by_one(container: Any, layout: CacheLayout, doomed: list[str]) -> int:
    """Floor (b): one Delete Blob request per blob, no listing, no logic."""
    for name in doomed:
        container.delete_blob(name)
    return len(doomed)


_LAP: dict[str, int] = {}


def bounded_lap(container: Any, layout: CacheLayout, doomed: list[str]) -> int:
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


def rounds(
    first: Callable[[], Run], subject: Callable[[], Run], second: Callable[[], Run], count: int
) -> list[tuple[Run, Run, Run]]:
    """(first, subject, second) of each round: the subject between the two floors, which swap
    places from round to round, so each floor runs back to back with it, in alternating order."""
    out = []
    for index in range(count):
        if index % 2:
            b = second()
            s = subject()
            a = first()
        else:
            a = first()
            s = subject()
            b = second()
        out.append((a, s, b))
    return out


def _requests_line(run: Run) -> str:
    ordered = sorted(run.requests.items(), key=lambda item: -item[1][1])
    return "; ".join(f"{kind} {n:,} ({seconds:.1f} s)" for kind, (n, seconds) in ordered)


def azurite_part(blobs: int, pairs: int) -> None:
    unreferenced = blobs - blobs // 5
    print(
        f"== on Azurite: {blobs:,} blobs, {MANIFESTS} manifests, {unreferenced:,} unreferenced "
        "(a fresh Azurite per run; rounds (a) collector (b), then (b) collector (a), ...)"
    )
    results = rounds(
        lambda: on_fresh_azurite(blobs, list_and_batch),
        lambda: on_fresh_azurite(blobs, collector, record_candidates),
        lambda: on_fresh_azurite(blobs, one_by_one),
        pairs,
    )
    sides = {"collector": 1, "(a) list + batch delete, no logic": 0, "(b) delete one by one": 2}
    for label, side in sides.items():
        runs = [r[side] for r in results]
        wall = statistics.median(r.seconds for r in runs)
        azurite = statistics.median(r.azurite_cpu for r in runs)
        client = statistics.median(r.client_cpu for r in runs)
        print(
            f"{label:33}: {wall:6.2f} s median ({unreferenced / wall:,.0f} deletions/s); CPU median: "
            f"Azurite {azurite:.2f} s ({azurite / unreferenced * 1000:.1f} ms a deletion), "
            f"this process {client:.2f} s"
        )
        print(f"{'':35}requests: {_requests_line(runs[0])}")
    # (b) is no cheaper than (a) for Azurite (its batch handler runs each sub-request in turn, as a
    # request of its own): on Azurite the goal against (b) is the goal against (a). Faster than
    # one by one is a goal for Blob Storage, where a batch saves 255 round trips in 256.
    for label, side, goal in (("(a)", 0, "goal <= 1.5"), ("(b)", 2, "goal on Azurite <= 1.5")):
        walls = [(r[side].seconds, r[1].seconds) for r in results]
        cpus = [(r[side].azurite_cpu, r[1].azurite_cpu) for r in results]
        print(f"collector/{label} wall: {ratios_line(walls)} ({goal})")
        print(f"collector/{label} Azurite CPU: {ratios_line(cpus)}")
    lap = on_fresh_azurite(blobs, bounded_lap, record_candidates)
    floor = statistics.median(r[0].seconds for r in results)
    print(
        f"deleting lap, runs of <= 500 deletes: {lap.seconds:.2f} s in {_LAP['runs']} runs, ratio to (a) "
        f"{lap.seconds / floor:.2f} (not paired); {_LAP['pages']} listing pages of 500 "
        f"(the container: {-(-blobs // 500)})"
    )


def batches_in_flight(workers: int) -> RunFn:
    """Floor (a) with ``workers`` batch requests in flight at once (the same batches of 256)."""

    def run(container: Any, layout: CacheLayout, doomed: list[str]) -> int:
        targets = set(doomed)
        names = [
            b.name for b in container.list_blobs(name_starts_with=layout.blobs_prefix) if b.name in targets
        ]
        batches = [names[i : i + 256] for i in range(0, len(names), 256)]

        def send(batch: list[str]) -> int:
            return sum(1 for r in container.delete_blobs(*batch) if r.status_code == 202)

        with ThreadPoolExecutor(workers) as pool:
            return sum(pool.map(send, batches))

    return run


def parallel_part(blobs: int, pairs: int, workers: int) -> None:
    """Does Azurite delete faster with several batch requests in flight? Floor (a) as is against
    the same batches sent ``workers`` at a time, paired (alternating order, fresh Azurite each)."""
    print(f"== on Azurite: {blobs:,} blobs, batches of 256 one at a time against {workers} in flight")
    results = []
    for index in range(pairs):
        sides = [
            lambda: on_fresh_azurite(blobs, list_and_batch),
            lambda: on_fresh_azurite(blobs, batches_in_flight(workers)),
        ]
        if index % 2:
            concurrent, serial = sides[1](), sides[0]()
        else:
            serial, concurrent = sides[0](), sides[1]()
        results.append((serial, concurrent))
        print(
            f"pair {index + 1}: one in flight {serial.seconds:.2f} s (Azurite CPU "
            f"{serial.azurite_cpu:.2f} s), {workers} in flight {concurrent.seconds:.2f} s "
            f"(Azurite CPU {concurrent.azurite_cpu:.2f} s)"
        )
    walls = [(s.seconds, c.seconds) for s, c in results]
    cpus = [(s.azurite_cpu, c.azurite_cpu) for s, c in results]
    print(f"{workers} in flight / one, wall: {ratios_line(walls)}")
    print(f"{workers} in flight / one, Azurite CPU: {ratios_line(cpus)}")

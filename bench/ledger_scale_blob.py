"""The Blob ledger as history grows, on Azurite: ``python -m bench.ledger_scale --store blob``.

The same operations as the folder part (``bench.ledger_scale``) on one Azurite holding a
container per size, its settled history seeded straight into Azurite's files
(``bench.azurite_seed``), so 1k / 10k / 50k records take seconds to set up rather than hours.

Azurite is not Blob Storage: its metadata store scans every blob it holds for each lookup, so
each request costs time proportional to the whole process's blobs (much the same for every size
here, since all sizes share the process), and a listing also sorts whatever matches its prefix
in the container. So each operation is timed against floors measured on the same container in
the same round: ``head`` (one ``get_blob_properties`` of a record), ``get`` (one download of a
record), ``list`` (one listing of the ``active/`` prefix, 20 names) and ``hours`` (one listing of
the hour blobs, ``index/hours/`` without a delimiter, ~340 names at every size here: the request
a page and an expiry pass begin with). Two ratios per operation and size: against ``head``, and
against its own request mix (the requests it made, by kind, each at its floor's time of that
round; ``/mix`` of an expiry pass, one ``hours``, is ~1 by construction). The claim is about
their growth from the smallest to the largest size (flat is 1.0), paired round by round, with
the requests each operation made (flat is the point: what Blob Storage bills and what its
latency multiplies). Two references: the full metadata listing that every operation made before
the index, and the roll-up of the entries by ``delimiter=/`` that gave a page its hours before
the hour blobs (``hour roll-up``: Azurite sorts every entry under the prefix to make it).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.azurite_seed import SeedBlob, check, seed
from bench.ledger_scale import ACTIVE, CONFIG, NOW, _operations, _peak_mib, _record, _settled_records
from shared.model.config import parse_config
from shared.platform.ledger import BlobLedger, record_name
from shared.platform.ledger.blob_index import CREATED_PREFIX, HOURS_PREFIX, blob_hour, hour_blob_name
from shared.platform.ledger.paging import hour

FLOORS = ("head", "get", "list", "hours")


class RequestCounter:
    """A raw request hook: counts the requests a client sends, by kind (``_kind``)."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()

    def __call__(self, request: Any) -> None:
        self.kinds[_kind(request.http_request.method, request.http_request.url)] += 1


def _kind(method: str, url: str) -> str:
    """head (properties), get (a download), hours (the listing of ``index/hours/``), walk (a
    listing with a delimiter), list (any other listing), write (anything else)."""
    if method == "GET":
        if "comp=list" not in url:
            return "get"
        if "delimiter=" in url:
            return "walk"
        return "hours" if f"prefix={quote(HOURS_PREFIX, safe='')}" in url else "list"
    return "head" if method == "HEAD" else "write"


def _seed_blobs(
    ledger: BlobLedger, container: str, size: int, record_kb: int, hours: set[str]
) -> Iterator[SeedBlob]:
    """What ``BlobLedger.create`` leaves for each settled record: its hour's blob (the first
    record of an hour not in ``hours``, which is updated), its hour entry, and the record with
    its summary as metadata (the write mark left out: nothing reads it back here)."""
    from shared.platform.ledger.blob import _metadata

    for record in _settled_records(size, record_kb):
        if (at_hour := hour(record.created_at)) not in hours:
            hours.add(at_hour)
            yield SeedBlob(container, hour_blob_name(at_hour))
        yield SeedBlob(container, ledger._index._entry(record.created_at, record.request_id))
        yield SeedBlob(
            container, record_name(record.request_id), record.to_json(), _metadata(record), "application/json"
        )


@dataclass
class Sized:
    ledger: BlobLedger
    counter: RequestCounter
    sample: str  # a seeded record's blob name, for the floors


@contextmanager
def _blob_ledgers(sizes: list[int], record_kb: int) -> Iterator[dict[int, Sized]]:
    """A container per size on one Azurite: the running runs written through ``BlobLedger.create``,
    then Azurite stopped, the settled history added to its files and Azurite started again."""
    from azure.storage.blob import ContainerClient

    from tests.support.azurite import start_azurite

    with tempfile.TemporaryDirectory(prefix="ledger-azurite-") as folder:
        location = Path(folder)
        server = start_azurite(location=location)
        names: dict[int, str] = {}
        hours: dict[int, set[str]] = {}  # per size: the hour blobs the creates wrote
        try:
            for size in sizes:
                container = server.new_container(f"ledger{size}")
                ledger = BlobLedger(container)
                list(ledger.list_active())  # an empty container: its index starts out built
                list(ledger.list(limit=1))
                for n in range(ACTIVE):
                    ledger.create(
                        _record(f"app.live{n:02d}", NOW - timedelta(minutes=n), record_kb, active=True)
                    )
                names[size] = container.container_name
                hours[size] = {
                    at_hour
                    for b in container.list_blobs(name_starts_with=HOURS_PREFIX)
                    if (at_hour := blob_hour(b.name)) is not None
                }
        finally:
            server.stop()  # SIGTERM: Azurite saves its database
        started = time.perf_counter()
        blobs = (
            b for size in sizes for b in _seed_blobs(ledger, names[size], size, record_kb, set(hours[size]))
        )
        count = seed(location, blobs)
        print(f"  seeded {count:,} blobs ({sum(sizes):,} records) in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        server = start_azurite(location=location, timeout=600)
        try:
            print(f"  Azurite loaded them in {time.perf_counter() - started:.0f} s", flush=True)
            sized: dict[int, Sized] = {}
            for size in sizes:
                counter = RequestCounter()
                client = ContainerClient.from_connection_string(
                    server.connection_string, names[size], raw_request_hook=counter
                )
                seeded = _seed_blobs(ledger, names[size], size, record_kb, set(hours[size]))
                last = next(b for b in seeded if b.name.startswith("runs/"))
                check(client, last)
                listed = sum(1 for _ in client.list_blobs(name_starts_with=HOURS_PREFIX))
                print(f"  {size:,} records: {listed} hour blobs")
                sized[size] = Sized(BlobLedger(client), counter, last.name)
            yield sized
        finally:
            server.stop()


def _floors(item: Sized) -> dict[str, Callable[[], object]]:
    container = item.ledger.container_client
    return {
        "head": lambda: container.get_blob_client(item.sample).get_blob_properties(),
        "get": lambda: container.download_blob(item.sample).readall(),
        "list": lambda: list(container.list_blobs(name_starts_with="active/")),
        "hours": lambda: list(container.list_blobs(name_starts_with=HOURS_PREFIX)),
    }


@dataclass
class Result:
    sizes: list[int]
    ms: dict[int, dict[str, list[float]]]  # size -> operation or floor -> one time per round
    requests: dict[int, dict[str, Counter[str]]]  # size -> operation -> requests of one call, by kind
    peak_mib: dict[int, dict[str, float]]


def measure_blob(sizes: list[int], repeats: int, record_kb: int) -> Result:
    """Every floor and operation on every size in turn, ``repeats`` rounds (after one untimed
    round: the first call reads the index's version marks)."""
    config = parse_config(CONFIG, source="bench")
    with _blob_ledgers(sizes, record_kb) as sized:
        actions: dict[int, dict[str, Callable[[], object]]] = {}
        for size, item in sized.items():
            ledger = item.ledger
            actions[size] = {
                **_floors(item),
                **_operations(ledger, config),
                "full listing": lambda ledger=ledger: list(  # type: ignore[misc]
                    ledger.list_summaries(since=datetime.min.replace(tzinfo=UTC))
                ),
                "hour roll-up": lambda container=ledger.container_client: list(  # type: ignore[misc]
                    container.walk_blobs(name_starts_with=CREATED_PREFIX, delimiter="/")
                ),
            }
        result = Result(sizes, {s: {n: [] for n in actions[s]} for s in sizes}, {s: {} for s in sizes}, {})
        began = time.perf_counter()
        for round_ in range(repeats + 1):
            print(f"  round {round_}/{repeats} at {time.perf_counter() - began:.0f} s", flush=True)
            for size in sizes:
                counter = sized[size].counter
                for name, action in actions[size].items():
                    before = Counter(counter.kinds)
                    started = time.perf_counter()
                    action()
                    elapsed = time.perf_counter() - started
                    if round_:
                        result.ms[size][name].append(elapsed * 1e3)
                        result.requests[size][name] = counter.kinds - before
        result.peak_mib = {
            s: {n: _peak_mib(a) for n, a in actions[s].items() if n not in FLOORS} for s in sizes
        }
        return result


def _mix(result: Result, size: int, name: str, round_: int) -> float:
    """The operation's requests, each at its floor's time of that round (writes at ``head``'s)."""
    floors = {kind: result.ms[size][kind][round_] for kind in FLOORS}
    return sum(n * floors.get(kind, floors["head"]) for kind, n in result.requests[size][name].items())


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f}"


def report(result: Result) -> None:
    sizes, first, last = result.sizes, result.sizes[0], result.sizes[-1]
    rounds = range(len(result.ms[first]["head"]))
    for size in sizes:
        floors = ", ".join(f"{kind} {statistics.median(result.ms[size][kind]):.1f} ms" for kind in FLOORS)
        print(f"{size:>7} records: floors {floors}")
        for name, requests in result.requests[size].items():
            if name in FLOORS:
                continue
            ms = statistics.median(result.ms[size][name])
            by_head = statistics.median(result.ms[size][name][r] / result.ms[size]["head"][r] for r in rounds)
            by_mix = statistics.median(result.ms[size][name][r] / _mix(result, size, name, r) for r in rounds)
            kinds = " ".join(f"{n} {kind}" for kind, n in sorted(requests.items()))
            print(
                f"    {name:<13} {ms:8.1f} ms  {sum(requests.values()):>3} requests ({kinds}); "
                f"/head {by_head:6.2f}, /mix {by_mix:4.2f}; {result.peak_mib[size][name]:.1f} MiB"
            )
    growth = {k: _spread([result.ms[last][k][r] / result.ms[first][k][r] for r in rounds]) for k in FLOORS}
    print(f"floors at {last} vs {first} records (min/median/max of rounds): ", end="")
    print(", ".join(f"{kind} {spread}" for kind, spread in growth.items()))
    cells = []
    for name in result.requests[first]:
        if name in FLOORS:
            continue
        raw = [result.ms[last][name][r] / result.ms[first][name][r] for r in rounds]
        head_growth = [
            (result.ms[last][name][r] / result.ms[last]["head"][r])
            / (result.ms[first][name][r] / result.ms[first]["head"][r])
            for r in rounds
        ]
        mix_growth = [
            (result.ms[last][name][r] / _mix(result, last, name, r))
            / (result.ms[first][name][r] / _mix(result, first, name, r))
            for r in rounds
        ]
        counts = [sum(result.requests[size][name].values()) for size in (first, last)]
        cells.append(
            f"  {name}: time {_spread(raw)}, /head {_spread(head_growth)}, /mix {_spread(mix_growth)}, "
            f"requests {counts[0]} -> {counts[1]}"
        )
    print(f"ratio at {last} vs {first} records (min/median/max of rounds):")
    print("\n".join(cells))

"""The folder ledger as history grows: per-operation cost at 1k, 10k and 50k records.

Budgets (``check_budget`` then ``claim_standing``, as every dispatch under a limit does), a
reconcile pass, a ``runs list`` page (the first, and one further back through ``--before``) and
an expiry pass (retention 30 days) used to read every record; they now read the summary index,
which holds the active runs apart from the settled history. Each size is its own ledger of
settled records of ~``--record-kb`` KB (a task YAML and history, like a real one) over
the last 14 days (inside the budgets' look-back, so none is skipped by age), plus the same 20
running runs. The ratio is each size's median against the smallest size's, measured in the same
run (the sizes are timed in rotation); flat is 1.0. Peak memory (tracemalloc) is of one call.
Never a pass/fail.

The Blob part (``--store blob``, ``bench.ledger_scale_blob``) does the same on Azurite, against
floors measured on the same container, with records of 1 KB by default (a budget check
downloads no record and a page downloads 50 whatever their size).

    .venv/bin/python -m bench.ledger_scale [--sizes 1000 10000 50000] [--repeats 20]
    .venv/bin/python -m bench.ledger_scale --store blob [--sizes 1000 10000 50000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.acr.run_backend import RunHandle
from shared.dispatch.budgets import check_budget, claim_standing
from shared.model.config import SlipwayConfig, parse_config
from shared.platform.ledger import (
    FolderLedger,
    Ledger,
    LedgerRecord,
    RecordSummary,
    RunStatus,
    record_name,
)
from shared.runs.reconcile import Reconciler

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ACTIVE = 20
CONFIG = """
registry: example.azurecr.io
cache:
  account_url: https://examplecache.blob.core.windows.net
  container: buildkit-cache
dispatch:
  quiet_period: 0s
  max_concurrent_runs: 1000
targets:
  - name: app
    repo: https://github.com/example/app
    image: example/app
    branches: ["**"]
"""


class RunningReader:
    """Every run is still running: a pass reads each followed record and writes nothing."""

    name = "acr"

    def get(self, run_id: str) -> RunHandle:
        return RunHandle(run_id, "Running", "acr")


def _record(request_id: str, created_at: datetime, record_kb: int, *, active: bool) -> LedgerRecord:
    return LedgerRecord(
        request_id=request_id,
        target="app",
        status=RunStatus.DISPATCHED,
        created_at=created_at,
        updated_at=created_at + timedelta(minutes=5),
        correlation_id="bench",
        payload_hash="0" * 64,
        request={"id": request_id, "target": "app", "source": {"ref": "refs/heads/main"}},
        backend="acr",
        run_id=f"run-{request_id}",
        run_status="Running" if active else "Succeeded",
        following=active,
        task_yaml="# " + "x" * (record_kb * 1024) + "\n",
    )


def _grow(ledger: FolderLedger, stop: int, record_kb: int) -> None:
    """Settled records ``0``..``stop``: written as the ledger writes them, without the per-write
    fsync (the benchmark measures reads, not how fast a disk syncs 50k files)."""
    for record in _settled_records(stop, record_kb):
        path = ledger.root / record_name(record.request_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(record.to_json())
        ledger._write_entry(RecordSummary.of(record))


def _peak_mib(action: Callable[[], object]) -> float:
    tracemalloc.start()
    action()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def _operations(ledger: Ledger, config: SlipwayConfig) -> dict[str, Callable[[], object]]:
    target = config.targets[0]
    claim = RecordSummary("app.claim", "app", RunStatus.DISPATCHING, created_at=NOW, updated_at=NOW)
    reconciler = Reconciler(ledger=ledger, backend=RunningReader(), clock=lambda: NOW)
    cursor = (NOW - timedelta(days=7), "app.~")

    def budget() -> object:
        check_budget(ledger, config, target, now=NOW)
        return claim_standing(ledger, config, target, claim, now=NOW)

    return {
        "budget": budget,
        "reconcile": reconciler.run,
        "list page": lambda: list(ledger.list(limit=50)),
        "list --before": lambda: list(ledger.list(limit=50, before=cursor)),
        "expire": lambda: ledger.expire(before=NOW - timedelta(days=30)),
    }


def _settled_records(stop: int, record_kb: int) -> Iterator[LedgerRecord]:
    span = timedelta(days=14).total_seconds()
    for n in range(stop):
        created = NOW - timedelta(seconds=span * ((n * 7919) % stop) / stop)
        yield _record(f"app.h{n:06d}", created, record_kb, active=False)


@contextmanager
def _folder_ledgers(sizes: list[int], record_kb: int) -> Iterator[dict[int, Ledger]]:
    with tempfile.TemporaryDirectory() as tmp:
        ledgers: dict[int, Ledger] = {}
        for size in sizes:
            ledger = FolderLedger(Path(tmp) / f"ledger{size}")
            for n in range(ACTIVE):
                ledger.create(_record(f"app.live{n:02d}", NOW - timedelta(minutes=n), record_kb, active=True))
            _grow(ledger, size, record_kb)
            ledgers[size] = ledger
        yield ledgers


def measure(
    sizes: list[int], repeats: int, record_kb: int
) -> list[tuple[int, dict[str, tuple[float, float]]]]:
    """One folder ledger per size, timed in rotation (each repeat times every operation on every
    size in turn), so a slow moment of a shared machine lands on all sizes alike. Per operation:
    median ms, peak MiB of one call."""
    config = parse_config(CONFIG, source="bench")
    with _folder_ledgers(sizes, record_kb) as ledgers:
        ops = {size: _operations(ledger, config) for size, ledger in ledgers.items()}
        samples: dict[int, dict[str, list[float]]] = {
            size: {name: [] for name in ops[size]} for size in sizes
        }
        for _ in range(repeats):
            for size in sizes:
                for name, op in ops[size].items():
                    started = time.perf_counter()
                    op()
                    samples[size][name].append(time.perf_counter() - started)
        return [
            (
                size,
                {
                    name: (statistics.median(samples[size][name]) * 1e3, _peak_mib(op))
                    for name, op in ops[size].items()
                },
            )
            for size in sizes
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--repeats", type=int, default=None, help="rounds of every operation (20; Blob 5)")
    parser.add_argument(
        "--record-kb", type=int, default=None, help="size of each settled record (36; Blob 1)"
    )
    parser.add_argument("--store", choices=["folder", "blob"], default="folder")
    args = parser.parse_args()
    record_kb = args.record_kb or (1 if args.store == "blob" else 36)
    print(f"{args.store} ledger, records of {record_kb} KB, {ACTIVE} running runs", flush=True)
    if args.store == "blob":
        from bench.ledger_scale_blob import measure_blob, report

        report(measure_blob(args.sizes, args.repeats or 5, record_kb))
        return
    rows = measure(args.sizes, args.repeats or 20, record_kb)
    base = rows[0][1]
    for size, ops in rows:
        cells = ", ".join(
            f"{name} {ms:7.2f} ms (x{ms / base[name][0]:.2f}, {mib:.1f} MiB)"
            for name, (ms, mib) in ops.items()
        )
        print(f"{size:>7} records: {cells}")
    last_size, last = rows[-1]
    ratios = ", ".join(f"{name} {last[name][0] / base[name][0]:.2f}" for name in last)
    print(f"ratio at {last_size} vs {rows[0][0]} records: {ratios}")


if __name__ == "__main__":
    main()

"""The benchmarks still run (tiny sizes, no timing asserted: machines are too noisy for that)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("module", "arguments", "expected"),
    [
        ("bench.ingest", ["--count", "120"], "ratio handler / floor"),
        (
            "bench.coalesce",
            ["--pushes", "20", "--queued", "100", "300", "--calls", "10"],
            "ratio look-ahead / dispatch",
        ),
        ("bench.coldstart", ["--runs", "3"], "ratio app / azure.functions"),
        ("bench.cache_gc", ["--part", "plan", "--blobs", "2000", "--pairs", "1"], "collector/floor ratio"),
        (
            "bench.cache_gc",
            ["--part", "runs", "--blobs", "2000", "--pairs", "1", "--max-deletes", "300"],
            "deleting run, <= 300",
        ),
        ("bench.cache_gc", ["--part", "cycle", "--blobs", "60000", "--max-seconds", "30"], "deleting lap"),
        (
            "bench.cache_gc",
            ["--part", "azurite", "--azurite-blobs", "300", "--azurite-manifests", "20", "--pairs", "1"],
            "deleting lap, runs of",
        ),
        (
            "bench.cache_gc",
            ["--part", "azurite-parallel", "--azurite-blobs", "700", "--pairs", "1", "--in-flight", "2"],
            "2 in flight / one, wall",
        ),
        ("bench.render", ["--renders", "5", "--rounds", "1"], "ratio pure / C"),
        ("bench.queue_scale", ["--sizes", "200", "1000", "--repeats", "5"], "ratio at 1000 vs 200 queued"),
        ("bench.burst", ["--pushes", "8", "--clients", "2", "--timeout", "120"], "ratio serve / floor"),
        (
            "bench.retention_scale",
            ["--sizes", "100", "1000", "--repeats", "1", "--runs", "1"],
            "ratio per manifest at",
        ),
        (
            "bench.retention_pass",
            ["--sizes", "100", "300", "--per-repository", "100"],
            "ratio pass/floor at the largest vs the smallest size",
        ),
        (
            "bench.ledger_scale",
            ["--sizes", "100", "400", "--repeats", "2", "--record-kb", "2"],
            "ratio at 400 vs 100 records",
        ),
        (
            "bench.ledger_scale",
            ["--store", "blob", "--sizes", "20", "60", "--repeats", "1"],
            "ratio at 60 vs 20 records",
        ),
    ],
)
def test_benchmark_runs_and_prints_its_ratio(module: str, arguments: list[str], expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout, done.stdout

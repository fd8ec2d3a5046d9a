"""Cold start: ``import function_app`` in a fresh interpreter against ``import azure.functions``.

The worker imports function_app.py on every cold start; everything Slipway adds on top of the
Functions library itself is paid there. Heavy SDKs (ACR, Service Bus, Storage, identity, YAML)
must be imported lazily. Goal: ratio <= 1.5. Prints medians and the ratio; never a pass/fail.

    .venv/bin/python -m bench.coldstart [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _time_import(statement: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=ROOT, check=True)
    return time.perf_counter() - started


def measure(runs: int) -> tuple[float, float, float]:
    baseline: list[float] = []
    app: list[float] = []
    empty: list[float] = []
    for _ in range(runs):  # interleaved, so drift on a noisy machine hits both alike
        empty.append(_time_import("pass"))
        baseline.append(_time_import("import azure.functions"))
        app.append(_time_import("import function_app"))
    return statistics.median(empty), statistics.median(baseline), statistics.median(app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    empty, baseline, app = measure(args.runs)
    print(f"interpreter alone        : {empty * 1000:7.1f} ms (median of {args.runs})")
    print(f"import azure.functions   : {baseline * 1000:7.1f} ms")
    print(f"import function_app      : {app * 1000:7.1f} ms")
    print(f"ratio app / azure.functions: {app / baseline:.2f}  (goal <= 1.5)")
    print(f"ratio excluding the interpreter: {(app - empty) / (baseline - empty):.2f}")


if __name__ == "__main__":
    main()

"""Cold start: ``import function_app`` in a fresh interpreter against ``import azure.functions``.

The worker imports function_app.py on every cold start; everything Slipway adds on top of the
Functions library itself is paid there. Heavy SDKs (ACR, Service Bus, Storage, identity, YAML)
must be imported lazily. Goal: ratio <= 1.5. Prints medians and the ratio; never a pass/fail.

A cold start also answers its first request, which pays every lazy import at once. So the
benchmark times that too, in fresh interpreters: ``import function_app`` plus one signed GitHub
push through the registered function into the local queue (configuration loaded, models built,
the queue's files created), against ``import azure.functions`` plus the least any receiver must
do with the same request (HMAC-SHA256 and ``json.loads``).

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


# The first request, as a fresh worker answers it. {dir} is a fresh folder per run.
_FIRST_PUSH = """
import hashlib, hmac, os, sys
body = open({sample!r}, "rb").read()
signature = "sha256=" + hmac.new(b"bench-secret", body, hashlib.sha256).hexdigest()
os.environ.update(GITHUB_WEBHOOK_SECRET="bench-secret", SLIPWAY_CONFIG={config!r}, SLIPWAY_STATE_DIR={dir!r})
import azure.functions as func
import function_app
from handlers import webhooks
request = func.HttpRequest("POST", "http://localhost/api/hooks/github", body=body, headers={{
    "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": "cold-1",
    "X-Hub-Signature-256": signature}})
response = webhooks.github_webhook.build().get_user_function()(request)
sys.exit(0 if response.status_code == 202 else 1)
"""
_FIRST_FLOOR = """
import hashlib, hmac, json
body = open({sample!r}, "rb").read()
signature = "sha256=" + hmac.new(b"bench-secret", body, hashlib.sha256).hexdigest()
import azure.functions as func
digest = "sha256=" + hmac.digest(b"bench-secret", body, "sha256").hex()
assert hmac.compare_digest(digest, signature)
json.loads(body)
"""
SAMPLE = ROOT / "tests" / "fixtures" / "github" / "push-branch-signed-aspnet.json"
CONFIG = ROOT / "examples" / "slipway.yaml"


def measure_first_request(runs: int) -> tuple[float, float]:
    """Medians: (floor: azure.functions + HMAC + json.loads, app: function_app + the first push)."""
    import tempfile

    floor: list[float] = []
    app: list[float] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as state:
            floor.append(_time_import(_FIRST_FLOOR.format(sample=str(SAMPLE))))
            app.append(_time_import(_FIRST_PUSH.format(sample=str(SAMPLE), config=str(CONFIG), dir=state)))
    return statistics.median(floor), statistics.median(app)


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
    floor, first = measure_first_request(args.runs)
    print(f"azure.functions + HMAC + json.loads of one push : {floor * 1000:7.1f} ms")
    print(f"function_app + its first push into the queue    : {first * 1000:7.1f} ms")
    print(f"ratio first request app / floor: {first / floor:.2f}")


if __name__ == "__main__":
    main()

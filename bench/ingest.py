"""Ingest throughput: signed GitHub pushes through the HTTP handler into the local queue.

Floor, measured in the same run on the same bodies: HMAC-SHA256 + ``json.loads``, the least
any receiver must do. The three measurements are interleaved in rounds, so a noisy neighbour
slows them alike. Prints webhooks/s, p50 and p99 latency, and the ratio of the handler's cost to
the floor's: on medians (a typical delivery; the goal, <= 3) and on means (which also count the
rare multi-millisecond I/O stalls of a shared disk). Never a pass/fail.

    .venv/bin/python -m bench.ingest [--count 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import statistics
import tempfile
import time
from pathlib import Path

import azure.functions as func

from shared.config import SlipwayConfig
from shared.queue.local import LocalQueue
from shared.runtime import Runtime, set_runtime

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "fixtures" / "github" / "push-branch-signed-aspnet.json"
SECRET = b"bench-secret"


def _bodies(count: int) -> list[bytes]:
    """Distinct pushes (distinct commits) of the real sample's size and shape."""
    payload = json.loads(SAMPLE.read_bytes())
    bodies = []
    for i in range(count):
        payload["after"] = hashlib.sha1(str(i).encode()).hexdigest()  # noqa: S324 - a fake commit id
        payload["head_commit"]["id"] = payload["after"]
        bodies.append(json.dumps(payload).encode())
    return bodies


def _floor(bodies: list[bytes]) -> list[float]:
    timings = []
    for body in bodies:
        started = time.perf_counter()
        digest = "sha256=" + hmac.digest(SECRET, body, "sha256").hex()  # the fastest HMAC call there is
        hmac.compare_digest(digest, digest)
        json.loads(body)
        timings.append(time.perf_counter() - started)
    return timings


class _MemorySender:
    """Accepts and forgets: isolates the receiver's own cost from the queue's durable commit."""

    def __init__(self) -> None:
        self.count = 0

    def send(self, messages: list[object]) -> None:
        self.count += len(messages)


def _handler(bodies: list[bytes], state: Path, *, durable: bool = True) -> list[float]:
    from handlers import webhooks

    config = SlipwayConfig.model_validate(
        {
            "registry": "bench.azurecr.io",
            "targets": [
                {
                    "name": "azure-test",
                    "repo": "https://github.com/dougbu/AzureTest",
                    "image": "d/azure-test",
                    "branches": ["master"],
                }
            ],
        }
    )
    queue: LocalQueue | _MemorySender = LocalQueue(state / "queue.sqlite3") if durable else _MemorySender()
    runtime = Runtime({"GITHUB_WEBHOOK_SECRET": SECRET.decode()}, queue=queue)  # type: ignore[arg-type]
    runtime.config = lambda: config  # type: ignore[method-assign]
    set_runtime(runtime)
    function = webhooks.github_webhook.build().get_user_function()
    # One warm-up delivery, outside the timings:
    # first-call imports are cold start, not ingest.
    warm = _bodies(1)[0]
    function(
        func.HttpRequest(
            "POST",
            "http://localhost/api/hooks/github",
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET, warm, hashlib.sha256).hexdigest(),
            },
            body=warm,
        )
    )
    timings = []
    for number, body in enumerate(bodies):
        signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        delivery = f"{number:08x}-cc78-11e3-81ab-4c9367dc0958"  # GitHub sends a GUID per delivery
        started = time.perf_counter()
        req = func.HttpRequest(
            "POST",
            "http://localhost/api/hooks/github",
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": signature,
            },
            body=body,
        )
        response = function(req)
        timings.append(time.perf_counter() - started)
        assert response.status_code == 202, response.get_body()
    sent = queue.count() if isinstance(queue, LocalQueue) else queue.count
    assert sent >= len(bodies), (sent, len(bodies))
    set_runtime(None)
    return timings


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def _line(name: str, timings: list[float]) -> str:
    return (
        f"{name:27s}: {1 / statistics.mean(timings):8.0f} /s   p50 {statistics.median(timings) * 1e6:7.1f} us"
        f"   p99 {_p99(timings) * 1e6:8.1f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument(
        "--rounds", type=int, default=30, help="interleaved rounds (noise hits all three alike)"
    )
    args = parser.parse_args()
    bodies = _bodies(args.count)
    size = max(1, len(bodies) // args.rounds)
    floor: list[float] = []
    memory: list[float] = []
    handler: list[float] = []
    # Per round: the medians' ratios. A shared machine's speed drifts by tens of percent within
    # a minute; a round is short enough that its three measurements see the same machine.
    round_ratios: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as state:
        for start in range(0, len(bodies), size):
            chunk = bodies[start : start + size]
            f, m, h = _floor(chunk), _handler(chunk, Path(state), durable=False), _handler(chunk, Path(state))
            f50 = statistics.median(f)
            round_ratios.append((statistics.median(m) / f50, statistics.median(h) / f50))
            floor += f
            memory += m
            handler += h
    print(
        f"body size                  : {len(bodies[0])} bytes, {len(bodies)} deliveries, {args.rounds} rounds"
    )
    print(_line("floor (HMAC + json.loads)", floor))
    print(_line("handler -> memory (no I/O)", memory))
    print(_line("handler -> local queue", handler))
    memory_ratio = statistics.median(r[0] for r in round_ratios)
    handler_ratio = statistics.median(r[1] for r in round_ratios)
    f_mean, h_mean = statistics.mean(floor), statistics.mean(handler)
    print(f"ratio handler / floor      : {handler_ratio:.1f} per typical delivery (goal <= 3)")
    print("                             (median over the rounds of each round's ratio of medians)")
    print(f"                             {h_mean / f_mean:.1f} on means (counts the machine's I/O stalls)")
    append = handler_ratio - memory_ratio
    print(f"  of which receiver logic  : {memory_ratio:.1f}, durable queue append: {append:.1f}")


if __name__ == "__main__":
    main()

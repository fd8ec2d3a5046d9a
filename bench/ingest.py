"""Ingest throughput: signed GitHub pushes through the HTTP handler into the local queue.

Floor, measured in the same run on bodies of the same size and shape: HMAC-SHA256 + ``json.loads``,
the least any receiver must do. Against it, the GitHub function that ``function_app.py``
registers, fed the request object the worker would hand it (building that object is the
worker's work, so the clock starts at the call), once with a queue that forgets (the receiver's
own cost) and once with the durable local queue. Never a pass/fail. Two ways of measuring:

* **per delivery** (the goal's measure): each delivery goes through the floor and both handlers
  back to back, in an order that rotates from one delivery to the next. The three then run with
  the caches a server has between requests and see the same moments of a noisy machine.
* **hot loops**: each of the three takes 100 deliveries in a row, in interleaved rounds. This is
  the floor's best case: two C calls repeated with nothing in between keep the CPU's caches and
  branch predictors to themselves, which no webhook server does. Shown so nobody has to guess.

With ``--branches N`` the pushes go to N branches in turn (``feature/0`` ...), so routing,
tag plans and request prototypes, which are planned once per ref, are planned N times instead of
reused: the measure for a repository with many active branches, not only the one cached route.

    .venv/bin/python -m bench.ingest [--count 3000] [--branches 1]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import azure.functions as func

from shared.app.runtime import Runtime, set_runtime
from shared.model.config import SlipwayConfig
from shared.platform.queue.local import LocalQueue

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "fixtures" / "github" / "push-branch-signed-aspnet.json"
SECRET = b"bench-secret"
ROUND = 100
# Every order of (floor, memory, queue): each kind of work precedes each other kind equally often.
ORDERS = list(itertools.permutations(range(3)))


BRANCHES = 1  # set by --branches: how many refs the pushes spread over


def _bodies(count: int, first: int = 0) -> list[bytes]:
    """Distinct pushes (distinct commits) of the real sample's size and shape."""
    payload = json.loads(SAMPLE.read_bytes())
    bodies = []
    for i in range(first, first + count):
        payload["after"] = hashlib.sha1(str(i).encode()).hexdigest()  # noqa: S324 - a fake commit id
        payload["head_commit"]["id"] = payload["after"]
        if BRANCHES > 1:
            payload["ref"] = f"refs/heads/feature/{i % BRANCHES}"
        bodies.append(json.dumps(payload).encode())
    return bodies


def _signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


def _floor(body: bytes, signature: str) -> float:
    started = time.perf_counter()
    digest = "sha256=" + hmac.digest(SECRET, body, "sha256").hex()  # the fastest HMAC call there is
    hmac.compare_digest(digest, signature)
    json.loads(body)
    return time.perf_counter() - started


class _MemorySender:
    """Accepts and forgets: isolates the receiver's own cost from the queue's durable append."""

    def __init__(self) -> None:
        self.count = 0

    def send(self, messages: list[object]) -> None:
        self.count += len(messages)


@dataclass
class _Receiver:
    function: Callable[[func.HttpRequest], func.HttpResponse]
    runtime: Runtime
    queue: LocalQueue | _MemorySender

    def sent(self) -> int:
        return self.queue.count() if isinstance(self.queue, LocalQueue) else self.queue.count


def _receiver(queue: LocalQueue | _MemorySender) -> _Receiver:
    from handlers import webhooks

    config = SlipwayConfig.model_validate(
        {
            "registry": "bench.azurecr.io",
            "targets": [
                {
                    "name": "azure-test",
                    "repo": "https://github.com/dougbu/AzureTest",
                    "image": "d/azure-test",
                    "branches": ["master", "feature/*"],
                }
            ],
        }
    )
    runtime = Runtime({"GITHUB_WEBHOOK_SECRET": SECRET.decode()}, queue=queue)  # type: ignore[arg-type]
    runtime.config = lambda: config  # type: ignore[method-assign]
    receiver = _Receiver(webhooks.github_webhook.build().get_user_function(), runtime, queue)
    # One warm-up delivery, outside the timings: first-call imports are cold start, not ingest.
    warm = _bodies(1, first=-1)[0]
    _call(receiver, _request(warm, _signature(warm), "warm-up"))
    return receiver


def _request(body: bytes, signature: str, delivery: str) -> func.HttpRequest:
    return func.HttpRequest(
        "POST",
        "http://localhost/api/hooks/github",
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,  # GitHub sends a GUID per delivery
            "X-Hub-Signature-256": signature,
        },
        body=body,
    )


def _call(receiver: _Receiver, request: func.HttpRequest) -> float:
    set_runtime(receiver.runtime)
    started = time.perf_counter()
    response = receiver.function(request)
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.get_body()
    return elapsed


def _per_delivery(bodies: list[bytes], memory: _Receiver, durable: _Receiver) -> list[list[float]]:
    timings: list[list[float]] = [[], [], []]
    for number, body in enumerate(bodies):
        signature = _signature(body)
        requests = [_request(body, signature, f"{number:08x}-{tag}") for tag in ("m", "q")]
        for kind in ORDERS[number % len(ORDERS)]:
            if kind == 0:
                timings[0].append(_floor(body, signature))
            else:
                timings[kind].append(_call((memory, durable)[kind - 1], requests[kind - 1]))
    return timings


def _hot_loops(
    bodies: list[bytes], memory: _Receiver, durable: _Receiver
) -> tuple[list[list[float]], list[tuple[float, float]]]:
    timings: list[list[float]] = [[], [], []]
    # Per round, the ratios of its medians: a shared machine's speed drifts by tens of percent
    # within a minute, and one round is short enough that all three see the same machine.
    ratios: list[tuple[float, float]] = []
    for start in range(0, len(bodies), ROUND):
        chunk = bodies[start : start + ROUND]
        signatures = [_signature(body) for body in chunk]
        floor = [_floor(body, signature) for body, signature in zip(chunk, signatures, strict=True)]
        handled = [
            [
                _call(receiver, _request(body, signature, f"{start + i:08x}-{tag}"))
                for i, (body, signature) in enumerate(zip(chunk, signatures, strict=True))
            ]
            for receiver, tag in ((memory, "hm"), (durable, "hq"))
        ]
        f50 = statistics.median(floor)
        ratios.append((statistics.median(handled[0]) / f50, statistics.median(handled[1]) / f50))
        for kind, values in enumerate((floor, *handled)):
            timings[kind] += values
    return timings, ratios


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def _report(timings: list[list[float]], medians: tuple[float, float] | None = None) -> None:
    names = ("floor (HMAC + json.loads)", "handler -> memory (no I/O)", "handler -> local queue")
    for name, values in zip(names, timings, strict=True):
        rate, p50, p99 = 1 / statistics.mean(values), statistics.median(values) * 1e6, _p99(values) * 1e6
        print(f"  {name:27s}: {rate:8.0f} /s   p50 {p50:6.1f} us   p99 {p99:7.1f} us")
    floor, memory, durable = timings
    f50 = statistics.median(floor)
    m_ratio, h_ratio = medians or (statistics.median(memory) / f50, statistics.median(durable) / f50)
    means = statistics.mean(durable) / statistics.mean(floor)
    print(f"  ratio handler / floor      : {h_ratio:.1f} on medians, {means:.1f} on means")
    print(f"    of which receiver logic  : {m_ratio:.1f}, durable queue append: {h_ratio - m_ratio:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="deliveries per measurement")
    parser.add_argument("--branches", type=int, default=1, help="refs the pushes spread over (1: master)")
    args = parser.parse_args()
    global BRANCHES
    BRANCHES = max(1, args.branches)
    with tempfile.TemporaryDirectory() as state:
        memory, durable = _receiver(_MemorySender()), _receiver(LocalQueue(Path(state) / "queue.sqlite3"))
        per_delivery = _per_delivery(_bodies(args.count), memory, durable)
        hot, round_ratios = _hot_loops(_bodies(args.count, first=args.count), memory, durable)
        for receiver in (memory, durable):
            assert receiver.sent() >= 2 * args.count, (receiver.sent(), 2 * args.count)
        set_runtime(None)
    spread = f", over {BRANCHES} branches" if BRANCHES > 1 else ""
    print(f"body size {len(_bodies(1)[0])} bytes; {args.count} deliveries per measurement{spread}")
    print("per delivery, the three back to back in rotating order (the goal's measure, <= 3):")
    _report(per_delivery)
    print(f"hot loops, {ROUND} deliveries in a row each (the floor's best case; median of the rounds):")
    _report(
        hot,
        (statistics.median(r[0] for r in round_ratios), statistics.median(r[1] for r in round_ratios)),
    )


if __name__ == "__main__":
    main()

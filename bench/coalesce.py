"""Coalescing: 100 pushes to one branch within 60 s, on a controlled clock.

Counts the runs started with the default quiet period (30 s) against a dispatcher that does not
coalesce (no quiet period, no look-ahead): 100. Goal: <= 2.

The latency coalescing adds, on the same controlled clock (advanced in 0.5 s steps while requests
wait): for each push, the time from its enqueue to the start of the first run that builds it or
a newer commit of the branch, against the dispatcher that does not coalesce (0 on this clock).
The built commit waits the quiet period by design, so its wait against the quiet period is the
ratio to watch (goal: 1, plus the clock's step).

And the look-ahead's own CPU cost per dispatch (``bench.coalesce_lookahead``): one coalescing
check (the queue's pending messages on the key, parsed, and the started-run document) with 1k
and 10k other messages queued, against a whole dispatch by the non-coalescing dispatcher, paired
call by call in alternating order. Never a pass/fail.

    .venv/bin/python -m bench.coalesce [--pushes 100] [--seed 1] [--queued 1000 10000] [--calls 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.acr.run_backend import DryRunBackend
from shared.dispatch.dispatcher import Dispatcher, Outcome
from shared.intake.rebuild_queue import send_requests
from shared.model.config import SlipwayConfig
from shared.platform.ledger import FolderLedger, RunStatus
from shared.platform.queue.local import LocalQueue
from shared.platform.state import FolderStateStore
from tests.support.dispatch_harness import make_request


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _config(quiet: str) -> SlipwayConfig:
    return SlipwayConfig.model_validate(
        {
            "registry": "slipway.azurecr.io",
            "dispatch": {"quiet_period": quiet},
            "targets": [
                {
                    "name": "azure-test",
                    "repo": "https://github.com/dougbu/AzureTest",
                    "image": "dougbu/azure-test",
                    "branches": ["**"],
                }
            ],
        }
    )


STEP = timedelta(seconds=0.5)


def runs_started(pushes: int, *, coalesce: bool, seed: int) -> int:
    return simulate(pushes, coalesce=coalesce, seed=seed)[0]


def simulate(pushes: int, *, coalesce: bool, seed: int) -> tuple[int, list[float]]:
    """Runs started, and each push's wait (s) until a run on its branch starts at or after it."""
    rng = random.Random(seed)
    offsets = sorted(rng.uniform(0, 60) for _ in range(pushes))
    clock = _Clock()
    start = clock.now
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        queue = LocalQueue(root / "queue.sqlite3", clock=clock)
        ledger = FolderLedger(root / "ledger")
        config = _config("30s" if coalesce else "0s")
        dispatcher = Dispatcher(
            config=lambda: config,
            ledger=ledger,
            backend=DryRunBackend(),
            settings={},
            clock=clock,
            state=FolderStateStore(root / "state") if coalesce else None,
            queue=queue,
            pending=queue if coalesce else None,
        )
        started = 0
        starts: list[datetime] = []

        def drain() -> None:
            nonlocal started
            while messages := queue.receive():
                result = dispatcher.dispatch(messages[0].body, message_id=messages[0].message_id)
                if result.outcome is Outcome.DISPATCHED:
                    started += 1
                    starts.append(clock.now)
                queue.complete(messages[0])

        for n, offset in enumerate(offsets):
            clock.now = start + timedelta(seconds=offset)
            send_requests(
                queue, [make_request(n, received_at=clock.now)], correlation_id="bench", subject="push"
            )
            drain()
        while queue.peek(max_count=1):
            clock.now += STEP
            drain()
        dispatched = sum(r.status is RunStatus.DISPATCHED for r in ledger.list())
        queue.close()
        assert dispatched == started
        waits = []
        for offset in offsets:
            pushed = start + timedelta(seconds=offset)
            served = min(t for t in starts if t >= pushed)
            waits.append((served - pushed).total_seconds())
        return started, waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--queued", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--calls", type=int, default=200, help="paired calls per queue size")
    args = parser.parse_args()
    without, plain = simulate(args.pushes, coalesce=False, seed=args.seed)
    with_, waits = simulate(args.pushes, coalesce=True, seed=args.seed)
    print(f"pushes to one branch within 60 s : {args.pushes}")
    print(f"runs started, no coalescing      : {without}")
    print(f"runs started, quiet period 30 s  : {with_}  (goal <= 2)")
    print(
        f"wait from enqueue to a run that builds it (controlled clock, steps of {STEP.total_seconds():g} s):"
    )
    median, built, floor = statistics.median(waits), waits[-1], statistics.median(plain)
    print(f"  no coalescing (the floor)      : median {floor:.1f} s, max {max(plain):.1f} s")
    print(f"  quiet period 30 s              : median {median:.1f} s, max {max(waits):.1f} s")
    print(
        f"  the commit built (last push)   : {built:.1f} s; ratio to quiet period {built / 30:.2f} (goal 1)"
    )
    from bench.coalesce_lookahead import lookahead_part

    lookahead_part(args.queued, args.calls)


if __name__ == "__main__":
    main()

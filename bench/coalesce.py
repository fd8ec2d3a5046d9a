"""Coalescing: 100 pushes to one branch within 60 s, on a controlled clock.

Counts the runs started with the default quiet period (30 s) against a dispatcher that does not
coalesce (no quiet period, no look-ahead): 100. Goal: <= 2. Never a pass/fail.

    .venv/bin/python -m bench.coalesce [--pushes 100] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
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


def runs_started(pushes: int, *, coalesce: bool, seed: int) -> int:
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

        def drain() -> None:
            nonlocal started
            while messages := queue.receive():
                result = dispatcher.dispatch(messages[0].body, message_id=messages[0].message_id)
                started += result.outcome is Outcome.DISPATCHED
                queue.complete(messages[0])

        for n, offset in enumerate(offsets):
            clock.now = start + timedelta(seconds=offset)
            send_requests(
                queue, [make_request(n, received_at=clock.now)], correlation_id="bench", subject="push"
            )
            drain()
        while queue.peek(max_count=1):
            clock.now += timedelta(seconds=5)
            drain()
        dispatched = sum(r.status is RunStatus.DISPATCHED for r in ledger.list())
        queue.close()
        assert dispatched == started
        return started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    without = runs_started(args.pushes, coalesce=False, seed=args.seed)
    with_ = runs_started(args.pushes, coalesce=True, seed=args.seed)
    print(f"pushes to one branch within 60 s : {args.pushes}")
    print(f"runs started, no coalescing      : {without}")
    print(f"runs started, quiet period 30 s  : {with_}  (goal <= 2)")


if __name__ == "__main__":
    main()

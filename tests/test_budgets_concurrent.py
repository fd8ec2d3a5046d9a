"""Run budgets hold with dispatchers racing: real Blob ledger (Azurite), real ACR client (loopback).

Each thread is its own ``Dispatcher`` with its own Blob and ACR clients, as separate Function
instances would be; they all claim at once. Checking the budget before the claim alone let every
one of them start a run.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.dispatch.dispatcher import Dispatcher, DispatchResult, Outcome
from shared.intake.rebuild_queue import request_message
from shared.model.config import parse_config
from shared.platform.ledger import BlobLedger, RunStatus
from shared.platform.queue.local import LocalQueue
from tests.support.acr_server import AcrServer
from tests.support.azurite import AzuriteServer
from tests.support.dispatch_harness import CONFIG, acr_backend, make_request

DISPATCHERS = 6
LIMIT = 2
SETTINGS = {"SLIPWAY_CACHE_ACCOUNT_KEY": "c2VjcmV0LWtleS1kby1ub3QtbGVhaw==", "BUILD_QUEUE": "build-requests"}


@pytest.mark.parametrize(
    ("dispatch", "target_extra"),
    [
        (f"  quiet_period: 0s\n  max_concurrent_runs: {LIMIT}", ""),
        ("  quiet_period: 0s\n  max_concurrent_runs_per_target: 9", f"    max_concurrent_runs: {LIMIT}"),
    ],
    ids=["global", "per-target"],
)
def test_concurrent_dispatchers_never_start_more_runs_than_the_budget(
    dispatch: str, target_extra: str, azurite: AzuriteServer, acr_server: AcrServer, tmp_path: Path
) -> None:
    config = parse_config(CONFIG.format(dispatch=dispatch, target_extra=target_extra), source="test")
    container = azurite.new_container("budget")
    queue = LocalQueue(tmp_path / "queue.sqlite3")
    now = datetime.now(UTC)
    requests = [make_request(n, received_at=now, ref=f"refs/heads/b{n}") for n in range(DISPATCHERS)]
    start = threading.Barrier(DISPATCHERS)
    results: list[DispatchResult] = []
    errors: list[BaseException] = []

    def one(n: int) -> None:
        dispatcher = Dispatcher(
            config=lambda: config,
            ledger=BlobLedger(azurite.service_client().get_container_client(container.container_name)),
            backend=acr_backend(acr_server),
            settings=SETTINGS,
            queue=queue,
        )
        body = request_message(requests[n], subject="push").body
        start.wait()
        try:
            results.append(dispatcher.dispatch(body, message_id=f"m{n}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(DISPATCHERS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        outcomes = sorted(r.outcome for r in results)
        started = [r for r in results if r.outcome is Outcome.DISPATCHED]
        # The bound, and progress: the first claimants start while the later ones back off.
        assert 1 <= len(acr_server.runs) <= LIMIT, outcomes
        assert len(started) == len(acr_server.runs)
        assert outcomes.count(Outcome.RESCHEDULED) == DISPATCHERS - len(started), outcomes
        ledger = BlobLedger(container)
        released = 0
        for request in requests:
            found = ledger.get(request.id)
            if any(r.request_id == request.id for r in started):
                assert found is not None and found[0].status is RunStatus.DISPATCHED
            elif found is not None:  # claimed, then released: claimable again when its copy comes back
                record = found[0]
                assert record.status is RunStatus.RETRYING and record.attempts == 0
                assert record.history[-1]["event"] == "over_budget"
                released += 1
            # else: turned away before claiming, by the check that reads the ledger first
        # Every request that backed off has its copy scheduled for later.
        waiting = {m.message_id.rsplit("-w", 1)[0] for m in queue.peek(max_count=100)}
        assert waiting == {r.id for r in requests} - {r.request_id for r in started}
        print(f"started {len(started)}, released after claiming {released}")
    finally:
        queue.close()

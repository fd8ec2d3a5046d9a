"""The invariant under pressure: 1,000 requests, random faults, duplicates and redeliveries.

Afterwards every request has started exactly one ACR run, or sits in the dead-letter queue
exactly once (and started none); nothing is missing. Real components: the local queue, a folder
ledger, the real ``AcrBackend`` over HTTPS to the loopback ACR server (faults injected there),
the real queue trigger, one controlled clock. Seeded, so a failure reproduces.

The worker is killed at points inside the window between ``scheduleRun`` and the ledger: right
after the call returned, inside the ledger write of the run (before it lands, or after), and
while adopting an orphaned run. Runs' logs appear as their build steps start, some late, so
recovery sometimes cannot tell runs apart and dead-letters ``DispatchInterrupted`` (a request's
retry copy and its redelivered original alike); an operator then replays those dead letters, no
replay may start a second run, and no dead letter may stay behind for a request that ran.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.acr import run_backend
from shared.acr.run_backend import AcrBackend, RunHandle
from shared.acr.task import RunSpec
from shared.app.local_host import LocalHost
from shared.platform.ledger import FolderLedger, LedgerRecord, RunStatus
from tests.support.acr_server import RESET, AcrServer, RecordedRequest, ScriptedResponse
from tests.support.dispatch_harness import Clock, Rig, acr_backend_arguments, make_request

REQUESTS = 1000
# SLIPWAY_INVARIANT_SEED=<n> explores other interleavings (the default keeps a failure reproducible).
SEED = int(os.environ.get("SLIPWAY_INVARIANT_SEED", "20261123"))


class FaultyAcr(AcrBackend):
    """The real backend; sometimes the worker dies right after scheduleRun succeeded."""

    def __init__(self, rng: random.Random, clock: Clock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rng, self.clock = rng, clock
        self.last_orphan = clock() - run_backend_gap()
        self.crashes = 0
        self.killing = True

    def may_orphan(self) -> bool:
        """Orphaned runs (crash, lost answer) are spaced out: recovery tells them apart by time."""
        return self.clock() - self.last_orphan > run_backend_gap()

    def start(self, spec: RunSpec, *, request_id: str, correlation_id: str) -> RunHandle:
        handle = super().start(spec, request_id=request_id, correlation_id=correlation_id)
        if self.killing and self.may_orphan() and self.rng.random() < 0.05:
            self.last_orphan = self.clock()
            self.crashes += 1
            raise SystemExit("worker killed after scheduleRun")
        return handle


def run_backend_gap() -> timedelta:
    return timedelta(minutes=5)


@pytest.fixture
def fast_dir(tmp_path: Path) -> Any:
    """tmpfs when there is one: the folder ledger fsyncs every write, which is the slow part here."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm) as path:
        yield Path(path)


def test_every_request_runs_once_or_is_dead_lettered_once(
    fast_dir: Path, acr_server: AcrServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncertain starts (a crash after scheduleRun, no answer) are spaced 5 minutes apart: within
    that window recovery would rightly hand them to an operator (see shared/dispatch/run_recovery.py)."""
    monkeypatch.setattr(run_backend, "READ_TIMEOUT", 0.2)
    if yaml.__with_libyaml__:  # the pure-Python emitter would be most of this test's time
        monkeypatch.setattr(yaml, "safe_dump", functools.partial(yaml.dump, Dumper=yaml.CSafeDumper))
    rng = random.Random(SEED)
    clock = Clock()
    backend = FaultyAcr(rng, clock, **acr_backend_arguments(acr_server))
    backend.acr_server = acr_server  # type: ignore[attr-defined]
    rig = Rig(fast_dir, clock, backend, dispatch="  quiet_period: 0s\n  max_attempts: 8")
    faults: Counter[str] = Counter()

    def fault(request: RecordedRequest) -> ScriptedResponse | None:
        if not request.path.lower().endswith("/schedulerun"):
            return None
        roll = rng.random()
        if roll < 0.10:
            faults["429"] += 1
            return ScriptedResponse(429, {"Retry-After": str(rng.randint(1, 90))}, _arm_error(429))
        if roll < 0.15:
            faults["500"] += 1
            return ScriptedResponse(500, {}, _arm_error(500))
        if roll < 0.20:
            faults["503"] += 1
            return ScriptedResponse(503, {}, _arm_error(503))
        if roll < 0.23 and backend.may_orphan():
            # No answer at all: the dispatcher cannot know whether the run exists, like a crash.
            faults["reset"] += 1
            backend.last_orphan = clock()
            return ScriptedResponse(RESET)
        if roll < 0.24:
            faults["refused"] += 1
            return ScriptedResponse(
                400, {}, {"error": {"code": "TasksOperationsNotAllowed", "message": "no"}}
            )
        if roll < 0.26 and backend.may_orphan():
            faults["slow"] += 1
            backend.last_orphan = clock()
            return ScriptedResponse(200, delay=0.3, passthrough=True)
        return None

    acr_server.fault_hook = fault
    kills: Counter[str] = Counter()
    write = FolderLedger.replace

    def replace(ledger: FolderLedger, record: LedgerRecord, etag: str) -> str:
        """Kill points inside the ledger write that records a started (or adopted) run."""
        event = record.history[-1]["event"] if record.history else ""
        if record.status is RunStatus.DISPATCHED and event in ("run_started", "run_recovered"):
            roll = rng.random()
            if roll < 0.02:
                kills[f"before {event}"] += 1
                raise SystemExit("worker killed before the ledger write")
            if roll < 0.03:
                written = write(ledger, record, etag)
                kills[f"after {event}"] += 1
                raise SystemExit(f"worker killed after the ledger write ({written})")
        return write(ledger, record, etag)

    monkeypatch.setattr(FolderLedger, "replace", replace)
    try:
        requests = [make_request(n, received_at=clock(), ref=f"refs/heads/b{n}") for n in range(REQUESTS)]
        pending = list(requests)
        redeliveries = 0
        while pending or rig.queue.peek(max_count=1):
            batch, pending = pending[:40], pending[40:]
            for request in batch:
                request = request.model_copy(
                    update={"trigger": request.trigger.model_copy(update={"received_at": clock()})}
                )
                rig.send(request)
                if rng.random() < 0.1:  # the sender retried: duplicate detection absorbs it
                    rig.send(request)
            while messages := rig.queue.receive(max_count=1):
                message = messages[0]
                roll = rng.random()
                if roll < 0.05:  # the host dies after the function returned, before completing
                    redeliveries += 1
                    _call(rig, message)
                    continue
                # SystemExit: the worker died mid-invocation; the lock expires, the message comes back.
                with contextlib.suppress(SystemExit):
                    LocalHost._deliver(Any, rig.queue, rig.trigger, message)  # type: ignore[arg-type]
            if rng.random() < 0.2:  # a late duplicate, outside the detection window: the ledger absorbs it
                done = [r for r in requests[:200] if _status(rig, r.id) is RunStatus.DISPATCHED]
                if done:
                    late = rng.choice(done)
                    rig.queue.send([_copy_of(late, f"{late.id}-late{rng.randint(0, 10**9)}")])
            _builds_print(acr_server, rng, 0.05)
            clock.advance(30)
        acr_server.fault_hook = None
        # The operator replays what recovery could not resolve, once the runs' logs are there
        # (no more kills: rig.run_until_idle delivers as the host does, which a kill would stop).
        monkeypatch.setattr(FolderLedger, "replace", write)
        backend.killing = False
        _builds_print(acr_server, rng, 1.0)
        interrupted, _ = _replay_interrupted(rig)
        rig.run_until_idle()
        # One replay resolved it all: every copy of a replayed request went with it, and a dead
        # letter of a request that ran meanwhile was settled (tests/test_replay_copies.py).
        assert _replay_interrupted(rig) == (0, 0)

        runs = Counter(acr_server.request_id_of(run_id) for run_id in acr_server.runs)
        dead: dict[str, list[str]] = {}
        for message in rig.queue.peek(dead_letter=True, max_count=5000):
            dead.setdefault(json.loads(message.body)["id"], []).append(message.message_id)
        assert rig.queue.peek() == []
        for request in requests:
            started, dead_letters = runs[request.id], dead.get(request.id, [])
            record, _ = rig.ledger.get(request.id) or (None, None)
            assert (started, len(dead_letters)) in ((1, 0), (0, 1)), (
                request.id,
                started,
                dead_letters,
                record and [(e["at"], e["event"], str(e["detail"])[:80]) for e in record.history],
            )
            assert record is not None
            # Ledger records accept unknown fields (from newer versions); ours must write none.
            assert not record.model_extra, record.model_extra
            if started:
                assert record.status is RunStatus.DISPATCHED and record.run_id is not None
                assert acr_server.request_id_of(record.run_id) == request.id
            else:
                assert record.status is RunStatus.FAILED and record.failure_reason in (
                    "RunRejected",
                    "RetriesExhausted",
                )
        assert sum(runs.values()) == len(acr_server.runs)  # no run belongs to nobody
        # The faults really happened, and so did the recoveries.
        assert all(faults[kind] > 0 for kind in ("429", "500", "503", "refused")), faults
        assert faults["reset"] + faults["slow"] + backend.crashes >= 3 and redeliveries > 0 and dead
        assert all(kills[k] > 0 for k in ("before run_started", "after run_started")), kills
        assert interrupted > 0, "no DispatchInterrupted dead letter to replay: the window went untested"
    finally:
        acr_server.fault_hook = None
        rig.close()


def _builds_print(acr: AcrServer, rng: random.Random, chance: float) -> None:
    """Runs whose build step has started print their request line (shared/acr/task/,
    ``_build_script``); each run without a log starts with this ``chance`` per step."""
    for run_id in list(acr.runs):
        if run_id not in acr.logs and rng.random() < chance:
            acr.set_log(run_id, f"slipway: request {acr.request_id_of(run_id)}, correlation test\n")


def _replay_interrupted(rig: Rig) -> tuple[int, int]:
    """``slipway replay --reason DispatchInterrupted``: how many dead letters it sent back, and how
    many it settled (completed, nothing sent: their request ran, or another copy was sent)."""
    from shared.dispatch.replay import Replayer, ReplaySelection

    report = Replayer(rig.queue, rig.ledger, clock=rig.clock).replay(
        ReplaySelection(reason="DispatchInterrupted", limit=1000),
        actor="test",
        note="runs checked",
        dry_run=False,
    )
    return len(report.items), len(report.settled)


def _call(rig: Rig, message: Any) -> None:
    with contextlib.suppress(Exception, SystemExit):  # settled or not, the lock is lost
        rig.invoke(message)


def _status(rig: Rig, request_id: str) -> RunStatus | None:
    found = rig.ledger.get(request_id)
    return None if found is None else found[0].status


def _copy_of(request: Any, message_id: str) -> Any:
    from shared.intake.rebuild_queue import request_message

    return request_message(request, subject="push", message_id=message_id)


def _arm_error(status: int) -> dict[str, Any]:
    return {"error": {"code": f"Http{status}", "message": f"injected {status}"}}

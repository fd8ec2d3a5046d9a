"""Failure handling through the loopback ACR server: delayed retries, dead letters, crash recovery."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from shared.acr import run_backend
from shared.acr.run_backend import AcrBackend, RunHandle
from shared.acr.task import RunSpec
from shared.dispatch.claims import CLAIM_LEASE
from shared.model.build_request import BuildRequest
from shared.platform.ledger import LedgerRecord, RunStatus
from shared.platform.queue.port import QUEUE_MAX_DELIVERY_COUNT, ReceivedMessage
from tests.support.acr_server import AcrServer, decoded_task
from tests.support.dispatch_harness import (
    Clock,
    Rig,
    acr_backend,
    acr_backend_arguments,
    make_request,
    start_run_by_hand,
)


@pytest.fixture
def rig(tmp_path: Path, acr_server: AcrServer) -> Iterator[Rig]:
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server), dispatch="  quiet_period: 0s\n  max_attempts: 4")
    yield rig
    rig.close()


# The system reason Service Bus gives a message delivered MaxDeliveryCount times without being
# settled: Learn, "Overview of Service Bus dead-letter queues", "Moving messages to the DLQ"
# (https://learn.microsoft.com/azure/service-bus-messaging/service-bus-dead-letter-queues).
# The function trigger cannot dead-letter with a reason, so every refusal ends there in Azure,
# and the local host must show the same.
SYSTEM_REASON = "MaxDeliveryCountExceeded"


def _runs(acr: AcrServer) -> int:
    return len(acr.runs)


def _dead_letter_and_record(rig: Rig, request_id: str) -> tuple[ReceivedMessage, LedgerRecord]:
    """The request's one dead letter, as Service Bus would show it, and its ledger record."""
    [dead] = rig.queue.peek(dead_letter=True)
    assert json.loads(dead.body)["id"] == request_id
    assert (dead.dead_letter_reason, dead.delivery_count) == (SYSTEM_REASON, QUEUE_MAX_DELIVERY_COUNT)
    assert rig.queue.peek() == []
    found = rig.ledger.get(request_id)
    assert found is not None
    return dead, found[0]


def test_429_waits_at_least_retry_after_then_starts_one_run(rig: Rig, acr_server: AcrServer) -> None:
    request = make_request(1, received_at=rig.clock())
    acr_server.fail_next(429, headers={"Retry-After": "120"})
    rig.send(request)
    assert rig.drain() == [request.id]  # completed: a copy comes back later
    [copy] = rig.queue.peek()
    assert copy.message_id == f"{request.id}-a1" and copy.is_scheduled
    assert json.loads(copy.body)["attempt"] == 1
    rig.clock.advance(119)
    assert rig.drain() == []  # Retry-After honoured
    rig.clock.advance(2)
    assert rig.drain() == [f"{request.id}-a1"]
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None and (record.status, record.run_id, record.attempts) == (
        RunStatus.DISPATCHED,
        "ca1",
        2,
    )
    assert _runs(acr_server) == 1 and rig.queue.peek() == []


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_back_off_exponentially_then_dead_letter(
    rig: Rig, acr_server: AcrServer, status: int
) -> None:
    request = make_request(2, received_at=rig.clock())
    acr_server.fail_next(status, times=4)
    rig.send(request)
    delays = []
    for attempt in range(1, 4):
        rig.drain()
        [copy] = rig.queue.peek()
        assert copy.message_id == f"{request.id}-a{attempt}"
        assert copy.scheduled_enqueue_time is not None
        delays.append((copy.scheduled_enqueue_time - rig.clock()).total_seconds())
        rig.clock.now = copy.scheduled_enqueue_time
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20 and 20 <= delays[2] <= 40  # base 10 s, jittered
    delivered = rig.drain()  # the 4th attempt fails too: max_attempts reached
    # Refused on every delivery (from the ledger, without calling ACR) until the queue gives up.
    assert delivered == [f"{request.id}-a3"] * QUEUE_MAX_DELIVERY_COUNT
    _dead, record = _dead_letter_and_record(rig, request.id)
    assert (record.status, record.failure_reason) == (RunStatus.FAILED, "RetriesExhausted")
    assert "gave up after 4 attempts" in (record.error or "")
    assert _runs(acr_server) == 0
    assert len(acr_server.schedule_runs()) == 4


def test_a_permanent_refusal_is_dead_lettered_as_azure_does_with_the_reason_in_the_ledger(
    rig: Rig, acr_server: AcrServer
) -> None:
    request = make_request(3, received_at=rig.clock())
    acr_server.fail_next(
        400, body={"error": {"code": "TasksOperationsNotAllowed", "message": "not permitted"}}
    )
    rig.send(request)
    assert rig.drain() == [request.id] * QUEUE_MAX_DELIVERY_COUNT
    _dead, record = _dead_letter_and_record(rig, request.id)
    assert (record.status, record.failure_reason, record.dead_letter_message_id) == (
        RunStatus.FAILED,
        "RunRejected",
        request.id,
    )
    assert "not permitted" in (record.error or "")
    assert len(acr_server.schedule_runs()) == 1


def test_unknown_target_is_dead_lettered_with_an_actionable_reason_in_the_ledger(rig: Rig) -> None:
    request = make_request(4, received_at=rig.clock()).model_copy(update={"target": "nope"})
    rig.send(request)
    rig.drain()
    _dead, record = _dead_letter_and_record(rig, request.id)
    assert (record.status, record.failure_reason) == (RunStatus.FAILED, "UnknownTarget")
    assert "'nope'" in (record.error or "") and record.run_id is None


def test_a_message_that_is_no_build_request_keeps_the_queue_reason(rig: Rig) -> None:
    from shared.platform.queue.port import OutgoingMessage

    rig.queue.send([OutgoingMessage(message_id="junk-1", body=b'{"schema": "slipway.build-request/v1"}')])
    assert rig.drain() == ["junk-1"] * QUEUE_MAX_DELIVERY_COUNT
    [dead] = rig.queue.peek(dead_letter=True)
    assert (dead.message_id, dead.dead_letter_reason) == ("junk-1", SYSTEM_REASON)
    assert list(rig.ledger.list()) == []


def test_a_reset_connection_is_retried_and_finds_no_run_to_adopt(rig: Rig, acr_server: AcrServer) -> None:
    request = make_request(5, received_at=rig.clock())
    acr_server.reset_next()
    rig.send(request)
    rig.drain()
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert (
        record is not None and record.status is RunStatus.RETRYING and record.start_uncertain_at is not None
    )
    rig.run_until_idle()
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None and record.status is RunStatus.DISPATCHED and record.run_id == "ca1"
    assert any(r.path.endswith("/runs") for r in acr_server.requests)  # it looked before starting again
    assert _runs(acr_server) == 1


def test_a_slow_answer_that_created_the_run_is_adopted_not_repeated(
    rig: Rig, acr_server: AcrServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_backend, "READ_TIMEOUT", 0.5)
    rig.backend = acr_backend(acr_server)  # a client built with the short read timeout
    from shared.app.runtime import runtime

    runtime()._backend = rig.backend
    request = make_request(6, received_at=rig.clock())
    acr_server.slow_next(1.5)  # ACR creates the run, the answer never reaches us
    rig.send(request)
    rig.drain()
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None and record.status is RunStatus.RETRYING
    rig.run_until_idle()
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None and record.status is RunStatus.DISPATCHED and record.run_id == "ca1"
    assert any(e["event"] == "run_recovered" for e in record.history)
    assert _runs(acr_server) == 1


class CrashAfterStart(AcrBackend):
    """Starts the run for real, then the worker dies before the ledger hears of it."""

    crashes = 1

    def start(self, spec: RunSpec, *, request_id: str, correlation_id: str) -> RunHandle:
        handle = super().start(spec, request_id=request_id, correlation_id=correlation_id)
        if self.crashes:
            self.crashes -= 1
            raise SystemExit("worker killed after scheduleRun")
        return handle


@pytest.fixture
def crash_rig(tmp_path: Path, acr_server: AcrServer) -> Iterator[Rig]:
    """A rig whose host dies right after ACR accepted the run (before the ledger records it)."""
    backend = CrashAfterStart(**acr_backend_arguments(acr_server))
    backend.acr_server = acr_server  # type: ignore[attr-defined]
    rig = Rig(tmp_path, Clock(), backend)
    yield rig
    rig.close()


def _crash_then_redeliver(rig: Rig) -> None:
    [message] = rig.queue.receive()
    with pytest.raises(SystemExit):
        rig.invoke(message)
    # The host died: the lock expires, Service Bus redelivers; the claim is still "dispatching".
    rig.clock.advance(CLAIM_LEASE.total_seconds() + 1)


def test_a_crash_after_schedule_run_is_recovered_without_a_second_run(
    crash_rig: Rig, acr_server: AcrServer
) -> None:
    rig = crash_rig
    request = make_request(7, received_at=rig.clock())
    rig.send(request)
    _crash_then_redeliver(rig)
    rig.run_until_idle()
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None and (record.status, record.run_id) == (RunStatus.DISPATCHED, "ca1")
    assert [e["event"] for e in record.history][-1] == "run_recovered"
    assert _runs(acr_server) == 1


def test_a_crash_with_two_unknown_runs_in_the_window_asks_the_operator(
    crash_rig: Rig, acr_server: AcrServer
) -> None:
    rig = crash_rig
    request = make_request(8, received_at=rig.clock())
    rig.send(request)
    crashed_at = rig.clock()
    _crash_then_redeliver(rig)
    # Somebody else's run, in the same minute, unknown to the ledger.
    start_run_by_hand(rig, acr_server, created_at=crashed_at + timedelta(seconds=5))
    rig.run_until_idle()
    _dead, record = _dead_letter_and_record(rig, request.id)
    assert (record.status, record.failure_reason) == (RunStatus.DISPATCHING, "DispatchInterrupted")
    assert "ca1" in (record.error or "") and "ca2" in (record.error or "")
    assert [e["event"] for e in record.history].count("dispatch_interrupted") == 1
    assert _runs(acr_server) == 2  # nothing started a third


def test_a_reclaim_records_the_task_it_actually_sends(
    rig: Rig, acr_server: AcrServer, tmp_path: Path
) -> None:
    """The configuration changed between a failed start and its retry: the ledger shows the new run."""
    request = make_request(9, received_at=rig.clock())
    acr_server.fail_next(503)
    rig.send(request)
    rig.drain()
    first, _ = rig.ledger.get(request.id) or (None, None)
    assert first is not None and first.status is RunStatus.RETRYING
    assert first.run_request is not None and first.run_request["timeout"] == 3600
    config = tmp_path / "slipway.yaml"
    config.write_text(config.read_text() + "run:\n  timeout: 5400\n")
    rig.clock.advance(3600)
    rig.drain()
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None and record.status is RunStatus.DISPATCHED
    sent = [r for r in acr_server.requests if r.path.lower().endswith("/schedulerun")][-1]
    assert sent.body["timeout"] == 5400
    assert record.run_request is not None and record.run_request["timeout"] == 5400
    # Each claim renders with a fresh report marker, and the record keeps the one its run prints.
    assert first.result_marker and record.result_marker and first.result_marker != record.result_marker


def test_a_replay_after_an_unanswered_last_start_adopts_its_run(
    tmp_path: Path, acr_server: AcrServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Giving up on a start that got no answer keeps that doubt, so a replay starts no second run."""
    from shared.dispatch.replay import Replayer, ReplaySelection

    monkeypatch.setattr(run_backend, "READ_TIMEOUT", 0.5)
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server), dispatch="  quiet_period: 0s\n  max_attempts: 1")
    try:
        request = make_request(10, received_at=rig.clock())
        acr_server.slow_next(1.5)  # ACR creates the run; the answer never reaches us
        rig.send(request)
        rig.drain()
        record, _ = rig.ledger.get(request.id) or (None, None)
        assert record is not None and record.status is RunStatus.FAILED
        assert record.start_uncertain_at is not None and "looks for its run" in (record.error or "")
        assert _runs(acr_server) == 1
        Replayer(rig.queue, rig.ledger, clock=rig.clock).replay(
            ReplaySelection(ids=(request.id,)), actor="test", note="after the outage", dry_run=False
        )
        rig.run_until_idle()
        record, _ = rig.ledger.get(request.id) or (None, None)
        assert record is not None and (record.status, record.run_id) == (RunStatus.DISPATCHED, "ca1")
        assert any(e["event"] == "run_recovered" for e in record.history)
        assert _runs(acr_server) == 1  # adopted, not started again
    finally:
        rig.close()


def test_a_retry_claims_the_record_it_read_without_a_create_bound_to_fail(
    rig: Rig, acr_server: AcrServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = make_request(10, received_at=rig.clock())
    acr_server.fail_next(503)
    rig.send(request)
    rig.drain()
    calls: list[str] = []
    real_create, real_get = rig.ledger.create_versioned, rig.ledger.get

    def create(record: LedgerRecord) -> str | None:
        calls.append("create")
        return real_create(record)

    def get(request_id: str) -> tuple[LedgerRecord, str] | None:
        calls.append("get")
        return real_get(request_id)

    monkeypatch.setattr(rig.ledger, "create_versioned", create)
    monkeypatch.setattr(rig.ledger, "get", get)
    rig.clock.advance(3600)
    rig.drain()
    record, _ = real_get(request.id) or (None, None)
    assert record is not None and record.status is RunStatus.DISPATCHED
    assert calls == ["get"], calls


def _printed_log(acr: AcrServer, run_id: str) -> str:
    """What ``run_id``'s build step prints first: the printf line of the build script its task
    carried, run by a shell (so a change of that line shows up here, not only in recovery)."""
    request_id = acr.request_id_of(run_id)
    for sent in acr.schedule_runs():
        values = {v["name"]: v["value"] for v in sent.body.get("values", [])}
        if values.get("slipwayRequestId") == request_id:
            task = yaml.safe_load(decoded_task(sent))
            break
    else:
        raise AssertionError(f"no scheduleRun for {run_id}")
    [volume] = [v for v in task["volumes"] if "build.sh" in v["secret"]]
    launcher = base64.b64decode(volume["secret"]["build.sh"]).decode()
    # base64 -d <<'SLIPWAY_SCRIPT' | sh -eu, then the script's base64 text, then the delimiter.
    body = launcher.split("<<'SLIPWAY_SCRIPT'", 1)[1].split("\n", 1)[1]
    script = base64.b64decode(body.split("\nSLIPWAY_SCRIPT", 1)[0]).decode()
    [line] = [x for x in script.splitlines() if x.startswith("printf 'slipway: request")]
    printed = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True)
    return f"2026/12/03 12:00:00 Executing step ID: build\n{printed.stdout}#1 building\n"


def _interrupted_beside_a_manual_run(rig: Rig, acr: AcrServer, n: int) -> BuildRequest:
    """A request whose worker died after scheduleRun while somebody started a run by hand in the
    same minute: by time alone, recovery cannot tell which run is the request's."""
    request = make_request(n, received_at=rig.clock())
    rig.send(request)
    crashed_at = rig.clock()
    _crash_then_redeliver(rig)
    start_run_by_hand(rig, acr, created_at=crashed_at + timedelta(seconds=5))
    return request


def _replay(rig: Rig, request_id: str) -> None:
    from shared.dispatch.replay import Replayer, ReplaySelection

    Replayer(rig.queue, rig.ledger, clock=rig.clock).replay(
        ReplaySelection(ids=(request_id,)), actor="test", note="the operator replays", dry_run=False
    )


def test_a_replay_of_an_interrupted_dispatch_adopts_its_run_and_never_starts_a_second(
    crash_rig: Rig, acr_server: AcrServer
) -> None:
    """The gap of issue 17.4: a DispatchInterrupted request, replayed, used to start another run."""
    rig = crash_rig
    request = _interrupted_beside_a_manual_run(rig, acr_server, 11)
    rig.run_until_idle()
    record = rig.record(request.id)
    assert (record.status, record.failure_reason) == (RunStatus.DISPATCHING, "DispatchInterrupted")
    # Replayed while both runs are still queued (no log tells whose they are): still interrupted,
    # and nothing started.
    _replay(rig, request.id)
    rig.run_until_idle()
    record = rig.record(request.id)
    assert (record.failure_reason, record.run_id) == ("DispatchInterrupted", None)
    assert record.start_uncertain_at is not None  # the doubt survives the replay
    assert _runs(acr_server) == 2
    # The runs start and their logs name their requests: the next replay adopts the right one.
    for run_id in acr_server.runs:
        acr_server.set_status(run_id, "Running")
        acr_server.set_log(run_id, _printed_log(acr_server, run_id))
    _replay(rig, request.id)
    rig.run_until_idle()
    record = rig.record(request.id)
    assert (record.status, record.run_id) == (RunStatus.DISPATCHED, "ca1")
    assert acr_server.request_id_of("ca1") == request.id
    events = [e["event"] for e in record.history]
    assert events[-1] == "run_recovered" and "dispatch_interrupted" in events and "replayed" in events
    assert _runs(acr_server) == 2  # adopted: no second run of this request, ever
    assert rig.queue.peek(dead_letter=True) == []


def test_after_the_lease_the_run_whose_log_names_the_request_is_adopted_beside_a_manual_run(
    crash_rig: Rig, acr_server: AcrServer
) -> None:
    rig = crash_rig
    request = _interrupted_beside_a_manual_run(rig, acr_server, 12)
    for run_id in acr_server.runs:
        acr_server.set_status(run_id, "Running")
        acr_server.set_log(run_id, _printed_log(acr_server, run_id))
    rig.run_until_idle()
    record = rig.record(request.id)
    assert (record.status, record.run_id) == (RunStatus.DISPATCHED, "ca1")
    assert [e["event"] for e in record.history][-1] == "run_recovered"
    assert _runs(acr_server) == 2 and rig.queue.peek(dead_letter=True) == []

"""Replay handles a request, not a message: every dead letter of one request goes the same way.

The incident behind it: ``scheduleRun`` timed out at 0.2 s although the run started; the
dispatcher queued a retry copy ``<id>-a1`` and the original came back too (its host died before
completing it). Beside a run started by hand in the same minute, and before any run's log named
its request, both copies were refused ``DispatchInterrupted`` until dead-lettered. The operator's
replay sent one back, recovery adopted the run, and the other stayed in the dead-letter queue for
good, for a request that ran. Real components: the local queue, a folder ledger, the real
``AcrBackend`` over HTTPS to the loopback ACR server, the real queue trigger, a controlled clock.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.acr import run_backend
from shared.app.cli import main
from shared.model.build_request import BuildRequest
from shared.platform.ledger import FolderLedger, RunStatus
from shared.platform.queue import LocalQueue, OutgoingMessage
from tests.support.acr_server import AcrServer
from tests.support.cli import cli_json
from tests.support.dispatch_harness import Clock, Rig, acr_backend, make_request, start_run_by_hand

# What every refusal becomes in Azure (Learn, "Overview of Service Bus dead-letter queues").
SYSTEM_REASON = "MaxDeliveryCountExceeded"


@pytest.fixture
def rig(tmp_path: Path, acr_server: AcrServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setattr(run_backend, "READ_TIMEOUT", 0.2)
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server))
    yield rig
    rig.close()


def _ids(messages: list[Any]) -> list[str]:
    return sorted(m.message_id for m in messages)


def _started_unanswered_then_redelivered(rig: Rig, acr: AcrServer) -> BuildRequest:
    """Steps 1-2: the run starts but ``scheduleRun`` gets no answer in time; the dispatcher queues
    ``<id>-a1``; the host dies before completing the original. A run started by hand in the same
    minute makes two candidates for recovery while no log names a request."""
    request = make_request(1, received_at=rig.clock())
    rig.send(request)
    acr.slow_next(0.6)  # ACR creates the run; its answer comes after the 0.2 s read timeout
    [original] = rig.queue.receive()
    rig.invoke(original)  # the function returns; its host dies before completing the message
    start_run_by_hand(rig, acr, created_at=rig.clock() + timedelta(seconds=5))
    assert _ids(rig.queue.peek()) == [request.id, f"{request.id}-a1"]
    assert len(acr.runs) == 2 and acr.request_id_of("ca1") == request.id
    return request


def _logs_name_their_requests(acr: AcrServer) -> None:
    """The runs' build steps start and print their request line (shared/acr/task/scripts.py)."""
    for run_id in acr.runs:
        acr.set_log(run_id, f"slipway: request {acr.request_id_of(run_id)}, correlation test\n")


def test_both_dead_lettered_copies_go_with_one_replay_and_the_run_is_adopted(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request = _started_unanswered_then_redelivered(rig, acr_server)
    rig.run_until_idle()  # step 3: both copies refused DispatchInterrupted until dead-lettered
    dead = rig.queue.peek(dead_letter=True)
    assert _ids(dead) == [request.id, f"{request.id}-a1"]
    assert {m.dead_letter_reason for m in dead} == {SYSTEM_REASON}
    assert rig.record(request.id).failure_reason == "DispatchInterrupted"
    _logs_name_their_requests(acr_server)

    planned = cli_json(capsys, "replay", "--reason", "DispatchInterrupted", "--dry-run")
    assert [(i["message_id"], i["new_message_id"]) for i in planned["replayed"]] == [
        (request.id, f"{request.id}-r1")
    ]
    [sibling] = planned["settled"]
    assert sibling["message_id"] == f"{request.id}-a1" and f"replayed as {request.id}-r1" in sibling["note"]
    assert len(rig.queue.peek(dead_letter=True)) == 2 and rig.queue.peek() == []  # a dry run
    assert rig.record(request.id).failure_reason == "DispatchInterrupted"

    done = cli_json(capsys, "replay", "--reason", "DispatchInterrupted", "--note", "logs are there now")
    assert [i["new_message_id"] for i in done["replayed"]] == [f"{request.id}-r1"]
    assert [s["message_id"] for s in done["settled"]] == [f"{request.id}-a1"]
    assert rig.queue.peek(dead_letter=True) == []
    assert _ids(rig.queue.peek()) == [f"{request.id}-r1"]  # one copy: the request is still queued
    replayed = [e for e in rig.record(request.id).history if e["event"] == "replayed"]
    assert len(replayed) == 1 and f"{request.id}-a1 are completed" in replayed[0]["detail"]

    rig.run_until_idle()
    record = rig.record(request.id)
    assert (record.status, record.run_id) == (RunStatus.DISPATCHED, "ca1")
    assert record.history[-1]["event"] == "run_recovered"
    assert len(acr_server.runs) == 2  # the request's run was adopted, never started again
    assert rig.queue.peek(dead_letter=True) == [] and rig.queue.peek() == []
    again = cli_json(capsys, "replay")
    assert (again["replayed"], again["settled"]) == ([], [])


def test_a_dead_letter_of_a_request_that_ran_since_is_settled_not_replayed(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The retry copy is dead-lettered while no log names a request; the original comes back once
    the logs are there and adopts the run: the copy's dead letter stands for nothing left to do."""
    request = _started_unanswered_then_redelivered(rig, acr_server)
    rig.clock.advance(30)  # the retry copy is due, the original still locked by its dead host
    rig.drain()
    assert _ids(rig.queue.peek(dead_letter=True)) == [f"{request.id}-a1"]
    _logs_name_their_requests(acr_server)
    rig.run_until_idle()
    assert rig.record(request.id).run_id == "ca1"
    history = len(rig.record(request.id).history)

    assert cli_json(capsys, "replay", "--target", "other", "--dry-run")["settled"] == []  # out of scope
    planned = cli_json(capsys, "replay", "--reason", "DispatchInterrupted", "--dry-run")
    assert planned["replayed"] == []
    assert [(s["message_id"], s["note"]) for s in planned["settled"]] == [
        (f"{request.id}-a1", "already dispatched as run ca1")
    ]
    assert main(["replay", "--dry-run"]) == 0
    assert "would settle 1 dead letter(s)" in capsys.readouterr().out
    assert len(rig.queue.peek(dead_letter=True)) == 1 and len(rig.record(request.id).history) == history

    # Whatever reason is asked for: the reason it was once refused no longer matters.
    caplog.set_level(logging.INFO, logger="slipway.replay")
    done = cli_json(capsys, "replay", "--reason", "RunRejected", "--note", "runs checked")
    [logged] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "slipway.replay"]
    assert (logged["event"], logged["message_id"], logged["settled"]) == (
        "dead_letter_settled",
        f"{request.id}-a1",
        "already dispatched as run ca1",
    )
    assert done["replayed"] == [] and [s["message_id"] for s in done["settled"]] == [f"{request.id}-a1"]
    assert rig.queue.peek(dead_letter=True) == [] and rig.queue.peek() == []  # nothing sent
    record = rig.record(request.id)
    assert (record.status, record.run_id) == (RunStatus.DISPATCHED, "ca1")
    entry = record.history[-1]
    assert entry["event"] == "dead_letters_settled"
    assert "already dispatched as run ca1" in entry["detail"] and "runs checked" in entry["detail"]
    assert "@" in entry["detail"]  # who: user@host
    assert len(acr_server.runs) == 2


def test_a_dead_letter_of_another_build_under_a_dispatched_id_is_not_settled(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request = make_request(2, received_at=rig.clock())
    rig.send(request)
    rig.drain()
    other = request.model_copy(update={"source": request.source.model_copy(update={"commit": "f" * 40})})
    rig.queue.send([OutgoingMessage(message_id=f"{request.id}-other", body=other.to_json().encode())])
    rig.drain()  # refused IdConflict until dead-lettered
    before = rig.record(request.id)
    [planned] = cli_json(capsys, "replay", "--dry-run")["replayed"]
    assert planned["message_id"] == f"{request.id}-other" and planned["failure_reason"] is None
    [done] = cli_json(capsys, "replay")["replayed"]
    assert "IdConflict" in done["ledger"]
    assert rig.record(request.id) == before  # the dispatched build's record is not touched


def _dead_letter(queue: LocalQueue, message_id: str, body: bytes, replays: int) -> None:
    properties = {"replay_count": replays} if replays else {}
    queue.send([OutgoingMessage(message_id=message_id, body=body, application_properties=properties)])
    [locked] = queue.receive()
    queue.dead_letter(locked, SYSTEM_REASON, "delivered 10 times")


# Per request: where its ledger stands (None: no record), and how many dead letters it has.
_REQUESTS = st.lists(
    st.tuples(st.sampled_from([None, *RunStatus]), st.integers(min_value=1, max_value=3), st.booleans()),
    min_size=1,
    max_size=5,
)


@settings(max_examples=40, deadline=None)
@given(requests=_REQUESTS, limit=st.integers(min_value=1, max_value=4))
def test_after_a_replay_every_request_is_queued_once_left_alone_or_ran(
    requests: list[tuple[RunStatus | None, int, bool]], limit: int
) -> None:
    """Whatever the dead letters and the ledger: a request that ran leaves the dead-letter queue;
    a replayed one has exactly one copy queued and no dead letter; any other keeps every dead
    letter it had. Never is a request that has not run in neither queue."""
    from shared.dispatch.claims import new_record
    from shared.dispatch.replay import Replayer, ReplaySelection

    clock = Clock()
    with tempfile.TemporaryDirectory() as folder:
        queue = LocalQueue(Path(folder) / "queue.sqlite3", clock=clock)
        ledger = FolderLedger(Path(folder) / "ledger")
        built = []
        for n, (status, copies, replayed_before) in enumerate(requests):
            request = make_request(n, received_at=clock())
            built.append(request)
            if status is not None:
                run_id = f"ca{n}" if status is RunStatus.DISPATCHED else None
                ledger.create(new_record(request, status, clock(), "test", "arranged", run_id=run_id))
            for copy in range(copies):
                message_id = request.id if copy == 0 else f"{request.id}-a{copy}"
                _dead_letter(queue, message_id, request.to_json().encode(), int(replayed_before) * copy)
        try:
            report = Replayer(queue, ledger, clock=clock).replay(
                ReplaySelection(limit=limit), actor="test", note="property", dry_run=False
            )
            dead = [json.loads(m.body)["id"] for m in queue.peek(dead_letter=True, max_count=100)]
            copies_sent = {json.loads(m.body)["id"]: m.message_id for m in queue.peek(max_count=100)}
            queued = list(copies_sent)
        finally:
            queue.close()
    ran = (RunStatus.DISPATCHED, RunStatus.SUPERSEDED, RunStatus.CANCELLED)
    replayed = {item.request_id for item in report.items}
    assert len(report.items) == len(replayed) <= limit
    for request, (status, copies, replayed_before) in zip(built, requests, strict=True):
        if status in ran:
            assert (dead.count(request.id), queued.count(request.id)) == (0, 0)
        elif request.id in replayed:
            assert (dead.count(request.id), queued.count(request.id)) == (0, 1)
            # Numbered past every replay any of its dead letters went through: a new id.
            assert copies_sent[request.id] == f"{request.id}-r{copies if replayed_before else 1}"
        else:
            assert (dead.count(request.id), queued.count(request.id)) == (copies, 0)
    assert len(report.settled) == sum(c for s, c, _ in requests if s in ran) + sum(
        c - 1 for r, (s, c, _) in zip(built, requests, strict=True) if r.id in replayed
    )

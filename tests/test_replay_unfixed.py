"""Replaying a request whose cause is not fixed: the ledger ends saying it was dead-lettered again
(``failed``, with the reason and the new dead letter), never ``retrying`` with nothing queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.model.build_request import BuildRequest
from shared.platform.ledger import RunStatus
from tests.support.acr_server import AcrServer
from tests.support.cli import cli_json
from tests.support.dispatch_harness import Clock, Rig, acr_backend, make_request


@pytest.fixture
def rig(tmp_path: Path, acr_server: AcrServer) -> Iterator[Rig]:
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server))
    yield rig
    rig.close()


def _replay_and_redeliver(rig: Rig, request: BuildRequest, capsys: pytest.CaptureFixture[str]) -> None:
    [done] = cli_json(capsys, "replay", "--id", request.id, "--note", "cause fixed, I think")["replayed"]
    assert done["new_message_id"] == f"{request.id}-r1"
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None and record.status is RunStatus.RETRYING  # claimable again
    assert set(rig.drain()) == {f"{request.id}-r1"}  # each delivery refused until dead-lettered
    assert [m.message_id for m in rig.queue.peek(dead_letter=True)] == [f"{request.id}-r1"]


def test_a_replay_refused_before_any_claim_is_recorded_as_dead_lettered_again(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    # A target the configuration does not have: refused before any claim, and again after the
    # replay, since nobody added the target.
    request = make_request(1, received_at=rig.clock()).model_copy(update={"target": "not-configured"})
    rig.send(request)
    rig.drain()
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None and (record.status, record.failure_reason) == (
        RunStatus.FAILED,
        "UnknownTarget",
    )

    _replay_and_redeliver(rig, request, capsys)
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert record.failure_reason == "UnknownTarget"
    assert record.dead_letter_message_id == f"{request.id}-r1"
    assert [e["event"] for e in record.history] == ["refused", "replayed", "refused"]
    assert "not-configured" in record.history[-1]["detail"]
    shown = cli_json(capsys, "runs", "show", request.id)
    assert (shown["status"], shown["history"][-1]["event"]) == ("failed", "refused")
    # ... and it can be replayed again once the cause is fixed: the dead letter is the -r1 copy.
    assert cli_json(capsys, "replay", "--dry-run")["replayed"][0]["new_message_id"] == f"{request.id}-r2"


def test_a_replay_refused_by_acr_again_is_failed_with_the_new_refusal(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request = make_request(2, received_at=rig.clock())
    refusal = {"error": {"code": "QuotaExceeded", "message": "fix the quota, then replay"}}
    acr_server.fail_next(400, body=refusal)
    rig.send(request)
    rig.drain()
    acr_server.fail_next(400, body=refusal)  # the quota is still not raised
    _replay_and_redeliver(rig, request, capsys)
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None
    assert (record.status, record.failure_reason) == (RunStatus.FAILED, "RunRejected")
    events = [e["event"] for e in record.history]
    assert events.count("replayed") == 1 and events[-1] == "start_refused"

"""Coalescing, cancellation of superseded runs and run budgets, on the controlled-clock rig."""

from __future__ import annotations

from pathlib import Path

from shared.platform.ledger import RunStatus
from tests.support.acr_server import AcrServer
from tests.support.dispatch_harness import Clock, Rig, acr_backend, make_request


def test_pushes_within_the_quiet_period_start_one_run_for_the_newest(
    tmp_path: Path, acr_server: AcrServer
) -> None:
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server), dispatch="  quiet_period: 30s")
    try:
        requests = []
        for n in range(5):
            requests.append(make_request(n, received_at=rig.clock()))
            rig.send(requests[-1])
            rig.drain()  # each waits (a scheduled copy), none starts yet
            rig.clock.advance(5)
        assert acr_server.runs == {}
        rig.run_until_idle(step=10)
        assert len(acr_server.runs) == 1 and acr_server.request_id_of("ca1") == requests[-1].id
        statuses = [(rig.ledger.get(r.id) or (None, None))[0] for r in requests]
        assert [s.status for s in statuses if s] == [RunStatus.SUPERSEDED] * 4 + [RunStatus.DISPATCHED]
        assert "superseded" in statuses[0].history[-1]["event"]  # type: ignore[union-attr]
    finally:
        rig.close()


def test_an_older_request_arriving_late_is_superseded_by_the_started_one(
    tmp_path: Path, acr_server: AcrServer
) -> None:
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server))
    try:
        old = make_request(1, received_at=rig.clock())
        rig.clock.advance(1)
        new = make_request(2, received_at=rig.clock())
        rig.send(new)
        rig.drain()
        rig.send(old)  # e.g. a retry copy of the older commit, after the newer one started
        rig.drain()
        assert len(acr_server.runs) == 1
        record, _ = rig.ledger.get(old.id) or (None, None)
        assert record is not None and record.status is RunStatus.SUPERSEDED
    finally:
        rig.close()


def test_cancel_superseded_cancels_the_older_running_run(tmp_path: Path, acr_server: AcrServer) -> None:
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server), target_extra="    cancel_superseded: true")
    try:
        first = make_request(1, received_at=rig.clock())
        rig.send(first)
        rig.drain()
        acr_server.set_status("ca1", "Running")
        rig.clock.advance(60)
        rig.send(make_request(2, received_at=rig.clock()))
        rig.drain()
        assert (
            acr_server.cancelled() == ["ca1"] and acr_server.runs["ca1"]["properties"]["status"] == "Canceled"
        )
        record, _ = rig.ledger.get(first.id) or (None, None)
        assert record is not None and record.history[-1]["event"] == "cancelled"
        rig.clock.advance(60)
        rig.send(make_request(3, received_at=rig.clock()))
        acr_server.set_status("ca2", "Succeeded")
        rig.drain()
        assert acr_server.cancelled() == ["ca1"]  # a finished run is left alone
    finally:
        rig.close()


def test_over_budget_requests_wait_and_are_never_dropped(tmp_path: Path, acr_server: AcrServer) -> None:
    rig = Rig(
        tmp_path, Clock(), acr_backend(acr_server), dispatch="  quiet_period: 0s\n  max_concurrent_runs: 2"
    )
    try:
        requests = [make_request(n, received_at=rig.clock(), ref=f"refs/heads/b{n}") for n in range(4)]
        rig.send(*requests)
        rig.drain()
        assert len(acr_server.runs) == 2
        waiting = rig.queue.peek()
        assert len(waiting) == 2 and all(m.is_scheduled and "-w" in m.message_id for m in waiting)
        rig.clock.advance(120)
        rig.drain()
        assert len(acr_server.runs) == 2  # still two in flight: wait again
        for run_id in ("ca1", "ca2"):
            acr_server.set_status(run_id, "Succeeded")
        from shared.app.runtime import runtime

        runtime().reconciler().run()  # records the ends in the ledger
        rig.run_until_idle(step=60)
        assert len(acr_server.runs) == 4
    finally:
        rig.close()

"""`slipway rerun` and `slipway cancel` through the real CLI entry point.

The rig is the real queue trigger on the local queue, the real Azure SDK over HTTPS to the
loopback ACR server, and the ledger in a folder or in Azurite (Blob), both for every test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.app.cli import main
from shared.app.runtime import Runtime, runtime, set_runtime
from shared.dispatch.claims import new_record
from shared.platform.ledger import BlobLedger, LedgerRecord, RunStatus, is_active
from tests.support.acr_server import AcrServer
from tests.support.azurite import AzuriteServer
from tests.support.dispatch_harness import Clock, Rig, acr_backend, make_request
from tests.support.git_hosts import GitHostServer

TOKEN = "ghp_status_token_for_tests"


def _rig(
    tmp_path: Path,
    acr: AcrServer,
    ledger_kind: str,
    azurite: AzuriteServer | None,
    git_host: GitHostServer,
    **options: str,
) -> Rig:
    rig = Rig(tmp_path, Clock(), acr_backend(acr), **options)
    rig.settings.update(git_host.settings(GITHUB_STATUS_TOKEN=TOKEN))
    if ledger_kind == "azurite":
        assert azurite is not None
        rig.ledger = BlobLedger(azurite.new_container("ledger"))  # type: ignore[assignment]
        set_runtime(
            Runtime(
                rig.settings,
                app_root=tmp_path,
                queue=rig.queue,
                ledger=rig.ledger,
                backend=rig.backend,
                state=rig.state,
                clock=rig.clock,
            )
        )
    return rig


@pytest.fixture(params=["folder", "azurite"])
def ledger_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rig(
    tmp_path: Path,
    acr_server: AcrServer,
    ledger_kind: str,
    request: pytest.FixtureRequest,
    git_host_server: GitHostServer,
) -> Iterator[Rig]:
    azurite = request.getfixturevalue("azurite") if ledger_kind == "azurite" else None
    rig = _rig(tmp_path, acr_server, ledger_kind, azurite, git_host_server)
    yield rig
    rig.close()


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def _record(rig: Rig, request_id: str) -> LedgerRecord:
    found = rig.ledger.get(request_id)
    assert found is not None, request_id
    return found[0]


def _dispatched(rig: Rig, n: int) -> tuple[str, str]:
    """A push dispatched to the loopback ACR: (request id, run id)."""
    request = make_request(n, received_at=rig.clock())
    rig.send(request)
    rig.drain()
    record = _record(rig, request.id)
    assert record.status is RunStatus.DISPATCHED and record.run_id
    return request.id, record.run_id


def _finish(rig: Rig, acr: AcrServer, run_id: str, status: str) -> None:
    acr.set_log(run_id, "step build: done\n")  # what a finished run's outcome is read from
    acr.set_status(run_id, status)
    runtime().reconciler().run()


# --- rerun ------------------------------------------------------------------------------------


def test_rerun_queues_the_same_build_under_a_new_id_and_records_who_and_why(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    original_id, run_id = _dispatched(rig, 1)
    original = _record(rig, original_id).request

    # Still running: refused, nothing queued.
    line = _refused(capsys, "rerun", original_id)
    assert original_id in line and "dispatched" in line
    _finish(rig, acr_server, run_id, "Failed")

    planned = _json(capsys, "rerun", original_id, "--reason", "flaky network", "--dry-run")
    assert planned["new_request_id"] == f"{original_id}-r1"
    assert (planned["dry_run"], planned["queued"]) == (True, False)
    assert planned["commit"] == original["source"]["commit"] and planned["tags"] == original["image"]["tags"]
    assert rig.queue.peek() == []
    assert not any(e["event"] == "rerun" for e in _record(rig, original_id).history)
    assert main(["rerun", original_id, "--dry-run"]) == 0  # the human table, ids whole
    assert f"{original_id}-r1" in capsys.readouterr().out

    first = _json(capsys, "rerun", original_id, "--reason", "flaky network", "--actor", "alice")
    second = _json(capsys, "rerun", original_id)  # before the first is dispatched: the next number
    assert (first["new_request_id"], second["new_request_id"]) == (f"{original_id}-r1", f"{original_id}-r2")
    assert first["queued"] and first["actor"] == "alice" and "@" in second["actor"]

    messages = {m.message_id: json.loads(m.body) for m in rig.queue.peek()}
    assert sorted(messages) == [f"{original_id}-r1", f"{original_id}-r2"]
    body = messages[f"{original_id}-r1"]
    assert body["id"] == f"{original_id}-r1"
    assert body["trigger"]["kind"] == "rerun"
    assert (body["trigger"]["actor"], body["trigger"]["reason"]) == ("alice", "flaky network")
    assert body["trigger"]["rerun_of"] == original_id
    for part in ("target", "source", "image", "platforms", "build_args", "cache", "coalesce_key"):
        assert body[part] == original[part], part
    history = [e["detail"] for e in _record(rig, original_id).history if e["event"] == "rerun"]
    assert len(history) == 2 and "alice" in history[0] and "flaky network" in history[0]

    rig.drain()
    assert len(acr_server.schedule_runs()) == 3
    for rerun_id in messages:
        record = _record(rig, rerun_id)
        assert record.status is RunStatus.DISPATCHED and record.run_id not in (None, run_id)
        assert record.request["trigger"]["kind"] == "rerun"
    # A rerun of a running rerun is refused too; of an unknown id, one line.
    assert "dispatched" in _refused(capsys, "rerun", f"{original_id}-r1")
    assert "no request nope in the ledger" in _refused(capsys, "rerun", "nope")


def test_a_rerun_of_an_old_commit_is_never_superseded_and_cancels_no_newer_run(
    tmp_path: Path,
    acr_server: AcrServer,
    ledger_kind: str,
    request: pytest.FixtureRequest,
    git_host_server: GitHostServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    azurite = request.getfixturevalue("azurite") if ledger_kind == "azurite" else None
    extra = "    cancel_superseded: true"
    rig = _rig(tmp_path, acr_server, ledger_kind, azurite, git_host_server, target_extra=extra)
    try:
        old_id, old_run = _dispatched(rig, 1)
        _finish(rig, acr_server, old_run, "Failed")
        rig.clock.advance(60)
        new_id, new_run = _dispatched(rig, 2)  # a newer commit of the same branch, still running
        acr_server.set_status(new_run, "Running")
        rerun = _json(capsys, "rerun", old_id)["new_request_id"]
        rig.drain()
        record = _record(rig, rerun)
        assert record.status is RunStatus.DISPATCHED  # not superseded by the newer push
        assert acr_server.cancelled() == []  # and the newer push's run goes on
        assert _record(rig, new_id).status is RunStatus.DISPATCHED
        # The branch's newest started push is still the newer commit.
        documents = [d for d in (tmp_path / "state").rglob("*") if d.is_file() and "coalesce" in str(d)]
        assert documents and all(new_id in d.read_text() and rerun not in d.read_text() for d in documents)
        # A push that arrives after the rerun does not supersede it either (it already ran), and a
        # later push is not superseded by the rerun.
        rig.clock.advance(60)
        newest_id, _ = _dispatched(rig, 3)
        assert _record(rig, newest_id).status is RunStatus.DISPATCHED
    finally:
        rig.close()


def test_a_rerun_whose_id_would_be_too_long_is_refused(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    base = make_request(1, received_at=rig.clock())
    long_id = "azure-test." + "a" * 88  # 99 characters: "-r1" makes 102, over the grammar's 101
    request = base.model_copy(update={"id": long_id})
    assert rig.ledger.create(new_record(request, RunStatus.FAILED, rig.clock(), "test", "refused"))
    line = _refused(capsys, "rerun", long_id)
    assert "102 characters" in line and "101" in line
    assert rig.queue.peek() == []
    # One character shorter fits exactly.
    fits = long_id[:-1]
    assert rig.ledger.create(
        new_record(base.model_copy(update={"id": fits}), RunStatus.FAILED, rig.clock(), "test", "refused")
    )
    assert len(_json(capsys, "rerun", fits)["new_request_id"]) == 101


def test_a_superseded_or_cancelled_request_can_be_rerun(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    request = make_request(1, received_at=rig.clock())
    rig.ledger.create(new_record(request, RunStatus.SUPERSEDED, rig.clock(), "superseded", "by x"))
    assert _json(capsys, "rerun", request.id)["original_status"] == "superseded"
    other = make_request(2, received_at=rig.clock())
    rig.ledger.create(new_record(other, RunStatus.CANCELLED, rig.clock(), "cancelled", "by y"))
    assert _json(capsys, "rerun", other.id)["original_status"] == "cancelled"


# --- cancel -----------------------------------------------------------------------------------


def _statuses(git_host: GitHostServer) -> list[dict[str, Any]]:
    return [r.body for r in git_host.requests if r.host == "github" and isinstance(r.body, dict)]


def test_cancel_a_running_request_cancels_its_acr_run_once(
    rig: Rig, acr_server: AcrServer, git_host_server: GitHostServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id, run_id = _dispatched(rig, 1)
    acr_server.set_status(run_id, "Running")

    planned = _json(capsys, "cancel", request_id, "--dry-run")
    assert (planned["action"], planned["dry_run"]) == ("would_cancel_run", True)
    assert acr_server.cancelled() == [] and _record(rig, request_id).status is RunStatus.DISPATCHED

    done = _json(capsys, "cancel", request_id, "--reason", "wrong commit", "--actor", "alice")
    assert done["action"] == "run_cancelled" and done["previous_status"] == "dispatched"
    assert (done["run_id"], done["run_status"], done["commit_status"]) == (run_id, "Canceled", "error")
    assert acr_server.cancelled() == [run_id]  # the server saw POST .../runs/{runId}/cancel
    record = _record(rig, request_id)
    assert record.status is RunStatus.CANCELLED and record.cancelled_by == "alice"
    assert any(e["event"] == "cancelled" and "wrong commit" in e["detail"] for e in record.history)
    cancelled_status = _statuses(git_host_server)[-1]
    assert cancelled_status["state"] == "error" and "cancelled by alice" in cancelled_status["description"]

    # Twice is fine: nothing more reaches ACR or the Git host.
    posted = len(git_host_server.requests)
    again = _json(capsys, "cancel", request_id)
    assert again["action"] == "already_cancelled"
    assert main(["cancel", request_id]) == 0  # the human table
    assert "already cancelled" in capsys.readouterr().out
    assert acr_server.cancelled() == [run_id] and len(git_host_server.requests) == posted

    # Reconciliation follows it to its end and posts nothing new; then it is settled.
    summaries = {s.request_id: s for s in rig.ledger.list_active()}
    assert request_id in summaries and is_active(summaries[request_id])
    runtime().reconciler().run()
    record = _record(rig, request_id)
    assert (record.status, record.run_status, record.following) == (RunStatus.CANCELLED, "Canceled", False)
    assert len(git_host_server.requests) == posted
    assert request_id not in {s.request_id for s in rig.ledger.list_active() if is_active(s)}
    listed = _json(capsys, "runs", "list")["runs"]
    assert [r["status"] for r in listed if r["request_id"] == request_id] == ["cancelled"]


def test_cancel_refuses_a_finished_request_and_an_unknown_one(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id, run_id = _dispatched(rig, 1)
    _finish(rig, acr_server, run_id, "Succeeded")
    line = _refused(capsys, "cancel", request_id)
    assert "already completed (Succeeded)" in line
    assert acr_server.cancelled() == []
    assert "no request nope in the ledger or the queue" in _refused(capsys, "cancel", "nope")


def test_cancel_a_queued_request_settles_it_without_a_run(
    tmp_path: Path,
    acr_server: AcrServer,
    ledger_kind: str,
    request: pytest.FixtureRequest,
    git_host_server: GitHostServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    azurite = request.getfixturevalue("azurite") if ledger_kind == "azurite" else None
    rig = _rig(tmp_path, acr_server, ledger_kind, azurite, git_host_server, dispatch="  quiet_period: 5m")
    try:
        build = make_request(1, received_at=rig.clock())
        rig.send(build)
        rig.drain()  # waits out its quiet period: a scheduled copy, no record
        assert rig.ledger.get(build.id) is None and rig.queue.peek()
        planned = _json(capsys, "cancel", build.id, "--dry-run")
        assert (planned["action"], planned["previous_status"]) == ("would_cancel_pending", "queued")
        assert rig.ledger.get(build.id) is None
        done = _json(capsys, "cancel", build.id, "--actor", "bob")
        assert (done["action"], done["run_id"], done["commit_status"]) == ("pending_cancelled", None, "error")
        assert "Cancelled by bob before it started" in _statuses(git_host_server)[-1]["description"]
        rig.run_until_idle()
        assert acr_server.schedule_runs() == []
        assert rig.queue.peek() == [] and rig.queue.peek(dead_letter=True) == []
        assert _record(rig, build.id).status is RunStatus.CANCELLED
        # A redelivery of the very message (a sender's retry) is settled the same way.
        rig.queue.close()
        from shared.platform.queue.local import LocalQueue

        rig.queue = LocalQueue(tmp_path / "queue2.sqlite3", clock=rig.clock)
        rig.send(build)
        set_runtime(
            Runtime(
                rig.settings,
                app_root=tmp_path,
                queue=rig.queue,
                ledger=rig.ledger,
                backend=rig.backend,
                state=rig.state,
                clock=rig.clock,
            )
        )
        rig.run_until_idle()
        assert acr_server.schedule_runs() == [] and rig.queue.peek(dead_letter=True) == []
    finally:
        rig.close()


def test_cancel_a_request_waiting_to_retry_stops_its_retries(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    build = make_request(1, received_at=rig.clock())
    acr_server.fail_next(503)  # transient: the claim goes back to retrying, a copy waits
    rig.send(build)
    rig.drain()
    assert _record(rig, build.id).status is RunStatus.RETRYING
    assert len(acr_server.schedule_runs()) == 1
    done = _json(capsys, "cancel", build.id)
    assert (done["action"], done["previous_status"]) == ("pending_cancelled", "retrying")
    rig.run_until_idle()
    assert len(acr_server.schedule_runs()) == 1  # no further attempt
    assert _record(rig, build.id).status is RunStatus.CANCELLED
    assert rig.queue.peek(dead_letter=True) == []

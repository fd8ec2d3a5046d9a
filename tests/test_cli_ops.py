"""The operator CLI on the local queue and ledger: `queue`, `runs`, `render`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.acr.run_backend import DryRunBackend
from shared.app.cli import main
from shared.app.runtime import Runtime, set_runtime
from shared.dispatch.dispatcher import Dispatcher
from shared.platform.ledger import FolderLedger
from shared.platform.queue.local import LocalQueue

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_REQUEST = ROOT / "examples" / "build-request.json"
EXAMPLE_CONFIG = ROOT / "examples" / "slipway.yaml"


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    for key in (
        "ServiceBusConnection",
        "ServiceBusConnection__fullyQualifiedNamespace",
        "AzureWebJobsStorage",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SLIPWAY_CONFIG", str(EXAMPLE_CONFIG))
    runtime = Runtime()
    set_runtime(runtime)
    yield runtime
    set_runtime(None)


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_queue_send_validates_and_enqueues(local: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    assert _json(capsys, "queue", "send", str(EXAMPLE_REQUEST)) == {
        "sent": json.loads(EXAMPLE_REQUEST.read_text())["id"],
        "duplicate_dropped": False,
    }
    listed = _json(capsys, "queue", "list")
    [message] = listed["messages"]  # type: ignore[index]
    assert message["message_id"] == json.loads(EXAMPLE_REQUEST.read_text())["id"]
    assert message["target"] == json.loads(EXAMPLE_REQUEST.read_text())["target"]
    assert _json(capsys, "queue", "list", "--dead-letter") == {"dead_letter": True, "messages": []}


def test_queue_send_says_when_duplicate_detection_dropped_the_message(
    local: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = json.loads(EXAMPLE_REQUEST.read_text())["id"]
    assert main(["queue", "send", str(EXAMPLE_REQUEST)]) == 0
    assert capsys.readouterr().out == f"sent {request_id}\n"
    # The same id again, inside the duplicate-detection window: the queue drops it, and says so.
    assert main(["queue", "send", str(EXAMPLE_REQUEST)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"not queued: {request_id} was sent within the last 10 minutes")
    assert "duplicate detection dropped" in out
    assert _json(capsys, "queue", "send", str(EXAMPLE_REQUEST))["duplicate_dropped"] is True  # type: ignore[index]
    assert [m.message_id for m in local.local_queue().peek()] == [request_id]  # one message


def test_queue_list_labels_a_scheduled_time_as_scheduled(
    local: Runtime, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.platform.queue.port import OutgoingMessage

    queue = local.local_queue()
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    queue.send([OutgoingMessage(body=b"{}", message_id="now-1")])
    queue.send([OutgoingMessage(body=b"{}", message_id="later-1", scheduled_enqueue_time=later)])
    [now_row, later_row] = _json(capsys, "queue", "list")["messages"]  # type: ignore[index]
    assert (later_row["state"], later_row["scheduled_enqueue_time"]) == ("scheduled", later.isoformat())
    assert now_row["state"] == "active" and now_row["scheduled_enqueue_time"] is None
    monkeypatch.setenv("COLUMNS", "200")  # one line per message
    assert main(["queue", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"scheduled for {later.isoformat()}" in next(line for line in lines if "later-1" in line)
    assert "enqueued 20" in next(line for line in lines if "now-1" in line)


def test_queue_send_refuses_an_invalid_request(
    local: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = json.loads(EXAMPLE_REQUEST.read_text())
    bad["platforms"] = ["linux/amd64; rm -rf /"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["queue", "send", str(path)]) == 1
    err = capsys.readouterr().err
    assert "not a valid BuildRequest v1" in err and "platforms" in err
    assert local.local_queue().count() == 0


def test_dead_letters_are_listed_with_their_reason(
    local: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["queue", "send", str(EXAMPLE_REQUEST)]) == 0
    queue: LocalQueue = local.local_queue()
    [message] = queue.receive()
    queue.dead_letter(message, reason="UnknownTarget", description="target 'x' is not in the configuration")
    capsys.readouterr()
    listed = _json(capsys, "queue", "list", "--dead-letter")
    [row] = listed["messages"]  # type: ignore[index]
    assert row["dead_letter_reason"] == "UnknownTarget"
    assert "not in the configuration" in row["dead_letter_description"]


def test_runs_list_and_show(local: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = FolderLedger(local.state_dir / "ledger")
    dispatcher = Dispatcher(config=local.config, ledger=ledger, backend=DryRunBackend(), settings={})
    result = dispatcher.dispatch(EXAMPLE_REQUEST.read_bytes(), message_id="m-1")
    assert result.run_id
    runs = _json(capsys, "runs", "list")["runs"]  # type: ignore[index]
    assert [(r["request_id"], r["status"], r["backend"]) for r in runs] == [
        (result.request_id, "dispatched", "dry-run")
    ]
    by_request = _json(capsys, "runs", "show", str(result.request_id))
    by_run = _json(capsys, "runs", "show", result.run_id)
    assert by_request == by_run
    assert by_request["task_yaml"].startswith("version: v1.1.0")  # type: ignore[index]
    assert main(["runs", "show", "no-such-run"]) == 1
    # Human output renders too.
    assert main(["runs", "list"]) == 0
    assert main(["runs", "show", str(result.request_id)]) == 0
    assert "task YAML" in capsys.readouterr().out


def test_render_prints_the_task(capsys: pytest.CaptureFixture[str]) -> None:
    commit = "c72d62bc4e992806a012ccaca139a8a6ef41a07c"
    argv = ["render", "--config", str(EXAMPLE_CONFIG), "--target", "azure-test", "--commit", commit]
    assert main([*argv, "--ref", "refs/heads/master", "--scripts"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("version: v1.1.0\n")
    assert f"https://github.com/dougbu/AzureTest.git#{commit}" in out
    assert main([*argv, "--ref", "refs/heads/master", "--request"]) == 0
    assert json.loads(capsys.readouterr().out)["source"]["commit"] == commit
    assert main([*argv[:-2], "--commit", "abc", "--ref", "refs/heads/master"]) == 1
    assert (
        main(
            ["render", "--config", str(EXAMPLE_CONFIG), "--target", "nope", "--commit", commit, "--ref", "x"]
        )
        == 1
    )


# --- schedules and polls ------------------------------------------------------------------------


def test_schedules_list_shows_each_schedule_before_and_after_an_evaluation(
    local: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.intake.schedules import evaluate_schedules

    [before] = _json(capsys, "schedules", "list")["schedules"]  # type: ignore[index]
    assert (before["target"], before["schedule"], before["note"]) == (
        "azure-test",
        "0 4 * * 1",
        "not evaluated yet",
    )
    assert datetime.fromisoformat(before["next_slot"]).strftime("%a %H:%M") == "Mon 04:00"

    monday = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    config, state, queue = local.config(), local.state(), local.queue()
    evaluate_schedules(config, now=monday, state=state, queue=queue)  # first sighting
    summary = evaluate_schedules(config, now=monday + timedelta(hours=1, minutes=1), state=state, queue=queue)
    [queued] = summary.queued
    [after] = _json(capsys, "schedules", "list")["schedules"]  # type: ignore[index]
    assert after["last_slot"] == "2026-11-30T04:00:00+00:00"
    assert after["request_id"] == queued.request_id
    assert after["queued_at"] == "2026-11-30T04:01:00+00:00" and after["pending"] is False
    assert after["note"] is None
    assert main(["schedules", "list"]) == 0
    assert "1 scheduled target(s)" in capsys.readouterr().out


def test_polls_list_shows_digests_failures_and_backoffs(
    local: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.intake.digest_poll import (
        DigestRecord,
        RegistryBackoff,
        image_key,
        polled_images,
        registry_key,
    )

    [(registry, [reference])] = polled_images(local.config()).items()
    [unseen] = _json(capsys, "polls", "list")["images"]  # type: ignore[index]
    assert (unseen["image"], unseen["digest"]) == (str(reference), None)

    now = datetime.now(UTC)
    seen = DigestRecord(
        image=str(reference), digest="sha256:" + "a" * 64, checked_at=now, error="503", error_at=now
    )
    local.state().create(image_key(str(reference)), seen.model_dump(mode="json"))
    backoff = RegistryBackoff(
        registry=registry, until=now + timedelta(minutes=5), reason="429 Retry-After: 300"
    )
    local.state().create(registry_key(registry), backoff.model_dump(mode="json"))
    listed = _json(capsys, "polls", "list")
    [image] = listed["images"]  # type: ignore[index]
    assert (image["digest"], image["error"]) == (seen.digest, "503")
    assert listed["backoffs"] == [  # type: ignore[index]
        {"registry": registry, "until": backoff.until.isoformat(), "reason": backoff.reason}
    ]
    assert main(["polls", "list"]) == 0
    out = capsys.readouterr().out
    assert "1 polled base image(s)" in out and "backed off" in out

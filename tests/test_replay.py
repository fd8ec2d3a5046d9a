"""Replay on the local queue, end to end through the CLI and the admin function."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest

from shared.app.cli import main
from shared.platform.ledger import RunStatus
from tests.support.acr_server import AcrServer
from tests.support.cli import cli_json
from tests.support.dispatch_harness import Clock, Rig, acr_backend, make_request


@pytest.fixture
def rig(tmp_path: Path, acr_server: AcrServer) -> Iterator[Rig]:
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server))
    yield rig
    rig.close()


# Service Bus's system reason for a message delivered MaxDeliveryCount times (Learn, "Overview of
# Service Bus dead-letter queues"): what every refusal of the function trigger becomes in Azure.
SYSTEM_REASON = "MaxDeliveryCountExceeded"


def _refused(rig: Rig, acr: AcrServer, n: int) -> str:
    """A request ACR refused once (a permanent error): it sits in the dead-letter queue."""
    request = make_request(n, received_at=rig.clock())
    acr.fail_next(400, body={"error": {"code": "QuotaExceeded", "message": "fix the quota, then replay"}})
    rig.send(request)
    rig.drain()
    return request.id


def test_a_dead_letter_is_listed_replayed_with_a_new_id_and_dispatched_once(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = _refused(rig, acr_server, 1)
    [listed] = cli_json(capsys, "queue", "list", "--dead-letter")["messages"]
    # As in Azure: the queue only knows the message was never settled; the ledger knows why.
    assert (listed["message_id"], listed["dead_letter_reason"]) == (request_id, SYSTEM_REASON)
    record, _ = rig.ledger.get(request_id) or (None, None)
    assert record is not None and record.failure_reason == "RunRejected"
    assert "fix the quota" in (record.error or "")

    planned = cli_json(capsys, "replay", "--reason", "runrejected", "--dry-run")
    assert planned["dry_run"] is True
    assert [i["new_message_id"] for i in planned["replayed"]] == [f"{request_id}-r1"]
    [item] = planned["replayed"]
    assert (item["failure_reason"], item["dead_letter_reason"]) == ("RunRejected", SYSTEM_REASON)
    # The ledger's reason is the one matched: the queue's says nothing about this refusal.
    assert cli_json(capsys, "replay", "--reason", "MaxDelivery", "--dry-run")["replayed"] == []
    assert len(rig.queue.peek(dead_letter=True)) == 1 and rig.queue.peek() == []  # nothing changed
    record, _ = rig.ledger.get(request_id) or (None, None)
    assert record is not None and record.status is RunStatus.FAILED

    done = cli_json(capsys, "replay", "--id", request_id, "--note", "quota raised (INC-42)")
    assert [i["new_message_id"] for i in done["replayed"]] == [f"{request_id}-r1"]
    assert rig.queue.peek(dead_letter=True) == []
    [copy] = rig.queue.peek()
    assert copy.message_id == f"{request_id}-r1" and json.loads(copy.body)["replay_of"] == request_id
    record, _ = rig.ledger.get(request_id) or (None, None)
    assert record is not None and record.status is RunStatus.RETRYING
    replayed = [e for e in record.history if e["event"] == "replayed"]
    assert (
        len(replayed) == 1
        and "quota raised (INC-42)" in replayed[0]["detail"]
        and "@" in replayed[0]["detail"]
        and "RunRejected" in replayed[0]["detail"]
    )

    assert rig.drain() == [f"{request_id}-r1"]
    record, _ = rig.ledger.get(request_id) or (None, None)
    assert record is not None and (record.status, record.run_id) == (RunStatus.DISPATCHED, "ca1")
    assert len(acr_server.runs) == 1
    assert cli_json(capsys, "replay")["replayed"] == []  # nothing left to replay


def test_filters_limit_and_a_second_replay_numbers_on(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _refused(rig, acr_server, 2), _refused(rig, acr_server, 3)
    assert cli_json(capsys, "replay", "--target", "other", "--dry-run")["replayed"] == []
    assert cli_json(capsys, "replay", "--since", "1h", "--reason", "Unknown", "--dry-run")["replayed"] == []
    [only] = cli_json(capsys, "replay", "--limit", "1")["replayed"]
    assert only["message_id"] == first
    acr_server.fail_next(400, body={"error": {"code": "QuotaExceeded", "message": "still no quota"}})
    rig.drain()  # refused again: back in the dead-letter queue as <id>-r1
    ids = sorted(m.message_id for m in rig.queue.peek(dead_letter=True))
    assert ids == sorted([second, f"{first}-r1"])
    again = cli_json(capsys, "replay", "--id", first)["replayed"]
    assert [i["new_message_id"] for i in again] == [f"{first}-r2"]
    assert main(["replay", "--since", "forever"]) == 1


def test_ops_function_replays_with_the_caller_recorded(rig: Rig, acr_server: AcrServer) -> None:
    from handlers import ops

    request_id = _refused(rig, acr_server, 4)
    function = ops.ops_replay.build().get_user_function()
    json_type = {"Content-Type": "application/json"}
    bad = function(func.HttpRequest("POST", "/api/ops/replay", headers=json_type, body=b'{"limit": 0}'))
    assert bad.status_code == 400 and json.loads(bad.get_body())["error"] == "invalid_request"
    not_json = function(
        func.HttpRequest("POST", "/api/ops/replay", headers={"Content-Type": "text/plain"}, body=b"x")
    )
    assert not_json.status_code == 415 and "reason" in json.loads(not_json.get_body())
    huge = function(func.HttpRequest("POST", "/api/ops/replay", headers=json_type, body=b" " * 70_000))
    assert huge.status_code == 413
    assert rig.queue.peek(dead_letter=True), "a refused call replays nothing"
    response = function(
        func.HttpRequest(
            "POST",
            "/api/ops/replay",
            headers={"x-ms-client-principal-name": "ops@example.com", **json_type},
            body=json.dumps({"ids": [request_id], "note": "via portal"}).encode(),
        )
    )
    assert response.status_code == 200
    assert [i["new_message_id"] for i in json.loads(response.get_body())["replayed"]] == [f"{request_id}-r1"]
    record, _ = rig.ledger.get(request_id) or (None, None)
    # Without App Service authentication in front, the principal header is the caller's own word:
    # the only identity the platform vouches for is the master key.
    assert record is not None and "http:master-key: via portal" in record.history[-1]["detail"]
    assert "ops@example.com" not in json.dumps(record.history)


# App Service sets WEBSITE_AUTH_ENABLED=True while its authentication module is on
# (AzureAD/microsoft-identity-web, AppServicesAuthenticationInformation.cs: the constant
# "WEBSITE_AUTH_ENABLED" with the comment "True"), and only then strips client-sent
# X-MS-CLIENT-PRINCIPAL-* headers (Learn, "Work with user identities in Azure App Service
# authentication").
@pytest.mark.parametrize(
    ("easy_auth", "header", "actor"),
    [
        (None, "ops@example.com", "http:master-key"),
        ("False", "ops@example.com", "http:master-key"),
        ("True", "ops@example.com", "http:ops@example.com"),
        ("true", None, "http:master-key"),  # anonymous requests allowed through: no principal
        ("True", "evil\nname\x00", "http:evilname"),
    ],
)
def test_the_replay_actor_is_only_an_identity_the_platform_vouches_for(
    easy_auth: str | None, header: str | None, actor: str
) -> None:
    from shared.dispatch.replay import authenticated_actor
    from shared.platform.http import HttpRequest

    headers = {"X-MS-CLIENT-PRINCIPAL-NAME": header} if header is not None else {}
    settings = {"WEBSITE_AUTH_ENABLED": easy_auth} if easy_auth is not None else {}
    request = HttpRequest("POST", "https://app.example/api/ops/replay", headers, b"{}")
    assert authenticated_actor(request, settings) == actor


def test_a_replay_sent_by_another_tool_with_the_id_rule_is_dispatched(
    rig: Rig, acr_server: AcrServer
) -> None:
    """The portal runbook: re-send the dead letter's body as <id>-r<N>, complete the dead letter."""
    from shared.platform.queue.port import OutgoingMessage

    request_id = _refused(rig, acr_server, 5)
    [dead] = rig.queue.peek(dead_letter=True)
    rig.queue.send([OutgoingMessage(message_id=f"{request_id}-r1", body=dead.body)])
    assert rig.drain() == [f"{request_id}-r1"]
    record, _ = rig.ledger.get(request_id) or (None, None)
    assert record is not None and (record.status, record.run_id) == (RunStatus.DISPATCHED, "ca1")
    assert any(e["event"] == "replayed" for e in record.history)
    rig.queue.send([OutgoingMessage(message_id=f"{request_id}-copy", body=dead.body)])
    rig.drain()  # any other copy is a duplicate
    assert len(acr_server.runs) == 1


def test_a_replay_reports_its_progress_and_prints_a_table(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.dispatch.replay import Replayer, ReplaySelection

    first, second = _refused(rig, acr_server, 4), _refused(rig, acr_server, 5)
    counts: list[int] = []
    report = Replayer(rig.queue, rig.ledger, clock=rig.clock).replay(
        ReplaySelection(), actor="test", note="progress", dry_run=True, progress=counts.append
    )
    assert counts == [1, 2] and {i.message_id for i in report.items} == {first, second}
    assert main(["replay", "--dry-run"]) == 0  # human output: the spinner only on a terminal
    out = capsys.readouterr()
    assert "would replay 2 dead letter(s)" in out.out and out.err == ""


def test_a_dead_letter_without_a_ledger_reason_is_matched_on_its_own_reason(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a BuildRequest (no id, so no record), and one a Service Bus client dead-lettered with a
    reason of its own: ``--reason`` falls back to the queue's reason."""
    from shared.platform.queue.port import OutgoingMessage

    rig.queue.send([OutgoingMessage(message_id="junk-1", body=b"{}")])
    rig.drain()
    request = make_request(6, received_at=rig.clock())
    rig.queue.send([OutgoingMessage(message_id="by-hand", body=request.to_json().encode())])
    [locked] = rig.queue.receive()
    rig.queue.dead_letter(locked, "PoisonByHand", "moved by an operator's tool")
    found = cli_json(capsys, "replay", "--reason", SYSTEM_REASON.lower(), "--dry-run")["replayed"]
    assert [(i["message_id"], i["failure_reason"]) for i in found] == [("junk-1", None)]
    found = cli_json(capsys, "replay", "--reason", "poison", "--dry-run")["replayed"]
    assert [(i["message_id"], i["request_id"]) for i in found] == [("by-hand", request.id)]
    done = cli_json(capsys, "replay", "--reason", "PoisonByHand", "--note", "checked")["replayed"]
    assert [i["ledger"] for i in done] == ["created, retrying"]
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None and "PoisonByHand" in record.history[-1]["detail"]


def test_replay_on_service_bus_matches_the_ledger_reason_of_a_max_delivery_dead_letter(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Azure shape end to end: the dispatcher refused the request (reason in the ledger), the
    Service Bus dead letter says MaxDeliveryCountExceeded, ``slipway replay --reason`` finds it."""
    from azure.servicebus import ServiceBusSubQueue

    from shared.app.runtime import Runtime, set_runtime
    from tests.test_servicebus_queue import FakeClient, make_queue, sdk_message

    request_id = _refused(rig, acr_server, 7)
    [local] = rig.queue.peek(dead_letter=True)
    client = FakeClient(
        peekable=[
            sdk_message(
                41,
                message_id=request_id,
                body=[local.body],
                application_properties=None,
                delivery_count=10,
                dead_letter_reason=SYSTEM_REASON,
                dead_letter_error_description="Message could not be consumed after 10 delivery attempts.",
            )
        ]
    )
    queue, _ = make_queue(client)
    set_runtime(Runtime(rig.settings, app_root=rig.queue.path.parent, queue=queue, ledger=rig.ledger))

    assert cli_json(capsys, "replay", "--reason", "MaxDeliveryCount", "--dry-run")["replayed"] == []
    [planned] = cli_json(capsys, "replay", "--reason", "runrejected", "--dry-run")["replayed"]
    assert (planned["failure_reason"], planned["dead_letter_reason"]) == ("RunRejected", SYSTEM_REASON)
    assert client.senders[0].batches == []  # a dry run sends nothing

    [done] = cli_json(capsys, "replay", "--reason", "RunRejected", "--note", "quota raised")["replayed"]
    assert done["new_message_id"] == f"{request_id}-r1"
    [[sent]] = client.senders[0].batches
    assert sent.message_id == f"{request_id}-r1"
    [(_name, sub_queue, receiver)] = [r for r in client.receivers if r[1] is not None][-1:]
    assert sub_queue is ServiceBusSubQueue.DEAD_LETTER
    assert [m.message_id for m in receiver.completed] == [request_id]
    record, _ = rig.ledger.get(request_id) or (None, None)
    assert record is not None and record.status is RunStatus.RETRYING and record.failure_reason is None


def test_replay_help_says_what_reason_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "recorded in the ledger" in text and "dead letter's own reason when the ledger has none" in text


def test_a_request_refused_before_its_claim_is_found_by_its_reason_and_runs_once_fixed(
    rig: Rig, acr_server: AcrServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    pushed = make_request(8, received_at=rig.clock())
    # As routing names it for the target "later": the request check holds the key to <target>:<ref>.
    request = pushed.model_copy(update={"target": "later", "coalesce_key": f"later:{pushed.source.ref}"})
    rig.send(request)
    rig.drain()
    [dead] = rig.queue.peek(dead_letter=True)
    assert dead.dead_letter_reason == SYSTEM_REASON and not acr_server.runs
    config = Path(rig.settings["SLIPWAY_CONFIG"])
    config.write_text(
        config.read_text()
        + "  - name: later\n    repo: https://github.com/dougbu/AzureTest\n    image: dougbu/azure-test\n"
        + "    branches: ['**']\n    cache: {name: 'azure-test-{branch}'}\n"
    )
    os.utime(config, (1, 2))  # another mtime, whatever the file system's time granularity
    [done] = cli_json(capsys, "replay", "--reason", "unknowntarget")["replayed"]
    assert done["failure_reason"] == "UnknownTarget" and done["ledger"] == "failed -> retrying"
    assert rig.drain() == [f"{request.id}-r1"]
    record, _ = rig.ledger.get(request.id) or (None, None)
    assert record is not None and (record.status, record.run_id) == (RunStatus.DISPATCHED, "ca1")
    assert len(acr_server.runs) == 1

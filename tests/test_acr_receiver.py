"""The ACR webhook receiver on Microsoft's published payloads, with the configured bearer header."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.intake.receivers.acr import bearer_token, receive_acr
from shared.platform.http import HttpRequest
from shared.platform.queue.local import LocalQueue
from shared.platform.state import FolderStateStore
from tests.support.receiving import clocked_queue, fixture_bytes, fixture_headers, fixture_json, queued
from tests.support.receiving import queue as queue
from tests.support.registry_hooks import ACR, ACR_TOKEN, acr_request, context


def test_published_push_rebuilds_its_dependent(queue: LocalQueue) -> None:
    body = fixture_bytes(ACR, "push-webhook-docs.json")
    resp = receive_acr(
        acr_request(body, headers=fixture_headers(ACR, "push-webhook-docs.json")), context(queue)
    )
    assert resp.status == 202, resp.body
    [accepted] = resp.body["accepted"]
    assert accepted["target"] == "web"
    assert resp.body["correlation_id"] == "cb8c3971-9adc-488b-xxxx-43cbb4974ff5"
    # The published digest holds "xxxx" placeholders: it is not trusted, and the answer says so.
    assert any("digest is malformed" in note for note in resp.body["notes"])
    [request] = queued(queue)
    assert request.id == accepted["id"]
    assert request.trigger.kind == "base-image"
    assert request.trigger.provider == "acr"
    assert request.trigger.delivery_id == "cb8c3971-9adc-488b-xxxx-43cbb4974ff5"
    # No state store: nothing is known about the last build, so the branch head is rebuilt.
    assert request.source.commit is None
    assert request.source.ref == "refs/heads/main"
    assert request.source.repo_url == "https://github.com/contoso/web.git"
    [message] = queue.peek()
    assert message.subject == "base-image"
    assert "commit" not in message.application_properties


def test_same_push_delivered_twice_is_one_request(queue: LocalQueue) -> None:
    body = fixture_bytes(ACR, "push-webhook-docs.json")
    first = receive_acr(acr_request(body), context(queue))
    again = receive_acr(acr_request(body), context(queue))
    assert first.body["accepted"][0]["id"] == again.body["accepted"][0]["id"]
    assert queue.count() == 1


def test_a_later_push_of_the_same_tag_is_a_new_rebuild(queue: LocalQueue) -> None:
    payload = fixture_json(ACR, "push-webhook-docs.json")
    first = receive_acr(acr_request(json.dumps(payload).encode()), context(queue))
    payload["target"]["digest"] = "sha256:" + "1" * 64
    second = receive_acr(acr_request(json.dumps(payload).encode()), context(queue))
    assert first.body["accepted"][0]["id"] != second.body["accepted"][0]["id"]
    assert not any("digest" in note for note in second.body["notes"])  # a well-formed one needs none
    assert queue.count() == 2


def test_rebuilds_the_recorded_last_build(queue: LocalQueue, tmp_path: Path) -> None:
    state = FolderStateStore(tmp_path / "state")
    commit = "c72d62bc4e992806a012ccaca139a8a6ef41a07c"
    state.create(
        "last-build/web.json",
        {
            "target": "web",
            "repo_url": "https://github.com/contoso/web.git",
            "ref": "refs/heads/main",
            "commit": commit,
            "request_id": "web.0123",
            "received_at": "2026-11-20T10:00:00Z",
            "recorded_at": "2026-11-20T10:00:05Z",
        },
    )
    resp = receive_acr(acr_request(fixture_bytes(ACR, "push-webhook-docs.json")), context(queue, state=state))
    assert resp.status == 202
    [request] = queued(queue)
    assert request.source.commit == commit
    assert "sha-c72d62b" in request.image.tags
    assert not any("recorded yet" in note for note in resp.body.get("notes", []))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("delete-webhook-docs.json", "action 'delete': an image was deleted"),
        ("chart_push-webhook-docs.json", "action 'chart_push': a Helm chart push"),
        ("chart_delete-webhook-docs.json", "action 'chart_delete': a Helm chart was deleted"),
    ],
)
def test_other_published_actions_are_ignored_with_a_reason(queue: LocalQueue, name: str, reason: str) -> None:
    resp = receive_acr(
        acr_request(fixture_bytes(ACR, name), headers=fixture_headers(ACR, name)), context(queue)
    )
    assert resp.status == 200, resp.body
    [ignored] = resp.body["ignored"]
    assert ignored["reason"].startswith(reason)
    assert queue.count() == 0


def test_untagged_push_is_ignored_so_a_multi_arch_push_rebuilds_once(queue: LocalQueue) -> None:
    payload = fixture_json(ACR, "push-webhook-docs.json")
    del payload["target"]["tag"]
    for platform_digest in ("1", "2", "3"):  # one event per platform manifest, no tag
        payload["target"]["digest"] = "sha256:" + platform_digest * 64
        resp = receive_acr(acr_request(json.dumps(payload).encode()), context(queue))
        assert resp.status == 200
        assert "only the tagged push triggers rebuilds" in resp.body["ignored"][0]["reason"]
    assert queue.count() == 0
    payload["target"]["tag"] = "v1"  # then the tagged index
    assert receive_acr(acr_request(json.dumps(payload).encode()), context(queue)).status == 202
    assert queue.count() == 1


def test_ping_and_unknown_actions(queue: LocalQueue) -> None:
    resp = receive_acr(acr_request(b'{"id": "p-1", "action": "ping"}'), context(queue))
    assert (resp.status, resp.body["status"]) == (200, "pong")
    resp = receive_acr(acr_request(b"{}"), context(queue))
    assert resp.status == 200 and resp.body["ignored"][0]["reason"] == "the event names no action"
    resp = receive_acr(acr_request(b'{"action": "quarantine"}'), context(queue))
    assert "quarantine" in resp.body["ignored"][0]["reason"]


def test_push_of_an_image_nobody_builds_on(queue: LocalQueue) -> None:
    payload = fixture_json(ACR, "push-webhook-docs.json")
    payload["target"]["repository"] = "someone/else"
    resp = receive_acr(acr_request(json.dumps(payload).encode()), context(queue))
    assert resp.status == 200
    assert resp.body["ignored"][0]["reason"] == "no target builds on myregistry.azurecr.io/someone/else:v1"


@pytest.mark.parametrize(
    ("token", "header"),
    [
        (None, None),
        ("wrong", None),
        (ACR_TOKEN.upper(), None),
        (None, f"Basic {ACR_TOKEN}"),
        (None, ACR_TOKEN),
    ],
)
def test_missing_or_wrong_auth_is_401_and_queues_nothing(
    queue: LocalQueue, token: str | None, header: str | None
) -> None:
    headers = {"Authorization": header} if header else None
    req = acr_request(fixture_bytes(ACR, "push-webhook-docs.json"), token=token, headers=headers)
    resp = receive_acr(req, context(queue))
    assert (resp.status, resp.body["error"]) == (401, "unauthorized")
    assert queue.count() == 0


def test_unconfigured_token_is_503(queue: LocalQueue) -> None:
    resp = receive_acr(
        acr_request(fixture_bytes(ACR, "push-webhook-docs.json")), context(queue, ACR_WEBHOOK_TOKEN="")
    )
    assert resp.status == 503
    assert "ACR_WEBHOOK_TOKEN" in resp.body["reason"]


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(queue: LocalQueue, content_type: str) -> None:
    req = acr_request(fixture_bytes(ACR, "push-webhook-docs.json"), headers={"Content-Type": content_type})
    assert receive_acr(req, context(queue)).status == 415


def test_oversize_and_method(queue: LocalQueue) -> None:
    body = fixture_bytes(ACR, "push-webhook-docs.json")
    assert receive_acr(acr_request(body), context(queue, SLIPWAY_MAX_BODY_BYTES="100")).status == 413
    assert (
        receive_acr(acr_request(body, headers={"Content-Length": str(10**9)}), context(queue)).status == 413
    )
    assert receive_acr(acr_request(b"", method="GET"), context(queue)).status == 405


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"action": 1}',
        b'{"action": "push", "timestamp": "yesterday"}',
        b'{"action": "push", "target": {"repository": "x", "tag": "v1"}}',  # no request.host
        b'{"action": "push", "target": {"repository": "Bad Name", "tag": "v1"}, "request": {"host": "r.io"}}',
        b'{"action": "push", "target": {"repository": "x", "tag": "$(reboot)"}, "request": {"host": "r.io"}}',
        "\u00ff".encode("latin-1"),
    ],
)
def test_malformed_authenticated_bodies_are_400(queue: LocalQueue, body: bytes) -> None:
    resp = receive_acr(acr_request(body), context(queue))
    assert (resp.status, resp.body["error"]) == (400, "bad_request"), resp.body
    assert queue.count() == 0


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Bearer") is None
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None


def test_the_token_never_reaches_the_logs(queue: LocalQueue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receive_acr(acr_request(fixture_bytes(ACR, "push-webhook-docs.json")), context(queue))
    receive_acr(acr_request(b"{}", token=ACR_TOKEN + "x"), context(queue))
    assert caplog.records
    assert ACR_TOKEN not in caplog.text


header_names = st.sampled_from(["Content-Type", "Authorization", "Content-Length", "X-Other"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.just(fixture_bytes(ACR, "push-webhook-docs.json")),
        st.just(fixture_bytes(ACR, "delete-webhook-docs.json")),
    ),
    headers=st.dictionaries(header_names, st.text(max_size=60), max_size=4),
    method=st.sampled_from(["POST", "GET", "PUT"]),
    authenticate=st.booleans(),
)
def test_fuzz_never_5xx_and_never_queues_without_the_token(
    tmp_path_factory: pytest.TempPathFactory,
    body: bytes,
    headers: dict[str, str],
    method: str,
    authenticate: bool,
) -> None:
    queue = clocked_queue(tmp_path_factory.mktemp("q"))
    if authenticate:
        headers = {**headers, "Authorization": f"Bearer {ACR_TOKEN}"}
    resp = receive_acr(HttpRequest(method, "http://x/api/hooks/acr", headers, body), context(queue))
    assert resp.status < 500, resp.body
    json.dumps(resp.body)
    if queue.count():
        assert authenticate and resp.status == 202

"""The Event Grid receiver: both schemas, batches, both handshakes, on the published samples."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.intake.receivers.eventgrid import receive_eventgrid
from shared.platform.http import HttpRequest
from shared.platform.queue.local import LocalQueue
from tests.support.receiving import clocked_queue, fixture_bytes, fixture_headers, fixture_json, queued
from tests.support.receiving import queue as queue
from tests.support.registry_hooks import (
    ACI_DIGEST,
    EVENT_GRID,
    EVENTGRID_TOKEN,
    NGINX_DIGEST,
    as_array,
    context,
    eventgrid_request,
)

CLOUD_EVENT = "application/cloudevents+json; charset=utf-8"
CLOUD_EVENT_BATCH = "application/cloudevents-batch+json; charset=utf-8"


# --- the published samples --------------------------------------------------------------------


def _nginx_rebuilds(queue: LocalQueue) -> None:
    requests = {r.target: r for r in queued(queue)}
    assert set(requests) == {"web", "api"}
    assert requests["api"].source.ref == "refs/heads/trunk"  # the configured default branch
    assert requests["api"].source.repo_url == "https://github.com/contoso/api.git"  # from the scp form
    for request in requests.values():
        assert request.trigger.kind == "base-image"
        assert request.trigger.provider == "eventgrid"
        assert request.trigger.delivery_id == "c25fdb80-ebbd-4dd0-a29c-a7349e6388f6"


def test_image_pushed_in_the_event_grid_schema(queue: LocalQueue) -> None:
    resp = receive_eventgrid(
        eventgrid_request(as_array("ImagePushed-eventgridschema-restspec.json")), context(queue)
    )
    assert resp.status == 202, resp.body
    assert {a["target"] for a in resp.body["accepted"]} == {"web", "api"}
    assert resp.body["correlation_id"] == "c25fdb80-ebbd-4dd0-a29c-a7349e6388f6"
    _nginx_rebuilds(queue)


def test_image_pushed_as_one_cloud_event(queue: LocalQueue) -> None:
    body = fixture_bytes(EVENT_GRID, "ImagePushed-cloudeventsschema-restspec.json")
    resp = receive_eventgrid(eventgrid_request(body, content_type=CLOUD_EVENT), context(queue))
    assert resp.status == 202, resp.body
    _nginx_rebuilds(queue)


def test_both_schemas_name_the_same_update_so_it_builds_once(queue: LocalQueue) -> None:
    ids = []
    for req in (
        eventgrid_request(as_array("ImagePushed-eventgridschema-restspec.json")),
        eventgrid_request(
            fixture_bytes(EVENT_GRID, "ImagePushed-cloudeventsschema-restspec.json"), content_type=CLOUD_EVENT
        ),
    ):
        ids.append(sorted(a["id"] for a in receive_eventgrid(req, context(queue)).body["accepted"]))
    assert ids[0] == ids[1]
    assert queue.count() == 2  # web and api, once each


def test_image_pushed_in_the_2018_array_form_with_short_event_types(queue: LocalQueue) -> None:
    body = fixture_bytes(EVENT_GRID, "ImagePushed-eventgridschema-docs2018.json")
    resp = receive_eventgrid(eventgrid_request(body), context(queue))
    assert resp.status == 202, resp.body
    [request] = queued(queue)
    assert request.target == "web"
    assert request.trigger.delivery_id == "831e1650-001e-001b-66ab-eeb76e069631"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (as_array("ImageDeleted-eventgridschema-restspec.json"), "application/json"),
        (fixture_bytes(EVENT_GRID, "ImageDeleted-eventgridschema-docs2018.json"), "application/json"),
        (fixture_bytes(EVENT_GRID, "ImageDeleted-cloudeventsschema-restspec.json"), CLOUD_EVENT),
    ],
)
def test_image_deleted_is_ignored_with_a_reason(queue: LocalQueue, body: bytes, content_type: str) -> None:
    resp = receive_eventgrid(eventgrid_request(body, content_type=content_type), context(queue))
    assert resp.status == 200, resp.body
    [ignored] = resp.body["ignored"]
    assert "an image was deleted: nothing to rebuild" in ignored["reason"]
    assert "ImageDeleted" in ignored["reason"]
    assert queue.count() == 0


def test_subscription_validation_handshake(queue: LocalQueue) -> None:
    name = "SubscriptionValidationEvent-docs.json"
    req = eventgrid_request(fixture_bytes(EVENT_GRID, name), headers=fixture_headers(EVENT_GRID, name))
    resp = receive_eventgrid(req, context(queue))
    assert resp.status == 200
    assert resp.body == fixture_json(EVENT_GRID, "SubscriptionValidationResponse-docs.json")
    assert queue.count() == 0


def test_validation_without_a_code_is_400(queue: LocalQueue) -> None:
    event = fixture_json(EVENT_GRID, "SubscriptionValidationEvent-docs.json")[0]
    for data in ({}, {"validationCode": 7}, {"validationCode": "x" * 300}, "code"):
        event["data"] = data
        resp = receive_eventgrid(eventgrid_request(json.dumps([event]).encode()), context(queue))
        assert resp.status == 400, data


def test_cloudevents_abuse_protection_handshake(queue: LocalQueue) -> None:
    req = eventgrid_request(
        b"", method="OPTIONS", content_type="", headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    resp = receive_eventgrid(req, context(queue))
    assert resp.status == 200
    assert resp.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert resp.headers["WebHook-Allowed-Rate"] == "*"


@pytest.mark.parametrize("origin", [None, "", "evil.example\r\nSet-Cookie: x=1", "a b"])
def test_abuse_protection_needs_a_plain_origin(queue: LocalQueue, origin: str | None) -> None:
    headers = {"WebHook-Request-Origin": origin} if origin is not None else {}
    resp = receive_eventgrid(eventgrid_request(b"", method="OPTIONS", headers=headers), context(queue))
    assert resp.status == 400
    assert "WebHook-Allowed-Origin" not in resp.headers


@pytest.mark.parametrize("token", [None, "wrong"])
def test_handshakes_need_the_token_too(queue: LocalQueue, token: str | None) -> None:
    options = eventgrid_request(
        b"", token=token, method="OPTIONS", headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    resp = receive_eventgrid(options, context(queue))
    assert resp.status == 401 and "WebHook-Allowed-Origin" not in resp.headers
    validation = eventgrid_request(
        fixture_bytes(EVENT_GRID, "SubscriptionValidationEvent-docs.json"), token=token
    )
    resp = receive_eventgrid(validation, context(queue))
    assert resp.status == 401 and "validationResponse" not in resp.body


# --- batches ----------------------------------------------------------------------------------


def test_a_cloud_event_batch_mixes_pushes_and_other_events(queue: LocalQueue) -> None:
    events = [
        fixture_json(EVENT_GRID, "ImagePushed-cloudeventsschema-restspec.json"),
        fixture_json(EVENT_GRID, "ImageDeleted-cloudeventsschema-restspec.json"),
        {
            **fixture_json(EVENT_GRID, "ImagePushed-cloudeventsschema-restspec.json"),
            "id": "broken",
            "data": 5,
        },
    ]
    body = json.dumps(events).encode()
    resp = receive_eventgrid(eventgrid_request(body, content_type=CLOUD_EVENT_BATCH), context(queue))
    assert resp.status == 202, resp.body
    assert {a["target"] for a in resp.body["accepted"]} == {"web", "api"}
    reasons = [i["reason"] for i in resp.body["ignored"]]
    assert any("an image was deleted" in r for r in reasons)
    assert any(
        r.startswith("event 'broken': malformed ImagePushed event: data is not a JSON object")
        for r in reasons
    )
    assert queue.count() == 2


def test_an_event_grid_batch_of_several_updates(queue: LocalQueue) -> None:
    nginx = fixture_json(EVENT_GRID, "ImagePushed-eventgridschema-restspec.json")
    aci = fixture_json(EVENT_GRID, "ImagePushed-eventgridschema-docs2018.json")[0]
    resp = receive_eventgrid(eventgrid_request(json.dumps([nginx, aci, nginx]).encode()), context(queue))
    assert resp.status == 202
    assert (
        len(resp.body["accepted"]) == 3
    )  # web and api for nginx, web for aci-helloworld; the copy adds nothing
    bases = {r.id: r for r in queued(queue)}
    assert len(bases) == 3


def test_the_same_update_in_another_batch_builds_once(queue: LocalQueue) -> None:
    nginx = fixture_json(EVENT_GRID, "ImagePushed-eventgridschema-restspec.json")
    aci = fixture_json(EVENT_GRID, "ImagePushed-eventgridschema-docs2018.json")[0]
    receive_eventgrid(eventgrid_request(json.dumps([nginx]).encode()), context(queue))
    retried = receive_eventgrid(eventgrid_request(json.dumps([aci, nginx]).encode()), context(queue))
    assert len(retried.body["accepted"]) == 3
    assert queue.count() == 3  # only aci-helloworld's rebuild is new


def test_digest_identifies_the_update(queue: LocalQueue) -> None:
    nginx = fixture_json(EVENT_GRID, "ImagePushed-eventgridschema-restspec.json")
    first = receive_eventgrid(eventgrid_request(json.dumps([nginx]).encode()), context(queue))
    nginx["data"]["target"]["digest"] = ACI_DIGEST
    nginx["id"] = "another-event"
    second = receive_eventgrid(eventgrid_request(json.dumps([nginx]).encode()), context(queue))
    assert NGINX_DIGEST != ACI_DIGEST
    assert {a["id"] for a in first.body["accepted"]}.isdisjoint(a["id"] for a in second.body["accepted"])


def test_empty_batch(queue: LocalQueue) -> None:
    resp = receive_eventgrid(eventgrid_request(b"[]"), context(queue))
    assert resp.status == 200 and resp.body["ignored"][0]["reason"] == "the delivery holds no events"


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong", EVENTGRID_TOKEN + "x", EVENTGRID_TOKEN.upper()])
def test_missing_or_wrong_token_is_401_and_queues_nothing(queue: LocalQueue, token: str | None) -> None:
    req = eventgrid_request(as_array("ImagePushed-eventgridschema-restspec.json"), token=token)
    resp = receive_eventgrid(req, context(queue))
    assert (resp.status, resp.body["error"]) == (401, "unauthorized")
    assert queue.count() == 0


def test_the_token_is_checked_before_anything_else(queue: LocalQueue) -> None:
    for req in (
        eventgrid_request(b"x" * 200, token="wrong", content_type="text/plain"),
        eventgrid_request(b"", token=None, method="DELETE"),
    ):
        assert receive_eventgrid(req, context(queue, SLIPWAY_MAX_BODY_BYTES="10")).status == 401


def test_unconfigured_token_is_503(queue: LocalQueue) -> None:
    req = eventgrid_request(as_array("ImagePushed-eventgridschema-restspec.json"))
    resp = receive_eventgrid(req, context(queue, EVENTGRID_WEBHOOK_TOKEN=""))
    assert resp.status == 503 and "EVENTGRID_WEBHOOK_TOKEN" in resp.body["reason"]


def test_content_type_size_and_method(queue: LocalQueue) -> None:
    body = as_array("ImagePushed-eventgridschema-restspec.json")
    assert receive_eventgrid(eventgrid_request(body, content_type="text/plain"), context(queue)).status == 415
    assert (
        receive_eventgrid(eventgrid_request(body), context(queue, SLIPWAY_MAX_BODY_BYTES="100")).status == 413
    )
    assert receive_eventgrid(eventgrid_request(body, method="GET"), context(queue)).status == 405


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (
            fixture_bytes(EVENT_GRID, "ImagePushed-eventgridschema-restspec.json"),
            "application/json",
        ),  # no array
        (b"[1]", "application/json"),
        (b'[{"id": "x"}]', "application/json"),
        (b"[]", CLOUD_EVENT),
        (b'{"id": "x", "type": "t", "specversion": "0.3"}', CLOUD_EVENT),
        (b"{}", CLOUD_EVENT_BATCH),
    ],
)
def test_malformed_deliveries_are_400(queue: LocalQueue, body: bytes, content_type: str) -> None:
    resp = receive_eventgrid(eventgrid_request(body, content_type=content_type), context(queue))
    assert (resp.status, resp.body["error"]) == (400, "bad_request"), resp.body
    assert queue.count() == 0


def test_query_token_never_reaches_the_logs(queue: LocalQueue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receive_eventgrid(
        eventgrid_request(as_array("ImagePushed-eventgridschema-restspec.json")), context(queue)
    )
    receive_eventgrid(eventgrid_request(b"{", token=EVENTGRID_TOKEN + "x"), context(queue))
    receive_eventgrid(eventgrid_request(b"{"), context(queue))
    assert caplog.records
    assert EVENTGRID_TOKEN not in caplog.text
    assert "token=" not in caplog.text and "/api/hooks/" not in caplog.text


# --- fuzzing ----------------------------------------------------------------------------------

header_names = st.sampled_from(["Content-Type", "Content-Length", "WebHook-Request-Origin", "aeg-event-type"])
content_types = st.sampled_from(["application/json", CLOUD_EVENT, CLOUD_EVENT_BATCH, "text/plain", ""])
samples = st.sampled_from(
    [
        as_array("ImagePushed-eventgridschema-restspec.json"),
        fixture_bytes(EVENT_GRID, "ImagePushed-cloudeventsschema-restspec.json"),
        fixture_bytes(EVENT_GRID, "SubscriptionValidationEvent-docs.json"),
        fixture_bytes(EVENT_GRID, "ImagePushed-eventgridschema-docs2018.json"),
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(st.binary(max_size=300), samples),
    content_type=content_types,
    headers=st.dictionaries(header_names, st.text(max_size=40), max_size=3),
    query=st.dictionaries(st.sampled_from(["token", "code", "x"]), st.text(max_size=40), max_size=2),
    method=st.sampled_from(["POST", "OPTIONS", "GET"]),
    authenticate=st.booleans(),
)
def test_fuzz_never_5xx_and_never_queues_without_the_token(
    tmp_path_factory: pytest.TempPathFactory,
    body: bytes,
    content_type: str,
    headers: dict[str, str],
    query: dict[str, str],
    method: str,
    authenticate: bool,
) -> None:
    queue = clocked_queue(tmp_path_factory.mktemp("q"))
    if authenticate:
        query = {**query, "token": EVENTGRID_TOKEN}
    sent = {"Content-Type": content_type, **headers}
    req = HttpRequest(method, "http://x/api/hooks/eventgrid", sent, body, query=query)
    resp = receive_eventgrid(req, context(queue))
    assert resp.status < 500, resp.body
    json.dumps(resp.body)
    authentic = query.get("token") == EVENTGRID_TOKEN
    if queue.count() or "validationResponse" in resp.body or "WebHook-Allowed-Origin" in resp.headers:
        assert authentic

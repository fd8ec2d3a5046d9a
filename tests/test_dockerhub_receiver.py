"""The Docker Hub receiver on Docker's published payload: an unsigned hint behind a URL token."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.intake.rebuild_limit import admit, parse_limit
from shared.intake.receivers.dockerhub import receive_dockerhub
from shared.platform.http import HttpRequest
from shared.platform.queue.local import LocalQueue
from shared.platform.state import FolderStateStore
from tests.support.receiving import NOW, clocked_queue, fixture_bytes, fixture_json, queued
from tests.support.receiving import queue as queue
from tests.support.registry_hooks import DOCKER_HUB, DOCKERHUB_TOKEN, context, dockerhub_request

SAMPLE = "push-docs.json"


def test_published_push_rebuilds_its_dependent(queue: LocalQueue) -> None:
    resp = receive_dockerhub(dockerhub_request(fixture_bytes(DOCKER_HUB, SAMPLE)), context(queue))
    assert resp.status == 202, resp.body
    [accepted] = resp.body["accepted"]
    assert accepted["target"] == "web"  # its base is written "svendowideit/testhook"
    assert any("unsigned hints" in note for note in resp.body["notes"])
    [request] = queued(queue)
    assert request.trigger.kind == "base-image"
    assert request.trigger.provider == "dockerhub"
    assert request.trigger.delivery_id is None


def test_a_retried_delivery_builds_once_and_a_new_push_again(queue: LocalQueue) -> None:
    body = fixture_bytes(DOCKER_HUB, SAMPLE)
    first = receive_dockerhub(dockerhub_request(body), context(queue))
    again = receive_dockerhub(dockerhub_request(body), context(queue))
    assert first.body["accepted"][0]["id"] == again.body["accepted"][0]["id"]
    assert queue.count() == 1
    payload = fixture_json(DOCKER_HUB, SAMPLE)
    payload["push_data"]["pushed_at"] += 3600  # the tag pushed again an hour later
    later = receive_dockerhub(dockerhub_request(json.dumps(payload).encode()), context(queue))
    assert later.body["accepted"][0]["id"] != first.body["accepted"][0]["id"]
    assert queue.count() == 2


def test_no_digest_is_taken_from_the_payload(queue: LocalQueue) -> None:
    payload = fixture_json(DOCKER_HUB, SAMPLE)
    payload["push_data"]["images"] = ["sha256:" + "a" * 64]
    payload["push_data"]["digest"] = "sha256:" + "b" * 64
    first = receive_dockerhub(dockerhub_request(fixture_bytes(DOCKER_HUB, SAMPLE)), context(queue))
    claimed = receive_dockerhub(dockerhub_request(json.dumps(payload).encode()), context(queue))
    assert first.body["accepted"][0]["id"] == claimed.body["accepted"][0]["id"]


def test_other_tags_and_repositories_are_ignored(queue: LocalQueue) -> None:
    payload = fixture_json(DOCKER_HUB, SAMPLE)
    payload["push_data"]["tag"] = "1.0"
    resp = receive_dockerhub(dockerhub_request(json.dumps(payload).encode()), context(queue))
    assert resp.status == 200
    assert resp.body["ignored"][0]["reason"] == "no target builds on docker.io/svendowideit/testhook:1.0"
    payload["push_data"]["tag"] = None
    resp = receive_dockerhub(dockerhub_request(json.dumps(payload).encode()), context(queue))
    assert "only the tagged push triggers" in resp.body["ignored"][0]["reason"]
    assert queue.count() == 0


@pytest.mark.parametrize("token", [None, "", "wrong", DOCKERHUB_TOKEN[:-1]])
def test_missing_or_wrong_token_is_401_and_queues_nothing(queue: LocalQueue, token: str | None) -> None:
    resp = receive_dockerhub(
        dockerhub_request(fixture_bytes(DOCKER_HUB, SAMPLE), token=token), context(queue)
    )
    assert (resp.status, resp.body["error"]) == (401, "unauthorized")
    assert queue.count() == 0


def test_unconfigured_token_is_503(queue: LocalQueue) -> None:
    req = dockerhub_request(fixture_bytes(DOCKER_HUB, SAMPLE))
    resp = receive_dockerhub(req, context(queue, DOCKERHUB_WEBHOOK_TOKEN=""))
    assert resp.status == 503 and "DOCKERHUB_WEBHOOK_TOKEN" in resp.body["reason"]


def test_content_type_size_and_method(queue: LocalQueue) -> None:
    body = fixture_bytes(DOCKER_HUB, SAMPLE)
    assert receive_dockerhub(dockerhub_request(body, content_type="text/plain"), context(queue)).status == 415
    assert (
        receive_dockerhub(dockerhub_request(body), context(queue, SLIPWAY_MAX_BODY_BYTES="100")).status == 413
    )
    assert receive_dockerhub(dockerhub_request(body, method="GET"), context(queue)).status == 405


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"push_data": {"tag": "latest"}, "repository": {"repo_name": "a/b"}}',  # no pushed_at
        b'{"push_data": {"pushed_at": 1, "tag": "latest"}, "repository": {}}',
        b'{"push_data": {"pushed_at": 1, "tag": "latest"}, "repository": {"repo_name": "A/B"}}',
        b'{"push_data": {"pushed_at": 1, "tag": "a b"}, "repository": {"repo_name": "a/b"}}',
    ],
)
def test_malformed_bodies_are_400(queue: LocalQueue, body: bytes) -> None:
    resp = receive_dockerhub(dockerhub_request(body), context(queue))
    assert (resp.status, resp.body["error"]) == (400, "bad_request"), resp.body


def test_query_token_never_reaches_the_logs(queue: LocalQueue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receive_dockerhub(dockerhub_request(fixture_bytes(DOCKER_HUB, SAMPLE)), context(queue))
    receive_dockerhub(dockerhub_request(b"{", token=DOCKERHUB_TOKEN + "x"), context(queue))
    assert caplog.records
    assert DOCKERHUB_TOKEN not in caplog.text and "token=" not in caplog.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(st.binary(max_size=300), st.just(fixture_bytes(DOCKER_HUB, SAMPLE))),
    headers=st.dictionaries(
        st.sampled_from(["Content-Type", "Content-Length", "X-Other"]), st.text(max_size=40)
    ),
    query=st.dictionaries(st.sampled_from(["token", "x"]), st.text(max_size=40), max_size=2),
    method=st.sampled_from(["POST", "GET"]),
    authenticate=st.booleans(),
)
def test_fuzz_never_5xx_and_never_queues_without_the_token(
    tmp_path_factory: pytest.TempPathFactory,
    body: bytes,
    headers: dict[str, str],
    query: dict[str, str],
    method: str,
    authenticate: bool,
) -> None:
    queue = clocked_queue(tmp_path_factory.mktemp("q"))
    if authenticate:
        query = {**query, "token": DOCKERHUB_TOKEN}
        headers = {**headers, "Content-Type": "application/json"}
    req = HttpRequest(method, "http://x/api/hooks/dockerhub", headers, body, query=query)
    resp = receive_dockerhub(req, context(queue))
    assert resp.status < 500, resp.body
    json.dumps(resp.body)
    if queue.count():
        assert query.get("token") == DOCKERHUB_TOKEN and resp.status == 202


# -- the ceiling on rebuilds one image can cause (the URL token is all a sender needs) ----------


def _push_at(offset_seconds: int) -> bytes:
    payload = fixture_json(DOCKER_HUB, SAMPLE)
    payload["push_data"]["pushed_at"] += offset_seconds
    return json.dumps(payload).encode()


def _limited_context(queue: LocalQueue, state: FolderStateStore, now: list[datetime], limit: str) -> Any:
    ctx = context(queue, state=state, DOCKERHUB_REBUILD_LIMIT=limit)
    ctx.clock = lambda: now[0]
    return ctx


def test_an_image_causes_at_most_the_limit_of_updates_per_window(
    queue: LocalQueue, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [NOW]
    ctx = _limited_context(queue, FolderStateStore(tmp_path / "state"), now, "3/1h")
    answers = [receive_dockerhub(dockerhub_request(_push_at(i)), ctx) for i in range(5)]
    assert [a.status for a in answers] == [202, 202, 202, 200, 200]
    assert "DOCKERHUB_REBUILD_LIMIT" in answers[3].body["ignored"][0]["reason"]
    assert queue.count() == 3
    assert [r for r in caplog.records if "rebuild_rate_limited" in r.getMessage()]
    # A sender's retry of an update already counted is the same request, not a new one.
    retried = receive_dockerhub(dockerhub_request(_push_at(0)), ctx)
    assert retried.body["accepted"][0]["id"] == answers[0].body["accepted"][0]["id"]
    assert queue.count() == 3
    # The window slides: an hour after the first three, the image may cause updates again.
    now[0] = NOW + timedelta(hours=1, seconds=1)
    assert receive_dockerhub(dockerhub_request(_push_at(10)), ctx).status == 202
    assert queue.count() == 4


def test_the_limit_is_on_by_default_and_can_be_turned_off(queue: LocalQueue, tmp_path: Path) -> None:
    now = [NOW]
    state = FolderStateStore(tmp_path / "state")
    ctx = context(queue, state=state)
    statuses = [receive_dockerhub(dockerhub_request(_push_at(i)), ctx).status for i in range(8)]
    assert statuses.count(202) == 6  # the documented default: 6 updates per image per hour
    off = _limited_context(queue, state, now, "off")
    assert receive_dockerhub(dockerhub_request(_push_at(100)), off).status == 202


def test_an_invalid_limit_setting_is_503_and_queues_nothing(queue: LocalQueue, tmp_path: Path) -> None:
    ctx = _limited_context(queue, FolderStateStore(tmp_path / "state"), [NOW], "lots")
    resp = receive_dockerhub(dockerhub_request(_push_at(0)), ctx)
    assert (resp.status, resp.body["error"]) == (503, "configuration_invalid")
    assert "DOCKERHUB_REBUILD_LIMIT" in resp.body["reason"]
    assert queue.count() == 0


def test_concurrent_updates_never_exceed_the_ceiling(tmp_path: Path) -> None:
    state = FolderStateStore(tmp_path / "state")
    limit = parse_limit("4/1h")
    assert limit is not None
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(
                lambda i: admit(
                    state, provider="dockerhub", image="library/x:1", update_id=f"u{i}", limit=limit, now=NOW
                ),
                range(16),
            )
        )
    assert results.count(True) == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6/1h", (6, timedelta(hours=1))),
        (" 2 / 30m ", (2, timedelta(minutes=30))),
        ("", (6, timedelta(hours=1))),
    ],
)
def test_limit_setting_grammar(text: str, expected: tuple[int, timedelta]) -> None:
    limit = parse_limit(text)
    assert limit is not None
    assert (limit.count, limit.window) == expected


@pytest.mark.parametrize("text", ["6", "0/1h", "6/0s", "-1/1h", "6/hour", "six/1h"])
def test_limit_setting_refuses_what_it_cannot_mean(text: str) -> None:
    with pytest.raises(ValueError, match=r"rebuild limit|duration"):
        parse_limit(text)


def test_the_url_token_stays_out_of_logs_and_queued_requests(
    queue: LocalQueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receive_dockerhub(dockerhub_request(fixture_bytes(DOCKER_HUB, SAMPLE)), context(queue))
    receive_dockerhub(
        dockerhub_request(fixture_bytes(DOCKER_HUB, SAMPLE), token="wrong-token-x"), context(queue)
    )
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + json.dumps(record.__dict__, default=str)
        assert DOCKERHUB_TOKEN not in text
        assert "wrong-token-x" not in text
    assert all(DOCKERHUB_TOKEN.encode() not in m.body for m in queue.peek())

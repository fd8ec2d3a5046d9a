"""The Bitbucket Cloud receiver against recorded ``repo:push`` and ``pullrequest:updated`` bodies."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.intake.receivers.bitbucket import bitbucket_reader, receive_bitbucket
from shared.intake.receivers.pipeline import ReceiverContext
from shared.intake.receivers.signatures import hmac_sha256_hex
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig
from shared.model.events import PullRequestEvent
from shared.platform.http import HttpRequest
from shared.platform.queue.local import LocalQueue
from tests.support import receiving
from tests.support.fuzz import json_mutations
from tests.support.receiving import DIFFERENT_REPOSITORIES, clocked_queue, queued, receiver_context
from tests.support.receiving import queue as queue

FIXTURES = receiving.FIXTURES / "bitbucket"
SAMPLES = ["repo-push-aspnet-functionaltest.json", "repo-push-aspnet-webhooks-PushMessage.json"]
URL = "http://localhost/api/hooks/bitbucket"
SECRET = "bitbucket secret for the tests"
COMMIT = "8339b7affbd7c70bbacd0276f581d1ca44df0853"
TAG_COMMIT = "b05057cd04921697c0f119ca40fe4a5afa481074"
REQUEST_UUID = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"

CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [
            {
                # The payload gives links.html.href and full_name; the target uses the ssh form.
                "name": "henrik",
                "repo": "git@bitbucket.org:henrikfrystyknielsen/henrikntest01.git",
                "image": "henrik/test01",
                "branches": ["master"],
                "tags": ["v*"],
                "paths": ["src/**"],
            }
        ],
    }
)


def fixture_bytes(name: str = SAMPLES[0]) -> bytes:
    return receiving.fixture_bytes("bitbucket", name)


def fixture_json(name: str = SAMPLES[0]) -> Any:
    return json.loads(fixture_bytes(name))


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac_sha256_hex(secret.encode(), body)


def bitbucket_request(
    body: bytes,
    *,
    event_key: str = "repo:push",
    signature: str | None = None,
    extra: dict[str, str] | None = None,
) -> HttpRequest:
    headers = {
        "Content-Type": "application/json",
        "X-Event-Key": event_key,
        "X-Request-UUID": REQUEST_UUID,
        "X-Hub-Signature": signature if signature is not None else sign(body),
        **(extra or {}),
    }
    if signature == "":
        del headers["X-Hub-Signature"]
    return HttpRequest("POST", URL, headers, body)


def _queued(queue: LocalQueue) -> list[BuildRequest]:
    return queued(queue, key=lambda r: r.source.ref)


def _ctx(queue: object, **overrides: str) -> ReceiverContext:
    return receiver_context(queue, CONFIG, {"BITBUCKET_WEBHOOK_SECRET": SECRET, **overrides})


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_is_queued_with_a_paths_note(queue: LocalQueue, name: str) -> None:
    body = fixture_bytes(name)
    headers_file = FIXTURES / name.replace(".json", ".headers.json")
    recorded = json.loads(headers_file.read_text()) if headers_file.exists() else {"X-Event-Key": "repo:push"}
    headers = {**recorded, "Content-Type": "application/json", "X-Hub-Signature": sign(body)}
    resp = receive_bitbucket(HttpRequest("POST", URL, headers, body), _ctx(queue))
    assert resp.status == 202, resp.body
    [accepted] = resp.body["accepted"]
    assert accepted["target"] == "henrik"
    assert {"master", "sha-8339b7a"} <= set(accepted["tags"])
    assert resp.body["notes"] == [
        "henrik: paths filter not applied (Bitbucket push events do not list changed files); building"
    ]
    [request] = _queued(queue)
    assert (request.source.ref, request.source.commit) == ("refs/heads/master", COMMIT)
    # The target's configured repo (ssh form) in https form, not the payload's links.html.href.
    assert request.source.repo_url == "https://bitbucket.org/henrikfrystyknielsen/henrikntest01.git"
    assert request.trigger.provider == "bitbucket"
    if "X-Hook-UUID" in recorded:
        # Without X-Request-UUID, the webhook's own UUID correlates the logs.
        assert resp.body["correlation_id"] == recorded["X-Hook-UUID"] == request.trigger.delivery_id


def test_request_uuid_is_preferred_to_the_hook_uuid(queue: LocalQueue) -> None:
    resp = receive_bitbucket(bitbucket_request(fixture_bytes(), extra={"X-Hook-UUID": "01234"}), _ctx(queue))
    assert resp.body["correlation_id"] == REQUEST_UUID


def test_the_published_body_with_its_byte_order_mark(queue: LocalQueue) -> None:
    body = b"\xef\xbb\xbf" + fixture_bytes()
    resp = receive_bitbucket(bitbucket_request(body), _ctx(queue))
    assert resp.status == 202


def test_every_change_of_a_push_is_routed_and_answered_once(queue: LocalQueue) -> None:
    payload = fixture_json()
    branch = payload["push"]["changes"][0]
    tag = copy.deepcopy(branch)
    tag["old"] = None
    tag["created"] = True
    tag["new"].update(type="tag", name="v1.2.3")
    tag["new"]["target"].update(hash=TAG_COMMIT, message="Release 1.2.3\n")
    closed = copy.deepcopy(branch)
    closed["old"]["name"] = "feature/gone"
    closed.update(new=None, closed=True)
    mercurial = copy.deepcopy(branch)
    mercurial["new"]["type"] = mercurial["old"]["type"] = "named_branch"
    payload["push"]["changes"] += [tag, closed, mercurial]
    resp = receive_bitbucket(bitbucket_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 202, resp.body
    assert sorted(a["target"] for a in resp.body["accepted"]) == ["henrik", "henrik"]
    assert resp.body["ignored"] == [
        {"target": None, "reason": "a 'named_branch' change is neither a branch nor a tag"},
        {"target": "henrik", "reason": "refs/heads/feature/gone: branch deleted"},
    ]
    master, release = _queued(queue)
    assert (master.source.ref, master.source.commit) == ("refs/heads/master", COMMIT)
    assert (release.source.ref, release.source.commit) == ("refs/tags/v1.2.3", TAG_COMMIT)
    assert {"v1.2.3", "1.2.3", "1.2"} <= set(release.image.tags)


def test_skip_directive_in_the_new_head(queue: LocalQueue) -> None:
    payload = fixture_json()
    payload["push"]["changes"][0]["new"]["target"]["message"] = "update [skip ci]\n"
    resp = receive_bitbucket(bitbucket_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200
    assert "[skip ci]" in resp.body["ignored"][0]["reason"]


def test_an_empty_push_is_ignored(queue: LocalQueue) -> None:
    payload = fixture_json()
    payload["push"]["changes"] = []
    resp = receive_bitbucket(bitbucket_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200
    assert resp.body["ignored"][0]["reason"] == "the push lists no changes"


@pytest.mark.parametrize("event_key", ["repo:fork", "pullrequest:approved", "repo:commit_status_updated"])
def test_other_events_are_ignored_with_a_reason(queue: LocalQueue, event_key: str) -> None:
    resp = receive_bitbucket(bitbucket_request(fixture_bytes(), event_key=event_key), _ctx(queue))
    assert resp.status == 200
    assert event_key in resp.body["ignored"][0]["reason"]
    assert queue.count() == 0


def test_ping(queue: LocalQueue) -> None:
    resp = receive_bitbucket(bitbucket_request(b"{}", event_key="diagnostics:ping"), _ctx(queue))
    assert (resp.status, resp.body["status"]) == (200, "pong")


@pytest.mark.parametrize(
    "mutation", ["missing", "wrong-secret", "altered-body", "no-prefix", "sha1-prefix", "truncated"]
)
def test_bad_signatures_are_401_and_queue_nothing(queue: LocalQueue, mutation: str) -> None:
    body = fixture_bytes()
    signature = {
        "missing": "",
        "wrong-secret": sign(body, "not the secret"),
        "altered-body": sign(body),
        "no-prefix": hmac_sha256_hex(SECRET.encode(), body),
        "sha1-prefix": "sha1=" + hmac_sha256_hex(SECRET.encode(), body),
        "truncated": sign(body)[:-2],
    }[mutation]
    sent = body.replace(b"8339b7affbd7", b"8339b7affbd8") if mutation == "altered-body" else body
    resp = receive_bitbucket(bitbucket_request(sent, signature=signature), _ctx(queue))
    assert resp.status == 401
    assert resp.body["error"] == "unauthorized"
    assert "X-Hub-Signature" in resp.body["reason"]
    assert queue.count() == 0


def test_unconfigured_secret_is_503(queue: LocalQueue) -> None:
    resp = receive_bitbucket(bitbucket_request(fixture_bytes()), _ctx(queue, BITBUCKET_WEBHOOK_SECRET=""))
    assert resp.status == 503
    assert "BITBUCKET_WEBHOOK_SECRET" in resp.body["reason"]


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        ({"Content-Type": ""}, 415, "unsupported_media_type"),
        ({"X-Event-Key": ""}, 400, "bad_request"),
        ({"Content-Length": str(10**9)}, 413, "payload_too_large"),
    ],
)
def test_header_problems(queue: LocalQueue, change: dict[str, str], status: int, error: str) -> None:
    req = bitbucket_request(fixture_bytes())
    resp = receive_bitbucket(HttpRequest("POST", URL, {**req.headers, **change}, req.body), _ctx(queue))
    assert (resp.status, resp.body["error"]) == (status, error)
    assert queue.count() == 0


def test_body_limit_and_method(queue: LocalQueue) -> None:
    ctx = _ctx(queue, SLIPWAY_MAX_BODY_BYTES="1024")
    assert receive_bitbucket(bitbucket_request(fixture_bytes()), ctx).status == 413
    req = bitbucket_request(b"")
    assert receive_bitbucket(HttpRequest("GET", URL, req.headers, b""), _ctx(queue)).status == 405


def _change(**new: Any) -> bytes:
    payload = fixture_json()
    payload["push"]["changes"][0]["new"].update(new)
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("body", "event_key"),
    [
        (b"{not json", "repo:push"),
        (b"[]", "repo:push"),
        (b"", "repo:push"),
        (b'{"push": {"changes": []}}', "repo:push"),
        (b'{"push": {"changes": "all"}, "repository": {}}', "repo:push"),
        (_change(target={"hash": "8339b7a"}), "repo:push"),
        (_change(target=None), "repo:push"),
        (b"not json", "repo:fork"),
    ],
)
def test_malformed_bodies_are_400(queue: LocalQueue, body: bytes, event_key: str) -> None:
    resp = receive_bitbucket(bitbucket_request(body, event_key=event_key), _ctx(queue))
    assert resp.status == 400, resp.body
    assert resp.body["error"] == "bad_request"
    assert queue.count() == 0


# -- property-based: whatever arrives, never a 5xx, never a build without a valid signature -------

HEADER_NAMES = st.sampled_from(
    ["Content-Type", "X-Event-Key", "X-Hub-Signature", "X-Request-UUID", "X-Hook-UUID", "Content-Length"]
)
HEADER_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["application/json", "repo:push", "diagnostics:ping", "sha256=", "sha256=00", "0"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(st.binary(max_size=200), st.just(fixture_bytes()), json_mutations(fixture_bytes())),
    overrides=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=3),
    method=st.sampled_from(["POST", "POST", "POST", "GET"]),
    sign_it=st.booleans(),
)
def test_fuzz_headers_never_5xx_and_never_queue_without_a_valid_signature(
    tmp_path_factory: pytest.TempPathFactory,
    body: bytes,
    overrides: dict[str, str],
    method: str,
    sign_it: bool,
) -> None:
    base = bitbucket_request(body, signature=None if sign_it else "").headers
    headers = {**base, **overrides}
    with clocked_queue(tmp_path_factory.mktemp("q")) as queue:
        resp = receive_bitbucket(HttpRequest(method, URL, headers, body), _ctx(queue))
        event(f"status {resp.status}")
        assert resp.status < 500, resp.body
        json.dumps(resp.body)
        if queue.count():
            assert headers.get("X-Hub-Signature") == sign(body)
            assert resp.status == 202


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_mutations(fixture_bytes()))
def test_fuzz_signed_bodies_never_5xx(tmp_path_factory: pytest.TempPathFactory, body: bytes) -> None:
    with clocked_queue(tmp_path_factory.mktemp("q")) as queue:
        resp = receive_bitbucket(bitbucket_request(body), _ctx(queue))
        event(f"status {resp.status}")
        assert resp.status in (200, 202, 400), resp.body
        assert (queue.count() > 0) == (resp.status == 202)


@pytest.mark.parametrize(
    "change",
    [
        {"links": {"html": {"href": "https://attacker.example/henrikfrystyknielsen/henrikntest01"}}},
        {"full_name": "someone/henrikntest01"},
    ],
)
def test_a_payload_whose_urls_disagree_is_ignored(queue: LocalQueue, change: dict[str, Any]) -> None:
    # One of links.html.href and full_name still names the configured repository.
    payload = fixture_json()
    payload["repository"].update(change)
    body = json.dumps(payload).encode()
    resp = receive_bitbucket(bitbucket_request(body), _ctx(queue))
    assert resp.status == 200, resp.body
    assert resp.body["accepted"] == []
    [ignored] = resp.body["ignored"]
    assert ignored["reason"].startswith(DIFFERENT_REPOSITORIES)
    assert _queued(queue) == []


# --- pull requests: the published pullrequest:updated (tests/fixtures/bitbucket/SOURCES.md) -----
UPDATED = "pullrequest-updated-drone-go-scm.json"


def test_a_published_pullrequest_updated_is_read_as_a_new_head() -> None:
    read = bitbucket_reader("pullrequest:updated")
    pr = read(fixture_bytes(UPDATED), "application/json", "bb-delivery", receiving.NOW)

    # The values, read from the file by hand: pullrequest.id 1, source develop @ 0704fc5beccc,
    # destination master, both sides brydzewski/foo ({bc771cbf-...}), state OPEN.
    assert isinstance(pr, PullRequestEvent)
    assert (pr.provider, pr.number, pr.action, pr.sender_action) == (
        "bitbucket",
        1,
        "updated",
        "pullrequest:updated",
    )
    assert (pr.head_commit, pr.head_commit_abbrev) == (None, "0704fc5beccc")
    assert (pr.head_ref, pr.base_ref) == ("refs/heads/develop", "refs/heads/master")
    assert pr.fork is False and pr.merged is False
    assert "https://bitbucket.org/brydzewski/foo" in pr.repo_urls
    assert pr.delivery_id == "bb-delivery"


def test_a_published_pullrequest_updated_is_accepted_by_the_receiver(queue: LocalQueue) -> None:
    body = fixture_bytes(UPDATED)
    resp = receive_bitbucket(bitbucket_request(body, event_key="pullrequest:updated"), _ctx(queue))

    # Authenticated and read (what it was read as: the test above); 200 while pull-request builds
    # are not enabled, or no target builds brydzewski/foo; never refused.
    assert resp.status in (200, 202), resp.body
    assert resp.body["correlation_id"] == REQUEST_UUID


def test_a_forged_pullrequest_updated_is_refused(queue: LocalQueue) -> None:
    body = fixture_bytes(UPDATED)
    request = bitbucket_request(body, event_key="pullrequest:updated", signature=sign(body, "not the secret"))
    assert receive_bitbucket(request, _ctx(queue)).status == 401
    assert queue.count() == 0

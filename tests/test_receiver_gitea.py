"""The Gitea receiver against Gitea's documented push, signed by the test (the doc sample is not)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.intake.receivers.gitea import receive_gitea
from shared.intake.receivers.pipeline import ReceiverContext
from shared.intake.receivers.signatures import hmac_sha256_hex
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig
from shared.platform.http import HttpRequest
from shared.platform.queue.local import LocalQueue
from tests.support import receiving
from tests.support.fuzz import json_mutations
from tests.support.receiving import DIFFERENT_REPOSITORIES, ZERO, clocked_queue, queued, receiver_context
from tests.support.receiving import queue as queue

SAMPLE = "push-docs.json"
URL = "http://localhost/api/hooks/gitea"
SECRET = "gitea secret for the tests"
COMMIT = "bffeb74224043ba2feb48d137756c8a9331c449a"
DELIVERY = "f6266f16-1bf3-46a5-9ea4-602e06ead473"

CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [
            {
                # ssh form here; the payload gives clone_url, html_url and ssh_url.
                "name": "webhooks",
                "repo": "ssh://gitea@localhost:2222/gitea/webhooks.git",
                "image": "gitea/webhooks",
                "branches": ["develop", "master"],
                "tags": ["v*"],
                "paths": ["src/**"],
            },
            {
                "name": "webhooks-all",
                "repo": "http://localhost:3000/gitea/webhooks",
                "image": "gitea/webhooks-all",
                "branches": ["develop"],
            },
        ],
    }
)


# Each target's configured repo in https form: what its builds clone, whatever the payload says.
BUILT_FROM = {
    "webhooks": "https://localhost/gitea/webhooks.git",
    "webhooks-all": "https://localhost:3000/gitea/webhooks.git",
}


def fixture_bytes(name: str = SAMPLE) -> bytes:
    return receiving.fixture_bytes("gitea", name)


def fixture_json(name: str = SAMPLE) -> Any:
    return json.loads(fixture_bytes(name))


def sample_headers() -> dict[str, str]:
    headers: dict[str, str] = json.loads(fixture_bytes("push-docs.headers.json"))
    return headers


def gitea_request(
    body: bytes, *, signed: bool = True, secret: str = SECRET, extra: dict[str, str] | None = None
) -> HttpRequest:
    """A delivery with the documented headers, signed the way Gitea signs (unless ``signed`` is False)."""
    headers = {**sample_headers(), "Content-Type": "application/json"}
    if signed:
        signature = hmac_sha256_hex(secret.encode(), body)
        headers.update({"X-Gitea-Signature": signature, "X-Hub-Signature-256": "sha256=" + signature})
    headers.update(extra or {})
    return HttpRequest("POST", URL, headers, body)


def _queued(queue: LocalQueue) -> list[BuildRequest]:
    return queued(queue, key=lambda r: r.target)


def _ctx(queue: object, **overrides: str) -> ReceiverContext:
    return receiver_context(queue, CONFIG, {"GITEA_WEBHOOK_SECRET": SECRET, **overrides})


def _modern(**changes: Any) -> bytes:
    """The doc sample as current Gitea sends it: commits list their files, total_commits is set."""
    payload = fixture_json()
    del payload["secret"]
    payload["commits"][0].update(added=["docs/usage.md"], modified=["README.md"], removed=[])
    payload.update({"total_commits": 1, "head_commit": payload["commits"][0], **changes})
    return json.dumps(payload).encode()


def test_the_documented_push_is_queued(queue: LocalQueue) -> None:
    resp = receive_gitea(gitea_request(fixture_bytes()), _ctx(queue))
    assert resp.status == 202, resp.body
    assert resp.body["correlation_id"] == DELIVERY
    assert sorted(a["target"] for a in resp.body["accepted"]) == ["webhooks", "webhooks-all"]
    # The old-format sample lists no files per commit: paths cannot be checked.
    assert resp.body["notes"] == [
        "webhooks: paths filter not applied (Gitea did not list the changed files of every commit); building"
    ]
    for request in _queued(queue):
        assert (request.source.ref, request.source.commit) == ("refs/heads/develop", COMMIT)
        # Built from each target's configured repo, never from the payload's clone_url: the
        # ssh form's https URL has no port (configure the https URL to keep one).
        assert request.source.repo_url == BUILT_FROM[request.target]
        assert {"develop", "sha-bffeb74"} <= set(request.image.tags)
        assert "latest" not in request.image.tags  # the default branch is master
        assert request.trigger.provider == "gitea"
        assert request.trigger.delivery_id == DELIVERY


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Gitea-Signature": "{hex}"},
        {"X-Gitea-Signature": "{HEX}"},
        {"X-Gogs-Signature": "{hex}"},
        {"X-Hub-Signature-256": "sha256={hex}"},
        {"X-Forgejo-Signature": "{hex}", "X-Forgejo-Event": "push", "X-Forgejo-Delivery": "forgejo-1"},
        # Gitea without a secret sends empty signature headers; another header still decides.
        {"X-Gitea-Signature": "", "X-Hub-Signature-256": "sha256={hex}"},
    ],
)
def test_each_signature_header_authenticates(queue: LocalQueue, headers: dict[str, str]) -> None:
    body = fixture_bytes()
    digest = hmac_sha256_hex(SECRET.encode(), body)
    filled = {k: v.replace("{hex}", digest).replace("{HEX}", digest.upper()) for k, v in headers.items()}
    base = {"Content-Type": "application/json", "X-Gitea-Event": "push", "X-Gitea-Delivery": DELIVERY}
    if "X-Forgejo-Event" in filled:
        base = {"Content-Type": "application/json"}
    resp = receive_gitea(HttpRequest("POST", URL, {**base, **filled}, body), _ctx(queue))
    assert resp.status == 202, resp.body
    assert resp.body["correlation_id"] == filled.get("X-Forgejo-Delivery", DELIVERY)


def test_complete_file_lists_apply_paths_filters(queue: LocalQueue) -> None:
    resp = receive_gitea(gitea_request(_modern()), _ctx(queue))
    assert [a["target"] for a in resp.body["accepted"]] == ["webhooks-all"]
    assert resp.body["ignored"] == [
        {"target": "webhooks", "reason": "no changed file matches the paths filters"}
    ]
    assert "notes" not in resp.body
    payload = json.loads(_modern())
    payload["commits"][0]["added"] = ["src/main.go"]
    resp = receive_gitea(gitea_request(json.dumps(payload).encode()), _ctx(queue))
    assert sorted(a["target"] for a in resp.body["accepted"]) == ["webhooks", "webhooks-all"]


def test_more_commits_than_listed_builds_with_a_note(queue: LocalQueue) -> None:
    resp = receive_gitea(gitea_request(_modern(total_commits=12)), _ctx(queue))
    assert [a["target"] for a in resp.body["accepted"]] == ["webhooks", "webhooks-all"]
    assert "Gitea listed 1 of 12 commits" in resp.body["notes"][0]


def test_tag_push(queue: LocalQueue) -> None:
    resp = receive_gitea(gitea_request(_modern(ref="refs/tags/v3.1.0", before=ZERO, commits=[])), _ctx(queue))
    assert resp.status == 202
    [request] = _queued(queue)
    assert (request.target, request.source.ref, request.trigger.kind) == (
        "webhooks",
        "refs/tags/v3.1.0",
        "tag",
    )
    assert {"v3.1.0", "3.1.0", "3.1"} <= set(request.image.tags)
    assert "new ref" in resp.body["notes"][0]


def test_branch_deletion_is_ignored(queue: LocalQueue) -> None:
    resp = receive_gitea(gitea_request(_modern(after=ZERO, commits=[], head_commit=None)), _ctx(queue))
    assert resp.status == 200
    assert {i["reason"] for i in resp.body["ignored"]} == {"branch deleted"}
    assert queue.count() == 0


def test_skip_directive_in_the_head_commit(queue: LocalQueue) -> None:
    payload = json.loads(_modern())
    payload["head_commit"]["message"] = "Webhooks Yay! [skip ci]"
    resp = receive_gitea(gitea_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200
    assert all("[skip ci]" in i["reason"] for i in resp.body["ignored"])


def test_ping_and_other_events(queue: LocalQueue) -> None:
    ping = receive_gitea(gitea_request(b"{}", extra={"X-Gitea-Event": "ping"}), _ctx(queue))
    assert (ping.status, ping.body["status"]) == (200, "pong")
    issues = receive_gitea(gitea_request(b"{}", extra={"X-Gitea-Event": "issues"}), _ctx(queue))
    assert issues.status == 200
    assert issues.body["ignored"] == [{"target": None, "reason": "event 'issues' is not handled"}]
    assert queue.count() == 0


def test_event_from_the_github_header_alone(queue: LocalQueue) -> None:
    req = gitea_request(fixture_bytes())
    headers = {k: v for k, v in req.headers.items() if not k.startswith(("X-Gitea-E", "X-Gogs-E"))}
    assert receive_gitea(HttpRequest("POST", URL, headers, req.body), _ctx(queue)).status == 202


def test_the_secret_in_the_body_is_not_authentication(queue: LocalQueue) -> None:
    # The doc sample carries the deprecated "secret" field; only a signature authenticates.
    secret_in_body = fixture_json()["secret"]
    resp = receive_gitea(
        gitea_request(fixture_bytes(), signed=False), _ctx(queue, GITEA_WEBHOOK_SECRET=secret_in_body)
    )
    assert resp.status == 401
    assert queue.count() == 0


@pytest.mark.parametrize(
    "mutation", ["missing", "empty", "wrong-secret", "altered-body", "prefixed-gitea", "one-wrong"]
)
def test_bad_signatures_are_401_and_queue_nothing(queue: LocalQueue, mutation: str) -> None:
    body = fixture_bytes()
    digest = hmac_sha256_hex(SECRET.encode(), body)
    headers = {
        "missing": {},
        "empty": {"X-Gitea-Signature": "", "X-Hub-Signature-256": ""},
        "wrong-secret": {"X-Gitea-Signature": hmac_sha256_hex(b"not the secret", body)},
        "altered-body": {"X-Gitea-Signature": digest},
        "prefixed-gitea": {"X-Gitea-Signature": "sha256=" + digest},
        "one-wrong": {"X-Gitea-Signature": "0" * 64, "X-Hub-Signature-256": "sha256=" + "1" * 64},
    }[mutation]
    sent = body.replace(b"Webhooks Yay!", b"Webhooks Nay!") if mutation == "altered-body" else body
    req = gitea_request(sent, signed=False, extra=headers)
    resp = receive_gitea(req, _ctx(queue))
    assert resp.status == 401
    assert resp.body["error"] == "unauthorized"
    assert queue.count() == 0


def test_unconfigured_secret_is_503(queue: LocalQueue) -> None:
    resp = receive_gitea(gitea_request(fixture_bytes()), _ctx(queue, GITEA_WEBHOOK_SECRET=""))
    assert resp.status == 503
    assert "GITEA_WEBHOOK_SECRET" in resp.body["reason"]


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        # Gitea signs the JSON, not the form it posts: form deliveries cannot be authenticated.
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ({"X-Gitea-Event": "", "X-Gogs-Event": "", "X-GitHub-Event": ""}, 400, "bad_request"),
        ({"Content-Length": str(10**9)}, 413, "payload_too_large"),
    ],
)
def test_header_problems(queue: LocalQueue, change: dict[str, str], status: int, error: str) -> None:
    req = gitea_request(fixture_bytes())
    resp = receive_gitea(HttpRequest("POST", URL, {**req.headers, **change}, req.body), _ctx(queue))
    assert (resp.status, resp.body["error"]) == (status, error)
    assert queue.count() == 0


def test_body_limit_and_method(queue: LocalQueue) -> None:
    assert (
        receive_gitea(gitea_request(fixture_bytes()), _ctx(queue, SLIPWAY_MAX_BODY_BYTES="512")).status == 413
    )
    req = gitea_request(b"")
    assert receive_gitea(HttpRequest("GET", URL, req.headers, b""), _ctx(queue)).status == 405


@pytest.mark.parametrize(
    ("body", "event_name"),
    [
        (b"{not json", "push"),
        (b"[]", "push"),
        (b"", "push"),
        (b'{"ref": "refs/heads/develop", "after": "' + COMMIT.encode() + b'"}', "push"),
        (_modern(after="bffeb742"), "push"),
        (_modern(ref=""), "push"),
        (_modern(commits=[{"id": 1}]), "push"),
        (_modern(total_commits="many"), "push"),
        (b"nope", "issues"),
    ],
)
def test_malformed_bodies_are_400(queue: LocalQueue, body: bytes, event_name: str) -> None:
    resp = receive_gitea(gitea_request(body, extra={"X-Gitea-Event": event_name}), _ctx(queue))
    assert resp.status == 400, resp.body
    assert resp.body["error"] == "bad_request"
    assert queue.count() == 0


# -- property-based: whatever arrives, never a 5xx, never a build without a valid signature -------

SIGNATURE_HEADERS = ("X-Gitea-Signature", "X-Forgejo-Signature", "X-Gogs-Signature", "X-Hub-Signature-256")
HEADER_NAMES = st.sampled_from(
    [
        *SIGNATURE_HEADERS,
        "Content-Type",
        "X-Gitea-Event",
        "X-Forgejo-Event",
        "X-GitHub-Event",
        "Content-Length",
    ]
)
HEADER_VALUES = st.one_of(
    st.text(max_size=40), st.sampled_from(["application/json", "push", "ping", "sha256=", "0" * 64, "7"])
)
BODIES = st.one_of(st.binary(max_size=200), st.just(fixture_bytes()), json_mutations(_modern()))


def _authentic(headers: dict[str, str], body: bytes) -> bool:
    digest = hmac_sha256_hex(SECRET.encode(), body)
    expected = {name: digest for name in SIGNATURE_HEADERS} | {"X-Hub-Signature-256": "sha256=" + digest}
    return any(headers.get(name, "").strip().lower() == value for name, value in expected.items())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=BODIES,
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
    headers = {**gitea_request(body, signed=sign_it).headers, **overrides}
    with clocked_queue(tmp_path_factory.mktemp("q")) as queue:
        resp = receive_gitea(HttpRequest(method, URL, headers, body), _ctx(queue))
        event(f"status {resp.status}")
        assert resp.status < 500, resp.body
        json.dumps(resp.body)
        if queue.count():
            assert _authentic(headers, body)
            assert resp.status == 202


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(json_mutations(fixture_bytes()), json_mutations(_modern())))
def test_fuzz_signed_bodies_never_5xx(tmp_path_factory: pytest.TempPathFactory, body: bytes) -> None:
    with clocked_queue(tmp_path_factory.mktemp("q")) as queue:
        resp = receive_gitea(gitea_request(body), _ctx(queue))
        event(f"status {resp.status}")
        assert resp.status in (200, 202, 400), resp.body
        assert (queue.count() > 0) == (resp.status == 202)


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("clone_url", "http://attacker.example:3000/gitea/webhooks.git"),
        ("html_url", "http://localhost:3000/someone/webhooks"),
        ("ssh_url", "ssh://gitea@localhost:2222/someone/else.git"),
    ],
)
def test_a_payload_whose_urls_disagree_is_ignored(queue: LocalQueue, field: str, url: str) -> None:
    payload = fixture_json()
    payload["repository"][field] = url
    resp = receive_gitea(gitea_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200, resp.body
    assert resp.body["accepted"] == []
    [ignored] = resp.body["ignored"]
    assert ignored["reason"].startswith(DIFFERENT_REPOSITORIES)
    assert _queued(queue) == []

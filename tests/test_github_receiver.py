"""The GitHub receiver against the real published payloads, signed by the test."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.intake.receivers.github import receive_github, sign, verify_github_signature
from shared.intake.receivers.pipeline import ReceiverContext
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig
from shared.platform.http import HttpRequest
from shared.platform.queue.local import LocalQueue
from tests.support.github import FIXTURES, SECRET, fixture_bytes, fixture_json, signed_request
from tests.support.receiving import DIFFERENT_REPOSITORIES, clocked_queue, queued, receiver_context
from tests.support.receiving import queue as queue
from tests.support.sending import UnreachableQueue

CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [
            {
                "name": "azure-test",
                "repo": "https://github.com/dougbu/AzureTest",
                "image": "dougbu/azure-test",
                "branches": ["master"],
            },
            {
                "name": "hello",
                "repo": "git@github.com:Codertocat/Hello-World.git",
                "image": "codertocat/hello",
                "branches": ["master"],
                "tags": ["*"],
            },
            {
                "name": "hello-ghes",
                "repo": "https://octocoders.github.io/Codertocat/Hello-World",
                "image": "codertocat/hello-ghes",
                "branches": ["master"],
                "tags": ["*"],
            },
            {
                "name": "probot-src",
                "repo": "https://github.com/bkeepers-inc/test",
                "image": "bkeepers/test",
                "branches": ["**"],
                "paths": ["src/**"],
            },
            {
                "name": "probot-docs",
                "repo": "https://github.com/bkeepers-inc/test",
                "image": "bkeepers/docs",
                "branches": ["**"],
                "ignore_paths": ["*.md"],
            },
            {
                "name": "public-repo",
                "repo": "https://github.com/baxterthehacker/public-repo.git",
                "image": "baxter/public",
                "branches": ["changes"],
                "paths": ["README.md"],
            },
        ],
    }
)


def _ctx(queue: object, **settings: str) -> ReceiverContext:
    return receiver_context(queue, CONFIG, {"GITHUB_WEBHOOK_SECRET": SECRET, **settings})


def test_signed_push_is_queued_as_one_build_request(queue: LocalQueue) -> None:
    body = fixture_bytes("push-branch-signed-aspnet.json")
    resp = receive_github(signed_request(body, delivery="abc-1"), _ctx(queue))
    assert resp.status == 202, resp.body
    [accepted] = resp.body["accepted"]
    assert accepted["target"] == "azure-test"
    assert {"master", "sha-c72d62b", "latest"} <= set(accepted["tags"])
    [message] = queue.peek()
    assert message.message_id == accepted["id"]
    assert message.content_type == "application/json"
    assert message.correlation_id == "abc-1" == resp.body["correlation_id"]
    assert message.application_properties["target"] == "azure-test"
    request = BuildRequest.from_json(message.body)
    payload = fixture_json("push-branch-signed-aspnet.json")
    assert request.source.commit == payload["after"]
    assert request.source.repo_url == "https://github.com/dougbu/AzureTest.git"  # the target's repo
    assert request.trigger.delivery_id == "abc-1"
    assert request.trigger.provider == "github"


def test_redelivery_queues_nothing_new(queue: LocalQueue) -> None:
    body = fixture_bytes("push-branch-signed-aspnet.json")
    first = receive_github(signed_request(body, delivery="abc-1"), _ctx(queue))
    again = receive_github(signed_request(body, delivery="abc-2"), _ctx(queue))
    assert first.body["accepted"][0]["id"] == again.body["accepted"][0]["id"]
    assert queue.count() == 1


def test_form_encoded_delivery(queue: LocalQueue) -> None:
    body = urlencode({"payload": fixture_bytes("push-branch-signed-aspnet.json").decode()}).encode()
    resp = receive_github(signed_request(body, content_type="application/x-www-form-urlencoded"), _ctx(queue))
    assert resp.status == 202
    assert queue.count() == 1


def test_legacy_sha1_only_delivery_is_refused(queue: LocalQueue) -> None:
    body = fixture_bytes("push-branch-signed-aspnet.json")
    headers = json.loads(fixture_bytes("push-branch-signed-aspnet.headers.json"))
    headers["Content-Type"] = "application/json"
    resp = receive_github(HttpRequest("POST", "http://x/api/hooks/github", headers, body), _ctx(queue))
    assert resp.status == 401
    assert "X-Hub-Signature-256" in resp.body["reason"]
    assert queue.count() == 0


@pytest.mark.parametrize("mutation", ["wrong-secret", "altered-body", "missing"])
def test_bad_signatures_get_401_and_queue_nothing(queue: LocalQueue, mutation: str) -> None:
    body = fixture_bytes("push-branch-signed-aspnet.json")
    if mutation == "wrong-secret":
        req = signed_request(body, secret="not the secret")
    elif mutation == "altered-body":
        signed = signed_request(body)
        req = HttpRequest("POST", signed.url, signed.headers, body.replace(b"master", b"mastex"))
    else:
        signed = signed_request(body)
        req = HttpRequest(
            "POST", signed.url, {k: v for k, v in signed.headers.items() if "Signature" not in k}, body
        )
    resp = receive_github(req, _ctx(queue))
    assert resp.status == 401
    assert resp.body["error"] == "unauthorized"
    assert queue.count() == 0


def test_unconfigured_secret_is_503_not_500(queue: LocalQueue) -> None:
    body = fixture_bytes("push-branch-signed-aspnet.json")
    resp = receive_github(signed_request(body), _ctx(queue, GITHUB_WEBHOOK_SECRET=""))
    assert resp.status == 503
    assert "GITHUB_WEBHOOK_SECRET" in resp.body["reason"]


@pytest.mark.parametrize("name", ["ping-default.json", "ping-signed-aspnet.json"])
def test_ping(queue: LocalQueue, name: str) -> None:
    resp = receive_github(signed_request(fixture_bytes(name), event="ping"), _ctx(queue))
    assert resp.status == 200
    assert resp.body["status"] == "pong"


@pytest.mark.parametrize(
    ("name", "event"), [("create-default.json", "create"), ("release-created.json", "release")]
)
def test_other_events_are_ignored_with_a_reason(queue: LocalQueue, name: str, event: str) -> None:
    resp = receive_github(signed_request(fixture_bytes(name), event=event), _ctx(queue))
    assert resp.status == 200
    assert event in resp.body["ignored"][0]["reason"]
    assert queue.count() == 0


def test_tag_deletion_is_ignored(queue: LocalQueue) -> None:
    resp = receive_github(signed_request(fixture_bytes("push-tag-deleted.json")), _ctx(queue))
    assert resp.status == 200
    assert resp.body["ignored"] == [{"target": "hello", "reason": "tag deleted"}]


def test_tag_push_from_ghes(queue: LocalQueue) -> None:
    resp = receive_github(signed_request(fixture_bytes("push-tag-created-ghes35.json")), _ctx(queue))
    assert resp.status == 202
    [accepted] = resp.body["accepted"]
    assert accepted["target"] == "hello-ghes"
    assert "simple-tag" in accepted["tags"]
    [request] = queued(queue)
    assert request.trigger.kind == "tag"
    assert request.source.ref == "refs/tags/simple-tag"


def test_new_branch_builds_with_a_note_when_paths_cannot_be_checked(queue: LocalQueue) -> None:
    config = SlipwayConfig.model_validate(
        {
            "registry": "r.azurecr.io",
            "targets": [
                {
                    "name": "hello",
                    "repo": "https://github.com/Codertocat/Hello-World",
                    "image": "c/hello",
                    "branches": ["master"],
                    "paths": ["src/**"],
                }
            ],
        }
    )
    ctx = ReceiverContext(
        settings={"GITHUB_WEBHOOK_SECRET": SECRET}, config=lambda: config, queue=lambda: queue
    )
    resp = receive_github(signed_request(fixture_bytes("push-branch-created.json")), ctx)
    assert resp.status == 202
    assert "paths filter not applied" in resp.body["notes"][0]


def test_path_filters_on_a_real_push(queue: LocalQueue) -> None:
    # probot's push modifies README.md only.
    resp = receive_github(signed_request(fixture_bytes("push-branch-commits-probot.json")), _ctx(queue))
    assert resp.status == 200
    reasons = {i["target"]: i["reason"] for i in resp.body["ignored"]}
    assert reasons == {
        "probot-src": "no changed file matches the paths filters",
        "probot-docs": "no changed file matches the paths filters",
    }
    resp = receive_github(
        signed_request(fixture_bytes("push-branch-legacy-developer-site.json")), _ctx(queue)
    )
    assert resp.status == 202
    assert resp.body["accepted"][0]["target"] == "public-repo"


def test_skip_ci_in_head_commit(queue: LocalQueue) -> None:
    payload = fixture_json("push-branch-signed-aspnet.json")
    payload["head_commit"]["message"] = "Tidy up [skip ci]"
    resp = receive_github(signed_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200
    assert "[skip ci]" in resp.body["ignored"][0]["reason"]


def test_unknown_repository(queue: LocalQueue) -> None:
    payload = fixture_json("push-branch-signed-aspnet.json")
    payload["repository"].update(
        clone_url="https://github.com/someone/else.git",
        html_url="https://github.com/someone/else",
        ssh_url="git@github.com:someone/else.git",
        git_url="git://github.com/someone/else.git",
    )
    resp = receive_github(signed_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200
    assert resp.body["ignored"][0]["reason"].startswith("no target builds github.com/someone/else")


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ({"Content-Type": ""}, 415, "unsupported_media_type"),
        ({"X-GitHub-Event": ""}, 400, "bad_request"),
    ],
)
def test_header_problems(queue: LocalQueue, change: dict[str, str], status: int, error: str) -> None:
    req = signed_request(fixture_bytes("push-branch-signed-aspnet.json"))
    req = HttpRequest("POST", req.url, {**req.headers, **change}, req.body)
    resp = receive_github(req, _ctx(queue))
    assert (resp.status, resp.body["error"]) == (status, error)
    assert resp.body["reason"]
    assert queue.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"ref": "refs/heads/master"}',
        b'{"ref": 1, "after": "x", "repository": {}}',
        "\u00ff".encode("latin-1"),
    ],
)
def test_malformed_signed_bodies_get_400(queue: LocalQueue, body: bytes) -> None:
    resp = receive_github(signed_request(body), _ctx(queue))
    assert resp.status == 400
    assert resp.body["error"] == "bad_request"


def test_body_limit(queue: LocalQueue) -> None:
    body = fixture_bytes("push-branch-signed-aspnet.json")
    resp = receive_github(signed_request(body), _ctx(queue, SLIPWAY_MAX_BODY_BYTES="100"))
    assert resp.status == 413
    lying = signed_request(b"{}", extra_headers={"Content-Length": str(10**9)})
    assert receive_github(lying, _ctx(queue)).status == 413


def test_method(queue: LocalQueue) -> None:
    req = signed_request(b"{}")
    assert receive_github(HttpRequest("GET", req.url, req.headers, b""), _ctx(queue)).status == 405


def test_queue_outage_is_503_so_the_sender_retries() -> None:
    resp = receive_github(
        signed_request(fixture_bytes("push-branch-signed-aspnet.json")), _ctx(UnreachableQueue())
    )
    assert resp.status == 503
    assert resp.headers["Retry-After"]


def test_signature_helpers() -> None:
    body = b'{"a":1}'
    assert verify_github_signature(b"k", body, sign(b"k", body))
    assert not verify_github_signature(b"k", body, sign(b"k", body).upper())
    assert not verify_github_signature(b"k", body, None)
    assert not verify_github_signature(b"k", body, "sha1=" + "0" * 40)


header_names = st.sampled_from(
    [
        "Content-Type",
        "X-GitHub-Event",
        "X-Hub-Signature-256",
        "X-GitHub-Delivery",
        "Content-Length",
        "X-Other",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(st.binary(max_size=300), st.just(fixture_bytes("push-branch-signed-aspnet.json"))),
    headers=st.dictionaries(header_names, st.text(max_size=60), max_size=6),
    method=st.sampled_from(["POST", "GET", "PUT"]),
    sign_it=st.booleans(),
)
def test_fuzz_never_5xx_and_never_queues_without_a_valid_signature(
    tmp_path_factory: pytest.TempPathFactory, body: bytes, headers: dict[str, str], method: str, sign_it: bool
) -> None:
    queue = clocked_queue(tmp_path_factory.mktemp("q"))
    if sign_it:
        headers = {**headers, "X-Hub-Signature-256": sign(SECRET.encode(), body)}
    resp = receive_github(HttpRequest(method, "http://x/api/hooks/github", headers, body), _ctx(queue))
    assert resp.status < 500, resp.body
    json.dumps(resp.body)
    if queue.count():
        assert sign_it and resp.status == 202


_EVENTS = {
    "push": "push",
    "ping": "ping",
    "create": "create",
    "delete": "delete",
    "release": "release",
    "package": "package",
    "registry_package": "registry_package",
    "workflow_run": "workflow_run",
    "pull_request": "pull_request",
    "example": "issues",
}


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in FIXTURES.glob("*.json") if not p.name.endswith(".headers.json")),
)
def test_every_published_github_sample(queue: LocalQueue, name: str) -> None:
    event = _EVENTS[name.split("-")[0]]
    resp = receive_github(signed_request(fixture_bytes(name), event=event), _ctx(queue))
    assert resp.status in (200, 202), resp.body
    if resp.status == 202:
        assert event == "push" and resp.body["accepted"] and queue.count() >= 1
    else:
        assert resp.body.get("status") == "pong" or resp.body["ignored"], resp.body
        assert all(i["reason"] for i in resp.body["ignored"])


def test_a_response_body_with_text_utf8_cannot_carry_is_still_json() -> None:
    from shared.platform.http import HttpResponse

    body = {"reason": "branch a\ud800 is ignored", "accepted": [], "n": 1}
    assert json.loads(HttpResponse(200, body).body_bytes()) == body
    assert json.loads(HttpResponse(200, {"ok": "\u00fc"}).body_bytes()) == {"ok": "\u00fc"}


def test_a_ref_with_a_lone_surrogate_escape_is_ignored_not_a_500(queue: LocalQueue) -> None:
    """json.loads (the form-encoded path) accepts "\\ud800"; no Git ref can hold it, and no queue could."""
    payload = fixture_json("push-branch-signed-aspnet.json")
    payload["ref"] = payload["ref"] + "\ud800"
    body = urlencode({"payload": json.dumps(payload)}).encode()
    resp = receive_github(signed_request(body, content_type="application/x-www-form-urlencoded"), _ctx(queue))
    assert resp.status == 200
    assert resp.body["ignored"][0]["reason"] == "ref is not a valid Git branch or tag name"
    assert json.loads(resp.body_bytes()) == resp.body
    assert queue.count() == 0


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("clone_url", "https://builds.attacker.example/dougbu/AzureTest.git"),  # another host
        ("clone_url", "https://github.com/someone/AzureTest.git"),  # another repository
        ("git_url", "git://attacker.example/dougbu/AzureTest.git"),
        ("ssh_url", "git@github.com:someone/else.git"),  # ssh: another path
    ],
)
def test_a_payload_whose_urls_disagree_is_ignored(queue: LocalQueue, field: str, url: str) -> None:
    # html_url still names the configured repository: routing alone would accept the push.
    payload = fixture_json("push-branch-signed-aspnet.json")
    payload["repository"][field] = url
    resp = receive_github(signed_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200, resp.body
    assert resp.body["accepted"] == []
    [ignored] = resp.body["ignored"]
    assert ignored["target"] is None
    assert ignored["reason"].startswith(DIFFERENT_REPOSITORIES)
    assert "github.com/dougbu/azuretest" in ignored["reason"]
    assert queue.peek() == []


def test_the_build_clones_the_configured_repo_not_a_payload_url(queue: LocalQueue) -> None:
    # Every URL of the payload agrees (same repository, other case), the target is configured in
    # the scp form: the request clones the configured repository, its path's case kept.
    payload = fixture_json("push-branch-created.json")
    payload["repository"].update(
        clone_url="https://GITHUB.com/codertocat/hello-world.git",
        html_url="https://github.com/codertocat/hello-world",
    )
    resp = receive_github(signed_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 202, resp.body
    [request] = queued(queue)
    assert request.target == "hello"
    assert request.source.repo_url == "https://github.com/Codertocat/Hello-World.git"

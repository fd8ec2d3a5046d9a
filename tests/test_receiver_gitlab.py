"""The GitLab receiver against GitLab's published payloads, authenticated by the test."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.intake.receivers.gitlab import receive_gitlab
from shared.intake.receivers.pipeline import ReceiverContext
from shared.model.config import SlipwayConfig
from shared.platform.http import HttpRequest
from shared.platform.queue.local import LocalQueue
from tests.support import receiving
from tests.support.fuzz import json_mutations
from tests.support.receiving import DIFFERENT_REPOSITORIES, ZERO, clocked_queue, queued, receiver_context
from tests.support.receiving import queue as queue
from tests.support.sending import UnreachableQueue

FIXTURES = receiving.FIXTURES / "gitlab"
URL = "http://localhost/api/hooks/gitlab"
TOKEN = "gitlab token for the tests"

CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [
            {
                # scp form here, http/ssh/web forms in the payloads.
                "name": "diaspora",
                "repo": "git@example.com:mike/diaspora.git",
                "image": "mike/diaspora",
                "branches": ["master"],
                "paths": ["app/**"],
            },
            {
                "name": "flight",
                "repo": "https://gitlab.example.com/flightjs/Flight",
                "image": "flightjs/flight",
                "branches": ["master"],
                "paths": ["package.json"],
            },
            {
                "name": "flight-docs",
                "repo": "ssh://git@gitlab.example.com:2222/flightjs/Flight.git",
                "image": "flightjs/docs",
                "branches": ["master"],
                "paths": ["docs/**"],
            },
            {
                "name": "example",
                "repo": "http://example.com/jsmith/example.git",
                "image": "jsmith/example",
                "branches": ["master"],
                "tags": ["v*"],
            },
        ],
    }
)


def fixture_bytes(name: str) -> bytes:
    return receiving.fixture_bytes("gitlab", name)


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def sample_headers(name: str) -> dict[str, str]:
    """The sample's recorded headers, with the test's token in place of ``[REDACTED]``."""
    path = FIXTURES / name.replace(".json", ".headers.json")
    headers: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    return {**headers, "Content-Type": "application/json", "X-Gitlab-Token": TOKEN}


def gitlab_request(body: bytes, *, event: str = "Push Hook", token: str | None = TOKEN) -> HttpRequest:
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": event}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return HttpRequest("POST", URL, headers, body)


def _ctx(queue: object, **overrides: str) -> ReceiverContext:
    return receiver_context(queue, CONFIG, {"GITLAB_WEBHOOK_TOKEN": TOKEN, **overrides})


# (sample, target, ref, commit, some expected tags, delivery id, note fragment)
PUSH_SAMPLES = [
    (
        "push-hook-api-doc-event1.json",
        "flight",
        "refs/heads/master",
        "f15b32277d2c55c6c595845a87109b09c913c556",
        {"master", "sha-f15b322", "latest"},
        "9cebe914-4827-408f-b014-cfa23a47a35f",
        None,
    ),
    (
        "push-hook-api-doc-event2.json",
        "flight",
        "refs/heads/master",
        "f15b32277d2c55c6c595845a87109b09c913c556",
        {"master", "sha-f15b322", "latest"},
        "842d7c3e-3114-4396-8a95-66c084d53cb1",
        None,
    ),
    (
        "push-hook-docs.json",
        "diaspora",
        "refs/heads/master",
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        {"master", "sha-da15608", "latest"},
        None,
        "GitLab listed 2 of 4 commits",
    ),
    (
        "push-hook-go-gitlab.json",
        "diaspora",
        "refs/heads/master",
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        {"master", "sha-da15608", "latest"},
        None,
        "GitLab listed 2 of 4 commits",
    ),
    (
        "push-systemhook-go-gitlab.json",
        "diaspora",
        "refs/heads/master",
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        {"master", "sha-da15608", "latest"},
        None,
        "system hooks never do",
    ),
    (
        "tag_push-hook-docs.json",
        "example",
        "refs/tags/v1.0.0",
        "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
        {"v1.0.0", "1.0.0", "1.0", "sha-82b3d5a"},
        None,
        None,
    ),
    (
        "tag_push-hook-go-gitlab.json",
        "example",
        "refs/tags/v1.0.0",
        "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
        {"v1.0.0", "1.0.0", "1.0", "sha-82b3d5a"},
        None,
        None,
    ),
    (
        # System hook: after is the annotated tag object, checkout_sha the commit it points to.
        "tag_push-systemhook-go-gitlab.json",
        "example",
        "refs/tags/v1.0.0",
        "5937ac0a7beb003549fc5fd26fc247adbce4a52e",
        {"v1.0.0", "sha-5937ac0"},
        None,
        None,
    ),
]


@pytest.mark.parametrize(("name", "target", "ref", "commit", "tags", "delivery", "note"), PUSH_SAMPLES)
def test_every_push_sample_is_queued(
    queue: LocalQueue,
    name: str,
    target: str,
    ref: str,
    commit: str,
    tags: set[str],
    delivery: str | None,
    note: str | None,
) -> None:
    resp = receive_gitlab(HttpRequest("POST", URL, sample_headers(name), fixture_bytes(name)), _ctx(queue))
    assert resp.status == 202, resp.body
    [accepted] = resp.body["accepted"]
    assert accepted["target"] == target
    assert tags <= set(accepted["tags"])
    [request] = queued(queue)
    assert request.id == accepted["id"]
    assert (request.source.ref, request.source.commit) == (ref, commit)
    assert request.source.repo_url.startswith("https://")
    assert request.trigger.provider == "gitlab"
    assert request.trigger.kind == ("tag" if ref.startswith("refs/tags/") else "push")
    if delivery:
        assert request.trigger.delivery_id == delivery == resp.body["correlation_id"]
    if note:
        assert any(note in n and "paths filter not applied" in n for n in resp.body["notes"])
    else:
        assert "notes" not in resp.body


def test_complete_file_lists_apply_paths_filters(queue: LocalQueue) -> None:
    # The API-doc push changes package.json only, in 3 of 3 listed commits.
    name = "push-hook-api-doc-event1.json"
    resp = receive_gitlab(HttpRequest("POST", URL, sample_headers(name), fixture_bytes(name)), _ctx(queue))
    assert resp.body["ignored"] == [
        {"target": "flight-docs", "reason": "no changed file matches the paths filters"}
    ]
    [request] = queued(queue)
    assert request.source.repo_url == "https://gitlab.example.com/flightjs/Flight.git"


def test_http_only_instances_are_cloned_over_https(queue: LocalQueue) -> None:
    name = "push-hook-docs.json"
    receive_gitlab(HttpRequest("POST", URL, sample_headers(name), fixture_bytes(name)), _ctx(queue))
    [request] = queued(queue)
    assert request.source.repo_url == "https://example.com/mike/diaspora.git"


def test_recorded_deliveries_of_the_events_api_match_the_extracted_samples(queue: LocalQueue) -> None:
    events = fixture_json("hook-events-list-api-response-docs.json")
    ids = set()
    for number, recorded in enumerate(events, start=1):
        assert recorded["request_data"] == fixture_json(f"push-hook-api-doc-event{number}.json")
        headers = {**recorded["request_headers"], "X-Gitlab-Token": TOKEN}
        resp = receive_gitlab(
            HttpRequest("POST", URL, headers, json.dumps(recorded["request_data"]).encode()), _ctx(queue)
        )
        assert resp.status == 202
        assert resp.body["correlation_id"] == recorded["request_headers"]["X-Gitlab-Event-UUID"]
        ids.add(resp.body["accepted"][0]["id"])
    # The same push delivered twice is one build request.
    assert len(ids) == 1
    assert queue.count() == 1


def test_idempotency_key_is_the_delivery_id_without_an_event_uuid(queue: LocalQueue) -> None:
    headers = sample_headers("push-hook-api-doc-event1.json")
    del headers["X-Gitlab-Event-UUID"]
    resp = receive_gitlab(
        HttpRequest("POST", URL, headers, fixture_bytes("push-hook-api-doc-event1.json")), _ctx(queue)
    )
    assert resp.body["correlation_id"] == "3a427872-00df-429c-9bc9-a9475de2efe4"


def test_release_hook_is_ignored_with_a_reason(queue: LocalQueue) -> None:
    name = "release-hook-go-gitlab.json"
    resp = receive_gitlab(HttpRequest("POST", URL, sample_headers(name), fixture_bytes(name)), _ctx(queue))
    assert resp.status == 200
    assert resp.body["ignored"] == [{"target": None, "reason": "event 'Release Hook' is not handled"}]
    assert queue.count() == 0


def test_other_system_hooks_are_ignored(queue: LocalQueue) -> None:
    body = json.dumps({"event_name": "project_create", "name": "StoreCloud"}).encode()
    resp = receive_gitlab(gitlab_request(body, event="System Hook"), _ctx(queue))
    assert resp.status == 200
    assert "project_create" in resp.body["ignored"][0]["reason"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [("push-hook-go-gitlab.json", "branch deleted"), ("tag_push-hook-go-gitlab.json", "tag deleted")],
)
def test_deletions_are_ignored(queue: LocalQueue, name: str, reason: str) -> None:
    payload = fixture_json(name)
    payload.update(before=payload["after"], after=ZERO, checkout_sha=None, commits=[], total_commits_count=0)
    event = "Tag Push Hook" if "tag" in name else "Push Hook"
    resp = receive_gitlab(gitlab_request(json.dumps(payload).encode(), event=event), _ctx(queue))
    assert resp.status == 200
    assert [i["reason"] for i in resp.body["ignored"]] == [reason]
    assert queue.count() == 0


def test_a_null_checkout_sha_means_the_ref_is_gone(queue: LocalQueue) -> None:
    payload = fixture_json("push-hook-go-gitlab.json")
    payload["checkout_sha"] = None
    resp = receive_gitlab(gitlab_request(json.dumps(payload).encode()), _ctx(queue))
    assert [i["reason"] for i in resp.body["ignored"]] == ["branch deleted"]
    del payload["checkout_sha"]  # an older sender without the field: after is the commit
    resp = receive_gitlab(gitlab_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 202
    assert queued(queue)[0].source.commit == payload["after"]


def test_new_branch_builds_with_a_note(queue: LocalQueue) -> None:
    payload = fixture_json("push-hook-api-doc-event1.json")
    payload["before"] = ZERO
    resp = receive_gitlab(gitlab_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 202
    assert {a["target"] for a in resp.body["accepted"]} == {"flight", "flight-docs"}
    assert any("new ref" in n for n in resp.body["notes"])


def test_skip_directive_in_the_head_commit(queue: LocalQueue) -> None:
    payload = fixture_json("push-hook-go-gitlab.json")
    payload["commits"][1]["message"] = "fixed readme [ci skip]"  # the commit pushed (after)
    resp = receive_gitlab(gitlab_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200
    assert "[ci skip]" in resp.body["ignored"][0]["reason"]


def test_unknown_project(queue: LocalQueue) -> None:
    body = fixture_bytes("push-hook-go-gitlab.json").replace(b"mike/diaspora", b"someone/else")
    resp = receive_gitlab(gitlab_request(body), _ctx(queue))
    assert resp.status == 200
    assert resp.body["ignored"][0]["reason"].startswith("no target builds example.com/someone/else")


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + " ", TOKEN.upper(), "[REDACTED]", "\u00e9"])
def test_missing_or_wrong_token_is_401(queue: LocalQueue, token: str | None) -> None:
    resp = receive_gitlab(gitlab_request(fixture_bytes("push-hook-go-gitlab.json"), token=token), _ctx(queue))
    assert resp.status == 401
    assert resp.body["error"] == "unauthorized"
    assert "X-Gitlab-Token" in resp.body["reason"]
    assert queue.count() == 0


def test_the_recorded_redacted_token_is_refused(queue: LocalQueue) -> None:
    name = "push-hook-api-doc-event1.json"
    headers = json.loads(fixture_bytes(name.replace(".json", ".headers.json")))
    resp = receive_gitlab(HttpRequest("POST", URL, headers, fixture_bytes(name)), _ctx(queue))
    assert resp.status == 401
    assert queue.count() == 0


def test_unconfigured_token_is_503(queue: LocalQueue) -> None:
    resp = receive_gitlab(
        gitlab_request(fixture_bytes("push-hook-go-gitlab.json")), _ctx(queue, GITLAB_WEBHOOK_TOKEN="")
    )
    assert resp.status == 503
    assert "GITLAB_WEBHOOK_TOKEN" in resp.body["reason"]
    assert queue.count() == 0


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        ({"X-Gitlab-Event": ""}, 400, "bad_request"),
        ({"Content-Length": "many"}, 400, "bad_request"),
        ({"Content-Length": str(10**9)}, 413, "payload_too_large"),
    ],
)
def test_header_problems(queue: LocalQueue, change: dict[str, str], status: int, error: str) -> None:
    req = gitlab_request(fixture_bytes("push-hook-go-gitlab.json"))
    resp = receive_gitlab(HttpRequest("POST", URL, {**req.headers, **change}, req.body), _ctx(queue))
    assert (resp.status, resp.body["error"]) == (status, error)
    assert resp.body["reason"]
    assert queue.count() == 0


def test_body_limit(queue: LocalQueue) -> None:
    resp = receive_gitlab(
        gitlab_request(fixture_bytes("push-hook-go-gitlab.json")), _ctx(queue, SLIPWAY_MAX_BODY_BYTES="100")
    )
    assert resp.status == 413


def test_method(queue: LocalQueue) -> None:
    resp = receive_gitlab(HttpRequest("GET", URL, gitlab_request(b"").headers, b""), _ctx(queue))
    assert resp.status == 405


@pytest.mark.parametrize(
    ("body", "event"),
    [
        (b"{not json", "Push Hook"),
        (b"[1, 2]", "Push Hook"),
        (b"", "Push Hook"),
        (b"\xff\xfe", "Push Hook"),
        (b'{"ref": "refs/heads/master"}', "Push Hook"),
        (b'{"ref": "refs/heads/master", "after": "nope", "project": {}}', "Push Hook"),
        (
            b'{"ref": "refs/heads/x", "after": "' + b"a" * 40 + b'", "checkout_sha": "x", "project": {}}',
            "Push Hook",
        ),
        (b'{"event_name": "push", "ref": 1}', "System Hook"),
        (b"[]", "System Hook"),
        (b"nope", "Release Hook"),
    ],
)
def test_malformed_bodies_are_400(queue: LocalQueue, body: bytes, event: str) -> None:
    resp = receive_gitlab(gitlab_request(body, event=event), _ctx(queue))
    assert resp.status == 400, resp.body
    assert resp.body["error"] == "bad_request"


def test_queue_outage_is_503() -> None:
    resp = receive_gitlab(gitlab_request(fixture_bytes("push-hook-go-gitlab.json")), _ctx(UnreachableQueue()))
    assert resp.status == 503
    assert resp.headers["Retry-After"]


# -- property-based: whatever arrives, never a 5xx, never a build without the token ---------------

SAMPLES = [fixture_bytes(n) for n in ("push-hook-go-gitlab.json", "tag_push-systemhook-go-gitlab.json")]
HEADER_NAMES = st.sampled_from(
    [
        "Content-Type",
        "X-Gitlab-Event",
        "X-Gitlab-Token",
        "X-Gitlab-Event-UUID",
        "Idempotency-Key",
        "Content-Length",
    ]
)
HEADER_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["application/json", "Push Hook", "Tag Push Hook", "System Hook", TOKEN, "0", "-1"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(st.binary(max_size=200), st.sampled_from(SAMPLES), *(json_mutations(s) for s in SAMPLES)),
    overrides=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4),
    method=st.sampled_from(["POST", "POST", "POST", "GET"]),
    authenticate=st.booleans(),
)
def test_fuzz_headers_never_5xx_and_never_queue_without_the_token(
    tmp_path_factory: pytest.TempPathFactory,
    body: bytes,
    overrides: dict[str, str],
    method: str,
    authenticate: bool,
) -> None:
    headers = {**gitlab_request(body, token=TOKEN if authenticate else None).headers, **overrides}
    with clocked_queue(tmp_path_factory.mktemp("q")) as queue:
        resp = receive_gitlab(HttpRequest(method, URL, headers, body), _ctx(queue))
        event(f"status {resp.status}")
        assert resp.status < 500, resp.body
        json.dumps(resp.body)
        if queue.count():
            assert headers.get("X-Gitlab-Token") == TOKEN
            assert resp.status == 202


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(*(json_mutations(s) for s in SAMPLES)),
    hook=st.sampled_from(["Push Hook", "Tag Push Hook", "System Hook"]),
)
def test_fuzz_authenticated_bodies_never_5xx(
    tmp_path_factory: pytest.TempPathFactory, body: bytes, hook: str
) -> None:
    with clocked_queue(tmp_path_factory.mktemp("q")) as queue:
        resp = receive_gitlab(gitlab_request(body, event=hook), _ctx(queue))
        event(f"status {resp.status}")
        assert resp.status in (200, 202, 400), resp.body
        assert (queue.count() > 0) == (resp.status == 202)


@pytest.mark.parametrize(
    ("section", "field", "url"),
    [
        ("project", "git_http_url", "http://attacker.example/mike/diaspora.git"),
        ("project", "http_url", "https://example.com/someone/diaspora.git"),
        ("repository", "git_http_url", "http://attacker.example/mike/diaspora.git"),
        ("project", "git_ssh_url", "git@example.com:someone/else.git"),
    ],
)
def test_a_payload_whose_urls_disagree_is_ignored(
    queue: LocalQueue, section: str, field: str, url: str
) -> None:
    # web_url and the others still name the configured repository: routing alone would build it.
    payload = fixture_json("push-hook-docs.json")
    payload[section][field] = url
    resp = receive_gitlab(gitlab_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200, resp.body
    assert resp.body["accepted"] == []
    [ignored] = resp.body["ignored"]
    assert ignored["reason"].startswith(DIFFERENT_REPOSITORIES)
    assert queued(queue) == []


def test_an_ssh_host_apart_from_the_web_host_still_routes(queue: LocalQueue) -> None:
    # GitLab's SSH host can differ from its web host: its own release hook sample
    # (fixtures/gitlab/release-hook-go-gitlab.json) has web_url on example.com and ssh_url on
    # gitlab.com, same path. The push is built, from the configured repo.
    payload = fixture_json("push-hook-docs.json")
    for section, field in (("project", "git_ssh_url"), ("project", "ssh_url"), ("project", "url")):
        payload[section][field] = "git@gitlab.com:mike/diaspora.git"
    payload["repository"].update(
        url="git@gitlab.com:mike/diaspora.git", git_ssh_url="git@gitlab.com:mike/diaspora.git"
    )
    resp = receive_gitlab(gitlab_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 202, resp.body
    [request] = queued(queue)
    assert request.target == "diaspora"
    assert (
        request.source.repo_url == "https://example.com/mike/diaspora.git"
    )  # git@example.com:mike/diaspora.git

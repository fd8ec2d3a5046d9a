"""The Azure DevOps receiver against a recorded ``git.push`` service hook, with HTTP Basic auth."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.intake.receivers.azure_devops import receive_azure_devops
from shared.intake.receivers.pipeline import ReceiverContext
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig
from shared.platform.http import HttpRequest
from shared.platform.queue.local import LocalQueue
from tests.support import receiving
from tests.support.fuzz import json_mutations
from tests.support.receiving import DIFFERENT_REPOSITORIES, ZERO, clocked_queue, queued, receiver_context
from tests.support.receiving import queue as queue

SAMPLE = "git.push-aspnet-webhooks.json"
URL = "http://localhost/api/hooks/azure-devops"
USER = "slipway"
PASSWORD = "correct horse battery staple"
COMMIT = "c8e823a60a85381732726d6a9b6a276e71e6ce12"
TAG_COMMIT = "1d3f6c1b2b0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d"

CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [
            {
                "name": "project",
                "repo": "https://good-company.some.ssl.host/tfs/GoodCompany/_git/Project",
                "image": "goodcompany/project",
                "branches": ["master"],
                "tags": ["v*"],
                "paths": ["src/**"],
            },
            {
                "name": "fabrikam",
                "repo": "https://dev.azure.com/fabrikam/Fiber/_git/Fiber",
                "image": "fabrikam/fiber",
                "branches": ["main"],
            },
        ],
    }
)


def fixture_bytes(name: str = SAMPLE) -> bytes:
    return receiving.fixture_bytes("azure-devops", name)


def fixture_json(name: str = SAMPLE) -> Any:
    return json.loads(fixture_bytes(name))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ado_request(body: bytes, *, authorization: str | None = None) -> HttpRequest:
    """A delivery as Azure DevOps sends it (its Content-Type carries a charset)."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Authorization": authorization if authorization is not None else basic(USER, PASSWORD),
    }
    if authorization == "":
        del headers["Authorization"]
    return HttpRequest("POST", URL, headers, body)


def _queued(queue: LocalQueue) -> list[BuildRequest]:
    return queued(queue, key=lambda r: r.source.ref)


def _ctx(queue: object, **overrides: str) -> ReceiverContext:
    return receiver_context(
        queue,
        CONFIG,
        {"AZURE_DEVOPS_WEBHOOK_USER": USER, "AZURE_DEVOPS_WEBHOOK_PASSWORD": PASSWORD, **overrides},
    )


def test_the_sample_push_is_queued_with_a_paths_note(queue: LocalQueue) -> None:
    resp = receive_azure_devops(ado_request(fixture_bytes()), _ctx(queue))
    assert resp.status == 202, resp.body
    [accepted] = resp.body["accepted"]
    assert accepted["target"] == "project"
    assert {"master", "sha-c8e823a", "latest"} <= set(accepted["tags"])
    assert resp.body["notes"] == [
        "project: paths filter not applied (Azure DevOps push events do not list changed files); building"
    ]
    # The event id is the delivery id: it survives Azure DevOps' retries of the notification.
    assert resp.body["correlation_id"] == "cd159468-0509-48d9-960d-6f3ba627fd06"
    [request] = _queued(queue)
    assert (request.source.ref, request.source.commit) == ("refs/heads/master", COMMIT)
    assert request.source.repo_url == "https://good-company.some.ssl.host/tfs/GoodCompany/_git/Project"
    assert request.trigger.provider == "azure-devops"
    assert request.trigger.delivery_id == "cd159468-0509-48d9-960d-6f3ba627fd06"


def test_every_ref_update_is_routed_and_answered_once(queue: LocalQueue) -> None:
    payload = fixture_json()
    payload["resource"]["refUpdates"] += [
        {"name": "refs/tags/v2.0.0", "oldObjectId": ZERO, "newObjectId": TAG_COMMIT},
        {"name": "refs/heads/old-feature", "oldObjectId": COMMIT, "newObjectId": ZERO},
        {"name": "refs/heads/develop", "oldObjectId": ZERO, "newObjectId": COMMIT},
    ]
    resp = receive_azure_devops(ado_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 202
    assert sorted(a["target"] for a in resp.body["accepted"]) == ["project", "project"]
    assert {"target": "project", "reason": "refs/heads/old-feature: branch deleted"} in resp.body["ignored"]
    assert any(i["reason"].startswith("refs/heads/develop: branch 'develop'") for i in resp.body["ignored"])
    assert len(resp.body["notes"]) == 1
    master, tag = _queued(queue)
    assert (master.source.ref, master.source.commit) == ("refs/heads/master", COMMIT)
    assert (tag.source.ref, tag.source.commit, tag.trigger.kind) == ("refs/tags/v2.0.0", TAG_COMMIT, "tag")
    assert {"v2.0.0", "2.0.0", "2.0"} <= set(tag.image.tags)


def test_remote_url_with_an_organisation_user_is_matched_and_cloned_without_it(queue: LocalQueue) -> None:
    payload = fixture_json()
    payload["resource"]["repository"].update(
        remoteUrl="https://fabrikam@dev.azure.com/fabrikam/Fiber/_git/Fiber",
        sshUrl="git@ssh.dev.azure.com:v3/fabrikam/Fiber/Fiber",
        defaultBranch="refs/heads/main",
    )
    payload["resource"]["refUpdates"][0]["name"] = "refs/heads/main"
    resp = receive_azure_devops(ado_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 202
    [request] = _queued(queue)
    assert request.target == "fabrikam"
    assert request.source.repo_url == "https://dev.azure.com/fabrikam/Fiber/_git/Fiber"
    assert "latest" in request.image.tags


def test_skip_directive_in_the_pushed_commit(queue: LocalQueue) -> None:
    payload = fixture_json()
    payload["resource"]["commits"][0]["comment"] = "Docs only ***NO_CI*** [skip ci]"
    resp = receive_azure_devops(ado_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200
    assert "[skip ci]" in resp.body["ignored"][0]["reason"]


def test_subscription_and_notification_ids_when_the_event_has_no_id(queue: LocalQueue) -> None:
    payload = fixture_json()
    del payload["id"]
    resp = receive_azure_devops(ado_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.body["correlation_id"] == "00000000-0000-0000-0000-000000000000:9"


def test_other_event_types_are_ignored(queue: LocalQueue) -> None:
    payload = fixture_json()
    payload["eventType"] = "git.pullrequest.commented"
    resp = receive_azure_devops(ado_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200
    assert resp.body["ignored"] == [
        {"target": None, "reason": "event 'git.pullrequest.commented' is not handled"}
    ]
    assert resp.body["correlation_id"] == payload["id"]
    assert queue.count() == 0


def test_a_push_without_ref_updates_is_ignored(queue: LocalQueue) -> None:
    payload = fixture_json()
    payload["resource"]["refUpdates"] = []
    resp = receive_azure_devops(ado_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200
    assert resp.body["ignored"][0]["reason"] == "the push updates no ref"


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        basic(USER, "wrong"),
        basic("someone", PASSWORD),
        basic(USER, PASSWORD + " "),
        basic("", ""),
        f"Bearer {PASSWORD}",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(PASSWORD.encode()).decode(),  # no colon
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
    ],
)
def test_missing_or_wrong_credentials_are_401(queue: LocalQueue, authorization: str) -> None:
    resp = receive_azure_devops(ado_request(fixture_bytes(), authorization=authorization), _ctx(queue))
    assert resp.status == 401
    assert resp.body["error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Basic ")
    assert queue.count() == 0


@pytest.mark.parametrize("setting", ["AZURE_DEVOPS_WEBHOOK_USER", "AZURE_DEVOPS_WEBHOOK_PASSWORD"])
def test_unconfigured_credentials_are_503(queue: LocalQueue, setting: str) -> None:
    resp = receive_azure_devops(ado_request(fixture_bytes()), _ctx(queue, **{setting: ""}))
    assert resp.status == 503
    assert setting in resp.body["reason"]
    assert queue.count() == 0


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ({"Content-Type": ""}, 415, "unsupported_media_type"),
        ({"Content-Length": str(10**9)}, 413, "payload_too_large"),
    ],
)
def test_header_problems(queue: LocalQueue, change: dict[str, str], status: int, error: str) -> None:
    req = ado_request(fixture_bytes())
    resp = receive_azure_devops(HttpRequest("POST", URL, {**req.headers, **change}, req.body), _ctx(queue))
    assert (resp.status, resp.body["error"]) == (status, error)
    assert queue.count() == 0


def test_body_limit_and_method(queue: LocalQueue) -> None:
    ctx = _ctx(queue, SLIPWAY_MAX_BODY_BYTES="1000")
    assert receive_azure_devops(ado_request(fixture_bytes()), ctx).status == 413
    req = ado_request(b"")
    assert receive_azure_devops(HttpRequest("PUT", URL, req.headers, b""), _ctx(queue)).status == 405


def _with(path: str, value: Any) -> bytes:
    payload = fixture_json()
    node = payload
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'"git.push"',
        b"",
        b'{"eventType": "git.push"}',
        b'{"eventType": 7}',
        b'{"id": "x"}',
        _with("resource.refUpdates", [{"name": "refs/heads/master", "newObjectId": "c8e823a6"}]),
        _with("resource.refUpdates", [{"name": "", "newObjectId": COMMIT}]),
        _with("resource.repository", None),
        _with("resource.commits", "none"),
    ],
)
def test_malformed_bodies_are_400(queue: LocalQueue, body: bytes) -> None:
    resp = receive_azure_devops(ado_request(body), _ctx(queue))
    assert resp.status == 400, resp.body
    assert resp.body["error"] == "bad_request"
    assert queue.count() == 0


def test_a_short_commit_id_names_the_field() -> None:
    body = _with("resource.refUpdates", [{"name": "refs/heads/master", "newObjectId": "c8e823a6"}])
    resp = receive_azure_devops(ado_request(body), _ctx(object()))
    assert "resource.refUpdates.0.newObjectId" in resp.body["reason"]


# -- property-based: whatever arrives, never a 5xx, never a build without the credentials ---------

VALID = basic(USER, PASSWORD)
HEADER_NAMES = st.sampled_from(["Content-Type", "Authorization", "Content-Length", "X-Other"])
HEADER_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["application/json", "Basic ", basic(USER, "x"), basic("x", PASSWORD), VALID, "1"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(st.binary(max_size=200), st.just(fixture_bytes()), json_mutations(fixture_bytes())),
    overrides=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=3),
    method=st.sampled_from(["POST", "POST", "POST", "GET"]),
    authenticate=st.booleans(),
)
def test_fuzz_headers_never_5xx_and_never_queue_without_credentials(
    tmp_path_factory: pytest.TempPathFactory,
    body: bytes,
    overrides: dict[str, str],
    method: str,
    authenticate: bool,
) -> None:
    base = ado_request(body, authorization=None if authenticate else "").headers
    headers = {**base, **overrides}
    with clocked_queue(tmp_path_factory.mktemp("q")) as queue:
        resp = receive_azure_devops(HttpRequest(method, URL, headers, body), _ctx(queue))
        event(f"status {resp.status}")
        assert resp.status < 500, resp.body
        json.dumps(resp.body)
        if queue.count():
            assert headers.get("Authorization") == VALID
            assert resp.status == 202


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_mutations(fixture_bytes()))
def test_fuzz_authenticated_bodies_never_5xx(tmp_path_factory: pytest.TempPathFactory, body: bytes) -> None:
    with clocked_queue(tmp_path_factory.mktemp("q")) as queue:
        resp = receive_azure_devops(ado_request(body), _ctx(queue))
        event(f"status {resp.status}")
        assert resp.status in (200, 202, 400), resp.body
        assert (queue.count() > 0) == (resp.status == 202)


@pytest.mark.parametrize(
    ("ref", "change"),
    [
        # The sample (Azure DevOps Server) with a webUrl naming the configured repository.
        (
            "refs/heads/master",
            {
                "remoteUrl": "https://attacker.example/tfs/GoodCompany/_git/Project",
                "webUrl": "https://good-company.some.ssl.host/tfs/GoodCompany/_git/Project",
            },
        ),
        # Azure DevOps Services: the forms of one repository must name the same one.
        (
            "refs/heads/main",
            {
                "remoteUrl": "https://fabrikam@dev.azure.com/fabrikam/Fiber/_git/Fiber",
                "webUrl": "https://dev.azure.com/fabrikam/Fiber/_git/Fiber",
                "sshUrl": "git@ssh.dev.azure.com:v3/fabrikam/Other/Fiber",
            },
        ),
        (
            "refs/heads/main",
            {
                "remoteUrl": "https://fabrikam.visualstudio.com/Other/_git/Fiber",
                "webUrl": "https://dev.azure.com/fabrikam/Fiber/_git/Fiber",
            },
        ),
    ],
)
def test_a_payload_whose_urls_disagree_is_ignored(
    queue: LocalQueue, ref: str, change: dict[str, str]
) -> None:
    # One URL still names a configured repository: routing alone would build the push.
    payload = fixture_json()
    payload["resource"]["repository"].update(change)
    payload["resource"]["refUpdates"][0]["name"] = ref
    resp = receive_azure_devops(ado_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 200, resp.body
    assert resp.body["accepted"] == []
    [ignored] = resp.body["ignored"]
    assert ignored["reason"].startswith(DIFFERENT_REPOSITORIES)
    assert _queued(queue) == []


def test_the_three_services_forms_of_one_repository_agree(queue: LocalQueue) -> None:
    payload = fixture_json()
    payload["resource"]["repository"].update(
        remoteUrl="https://fabrikam@dev.azure.com/fabrikam/Fiber/_git/Fiber",
        webUrl="https://fabrikam.visualstudio.com/DefaultCollection/Fiber/_git/Fiber",
        sshUrl="git@ssh.dev.azure.com:v3/fabrikam/Fiber/Fiber",
    )
    payload["resource"]["refUpdates"][0]["name"] = "refs/heads/main"
    resp = receive_azure_devops(ado_request(json.dumps(payload).encode()), _ctx(queue))
    assert resp.status == 202, resp.body
    [request] = _queued(queue)
    assert (request.target, request.source.repo_url) == (
        "fabrikam",
        "https://dev.azure.com/fabrikam/Fiber/_git/Fiber",
    )

"""Bitbucket's abbreviated head commits, resolved through a loopback server speaking its Commits API.

The published pull request payloads (tests/fixtures/bitbucket) name the head in 12 hex digits. The
server answers ``GET /2.0/repositories/{workspace}/{slug}/commit/{commit}`` as Atlassian's
reference shows ("Get a commit": an abbreviation in, the commit with its full ``hash`` out).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.intake.receivers.bitbucket import receive_bitbucket
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig
from shared.platform.http import HttpResponse
from shared.platform.queue.local import LocalQueue
from shared.platform.state import FolderStateStore
from tests.support.loopback_server import Answer, RecordedRequest, serve_loopback
from tests.support.ports import free_port
from tests.support.receiving import fixture_bytes, receiver_context
from tests.support.receiving import queue as queue
from tests.test_receiver_pull_requests import SETTINGS, bitbucket_request

# pullrequest-rejected-woodpecker.json: request #2 of anbraten/test-2, head f90e18fc9d45
ABBREVIATED = "f90e18fc9d45"
FULL = ABBREVIATED + "0123456789abcdef0123456789ab"
TOKEN = "a bitbucket repository access token"
CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [
            {
                "name": "test-2",
                "repo": "https://bitbucket.org/anbraten/test-2",
                "image": "anbraten/test-2",
                "branches": ["**"],
                "pull_requests": {"enabled": True},
            }
        ],
    }
)


@dataclass
class BitbucketApi:
    port: int
    requests: list[RecordedRequest] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)  # scripted, before the normal answer

    def __call__(self, request: RecordedRequest) -> Answer:
        self.requests.append(request)
        if self.answers:
            return self.answers.pop(0)
        if request.headers.get("authorization") not in (f"Bearer {TOKEN}", None) or (
            request.path != f"/2.0/repositories/anbraten/test-2/commit/{ABBREVIATED}"
        ):
            return Answer(404, {"Content-Type": "application/json"}, b'{"type": "error"}')
        return Answer(200, {"Content-Type": "application/json"}, json.dumps({"hash": FULL}).encode())

    def settings(self, **extra: str) -> dict[str, str]:
        return {
            **SETTINGS,
            "BITBUCKET_STATUS_TOKEN": TOKEN,
            "BITBUCKET_API_URL": f"http://127.0.0.1:{self.port}",
            **extra,
        }


@pytest.fixture
def api() -> Iterator[BitbucketApi]:
    holder: list[BitbucketApi] = []
    with serve_loopback(lambda request: holder[0](request)) as port:
        holder.append(BitbucketApi(port))
        yield holder[0]


def _deliver(
    queue: LocalQueue, settings: dict[str, str], tmp_path: Path, *, body: bytes | None = None
) -> HttpResponse:
    """The published declined request's body, delivered as a new head (``pullrequest:updated``)."""
    ctx = receiver_context(queue, CONFIG, settings, state=FolderStateStore(tmp_path / "state"))
    payload = body if body is not None else fixture_bytes("bitbucket", "pullrequest-rejected-woodpecker.json")
    return receive_bitbucket(bitbucket_request(payload, "pullrequest:updated"), ctx)


def test_the_abbreviated_head_is_resolved_and_built(
    queue: LocalQueue, tmp_path: Path, api: BitbucketApi
) -> None:
    resp = _deliver(queue, api.settings(), tmp_path)
    assert resp.status == 202, resp.body
    [queued] = [BuildRequest.from_json(m.body) for m in queue.peek()]
    assert queued.source.commit == FULL and queued.image.tags == ["pr-2", f"pr-2-{ABBREVIATED}"]
    [asked] = api.requests
    assert (asked.method, asked.headers["authorization"]) == ("GET", f"Bearer {TOKEN}")
    assert resp.body.get("notes") is None  # no stale "resolve it first" note


def test_a_user_sends_the_token_as_basic_auth(queue: LocalQueue, tmp_path: Path, api: BitbucketApi) -> None:
    api.answers.append(Answer(200, {}, json.dumps({"hash": FULL}).encode()))
    assert _deliver(queue, api.settings(BITBUCKET_STATUS_USER="builder"), tmp_path).status == 202
    # "builder:<token>" in base64, as RFC 7617 writes Basic credentials
    expected = "Basic " + base64.b64encode(f"builder:{TOKEN}".encode()).decode()
    assert api.requests[0].headers["authorization"] == expected


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (Answer(404, {}, b"{}"), "Bitbucket knows no such commit in anbraten/test-2"),
        (Answer(403, {}, b"{}"), "Bitbucket answered 403"),
        (Answer(200, {}, json.dumps({"hash": "a" * 40}).encode()), "does not name its full commit"),
        (Answer(200, {}, b"not json"), "does not name its full commit"),
    ],
)
def test_a_head_bitbucket_does_not_resolve_is_ignored_with_the_reason(
    queue: LocalQueue, tmp_path: Path, api: BitbucketApi, answer: Answer, words: str
) -> None:
    api.answers.append(answer)
    resp = _deliver(queue, api.settings(), tmp_path)
    assert resp.status == 200, resp.body
    [ignored] = resp.body["ignored"]
    assert ignored["target"] == "test-2"
    assert ignored["reason"].startswith(
        f"pull request #2 updated: the host sent an abbreviated head commit ({ABBREVIATED})"
    )
    assert words in ignored["reason"] and queue.count() == 0


@pytest.mark.parametrize("status", [500, 503, 429])
def test_bitbucket_failing_asks_for_the_delivery_again(
    queue: LocalQueue, tmp_path: Path, api: BitbucketApi, status: int
) -> None:
    api.answers.append(Answer(status, {}, b"{}"))
    resp = _deliver(queue, api.settings(), tmp_path)
    assert resp.status == 503 and resp.body["error"] == "commit_lookup_failed"
    assert queue.count() == 0


def test_an_unreachable_api_asks_for_the_delivery_again(queue: LocalQueue, tmp_path: Path) -> None:
    settings = {
        **SETTINGS,
        "BITBUCKET_STATUS_TOKEN": TOKEN,
        "BITBUCKET_API_URL": f"http://127.0.0.1:{free_port()}",
    }
    resp = _deliver(queue, settings, tmp_path)
    assert resp.status == 503 and queue.count() == 0
    assert TOKEN not in json.dumps(resp.body)


def test_without_a_token_or_for_a_fork_nothing_is_asked(
    queue: LocalQueue, tmp_path: Path, api: BitbucketApi
) -> None:
    resp = _deliver(queue, {**SETTINGS, "BITBUCKET_API_URL": f"http://127.0.0.1:{api.port}"}, tmp_path)
    assert resp.status == 200 and "set BITBUCKET_STATUS_TOKEN" in resp.body["ignored"][0]["reason"]
    payload = json.loads(fixture_bytes("bitbucket", "pullrequest-rejected-woodpecker.json"))
    payload["pullrequest"]["source"]["repository"]["uuid"] = "{another-repository}"
    payload["pullrequest"]["source"]["repository"]["full_name"] = "someone/test-2"
    config = CONFIG.model_copy(
        update={
            "targets": [
                CONFIG.targets[0].model_copy(
                    update={
                        "pull_requests": CONFIG.targets[0].pull_requests.model_copy(update={"forks": "on"})
                    }
                )
            ]
        }
    )
    ctx = receiver_context(queue, config, api.settings(), state=FolderStateStore(tmp_path / "state"))
    resp = receive_bitbucket(bitbucket_request(json.dumps(payload).encode(), "pullrequest:updated"), ctx)
    assert resp.status == 200 and "of a fork" in resp.body["ignored"][0]["reason"]
    assert api.requests == [] and queue.count() == 0

"""Bad input never reaches a 500: deeply nested bodies for every sender and the replay route.

pydantic's JSON parser (jiter) refuses nesting beyond its ``DEFAULT_RECURSION_LIMIT`` of 200
(pydantic/jiter, crates/jiter/src/errors.rs); Python's ``json`` instead raises ``RecursionError``
near the interpreter's recursion limit (1000 by default), which was a 500.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dispatch.replay import receive_replay
from shared.intake.receivers.checks import PayloadModel, parse_json
from shared.intake.receivers.github import receive_github
from shared.intake.receivers.pipeline import Delivery, ReceiverContext, run_receiver
from shared.model.config import SlipwayConfig
from shared.platform.http import HttpRequest, HttpResponse, RequestRejected
from tests.support.fuzz import nested, with_field
from tests.support.github import SECRET, fixture_bytes, signed_request
from tests.support.receiving import clocked_queue, receiver_context

PUSH = fixture_bytes("push-branch-signed-aspnet.json")
# The source's own number, for the message (jiter's DEFAULT_RECURSION_LIMIT, see above).
JITER_RECURSION_LIMIT = 200
CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [
            {
                "name": "azure-test",
                "repo": "https://github.com/dougbu/AzureTest",
                "image": "dougbu/azure-test",
                "branches": ["**"],
            }
        ],
    }
)


def _ctx(tmp_path: Path) -> ReceiverContext:
    queue = clocked_queue(tmp_path)
    return receiver_context(queue, CONFIG, {"GITHUB_WEBHOOK_SECRET": SECRET})


def _is_depth_refusal(response: HttpResponse) -> bool:
    return response.status == 400 and response.body["reason"].startswith("body is nested too deeply")


@pytest.mark.parametrize("kind", ["[", "{"])
@pytest.mark.parametrize(
    ("event", "content_type"),
    [
        ("push", "application/json"),
        ("push", "application/x-www-form-urlencoded"),
        ("ping", "application/json"),
        ("issues", "application/x-www-form-urlencoded"),
    ],
)
def test_a_signed_github_body_nested_1000_deep_is_a_400(
    tmp_path: Path, event: str, content_type: str, kind: str
) -> None:
    body = with_field(PUSH, "extra", nested(1000, kind))
    if content_type != "application/json":
        body = urlencode({"payload": body.decode()}).encode()
    response = receive_github(signed_request(body, event=event, content_type=content_type), _ctx(tmp_path))
    assert _is_depth_refusal(response), response.body


def test_shallow_nesting_is_still_accepted(tmp_path: Path) -> None:
    body = with_field(PUSH, "extra", nested(50, "{"))
    response = receive_github(signed_request(body), _ctx(tmp_path))
    assert response.status == 202, response.body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    depth=st.integers(min_value=150, max_value=5000),
    kind=st.sampled_from(["[", "{"]),
    field=st.sampled_from(["extra", "commits", "repository", "head_commit"]),
)
def test_fuzz_deep_github_bodies_never_5xx(tmp_path: Path, depth: int, kind: str, field: str) -> None:
    body = with_field(PUSH, field, nested(depth, kind))  # a repeated key: the last one counts
    response = receive_github(signed_request(body), _ctx(tmp_path))
    assert response.status in (200, 202, 400), response.body
    if depth > JITER_RECURSION_LIMIT + 5:  # clear of the limit's off-by-one at the top level
        assert _is_depth_refusal(response), response.body
    json.dumps(response.body)


class _Anything(PayloadModel):
    pass


def test_the_shared_parser_of_the_other_senders_names_the_depth() -> None:
    # GitLab, Gitea, Bitbucket, Azure DevOps, ACR and Docker Hub parse through checks.parse_json.
    with pytest.raises(RequestRejected) as caught:
        parse_json(_Anything, b'{"a":' + nested(1000) + b"}")
    assert caught.value.status == 400
    assert (
        caught.value.reason == f"body is nested too deeply (JSON is read to {JITER_RECURSION_LIMIT} levels)"
    )


def test_the_image_push_senders_name_the_depth() -> None:
    # ACR, Docker Hub and Event Grid parse through the same parse_json / describe_error.
    with pytest.raises(RequestRejected) as caught:
        parse_json(_Anything, b'{"a":' + nested(1000, "{") + b"}", what="event")
    assert caught.value.status == 400 and caught.value.reason.startswith("body is nested too deeply")


def test_a_recursion_error_anywhere_in_a_receiver_is_a_400() -> None:
    def handler(req: HttpRequest, ctx: Any, delivery: Delivery) -> HttpResponse:
        def down(n: int) -> int:
            return down(n + 1)

        return HttpResponse(200, {"n": down(0)})

    response = run_receiver(
        handler,
        HttpRequest("POST", "http://x/", {}, b"{}"),
        None,  # type: ignore[arg-type]
        provider="test",
        delivery_id="d-1",
        logger=__import__("logging").getLogger("test"),
    )
    assert response.status == 400 and response.body["correlation_id"] == "d-1"


def test_a_deep_replay_body_is_a_400() -> None:
    req = HttpRequest(
        "POST",
        "http://x/api/ops/replay",
        {"Content-Type": "application/json"},
        b'{"ids":' + nested(1000) + b"}",
    )
    response = receive_replay(req, None)  # type: ignore[arg-type]  # refused before the runtime is used
    assert response.status == 400, response.body

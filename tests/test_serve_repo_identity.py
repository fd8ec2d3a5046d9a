"""`slipway serve` end to end: what is built is the configured repository, never a payload's URL."""

from __future__ import annotations

import json
import time

from tests.support.github import fixture_json
from tests.test_serve import Server, _wait_for, server  # noqa: F401 - server is the fixture


def test_a_push_is_built_from_the_configured_repo_and_a_self_contradicting_one_not_at_all(
    server: Server,  # noqa: F811 - the imported fixture
) -> None:
    server.start()
    # html_url names the configured repository (https://github.com/dougbu/AzureTest), clone_url
    # another host: ignored at intake, nothing queued.
    forged = fixture_json("push-branch-signed-aspnet.json")
    forged["repository"]["clone_url"] = "https://builds.attacker.example/dougbu/AzureTest.git"
    status, body = server.post(json.dumps(forged).encode(), delivery="forged-1")
    assert status == 200, body
    assert body["accepted"] == []
    assert body["ignored"][0]["reason"].startswith(
        "the payload's repository URLs name different repositories"
    )

    # Every URL agrees but in another case: built, from the configured repository's URL.
    payload = fixture_json("push-branch-signed-aspnet.json")
    for field in ("clone_url", "html_url", "ssh_url", "git_url"):
        payload["repository"][field] = payload["repository"][field].lower()
    status, body = server.post(json.dumps(payload).encode(), delivery="agreeing-1")
    assert status == 202, body
    [accepted] = body["accepted"]
    _wait_for(lambda: [r for r in server.cli("runs", "list")["runs"] if r["status"] == "dispatched"])
    shown = server.cli("runs", "show", accepted["id"])
    assert shown["request"]["source"]["repo_url"] == "https://github.com/dougbu/AzureTest.git"
    assert "builds.attacker.example" not in json.dumps(shown)

    time.sleep(1.0)
    assert [r["request_id"] for r in server.cli("runs", "list")["runs"]] == [accepted["id"]]
    server.stop()

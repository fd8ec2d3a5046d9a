"""`slipway send` through the real CLI entry point, against a real `slipway serve` on a free port.

Every sender's published payload (tests/fixtures/) is sent as that sender sends it and must be
accepted, or answered with the receiver's own reason; a wrong secret must be refused 401; a dry
run must show no secret. Expected signatures are computed here from the providers' rules, and the
expected event headers are the ones recorded with the samples, never read from the code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.app.cli import main
from shared.intake.receivers.signatures import basic_auth_header, parse_basic_auth
from tests.support.ports import free_port
from tests.support.receiving import FIXTURES, fixture_headers, fixture_json
from tests.support.serve import SLIPWAY, ServeProcess, local_env

SECRETS = {
    "GITHUB_WEBHOOK_SECRET": "gh-secret-5e1f",
    "GITLAB_WEBHOOK_TOKEN": "gl-token-77aa",
    "AZURE_DEVOPS_WEBHOOK_USER": "ado-hook",
    "AZURE_DEVOPS_WEBHOOK_PASSWORD": "ado-pass-9c3d",
    "BITBUCKET_WEBHOOK_SECRET": "bb-secret-41f0",
    "GITEA_WEBHOOK_SECRET": "gt-secret-0b2e",
    "ACR_WEBHOOK_TOKEN": "acr-token-6d91",
    "EVENTGRID_WEBHOOK_TOKEN": "eg-token-3a7c",
    "DOCKERHUB_WEBHOOK_TOKEN": "dh+token&8e24=/ %",  # what a URL must escape
}
# The setting each receiver checks (azure-devops: both of its parts).
SETTINGS = {
    "github": ("GITHUB_WEBHOOK_SECRET",),
    "gitlab": ("GITLAB_WEBHOOK_TOKEN",),
    "azure-devops": ("AZURE_DEVOPS_WEBHOOK_USER", "AZURE_DEVOPS_WEBHOOK_PASSWORD"),
    "bitbucket": ("BITBUCKET_WEBHOOK_SECRET",),
    "gitea": ("GITEA_WEBHOOK_SECRET",),
    "acr": ("ACR_WEBHOOK_TOKEN",),
    "eventgrid": ("EVENTGRID_WEBHOOK_TOKEN",),
    "dockerhub": ("DOCKERHUB_WEBHOOK_TOKEN",),
}
# One published push per sender, each built by a target below.
PUSHES = {
    "github": "github/push-branch-signed-aspnet.json",
    "gitlab": "gitlab/push-hook-docs.json",
    "azure-devops": "azure-devops/git.push-aspnet-webhooks.json",
    "bitbucket": "bitbucket/repo-push-aspnet-functionaltest.json",
    "gitea": "gitea/push-docs.json",
    "acr": "azure-container-registry/push-webhook-docs.json",
    "eventgrid": "azure-event-grid/ImagePushed-cloudeventsschema-restspec.json",
    "dockerhub": "dockerhub/push-docs.json",
}
CONFIG = """
registry: slipway.azurecr.io
dispatch:
  quiet_period: 1h
targets:
  - {name: azure-test, repo: "https://github.com/dougbu/AzureTest", image: dougbu/test, branches: ["**"]}
  - {name: diaspora, repo: "git@example.com:mike/diaspora.git", image: mike/diaspora, branches: ["**"]}
  - {name: example, repo: "http://example.com/jsmith/example.git", image: jsmith/example, tags: ["**"]}
  - name: project
    repo: https://good-company.some.ssl.host/tfs/GoodCompany/_git/Project
    image: goodcompany/project
    branches: ["**"]
  - name: henrikntest
    repo: git@bitbucket.org:henrikfrystyknielsen/henrikntest01.git
    image: henrik/test
    branches: ["**"]
  - {name: gitea-hooks, repo: "http://localhost:3000/gitea/webhooks", image: gitea/hooks, branches: ["**"]}
  - name: web
    repo: https://github.com/contoso/web
    image: contoso/web
    branches: [main]
    base_images:
      - myregistry.azurecr.io/hello-world:v1
      - jolovcr.azurecr.io/samples/nginx:latest
      - svendowideit/testhook
"""


class Serve(ServeProcess):
    """`slipway serve` as a user starts it, with every sender's secret from ``settings`` only."""

    def __init__(self, folder: Path, **settings: str) -> None:
        (folder / "slipway.yaml").write_text(CONFIG)
        env = local_env(drop=SECRETS)
        env.update(settings, SLIPWAY_STATE_DIR=str(folder / "state"))
        super().__init__(folder, env)
        self.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    serve = Serve(tmp_path_factory.mktemp("serve"), **SECRETS)
    yield serve
    serve.stop()


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def send(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``slipway send ARGS`` in this process, with ``SECRETS`` (overridden by ``env``; None unsets)."""

    def run(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
        for name, value in {**SECRETS, **(env or {})}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(["send", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _json_send(send: Run, sender: str, fixture: str, url: str, *extra: str, **kw: Any) -> tuple[int, Any]:
    code, out, err = send("--sender", sender, str(FIXTURES / fixture), "--url", url, "--json", *extra, **kw)
    assert "Traceback" not in err
    return code, json.loads(out)


@pytest.mark.parametrize("sender", list(PUSHES))
def test_each_sender_s_published_push_is_accepted(server: Serve, send: Run, sender: str) -> None:
    code, result = _json_send(send, sender, PUSHES[sender], server.url)
    assert (code, result["ok"], result["status"]) == (0, True, 202), result
    assert result["answer"]["accepted"], result
    assert result["requests"][-1]["url"].startswith(f"{server.url}hooks/")


@pytest.mark.parametrize(
    ("sender", "fixture", "target"),
    [
        ("gitlab", "gitlab/tag_push-hook-docs.json", "example"),
        ("gitlab", "gitlab/push-systemhook-go-gitlab.json", "diaspora"),
        ("eventgrid", "azure-event-grid/ImagePushed-eventgridschema-restspec.json", "web"),
        ("eventgrid", "azure-event-grid/ImagePushed-eventgridschema-docs2018.json", None),
    ],
)
def test_other_published_shapes_are_delivered(
    server: Serve, send: Run, sender: str, fixture: str, target: str | None
) -> None:
    code, result = _json_send(send, sender, fixture, server.url)
    assert code == 0, result
    if target is None:  # an image no target builds on: the receiver says so
        assert result["status"] == 200 and result["answer"]["ignored"], result
    else:
        assert [a["target"] for a in result["answer"]["accepted"]] == [target]


@pytest.mark.parametrize(
    ("sender", "fixture", "reason"),
    [
        ("github", "github/ping-signed-aspnet.json", None),
        ("gitlab", "gitlab/release-hook-go-gitlab.json", "is not handled"),
        ("acr", "azure-container-registry/delete-webhook-docs.json", "deleted"),
        ("eventgrid", "azure-event-grid/ImageDeleted-cloudeventsschema-restspec.json", "deleted"),
    ],
)
def test_what_a_receiver_ignores_comes_back_with_its_reason(
    server: Serve, send: Run, sender: str, fixture: str, reason: str | None
) -> None:
    code, result = _json_send(send, sender, fixture, server.url)
    assert (code, result["status"]) == (0, 200), result
    if reason is None:
        assert result["answer"]["status"] == "pong"
    else:
        assert reason in result["answer"]["ignored"][0]["reason"]


def test_event_grid_validation_is_answered_with_its_code(server: Serve, send: Run) -> None:
    fixture = "azure-event-grid/SubscriptionValidationEvent-docs.json"
    code, result = _json_send(send, "eventgrid", fixture, server.url)
    expected = fixture_json("azure-event-grid", "SubscriptionValidationEvent-docs.json")[0]["data"]
    assert (code, result["answer"]) == (0, {"validationResponse": expected["validationCode"]})


@pytest.mark.parametrize("sender", list(PUSHES))
def test_a_wrong_secret_is_refused_401(server: Serve, send: Run, sender: str) -> None:
    wrong: dict[str, str | None] = {SETTINGS[sender][-1]: "not-the-secret"}
    code, result = _json_send(send, sender, PUSHES[sender], server.url, env=wrong)
    assert (code, result["ok"]) == (1, False)
    assert result["requests"][0]["status"] == 401, result
    if sender == "eventgrid":  # the handshake is refused, so the delivery is never sent
        assert [r["method"] for r in result["requests"]] == ["OPTIONS", "POST"]
        assert result["requests"][1]["status"] is None and result["status"] is None


def _derived(sender: str) -> list[str]:
    """Everything a credential could be shown as: the secrets, their signatures, their encodings."""
    values = [SECRETS[name] for name in SETTINGS[sender]]
    body = (FIXTURES / PUSHES[sender]).read_bytes()
    if sender in ("github", "bitbucket", "gitea"):
        values.append(hmac.new(values[0].encode(), body, hashlib.sha256).hexdigest())
    if sender == "azure-devops":
        values.append(base64.b64encode(f"{values[0]}:{values[1]}".encode()).decode())
    return values


@pytest.mark.parametrize("sender", list(PUSHES))
@pytest.mark.parametrize("as_json", [False, True])
def test_a_dry_run_sends_nothing_and_shows_no_secret(send: Run, sender: str, as_json: bool) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/api/"  # nothing listens: a send would fail
    args = ["--sender", sender, str(FIXTURES / PUSHES[sender]), "--url", nowhere, "--dry-run"]
    code, out, err = send(*args, *(["--json"] if as_json else []))
    assert code == 0, err
    for value in _derived(sender):
        assert value not in out + err
    for name in SETTINGS[sender]:
        assert name in out
    if as_json:
        result = json.loads(out)
        assert result["dry_run"] and result["status"] is None


@pytest.mark.parametrize("sender", list(PUSHES))
def test_a_missing_secret_is_one_line_naming_the_setting(send: Run, sender: str) -> None:
    setting = SETTINGS[sender][0]
    url = "http://192.0.2.1/api/"  # not loopback: GitHub's local default does not apply either
    payload = str(FIXTURES / PUSHES[sender])
    code, out, err = send("--sender", sender, payload, "--url", url, env={setting: None})
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and setting in err and "Traceback" not in err


def _sent_headers(send: Run, sender: str, fixture: str) -> dict[str, str]:
    code, out, err = send("--sender", sender, str(FIXTURES / fixture), "--dry-run", "--json")
    assert code == 0, err
    headers: dict[str, str] = json.loads(out)["requests"][-1]["headers"]
    return headers


@pytest.mark.parametrize(
    ("sender", "fixture", "names"),
    [
        ("github", "github/ping-signed-aspnet.json", ["X-GitHub-Event"]),
        ("github", "github/push-branch-signed-aspnet.json", ["X-GitHub-Event"]),
        *(
            ("gitlab", f"gitlab/{name}", ["X-Gitlab-Event"])
            for name in (
                "push-hook-docs.json",
                "push-hook-api-doc-event1.json",
                "tag_push-hook-docs.json",
                "push-systemhook-go-gitlab.json",
                "tag_push-systemhook-go-gitlab.json",
                "release-hook-go-gitlab.json",
            )
        ),
        ("bitbucket", "bitbucket/repo-push-aspnet-functionaltest.json", ["X-Event-Key"]),
        ("gitea", "gitea/push-docs.json", ["X-Gitea-Event", "X-Gogs-Event", "X-GitHub-Event"]),
        ("eventgrid", "azure-event-grid/SubscriptionValidationEvent-docs.json", ["aeg-event-type"]),
        ("acr", "azure-container-registry/push-webhook-docs.json", ["Content-Type"]),
    ],
)
def test_event_headers_are_the_ones_the_sender_recorded(
    send: Run, sender: str, fixture: str, names: list[str]
) -> None:
    recorded = fixture_headers(fixture.split("/")[0], fixture.split("/")[1])
    sent = _sent_headers(send, sender, fixture)
    assert {n: sent[n] for n in names} == {n: recorded[n] for n in names}


def test_event_override_and_repeated_delivery(server: Serve, send: Run) -> None:
    push = PUSHES["github"]
    code, first = _json_send(send, "github", push, server.url, "--delivery", "trial-1")
    code2, again = _json_send(send, "github", push, server.url, "--delivery", "trial-1")
    assert (code, code2) == (0, 0)
    assert again["answer"]["correlation_id"] == first["answer"]["correlation_id"] == "trial-1"
    assert again["answer"]["accepted"] == first["answer"]["accepted"]  # the same request, again
    code, result = _json_send(send, "github", push, server.url, "--event", "release")
    assert (code, result["status"]) == (0, 200)
    assert result["answer"]["ignored"][0]["reason"] == "event 'release' is not handled"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sender", "acr", "--event", "push"], "--event: acr sends no event header"),
        (["--sender", "dockerhub", "--delivery", "d-1"], "--delivery: dockerhub sends no delivery id"),
        (["--sender", "acr", "--url", "ftp://example"], "is not an http(s) URL"),
    ],
)
def test_options_a_sender_does_not_have_are_one_line_errors(send: Run, args: list[str], message: str) -> None:
    code, out, err = send(*args, str(FIXTURES / PUSHES["acr"]))
    assert (code, out) == (1, "")
    assert message in err and err.count("\n") == 1


def test_nothing_listening_is_one_line(send: Run) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/"
    code, _, err = send("--sender", "acr", str(FIXTURES / PUSHES["acr"]), "--url", url)
    assert code == 1 and "connection failed" in err and err.count("\n") == 1
    assert SECRETS["ACR_WEBHOOK_TOKEN"] not in err


def test_as_a_user_runs_it_a_refusal_exits_1_with_the_answer(server: Serve) -> None:
    env = {**os.environ, **SECRETS, "GITLAB_WEBHOOK_TOKEN": "wrong"}
    payload = str(FIXTURES / PUSHES["gitlab"])
    command = [str(SLIPWAY), "send", "--sender", "gitlab", payload, "--url", server.url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "401 Unauthorized" in out.stdout and "X-Gitlab-Token does not match" in out.stdout
    assert "wrong" not in out.stdout + out.stderr


def test_github_without_a_secret_signs_as_serve_does_on_loopback(tmp_path: Path, send: Run) -> None:
    settings = {k: v for k, v in SECRETS.items() if k != "GITHUB_WEBHOOK_SECRET"}
    serve = Serve(tmp_path, **settings)
    try:
        unset: dict[str, str | None] = {"GITHUB_WEBHOOK_SECRET": None}
        code, result = _json_send(send, "github", PUSHES["github"], serve.url, env=unset)
    finally:
        serve.stop()
    assert (code, result["status"]) == (0, 202), result


_TEXT = st.text(st.characters(exclude_categories=["Cs"]))  # lone surrogates cannot be sent at all


@given(user=_TEXT.filter(lambda u: ":" not in u), password=_TEXT)
def test_basic_auth_header_is_what_the_receiver_parses(user: str, password: str) -> None:
    assert parse_basic_auth(basic_auth_header(user, password)) == (user, password)


# --- pull request events (--pull-request, and PR payload files) -------------------------------
# The base repository of each Git host's event: a target of CONFIG, so the receiver matches it.
PR_REPOS = {
    "github": "https://github.com/dougbu/AzureTest",
    "gitlab": "http://example.com/jsmith/example.git",
    "azure-devops": "https://good-company.some.ssl.host/tfs/GoodCompany/_git/Project",
    "bitbucket": "git@bitbucket.org:henrikfrystyknielsen/henrikntest01.git",
    "gitea": "http://localhost:3000/gitea/webhooks",
}
PR_ACTIONS = {
    "github": ["opened", "updated", "closed", "labeled"],
    "gitlab": ["opened", "updated", "merged", "labeled"],
    "azure-devops": ["opened", "updated", "closed"],
    "bitbucket": ["opened", "updated", "merged"],
    "gitea": ["opened", "updated", "closed", "labeled"],
}


def _pr_args(sender: str, action: str, *extra: str) -> list[str]:
    label = ["--label", "safe-to-build"] if action == "labeled" else []
    return [
        "--sender",
        sender,
        "--pull-request",
        action,
        "--repo",
        PR_REPOS[sender],
        "--number",
        "5",
        *label,
        *extra,
    ]


@pytest.mark.parametrize(("sender", "action"), [(s, a) for s, actions in PR_ACTIONS.items() for a in actions])
def test_each_git_host_s_pull_request_event_is_accepted(
    server: Serve, send: Run, sender: str, action: str
) -> None:
    code, out, err = send(*_pr_args(sender, action, "--url", server.url, "--json"))
    assert "Traceback" not in err
    result = json.loads(out)
    # Authenticated and read: 200 while pull-request builds are not enabled (or not for this
    # target), 202 once queued; what the receiver read it as: tests/test_send_pull_requests.py.
    assert (code, result["ok"]) == (0, True), result
    assert result["status"] in (200, 202), result
    assert result["requests"][-1]["url"] == f"{server.url}hooks/{sender}"
    if result["status"] == 200 and "ignored" in result["answer"]:
        reasons = " ".join(str(item["reason"]) for item in result["answer"]["ignored"])
        assert "#5" in reasons or "pull request" in reasons, result


@pytest.mark.parametrize("sender", list(PR_REPOS))
def test_a_pull_request_event_with_a_wrong_secret_is_refused_401(
    server: Serve, send: Run, sender: str
) -> None:
    wrong: dict[str, str | None] = {SETTINGS[sender][-1]: "not-the-secret"}
    code, out, _ = send(*_pr_args(sender, "opened", "--url", server.url, "--json"), env=wrong)
    assert code == 1 and json.loads(out)["status"] == 401


@pytest.mark.parametrize("sender", list(PR_REPOS))
def test_a_pull_request_dry_run_shows_no_secret(send: Run, sender: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/api/"
    code, out, err = send(*_pr_args(sender, "opened", "--url", nowhere, "--dry-run", "--json"))
    assert code == 0, err
    for name in SETTINGS[sender]:
        assert SECRETS[name] not in out + err and name in out


@pytest.mark.parametrize(
    ("fixture", "sender", "event"),
    [
        ("github/pull_request-opened.json", "github", "pull_request"),
        ("gitea/pull_request-synchronized-woodpecker.json", "gitea", "pull_request"),
        ("bitbucket/pullrequest-fulfilled-woodpecker.json", "bitbucket", "pullrequest:fulfilled"),
        ("gitlab/merge_request-hook-go-gitlab.json", "gitlab", "Merge Request Hook"),
    ],
)
def test_a_published_pull_request_file_goes_with_its_event(
    server: Serve, send: Run, fixture: str, sender: str, event: str
) -> None:
    code, result = _json_send(send, sender, fixture, server.url)
    assert code == 0 and result["status"] in (200, 202), result
    headers = result["requests"][-1]["headers"]
    assert event in headers.values()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (_pr_args("azure-devops", "labeled"), "azure-devops sends no label events"),
        (
            ["--sender", "acr", "--pull-request", "opened", "--repo", "https://x.test/o/r"],
            "sends no pull request",
        ),
        (["--sender", "github", "--pull-request", "opened"], "--pull-request needs --repo"),
        ([*_pr_args("github", "opened"), "--event", "push"], "--event: --pull-request sends the event"),
        (
            ["--sender", "github", "--repo", "https://github.com/o/r", str(FIXTURES / PUSHES["github"])],
            "go with",
        ),
        (["--sender", "github"], "FILE: the payload to send"),
        (
            ["--sender", "bitbucket", str(FIXTURES / "bitbucket/pullrequest-updated-drone-go-scm.json")],
            "pass --event pullrequest:created or --event pullrequest:updated",
        ),
    ],
)
def test_pull_request_mistakes_are_one_line_errors(send: Run, args: list[str], message: str) -> None:
    code, out, err = send(*args, "--url", "http://192.0.2.1/api/")
    assert (code, out) == (1, "")
    assert message in err and err.count("\n") == 1, err


def test_file_and_pull_request_together_is_an_error(send: Run) -> None:
    code, _, err = send(*_pr_args("github", "opened"), str(FIXTURES / PUSHES["github"]))
    assert code == 1 and "give one or the other" in err

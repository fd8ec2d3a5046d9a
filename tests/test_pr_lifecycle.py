"""A pull request's life, end to end (issue #20, item 6): each host's published payload, signed and
delivered to the real receiver, queued on the local queue, dispatched by the real queue trigger to
the loopback ACR server through the Azure SDK, and followed by the real reconcile timer.

Opening builds the head; a new head supersedes the pending build and cancels the running one; a
close cancels both (the pending one before it claims anything, the running one at the next
reconcile tick); a reopening builds again, even the same head; a delivery sent twice builds once.
A payload's head is changed (``_with_head``) where a second commit is needed; the fixtures
record one commit each.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.app.runtime import runtime
from shared.intake.receivers.azure_devops import receive_azure_devops
from shared.intake.receivers.gitea import receive_gitea
from shared.intake.receivers.github import receive_github
from shared.intake.receivers.gitlab import receive_gitlab
from shared.intake.receivers.pipeline import ReceiverContext
from shared.model.build_request import BuildRequest
from shared.platform.http import HttpRequest, HttpResponse
from shared.platform.ledger import LedgerRecord, RunStatus
from tests.support.acr_server import AcrServer
from tests.support.dispatch_harness import Clock, Rig, acr_backend
from tests.support.receiving import fixture_bytes
from tests.test_receiver_pull_requests import (
    SETTINGS,
    ado_request,
    gitea_request,
    github_request,
    gitlab_request,
)

HEAD_A = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"  # the GitHub samples' head (pull request #2)
HEAD_B = "b" * 40
HEAD_C = "c" * 40
CONFIG = """\
registry: slipway.azurecr.io
cache:
  account_url: https://slipwaycache.blob.core.windows.net
  container: buildkit-cache
dispatch:
  quiet_period: 30s
targets:
  - name: hello
    repo: https://github.com/Codertocat/Hello-World
    image: codertocat/hello-world
    branches: ["**"]
    pull_requests: {enabled: true}
  - name: gitlab-test
    repo: http://example.com/gitlabhq/gitlab-test
    image: gitlabhq/gitlab-test
    branches: ["**"]
    pull_requests: {enabled: true}
  - name: fabrikam
    repo: https://fabrikam.visualstudio.com/DefaultCollection/_git/Fabrikam
    image: fabrikam/fabrikam
    branches: ["**"]
    pull_requests: {enabled: true}
  - name: ci-thing
    repo: https://codeberg.org/test_it/test_ci_thing
    image: test-it/ci-thing
    branches: ["**"]
    pull_requests: {enabled: true}
  - name: test-2
    repo: https://bitbucket.org/anbraten/test-2
    image: anbraten/test-2
    branches: ["**"]
    pull_requests: {enabled: true}
"""


class Life:
    """The rig, and the webhook side: deliveries signed as each host signs them."""

    def __init__(self, rig: Rig, acr: AcrServer) -> None:
        self.rig = rig
        self.acr = acr
        self.ctx = ReceiverContext(
            settings=SETTINGS,
            config=lambda: runtime().config(),
            queue=lambda: rig.queue,
            clock=rig.clock,
            state=lambda: rig.state,
        )

    def github(self, action: str, *, head: str | None = None, delivery: str = "gh-1") -> HttpResponse:
        body = fixture_bytes("github", f"pull_request-{action}.json")
        if head is not None:
            body = _with_head(body, ("pull_request", "head", "sha"), head)
        signed = github_request(body)
        headers = {**signed.headers, "X-GitHub-Delivery": delivery}
        return receive_github(HttpRequest("POST", signed.url, headers, body), self.ctx)

    def deliver(
        self, receive: Callable[[HttpRequest, ReceiverContext], HttpResponse], request: HttpRequest
    ) -> HttpResponse:
        return receive(request, self.ctx)

    def settle(self) -> None:
        """Deliver everything queued, waits included, as the queue trigger would."""
        self.rig.run_until_idle(step=10)

    def reconcile(self) -> None:
        """One tick of the reconcile timer, as the Functions host fires it."""
        runtime().reconciler().run()

    def record(self, request_id: str) -> LedgerRecord:
        found = self.rig.ledger.get(request_id)
        assert found is not None, request_id
        return found[0]

    def runs_of(self, request_id: str) -> list[str]:
        return [run for run in self.acr.runs if self.acr.request_id_of(run) == request_id]

    def status(self, run_id: str) -> str:
        status: str = self.acr.runs[run_id]["properties"]["status"]
        return status


def _with_head(body: bytes, path: tuple[str, ...], head: str) -> bytes:
    payload: Any = json.loads(body)
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = head
    return json.dumps(payload).encode()


def _accepted(response: HttpResponse) -> str:
    assert response.status == 202, response.body
    [accepted] = response.body["accepted"]
    request_id: str = accepted["id"]
    return request_id


@pytest.fixture
def life(tmp_path: Path, acr_server: AcrServer) -> Iterator[Life]:
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server), config=CONFIG)
    yield Life(rig, acr_server)
    rig.close()


def test_a_new_head_supersedes_the_pending_build_and_cancels_the_running_one(life: Life) -> None:
    first = _accepted(life.github("opened"))
    life.settle()
    [first_run] = life.runs_of(first)
    life.acr.set_status(first_run, "Running")

    # Two new heads within the quiet period: the older of them never starts.
    life.rig.clock.advance(60)
    pending = _accepted(life.github("synchronize", head=HEAD_B, delivery="gh-2"))
    life.rig.drain()
    life.rig.clock.advance(5)
    newest = _accepted(life.github("synchronize", head=HEAD_C, delivery="gh-3"))
    life.settle()

    assert life.runs_of(pending) == []
    assert life.record(pending).status is RunStatus.SUPERSEDED
    [newest_run] = life.runs_of(newest)
    # A pull request's older build is cancelled when the newer starts (no cancel_superseded needed).
    assert life.acr.cancelled() == [first_run] and life.status(first_run) == "Canceled"
    assert life.record(first).history[-1]["event"] == "cancelled"
    assert newest in life.record(first).history[-1]["detail"]
    request = BuildRequest.model_validate(life.record(newest).request)
    assert request.source.commit == HEAD_C and request.image.tags == ["pr-2", f"pr-2-{HEAD_C[:12]}"]
    assert life.status(newest_run) == "Queued"


def test_a_close_cancels_the_pending_build_before_it_starts_and_the_running_one_at_the_next_tick(
    life: Life,
) -> None:
    running = _accepted(life.github("opened"))
    life.settle()
    [run] = life.runs_of(running)
    life.acr.set_status(run, "Running")
    life.rig.clock.advance(60)
    pending = _accepted(life.github("synchronize", head=HEAD_B, delivery="gh-2"))
    life.rig.drain()  # waits out its quiet period

    closed = life.github("closed", delivery="gh-3")
    assert closed.status == 200, closed.body
    [ignored] = closed.body["ignored"]
    assert ignored["target"] == "hello" and "recorded closed" in ignored["reason"]
    assert len(life.rig.queue.peek()) == 1  # the close queues nothing: only the pending wait is there
    life.settle()

    assert life.runs_of(pending) == []
    record = life.record(pending)
    assert (record.status, record.cancelled_by) == (RunStatus.CANCELLED, "the close of pull request #2")
    assert record.run_id is None
    assert life.acr.cancelled() == []  # the webhook cancels nothing itself

    life.reconcile()
    assert life.acr.cancelled() == [run] and life.status(run) == "Canceled"
    record = life.record(running)
    assert (record.status, record.cancelled_by) == (RunStatus.CANCELLED, "the close of pull request #2")
    assert record.run_status == "Canceled"
    life.reconcile()
    assert life.acr.cancelled() == [run]  # once


def test_a_cancel_that_fails_is_tried_again_at_the_next_tick(life: Life) -> None:
    running = _accepted(life.github("opened"))
    life.settle()
    [run] = life.runs_of(running)
    assert life.github("closed", delivery="gh-3").status == 200
    life.acr.fail_next(503, times=1)  # the cancel call
    life.reconcile()
    assert life.record(running).status is RunStatus.DISPATCHED and life.status(run) != "Canceled"
    life.reconcile()
    assert life.status(run) == "Canceled" and life.record(running).status is RunStatus.CANCELLED


def test_a_reopened_request_builds_its_head_again_and_retried_deliveries_build_once(life: Life) -> None:
    first = _accepted(life.github("opened"))
    again = life.github("opened")  # the same delivery, retried by the host
    assert _accepted(again) == first
    life.settle()
    assert len(life.runs_of(first)) == 1 and len(life.acr.runs) == 1

    assert life.github("closed", delivery="gh-close").status == 200
    life.reconcile()
    assert life.record(first).status is RunStatus.CANCELLED

    # Reopened with the same head: a new build, not the cancelled one.
    life.rig.clock.advance(60)
    reopened = _accepted(life.github("reopened", delivery="gh-reopen"))
    assert reopened != first
    assert _accepted(life.github("reopened", delivery="gh-reopen")) == reopened  # retried: same id
    # The close delivered again after the reopening (a host's retry) closes nothing.
    assert life.github("closed", delivery="gh-close").status == 200
    life.settle()
    [run] = life.runs_of(reopened)
    assert life.record(reopened).status is RunStatus.DISPATCHED
    assert BuildRequest.model_validate(life.record(reopened).request).source.commit == HEAD_A
    life.reconcile()
    assert life.status(run) == "Queued" and len(life.acr.runs) == 2


def test_a_label_on_a_closed_request_builds_nothing(life: Life) -> None:
    assert life.github("closed", delivery="gh-close").status == 200
    # GitHub's sample labels a request that is no fork: its head did not move, either way.
    response = life.github("labeled", delivery="gh-label")
    assert response.status == 200 and response.body["accepted"] == []
    assert life.rig.queue.peek() == []


def test_a_forged_pull_request_message_is_refused_and_cancels_nothing(life: Life) -> None:
    honest = _accepted(life.github("opened"))
    life.settle()
    [run] = life.runs_of(honest)
    body = life.record(honest).request
    # The honest request, on the key of the target's master branch builds (and another id).
    forged = BuildRequest.model_validate(
        {**body, "coalesce_key": "hello:refs/heads/master", "id": "hello.forged"}
    )
    life.rig.send(forged)
    life.settle()
    assert life.runs_of(forged.id) == [] and life.acr.cancelled() == []
    record = life.record(forged.id)
    assert (record.status, record.failure_reason) == (RunStatus.FAILED, "RequestNotAllowedForTarget")
    assert "coalesce_key" in (record.error or "") and life.status(run) == "Queued"


def _json_path(body: bytes, path: tuple[str, ...], value: object) -> bytes:
    payload: Any = json.loads(body)
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(payload).encode()


# (host, the request that opens, the request that closes, the target, the request number)
HOSTS: list[tuple[str, Callable[[], HttpRequest], Callable[[], HttpRequest], Any, str, int]] = [
    (
        "gitlab",
        lambda: gitlab_request(fixture_bytes("gitlab", "merge_request-hook-go-gitlab.json")),
        lambda: gitlab_request(
            _json_path(
                fixture_bytes("gitlab", "merge_request-hook-go-gitlab.json"),
                ("object_attributes", "action"),
                "close",
            )
        ),
        receive_gitlab,
        "gitlab-test",
        1,
    ),
    (
        "azure-devops",
        lambda: ado_request(fixture_bytes("azure-devops", "git.pullrequest.created-aspnet-webhooks.json")),
        lambda: ado_request(fixture_bytes("azure-devops", "git.pullrequest.merged-aspnet-webhooks.json")),
        receive_azure_devops,
        "fabrikam",
        1,
    ),
    (
        "gitea",
        lambda: gitea_request(fixture_bytes("gitea", "pull_request-reopened-woodpecker.json")),
        lambda: gitea_request(
            _json_path(fixture_bytes("gitea", "pull_request-reopened-woodpecker.json"), ("action",), "closed")
        ),
        receive_gitea,
        "ci-thing",
        1,
    ),
]


@pytest.mark.parametrize(
    ("host", "opens", "closes", "receive", "target", "number"), HOSTS, ids=[h[0] for h in HOSTS]
)
def test_every_host_s_open_builds_and_its_close_cancels(
    life: Life,
    host: str,
    opens: Callable[[], HttpRequest],
    closes: Callable[[], HttpRequest],
    receive: Callable[[HttpRequest, ReceiverContext], HttpResponse],
    target: str,
    number: int,
) -> None:
    request_id = _accepted(life.deliver(receive, opens()))
    life.settle()
    [run] = life.runs_of(request_id)
    request = BuildRequest.model_validate(life.record(request_id).request)
    assert (request.target, request.coalesce_key) == (target, f"{target}:pr-{number}")
    assert life.deliver(receive, opens()).status == 202  # delivered again: the same id, no new run
    life.settle()
    assert life.runs_of(request_id) == [run]

    response = life.deliver(receive, closes())
    assert response.status == 200, response.body
    assert [i["target"] for i in response.body["ignored"]] == [target]
    life.reconcile()
    assert life.status(run) == "Canceled"
    assert life.record(request_id).cancelled_by == f"the close of pull request #{number}"
    state = life.rig.state.get(f"pull-requests/{target}/pr-{number}.json")
    assert state is not None and state.value["closed"] is True


def test_a_close_record_tells_the_builds_of_the_closed_request_from_those_after_a_reopening(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.platform.state import FolderStateStore
    from shared.runs.pull_request_state import read_state, record_close, record_open

    store = FolderStateStore(tmp_path)
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    minute = timedelta(minutes=1)
    assert read_state(store, "hello", 2) is None
    assert record_open(store, "hello", 2, at=t0) is None  # nothing recorded: nothing written
    assert list(store.keys()) == []

    closed = record_close(store, "hello", 2, at=t0, head=HEAD_A, merged=False, delivery_id="c-1")
    assert (closed.closed, closed.closes, closed.head) == (True, 1, HEAD_A)
    assert closed.closed_for(t0 - minute) is not None  # asked for before the close
    assert closed.closed_for(t0 + minute) is not None  # or while it stays closed
    again = record_close(store, "hello", 2, at=t0 + minute, head=HEAD_A, merged=True, delivery_id="c-2")
    assert again == closed  # already closed: a second close changes nothing

    reopened = record_open(store, "hello", 2, at=t0 + 2 * minute)
    assert reopened is not None and not reopened.closed and reopened.closes == 1
    assert reopened.closed_for(t0 - minute) is not None  # still a build of the closed request
    assert reopened.closed_for(t0 + 3 * minute) is None
    # The first close, delivered again: remembered by its delivery id, closes nothing.
    assert not record_close(
        store, "hello", 2, at=t0 + 4 * minute, head=None, merged=False, delivery_id="c-1"
    ).closed
    # A new close counts: the builds after the next reopening get ids of their own.
    assert (
        record_close(store, "hello", 2, at=t0 + 5 * minute, head=None, merged=True, delivery_id="c-3").closes
        == 2
    )
    assert read_state(store, "other", 2) is None  # per target


def test_a_bitbucket_request_is_built_from_its_resolved_head_and_cancelled_by_its_decline(life: Life) -> None:
    from shared.intake.receivers.bitbucket import receive_bitbucket
    from tests.support.loopback_server import Answer, serve_loopback
    from tests.test_receiver_pull_requests import bitbucket_request

    full = "f90e18fc9d45" + "0" * 28  # the declined sample's head, as Bitbucket's API would spell it

    def commits(request: object) -> Answer:
        return Answer(200, {"Content-Type": "application/json"}, json.dumps({"hash": full}).encode())

    body = fixture_bytes("bitbucket", "pullrequest-rejected-woodpecker.json")
    with serve_loopback(commits) as port:
        life.ctx.settings = {
            **SETTINGS,
            "BITBUCKET_STATUS_TOKEN": "token",
            "BITBUCKET_API_URL": f"http://127.0.0.1:{port}",
        }
        # The same body under the key of a new head (no updated sample is published).
        request_id = _accepted(
            life.deliver(receive_bitbucket, bitbucket_request(body, "pullrequest:updated"))
        )
    life.settle()
    [run] = life.runs_of(request_id)
    assert BuildRequest.model_validate(life.record(request_id).request).source.commit == full
    declined = life.deliver(receive_bitbucket, bitbucket_request(body, "pullrequest:rejected"))
    assert declined.status == 200, declined.body
    life.reconcile()
    assert life.status(run) == "Canceled" and life.record(request_id).status is RunStatus.CANCELLED


def test_a_close_cancels_a_build_waiting_to_retry_its_start(life: Life) -> None:
    request_id = _accepted(life.github("opened"))
    life.rig.clock.advance(30)  # past the quiet period
    life.acr.fail_next(503)  # ACR refuses the start for now: a retry is scheduled
    life.rig.drain()
    assert life.record(request_id).status is RunStatus.RETRYING and life.acr.runs == {}
    assert life.github("closed", delivery="gh-close").status == 200
    life.settle()
    record = life.record(request_id)
    assert (record.status, record.cancelled_by) == (RunStatus.CANCELLED, "the close of pull request #2")
    assert life.acr.runs == {}


def test_a_pull_request_build_is_not_rerun_by_the_operator(life: Life) -> None:
    """A rerun stands apart from its coalesce key, so a close could not cancel it: refused."""
    from shared.dispatch.rerun import Rerunner, RerunRefused

    built = _accepted(life.github("opened"))
    life.settle()
    [run] = life.runs_of(built)
    life.acr.set_log(run, "step build: done\n")
    life.acr.set_status(run, "Succeeded")
    life.reconcile()
    rerunner = Rerunner(life.rig.ledger, life.rig.queue, clock=life.rig.clock)
    with pytest.raises(RerunRefused, match="pull-request build"):
        rerunner.rerun(built, actor="ops", reason="again", dry_run=True)
    assert life.rig.queue.peek() == []


# --- forks under forks: label, end to end --------------------------------------------------------

FORK_TOKEN_USER = "slipway-fork-hello"
FORK_TOKEN_PASSWORD = "fork-token-password-0123"
# hello builds forks only on a maintainer's label (GitHub's sample adds "bug"), as a fork's run is
# rendered: the ACR token below is its only registry login.
FORK_CONFIG = CONFIG.replace(
    '    image: codertocat/hello-world\n    branches: ["**"]\n    pull_requests: {enabled: true}\n',
    '    image: codertocat/hello-world\n    branches: ["**"]\n'
    "    pull_requests: {enabled: true, forks: label, label: bug,"
    " fork_registry_token_setting: REGISTRY_TOKEN_HELLO}\n",
)


def _forked(body: bytes) -> bytes:
    """GitHub's sample as a fork's request: its head in someone else's repository."""
    payload: Any = json.loads(body)
    payload["pull_request"]["head"]["repo"].update(
        id=1,
        clone_url="https://github.com/someone/Hello-World.git",
        html_url="https://github.com/someone/Hello-World",
        ssh_url="git@github.com:someone/Hello-World.git",
    )
    return json.dumps(payload).encode()


class ForkLife(Life):
    def github(
        self, action: str, *, head: str | None = None, delivery: str = "gh-1", updated_at: str | None = None
    ) -> HttpResponse:
        """``updated_at``: the host's time of the event, for a label event later than the sample's."""
        body = _forked(fixture_bytes("github", f"pull_request-{action}.json"))
        if head is not None:
            body = _with_head(body, ("pull_request", "head", "sha"), head)
        if updated_at is not None:
            body = _with_head(body, ("pull_request", "updated_at"), updated_at)
        signed = github_request(body)
        headers = {**signed.headers, "X-GitHub-Delivery": delivery}
        return receive_github(HttpRequest("POST", signed.url, headers, body), self.ctx)


def _ignored(response: HttpResponse) -> str:
    assert response.status == 200, response.body
    assert response.body["accepted"] == []
    [ignored] = response.body["ignored"]
    reason: str = ignored["reason"]
    return reason


@pytest.fixture
def fork_life(tmp_path: Path, acr_server: AcrServer) -> Iterator[ForkLife]:
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server), config=FORK_CONFIG)
    rig.settings["REGISTRY_TOKEN_HELLO"] = f"{FORK_TOKEN_USER}:{FORK_TOKEN_PASSWORD}"
    yield ForkLife(rig, acr_server)
    rig.close()


def test_a_fork_s_label_trusts_one_head_and_a_close_outranks_a_relabel(fork_life: ForkLife) -> None:
    life = fork_life
    assert "waiting for a maintainer to add the label 'bug'" in _ignored(life.github("opened"))

    trusted = _accepted(life.github("labeled", delivery="gh-label-1"))
    life.settle()
    [run] = life.runs_of(trusted)  # the dispatcher's check let a fork's request through
    request = BuildRequest.model_validate(life.record(trusted).request)
    assert request.pull_request is not None and request.pull_request.fork
    [sent] = [r.body for r in life.acr.requests if r.body.get("encodedTaskContent")]
    assert sent["credentials"]["sourceRegistry"] == {"loginMode": "None"}
    login = sent["credentials"]["customRegistries"]["slipway.azurecr.io"]
    assert login["userName"]["value"] == FORK_TOKEN_USER

    # A new push removes the trust: nothing is queued, and the trusted head's run goes on.
    life.rig.clock.advance(60)
    pushed = life.github("synchronize", head=HEAD_B, delivery="gh-2")
    assert "a new push removes the trust" in _ignored(pushed)
    assert life.rig.queue.peek() == [] and life.status(run) == "Queued"

    assert life.github("closed", delivery="gh-close").status == 200
    life.reconcile()
    assert life.status(run) == "Canceled"
    # The label added again to the closed request builds nothing.
    life.rig.clock.advance(60)
    reason = _ignored(life.github("labeled", delivery="gh-label-2"))
    assert "closed" in reason and "nothing is built while it is closed" in reason
    assert life.rig.queue.peek() == []
    # Reopened: open again, but a fork still waits for the label.
    assert "waiting for a maintainer" in _ignored(life.github("reopened", delivery="gh-reopen"))

    # Labelled after the reopening: the same head builds again, under an id of its own.
    relabelled = _accepted(life.github("labeled", delivery="gh-label-3"))
    assert relabelled != trusted
    life.settle()
    [again] = life.runs_of(relabelled)
    assert life.record(relabelled).status is RunStatus.DISPATCHED and life.status(again) == "Queued"
    assert BuildRequest.model_validate(life.record(relabelled).request).source.commit == HEAD_A


def test_a_fork_s_build_without_its_registry_token_is_dead_lettered_with_the_reason(
    tmp_path: Path, acr_server: AcrServer
) -> None:
    """forks: on without fork_registry_token_setting while runs pull the tools from the registry's
    mirror: config validate refuses it; a server that runs it anyway refuses the build at dispatch,
    with the reason in the ledger, as any refused message (never a 500, nothing started)."""
    config = FORK_CONFIG.replace(
        "forks: label, label: bug, fork_registry_token_setting: REGISTRY_TOKEN_HELLO", 'forks: "on"'
    )
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server), config=config)
    try:
        life = ForkLife(rig, acr_server)
        request_id = _accepted(life.github("opened"))  # the webhook queues it: the policy allows it
        life.settle()
        assert acr_server.runs == {}
        record = life.record(request_id)
        assert (record.status, record.failure_reason) == (RunStatus.FAILED, "InvalidBuildRequest")
        assert "fork_registry_token_setting" in (record.error or "")
        assert "slipway.azurecr.io/slipway-tools/" in (record.error or "")
        [dead] = rig.queue.peek(dead_letter=True)
        assert dead.message_id == request_id and dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    finally:
        rig.close()


def test_a_closed_request_s_dry_run_is_left_alone_by_every_tick(
    tmp_path: Path, acr_server: AcrServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``slipway serve``'s dry run: the run is over once recorded, so a close has nothing to cancel
    and the timer neither tries (and fails) at each tick nor records a cancel that never happened."""
    from shared.acr.run_backend import DryRunBackend

    rig = Rig(tmp_path, Clock(), DryRunBackend(), config=CONFIG)
    try:
        life = Life(rig, acr_server)
        request_id = _accepted(life.github("opened"))
        life.settle()
        assert life.record(request_id).run_status == "DryRun"
        assert life.github("closed", delivery="gh-close").status == 200
        with caplog.at_level("INFO"):
            for _ in range(2):
                assert runtime().reconciler().run().cancelled == []
        assert "closed_cancel_failed" not in caplog.text and "reconcile_pass" in caplog.text
        record = life.record(request_id)
        assert (record.status, record.cancelled_by) == (RunStatus.DISPATCHED, None)
    finally:
        rig.close()


# --- a fork's trust label removed: its builds cancelled as a close cancels them ------------------
# GitHub's published unlabeled sample (octokit payload-examples) removes "bug", the label FORK_CONFIG
# trusts; as the labeled one, it is made a fork's request by ``_forked``.

REMOVED_BY = "the removal of the label 'bug' from pull request #2"


def _state(life: Life, target: str = "hello", number: int = 2) -> dict[str, Any] | None:
    found = life.rig.state.get(f"pull-requests/{target}/pr-{number}.json")
    return None if found is None else dict(found.value)


def test_removing_a_fork_s_label_cancels_its_pending_build_and_the_label_again_builds_again(
    fork_life: ForkLife,
) -> None:
    life = fork_life
    trusted = _accepted(life.github("labeled", delivery="gh-label-1"))
    life.rig.drain()  # waits out its quiet period

    reason = _ignored(life.github("unlabeled", delivery="gh-unlabel-1"))
    assert "trust withdrawn: label 'bug' removed" in reason
    assert len(life.rig.queue.peek()) == 1  # the removal queues nothing: only the pending wait is there
    # The host retries the removal: recorded once.
    assert "trust withdrawn" in _ignored(life.github("unlabeled", delivery="gh-unlabel-1"))
    state = _state(life)
    assert state is not None and (state["withdrawals"], state["closed"]) == (1, False)
    life.settle()

    assert life.runs_of(trusted) == [] and life.acr.runs == {}
    record = life.record(trusted)
    assert (record.status, record.cancelled_by, record.run_id) == (RunStatus.CANCELLED, REMOVED_BY, None)
    assert "trust withdrawn: label 'bug' removed" in record.history[-1]["detail"]

    # The label added again to the same head (after the removal, as the host dates it): a build of
    # its own, which the dispatcher runs.
    life.rig.clock.advance(60)
    again = _accepted(life.github("labeled", delivery="gh-label-2", updated_at="2019-05-15T15:21:36Z"))
    assert again != trusted
    life.settle()
    [run] = life.runs_of(again)
    assert BuildRequest.model_validate(life.record(again).request).source.commit == HEAD_A
    # The first removal delivered again after the relabel takes nothing back.
    assert "trust withdrawn" in _ignored(life.github("unlabeled", delivery="gh-unlabel-1"))
    state = _state(life)
    assert state is not None and state["withdrawals"] == 1
    life.reconcile()
    assert life.acr.cancelled() == [] and life.status(run) == "Queued"
    assert life.record(again).status is RunStatus.DISPATCHED
    # The cache has nothing to expire: the request is open.
    assert state["closed"] is False


def test_removing_a_fork_s_label_cancels_its_running_build_at_the_next_tick(fork_life: ForkLife) -> None:
    life = fork_life
    trusted = _accepted(life.github("labeled", delivery="gh-label-1"))
    life.settle()
    [run] = life.runs_of(trusted)
    life.acr.set_status(run, "Running")

    life.rig.clock.advance(60)
    assert "trust withdrawn" in _ignored(life.github("unlabeled", delivery="gh-unlabel-1"))
    assert life.acr.cancelled() == [] and life.rig.queue.peek() == []  # the webhook cancels nothing
    life.acr.fail_next(503, times=1)  # the first tick's cancel fails: the next one tries again
    life.reconcile()
    assert life.record(trusted).status is RunStatus.DISPATCHED
    life.reconcile()
    assert life.status(run) == "Canceled"
    attempts = life.acr.cancelled()
    assert attempts == [run, run]  # the failed call, then the one ACR answered
    record = life.record(trusted)
    assert (record.status, record.cancelled_by, record.run_status) == (
        RunStatus.CANCELLED,
        REMOVED_BY,
        "Canceled",
    )
    life.reconcile()
    assert life.acr.cancelled() == attempts  # not again


def test_a_close_outranks_the_removal_of_the_label(fork_life: ForkLife) -> None:
    life = fork_life
    trusted = _accepted(life.github("labeled", delivery="gh-label-1"))
    life.rig.drain()
    assert "trust withdrawn" in _ignored(life.github("unlabeled", delivery="gh-unlabel-1"))
    assert life.github("closed", delivery="gh-close").status == 200
    life.settle()
    record = life.record(trusted)
    assert (record.status, record.cancelled_by) == (RunStatus.CANCELLED, "the close of pull request #2")
    # Labelled again while closed: nothing is built.
    life.rig.clock.advance(60)
    assert "nothing is built while it is closed" in _ignored(life.github("labeled", delivery="gh-label-2"))


def test_removing_the_label_leaves_a_request_from_the_base_repository_alone(fork_life: ForkLife) -> None:
    # The same target, a request from its own repository (GitHub's sample as published).
    life = fork_life
    own = _accepted(Life.github(life, "opened"))
    life.settle()
    [run] = life.runs_of(own)
    response = Life.github(life, "unlabeled", delivery="gh-unlabel-1")
    assert response.status == 200 and response.body["accepted"] == []
    assert "nothing to build" in response.body["ignored"][0]["reason"]
    assert _state(life) is None  # nothing recorded
    life.reconcile()
    assert life.acr.cancelled() == [] and life.record(own).status is RunStatus.DISPATCHED
    assert life.status(run) == "Queued"


def test_removing_a_label_leaves_a_fork_s_build_under_forks_on_alone(
    tmp_path: Path, acr_server: AcrServer
) -> None:
    config = FORK_CONFIG.replace("forks: label, label: bug,", 'forks: "on",')
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server), config=config)
    rig.settings["REGISTRY_TOKEN_HELLO"] = f"{FORK_TOKEN_USER}:{FORK_TOKEN_PASSWORD}"
    try:
        on = ForkLife(rig, acr_server)
        built = _accepted(on.github("opened", delivery="gh-open-on"))
        on.settle()
        [fork_run] = on.runs_of(built)
        assert "nothing to build" in _ignored(on.github("unlabeled", delivery="gh-unlabel-on"))
        assert _state(on) is None
        on.reconcile()
        assert on.record(built).status is RunStatus.DISPATCHED and on.status(fork_run) == "Queued"
    finally:
        rig.close()

"""One meaning of "default branch" (issue #17 item 5): tags, cache names, last-build records and
rebuilds all follow ``default_branch_for``, driven here by the recorded Bitbucket Cloud push
(tests/fixtures/bitbucket/, which carries no default branch) through the receiver, the queue and
the dispatcher's last-build record."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.acr.run_backend import DryRunBackend
from shared.dispatch.dispatcher import Dispatcher, Outcome
from shared.intake.base_images import rebuild_request
from shared.intake.receivers.bitbucket import receive_bitbucket
from shared.intake.receivers.pipeline import ReceiverContext
from shared.intake.routing import RouteResult
from shared.model.build_request import BuildRequest, Trigger
from shared.model.config import SlipwayConfig, Target
from shared.model.default_branch import default_branch_for, host_reports_default_branch
from shared.platform.ledger import FolderLedger
from shared.platform.queue.local import LocalQueue
from shared.platform.state import FolderStateStore
from shared.runs.last_build import read_last_build
from tests.test_receiver_bitbucket import COMMIT, SECRET, bitbucket_request, fixture_bytes, fixture_json

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
REPO = "https://bitbucket.org/henrikfrystyknielsen/henrikntest01"


def _config(**target: Any) -> SlipwayConfig:
    return SlipwayConfig.model_validate(
        {
            "registry": "slipway.azurecr.io",
            "targets": [{"name": "henrik", "repo": REPO, "image": "henrik/test01", **target}],
        }
    )


class Pipeline:
    """Receiver → local queue → dispatcher (dry run) with a folder state store."""

    def __init__(self, tmp_path: Path, config: SlipwayConfig) -> None:
        self.config = config
        self.queue = LocalQueue(tmp_path / "queue.sqlite3", clock=lambda: NOW)
        self.state = FolderStateStore(tmp_path / "state")
        self.dispatcher = Dispatcher(
            config=lambda: config,
            ledger=FolderLedger(tmp_path / "ledger"),
            backend=DryRunBackend(),
            settings={},
            clock=lambda: NOW,
            state=self.state,
        )

    def push_fixture(self) -> BuildRequest:
        ctx = ReceiverContext(
            settings={"BITBUCKET_WEBHOOK_SECRET": SECRET},
            config=lambda: self.config,
            queue=lambda: self.queue,
            clock=lambda: NOW,
        )
        response = receive_bitbucket(bitbucket_request(fixture_bytes()), ctx)
        assert response.status == 202, response.body
        [message] = self.queue.receive(max_count=10)
        outcome = self.dispatcher.dispatch(message.body, message_id=message.message_id).outcome
        self.queue.complete(message)
        assert outcome == Outcome.DISPATCHED
        return BuildRequest.from_json(message.body)


def test_the_bitbucket_fixture_reports_no_default_branch() -> None:
    # The premise: the recorded repo:push body has no mainbranch (nor anything like it).
    repository = fixture_json()["repository"]
    assert "mainbranch" not in repository and "default_branch" not in repository
    assert [change["new"]["name"] for change in fixture_json()["push"]["changes"]] == ["master"]
    assert not host_reports_default_branch("bitbucket.org")
    assert host_reports_default_branch("github.com")


@pytest.mark.parametrize(
    "target",
    [
        {"branches": ["master", "feature/*"], "default_branch": "master"},
        {"branches": ["master"]},  # the only branch it builds: nothing else can be the default
        {"branches": ["master", "feature/*"]},  # the one plain name among globs
    ],
    ids=["configured", "single-filter", "one-plain-filter"],
)
def test_a_bitbucket_push_of_master_is_the_default_branch(tmp_path: Path, target: dict[str, Any]) -> None:
    pipeline = Pipeline(tmp_path, _config(**target))
    request = pipeline.push_fixture()
    assert request.source.ref == "refs/heads/master"
    assert request.source.default_branch == "master"
    assert "latest" in request.image.tags
    # The cache it imports is its own (it is the default branch): never a "main" no one exports.
    assert request.cache is not None
    assert (request.cache.name, request.cache.from_names) == ("henrik-master", [])
    recorded = read_last_build(pipeline.state, "henrik")
    assert recorded is not None and (recorded.commit, recorded.ref) == (COMMIT, "refs/heads/master")
    assert recorded.default_branch == "master"


def test_an_unknown_default_gets_no_latest_and_imports_no_phantom_cache(tmp_path: Path) -> None:
    # Two plain filters, no default_branch, and a sender that reports none: no branch is the default.
    pipeline = Pipeline(tmp_path, _config(branches=["develop", "master"]))
    request = pipeline.push_fixture()
    assert request.source.default_branch is None
    assert "latest" not in request.image.tags and "master" in request.image.tags
    assert request.cache is not None and request.cache.from_names == []  # was ["henrik-main"]
    assert read_last_build(pipeline.state, "henrik") is None


def test_a_rebuild_after_the_push_rebuilds_the_recorded_default(tmp_path: Path) -> None:
    config = _config(branches=["master", "feature/*"], default_branch="master", base_images=["python:3.12"])
    pipeline = Pipeline(tmp_path, config)
    pipeline.push_fixture()
    trigger = Trigger(kind="base-image", provider="eventgrid", received_at=NOW, correlation_id="c")
    result = RouteResult()
    request = rebuild_request(
        config,
        config.targets[0],
        last=read_last_build(pipeline.state, "henrik"),
        trigger=trigger,
        id_parts=("base-image", "x", "1"),
        result=result,
    )
    assert request is not None
    assert (request.source.ref, request.source.commit) == ("refs/heads/master", COMMIT)
    assert "latest" in request.image.tags and request.cache is not None
    assert request.cache.name == "henrik-master"


_NAMES = st.sampled_from(["main", "master", "develop", "trunk", "release/1.x"])
_FILTERS = st.lists(st.sampled_from(["main", "master", "develop", "release/*", "**"]), min_size=1, max_size=3)


@given(configured=st.none() | _NAMES, reported=st.none() | _NAMES, branches=_FILTERS)
def test_the_rule(configured: str | None, reported: str | None, branches: list[str]) -> None:
    target = Target.model_validate(
        {"name": "t", "repo": REPO, "image": "t/t", "branches": branches, "default_branch": configured}
    )
    found = default_branch_for(target, reported)
    if configured is not None:
        assert found == configured
    elif reported is not None:
        assert found == reported
    elif len(plain := [b for b in branches if b not in ("**", "release/*")]) == 1:
        assert found == plain[0]
    else:
        assert found is None

"""A queued request may ask for no more than its target allows (issue 21: queue senders).

Anyone who can put a message on the queue (Service Bus Data Sender, ``slipway queue send``, a
portal edit) must not be able to point the target's Git token and cache key at another
repository, image, tag, cache, platform or build argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.dispatch.request_check import request_mismatch
from shared.intake.pr_policy import decide
from shared.intake.pr_routing import request_for_pull_request
from shared.intake.routing import request_for_commit
from shared.model.build_request import BuildRequest, Trigger
from shared.model.config import SlipwayConfig, Target, parse_config
from shared.model.events import PullRequestEvent
from shared.platform.ledger import RunStatus
from tests.support.acr_server import AcrServer
from tests.support.dispatch_harness import Clock, Rig, acr_backend, make_request

CONFIG: SlipwayConfig = parse_config(
    """
registry: slipway.azurecr.io
targets:
  - name: web
    repo: https://github.com/contoso/web
    image: contoso/web
    branches: [main, "release/*"]
    tags: ["v*"]
    platforms: [linux/amd64, linux/arm64]
    build_args: {PYTHON_VERSION: "3.12"}
    image_tags: ["{branch}", "sha-{sha}", {template: latest, when: default_branch}]
""",
    source="slipway.yaml",
)
TARGET = CONFIG.targets[0]
TRIGGER = Trigger(
    kind="push", provider="github", received_at=datetime(2026, 12, 1, tzinfo=UTC), correlation_id="c"
)
COMMIT = "c72d62bc4e992806a012ccaca139a8a6ef41a07c"


def _routed(ref: str = "refs/heads/main", commit: str | None = COMMIT) -> BuildRequest:
    return request_for_commit(
        CONFIG,
        TARGET,
        ref=ref,
        commit=commit,
        repo_url="https://github.com/contoso/web.git",
        trigger=TRIGGER,
        default_branch="main",
    )


@given(
    branch=st.sampled_from(["main", "release/1.0", "release/x"]),
    commit=st.text(alphabet="0123456789abcdef", min_size=40, max_size=40),
)
def test_every_request_routing_gives_a_target_passes(branch: str, commit: str) -> None:
    assert request_mismatch(_routed(f"refs/heads/{branch}", commit), CONFIG, TARGET) is None


def test_a_repaired_request_may_ask_for_less() -> None:
    routed = _routed()
    smaller = routed.model_copy(
        update={
            "image": routed.image.model_copy(update={"tags": ["main"]}),
            "platforms": ["linux/amd64"],
            "build_args": {},
        }
    )
    assert request_mismatch(smaller, CONFIG, TARGET) is None


def _with(part: str, **changes: Any) -> Callable[[BuildRequest], BuildRequest]:
    def change(request: BuildRequest) -> BuildRequest:
        if part == "request":
            return request.model_copy(update=changes)
        return request.model_copy(update={part: getattr(request, part).model_copy(update=changes)})

    return change


@pytest.mark.parametrize(
    ("forge", "words"),
    [
        (_with("source", repo_url="https://github.com/attacker/web.git"), "source.repo_url"),
        (_with("source", repo_url="https://evil.example/contoso/web.git"), "source.repo_url"),
        (_with("source", ref="refs/heads/feature/x"), "source.ref"),
        (_with("source", ref="refs/tags/nightly"), "source.ref"),
        (_with("source", dockerfile="other/Dockerfile"), "dockerfile"),
        (_with("source", context="../"), "context"),
        (_with("image", repository="contoso/other"), "contoso/other"),
        (_with("image", registry="evil.azurecr.io"), "image evil.azurecr.io"),
        (_with("image", tags=["main", "v9.9.9"]), "image.tags ['v9.9.9']"),
        (_with("image", tags=["sha-0000000"]), "image.tags ['sha-0000000']"),
        (_with("request", platforms=["linux/amd64", "linux/s390x"]), "platforms ['linux/s390x']"),
        (_with("request", build_args={"PYTHON_VERSION": "2.7"}), "build_args ['PYTHON_VERSION']"),
        (_with("request", build_args={"PYTHON_VERSION": "3.12", "EXTRA": "1"}), "build_args ['EXTRA']"),
        (_with("cache", name="web-release-1.0"), "cache 'web-release-1.0'"),
        (_with("cache", from_names=["someone-elses-cache"]), "cache"),
        # Another ref's key would supersede (or cancel) that ref's build.
        (_with("request", coalesce_key="web:refs/heads/release/1.0"), "coalesce_key"),
        (_with("request", coalesce_key="web:pr-7"), "coalesce_key"),
    ],
)
def test_a_request_asking_for_more_than_its_target_is_refused(
    forge: Callable[[BuildRequest], BuildRequest], words: str
) -> None:
    reason = request_mismatch(forge(_routed()), CONFIG, TARGET)
    assert reason is not None and words in reason


def test_latest_is_only_for_the_default_branch() -> None:
    release = _routed("refs/heads/release/1.0")
    assert "latest" not in release.image.tags
    forged = release.model_copy(update={"image": release.image.model_copy(update={"tags": ["latest"]})})
    reason = request_mismatch(forged, CONFIG, TARGET)
    assert reason is not None and "latest" in reason


def test_a_target_default_branch_cannot_be_overridden_by_the_message() -> None:
    pinned = TARGET.model_copy(update={"default_branch": "main"})
    routed = _routed("refs/heads/release/1.0")
    forged = routed.model_copy(
        update={"source": routed.source.model_copy(update={"default_branch": "release/1.0"})}
    )
    reason = request_mismatch(forged, CONFIG, pinned)
    assert reason is not None and "default_branch" in reason


# -- through the real queue trigger: the forged message never reaches ACR ------------------------


@pytest.fixture
def rig(tmp_path: Path, acr_server: AcrServer) -> Iterator[Rig]:
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server))
    yield rig
    rig.close()


def test_a_forged_queue_message_is_dead_lettered_with_the_reason_and_starts_nothing(
    rig: Rig, acr_server: AcrServer
) -> None:
    honest = make_request(1, received_at=rig.clock())
    forged = make_request(2, received_at=rig.clock())
    forged = forged.model_copy(
        update={
            "source": forged.source.model_copy(update={"repo_url": "https://github.com/attacker/AzureTest"})
        }
    )
    rig.send(honest, forged)
    rig.drain()
    assert len(acr_server.runs) == 1
    [dead] = rig.queue.peek(dead_letter=True)
    assert BuildRequest.from_json(dead.body).id == forged.id
    found = rig.ledger.get(forged.id)
    assert found is not None
    record = found[0]
    assert (record.status, record.failure_reason) == (RunStatus.FAILED, "RequestNotAllowedForTarget")
    assert "attacker" in (record.error or "") and record.run_id is None


# -- pull-request requests: held against the target's pull_requests policy ------------------------

PR_CONFIG: SlipwayConfig = parse_config(
    """
registry: slipway.azurecr.io
targets:
  - name: web
    repo: https://github.com/contoso/web
    image: contoso/web
    branches: [main, "release/*"]
    platforms: [linux/amd64, linux/arm64]
    build_args: {PYTHON_VERSION: "3.12"}
    pull_requests: {enabled: true, branches: [main], push: scratch, scratch_repository: contoso/web-pr}
  - name: api
    repo: https://github.com/contoso/api
    image: contoso/api
    pull_requests: {enabled: true, forks: "on", platforms: [linux/amd64]}
""",
    source="slipway.yaml",
)
PR_WEB, PR_API = PR_CONFIG.targets


def _pr_event(target: Target, number: int, commit: str, *, fork: bool = False) -> PullRequestEvent:
    repo = f"https://github.com/contoso/{target.name}.git"
    return PullRequestEvent(
        provider="github",
        delivery_id="d-1",
        received_at=TRIGGER.received_at,
        repo_urls=(repo,),
        number=number,
        action="opened",
        head_commit=commit,
        head_ref="refs/heads/feature/x",
        head_repo_urls=("https://github.com/someone/fork.git",) if fork else (repo,),
        base_ref="refs/heads/main",
        fork=fork,
    )


def _pr_routed(target: Target = PR_WEB, number: int = 7, commit: str = COMMIT, **kw: Any) -> BuildRequest:
    event = _pr_event(target, number, commit, **kw)
    return request_for_pull_request(event, PR_CONFIG, target, decide(event, target), correlation_id="c")


@given(
    number=st.integers(1, 10**9),
    commit=st.text(alphabet="0123456789abcdef", min_size=40, max_size=40),
    generation=st.integers(0, 5),
    api=st.booleans(),
    fork=st.booleans(),
)
def test_every_pull_request_request_routing_gives_passes(
    number: int, commit: str, generation: int, api: bool, fork: bool
) -> None:
    target = PR_API if api else PR_WEB
    event = _pr_event(target, number, commit, fork=fork and api)
    request = request_for_pull_request(
        event, PR_CONFIG, target, decide(event, target), correlation_id="c", generation=generation
    )
    assert request_mismatch(request, PR_CONFIG, target) is None


def _pr_with(part: str, **changes: Any) -> Callable[[BuildRequest], BuildRequest]:
    def change(request: BuildRequest) -> BuildRequest:
        if part == "request":
            return request.model_copy(update=changes)
        return request.model_copy(update={part: getattr(request, part).model_copy(update=changes)})

    return change


@pytest.mark.parametrize(
    ("forge", "words"),
    [
        (_pr_with("source", repo_url="https://github.com/attacker/web.git"), "source.repo_url"),
        (_pr_with("source", default_branch="main"), "source.default_branch"),
        (_pr_with("source", dockerfile="evil/Dockerfile"), "dockerfile"),
        (_pr_with("source", ref="refs/tags/v1"), "source.ref"),
        # the base branch of the policy (main), not another branch the target builds
        (_pr_with("pull_request", base_ref="refs/heads/release/1.0"), "base branch 'release/1.0'"),
        (_pr_with("pull_request", fork=True), "fork pull requests are off"),
        (_pr_with("pull_request", push="none", scratch_repository=None), "pull_request.push"),
        (_pr_with("image", repository="contoso/web"), "image slipway.azurecr.io/contoso/web"),
        (_pr_with("image", registry="evil.azurecr.io"), "image evil.azurecr.io"),
        (_pr_with("image", tags=["pr-7", "pr-7-0123456789ab"]), "image.tags ['pr-7-0123456789ab']"),
        (_pr_with("cache", name="web-main"), "cache 'web-main'"),  # the release cache
        (_pr_with("cache", name="web-pr-8"), "cache 'web-pr-8'"),  # another request's
        (_pr_with("cache", from_names=["web-release-1.0"]), "cache"),
        (_pr_with("cache", from_names=["web-pr-8"]), "cache"),
        # a key of another build: its start would supersede (and cancel) that build
        (_pr_with("request", coalesce_key="web:refs/heads/main"), "coalesce_key"),
        (_pr_with("request", coalesce_key="web:pr-8"), "coalesce_key"),
        (_pr_with("request", platforms=["linux/s390x"]), "platforms ['linux/s390x']"),
        (_pr_with("request", build_args={"PYTHON_VERSION": "2.7"}), "build_args ['PYTHON_VERSION']"),
    ],
)
def test_a_pull_request_request_asking_for_more_than_the_policy_is_refused(
    forge: Callable[[BuildRequest], BuildRequest], words: str
) -> None:
    routed = _pr_routed()
    assert request_mismatch(routed, PR_CONFIG, PR_WEB) is None
    reason = request_mismatch(forge(routed), PR_CONFIG, PR_WEB)
    assert reason is not None and words in reason


def test_a_pull_request_request_is_refused_once_the_policy_is_off_or_narrower() -> None:
    routed = _pr_routed(PR_API, fork=True)
    assert request_mismatch(routed, PR_CONFIG, PR_API) is None
    off = PR_API.model_copy(
        update={"pull_requests": PR_API.pull_requests.model_copy(update={"enabled": False})}
    )
    reason = request_mismatch(routed, PR_CONFIG, off)
    assert reason is not None and "pull-request builds are off" in reason
    no_forks = PR_API.model_copy(
        update={"pull_requests": PR_API.pull_requests.model_copy(update={"forks": "off"})}
    )
    reason = request_mismatch(routed, PR_CONFIG, no_forks)
    assert reason is not None and "fork" in reason
    # the policy's platform subset: the target's other platform is not the request's to ask for
    wider = routed.model_copy(update={"platforms": ["linux/amd64", "linux/arm64"]})
    api_two = PR_API.model_copy(update={"platforms": ["linux/amd64", "linux/arm64"]})
    reason = request_mismatch(wider, PR_CONFIG, api_two)
    assert reason is not None and "linux/arm64" in reason

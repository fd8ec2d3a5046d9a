"""Base-image rebuilds: references, configuration, routing, fan-out, and the last-build loop end to end.

The loop: a push to the default branch is dispatched and recorded as the target's last build (in
Azurite or a folder); a registry then reports a new base image; the rebuild builds that recorded
commit, or the branch head when nothing is recorded yet.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.acr.run_backend import DryRunBackend
from shared.acr.task import RunSecrets, render_run
from shared.dispatch.dispatcher import Dispatcher, Outcome
from shared.intake.base_images import builds_on, default_branch_of, route_image_pushed, route_image_pushes
from shared.intake.receivers.eventgrid import receive_eventgrid
from shared.intake.receivers.github import receive_github
from shared.model.build_request import BuildRequest
from shared.model.config import ConfigError, RebuildSettings, SlipwayConfig, parse_config
from shared.model.events import ImagePushedEvent
from shared.model.image_refs import ImageReference, parse_image_reference
from shared.platform.ledger import FolderLedger
from shared.platform.queue.local import LocalQueue
from shared.platform.state import BlobStateStore, FolderStateStore, StateStore
from shared.runs.last_build import LastBuild, read_last_build
from tests.support import github
from tests.support.azurite import AzuriteServer
from tests.support.registry_hooks import SETTINGS, as_array, eventgrid_request

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
COMMIT = "c72d62bc4e992806a012ccaca139a8a6ef41a07c"
DIGEST = "sha256:" + "d" * 64


# --- image references -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("python:3.12-slim", "docker.io/library/python:3.12-slim"),
        ("python", "docker.io/library/python:latest"),
        ("library/python:3.12", "docker.io/library/python:3.12"),
        ("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"),
        ("index.docker.io/library/node:20", "docker.io/library/node:20"),
        ("registry-1.docker.io/node:20", "docker.io/library/node:20"),
        ("mcr.microsoft.com/dotnet/aspnet:8.0", "mcr.microsoft.com/dotnet/aspnet:8.0"),
        ("MyRegistry.azurecr.io/base/python:3.12", "myregistry.azurecr.io/base/python:3.12"),
        ("localhost/app:1", "localhost/app:1"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        (f"python@{DIGEST}", f"docker.io/library/python@{DIGEST}"),
        (f"python:3.12@{DIGEST}", f"docker.io/library/python:3.12@{DIGEST}"),
        ("  ghcr.io/owner/img:v1  ", "ghcr.io/owner/img:v1"),
    ],
)
def test_references_are_normalised_like_docker(written: str, normalised: str) -> None:
    assert str(parse_image_reference(written)) == normalised


@pytest.mark.parametrize(
    "written",
    [
        "",
        "Python:3",
        "python:",
        "python:-x",
        "python@sha256:abc",
        "a//b",
        "-x/y",
        "mcr.microsoft.com/",
        "x" * 300,
    ],
)
def test_bad_references_are_refused(written: str) -> None:
    with pytest.raises(ValueError):
        parse_image_reference(written)


BASE_CONFIG = """\
registry: slipway.azurecr.io
targets:
  - name: web
    repo: https://github.com/contoso/web
    image: contoso/web
    base_images:
      - python:3.12-slim
      - mcr.microsoft.com/dotnet/aspnet:8.0
"""


def test_config_keeps_base_images_normalised_and_rebuild_defaults() -> None:
    config = parse_config(BASE_CONFIG, source="slipway.yaml")
    assert config.targets[0].base_images == [
        "docker.io/library/python:3.12-slim",
        "mcr.microsoft.com/dotnet/aspnet:8.0",
    ]
    assert config.rebuilds == RebuildSettings(max_burst=10, spread_seconds=60)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "      - Python:3\n",
            "slipway.yaml:9: targets[0].base_images[2]: 'Python:3': 'Python' is not a repository",
        ),
        (
            "      - docker.io/library/python:3.12-slim\n",
            "slipway.yaml:9: targets[0].base_images[2]: 'docker.io/library/python:3.12-slim' is "
            "docker.io/library/python:3.12-slim, already listed as base_images[0]",
        ),
    ],
)
def test_bad_base_images_are_located(extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE_CONFIG + extra, source="slipway.yaml")
    assert str(caught.value).startswith(expected), str(caught.value)


def test_rebuild_settings_are_validated() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE_CONFIG + "rebuilds: {max_burst: 0, spread: 5}\n", source="slipway.yaml")
    text = str(caught.value)
    assert "rebuilds.max_burst" in text and "rebuilds.spread: unknown key" in text


# --- routing ----------------------------------------------------------------------------------


def _config(targets: list[dict[str, Any]], **top: Any) -> SlipwayConfig:
    return SlipwayConfig.model_validate({"registry": "slipway.azurecr.io", "targets": targets, **top})


def _target(name: str, *bases: str, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "repo": f"https://github.com/contoso/{name}",
        "image": f"contoso/{name}",
        "base_images": list(bases),
        **kw,
    }


def _event(
    repository: str = "library/python", tag: str | None = "3.12-slim", digest: str | None = DIGEST, **kw: Any
) -> ImagePushedEvent:
    fields: dict[str, Any] = {
        "provider": "eventgrid",
        "delivery_id": "evt-1",
        "received_at": NOW,
        "registry": "docker.io",
        "repository": repository,
        "tag": tag,
        "digest": digest,
    }
    fields.update(kw)
    return ImagePushedEvent(**fields)


def _last(target: str, commit: str = COMMIT, ref: str = "refs/heads/main", **kw: Any) -> LastBuild:
    return LastBuild.model_validate(
        {
            "target": target,
            "repo_url": f"https://github.com/contoso/{target}.git",
            "ref": ref,
            "commit": commit,
            "request_id": f"{target}.0",
            "received_at": NOW - timedelta(days=1),
            "recorded_at": NOW - timedelta(days=1),
            **kw,
        }
    )


def _none(target: str) -> LastBuild | None:
    return None


def test_matching_by_registry_repository_and_tag_or_digest() -> None:
    config = _config(
        [
            _target("a", "python:3.12-slim"),
            _target("b", "python:3.13-slim"),
            _target("c", f"python@{DIGEST}"),
            _target("d", "ghcr.io/library/python:3.12-slim"),
        ]
    )
    a, b, c, d = config.targets
    event = _event()
    assert [builds_on(t, event) for t in (a, b, c, d)] == [True, False, True, False]
    assert not builds_on(c, _event(digest="sha256:" + "e" * 64))


def test_rebuild_of_the_last_build_or_of_the_branch_head() -> None:
    config = _config(
        [
            _target("known", "python:3.12-slim"),
            _target("unknown", "python:3.12-slim", branches=["master"]),
            _target("globs", "python:3.12-slim", branches=["**"]),
            # Which of two is the default no sender says to a rebuild: never the first by guess.
            _target("two", "python:3.12-slim", branches=["develop", "master"]),
        ]
    )
    lookups: dict[str, LastBuild] = {"known": _last("known")}
    result = route_image_pushed(_event(), config, last_builds=lookups.get, correlation_id="corr", now=NOW)
    requests = {r.target: r for r in result.accepted}
    assert requests["known"].source.commit == COMMIT
    assert requests["known"].source.ref == "refs/heads/main"
    assert "sha-c72d62b" in requests["known"].image.tags
    assert requests["unknown"].source.commit is None
    assert requests["unknown"].source.ref == "refs/heads/master"
    assert requests["unknown"].image.tags == ["master", "latest"]  # no sha-* tag without a commit
    assert [(i.target, i.reason.split(",")[0]) for i in result.ignored] == [
        ("globs", "no build of its default branch is recorded"),
        ("two", "no build of its default branch is recorded"),
    ]
    assert all("set default_branch" in i.reason for i in result.ignored)
    assert "unknown: no build of master is recorded yet; rebuilding its head" in result.notes
    for request in requests.values():
        assert request.trigger.kind == "base-image"
        assert request.trigger.correlation_id == "corr"
    assert result.scheduled == {}


def test_a_stale_record_is_not_used() -> None:
    config = _config([_target("web", "python:3.12-slim", default_branch="trunk", branches=["trunk", "main"])])
    stale = {"web": _last("web", ref="refs/heads/main")}  # before default_branch was configured
    result = route_image_pushed(_event(), config, last_builds=stale.get, correlation_id="c", now=NOW)
    [request] = result.accepted
    assert (request.source.ref, request.source.commit) == ("refs/heads/trunk", None)
    moved = {"web": _last("web", ref="refs/heads/trunk", repo_url="https://github.com/elsewhere/web.git")}
    result = route_image_pushed(_event(), config, last_builds=moved.get, correlation_id="c", now=NOW)
    assert result.accepted[0].source.commit is None


def test_ids_are_stable_per_update_and_differ_from_the_push_build() -> None:
    from shared.intake.routing import request_for_commit
    from shared.model.build_request import Trigger

    config = _config([_target("web", "python:3.12-slim")])
    last = {"web": _last("web")}.get
    first = route_image_pushed(_event(), config, last_builds=last, correlation_id="a", now=NOW).accepted[0]
    redelivered = route_image_pushed(
        _event(received_at=NOW + timedelta(minutes=5)), config, last_builds=last, correlation_id="b", now=NOW
    ).accepted[0]
    assert first.id == redelivered.id
    newer = route_image_pushed(
        _event(digest="sha256:" + "f" * 64), config, last_builds=last, correlation_id="c", now=NOW
    ).accepted[0]
    assert newer.id != first.id
    push = request_for_commit(
        config,
        config.targets[0],
        ref="refs/heads/main",
        commit=COMMIT,
        repo_url="https://github.com/contoso/web.git",
        trigger=Trigger(kind="push", provider="github", received_at=NOW, correlation_id="p"),
    )
    assert push.id != first.id
    assert push.source == first.source and push.image == first.image  # the same build, rebuilt


def test_without_digest_the_push_time_identifies_the_update() -> None:
    config = _config([_target("web", "python:3.12-slim")])
    at = NOW - timedelta(hours=1)
    one = route_image_pushed(
        _event(digest=None, pushed_at=at), config, last_builds=_none, correlation_id="c", now=NOW
    )
    two = route_image_pushed(
        _event(digest=None, pushed_at=at, delivery_id=None),
        config,
        last_builds=_none,
        correlation_id="d",
        now=NOW,
    )
    later = route_image_pushed(
        _event(digest=None, pushed_at=at + timedelta(seconds=1)),
        config,
        last_builds=_none,
        correlation_id="e",
        now=NOW,
    )
    assert one.accepted[0].id == two.accepted[0].id != later.accepted[0].id
    unknown = route_image_pushed(
        _event(digest=None, delivery_id=None), config, last_builds=_none, correlation_id="f", now=NOW
    )
    assert not unknown.accepted and "no digest, time or id" in unknown.ignored[0].reason


def test_untagged_pushes_never_fan_out() -> None:
    config = _config([_target("web", "python:3.12-slim"), _target("pinned", f"python@{DIGEST}")])
    result = route_image_pushed(_event(tag=None), config, last_builds=_none, correlation_id="c", now=NOW)
    assert not result.accepted
    assert "only the tagged push triggers rebuilds" in result.ignored[0].reason


def test_a_fan_out_over_the_limit_is_spread_not_dropped() -> None:
    targets = [_target(f"t{i:02d}", "python:3.12-slim") for i in range(25)]
    config = _config(targets, rebuilds={"max_burst": 10, "spread_seconds": 30})
    result = route_image_pushed(_event(), config, last_builds=_none, correlation_id="c", now=NOW)
    assert len(result.accepted) == 25
    order = [r.id for r in result.accepted]
    assert set(result.scheduled) == set(order[10:])
    times = [result.scheduled[i] for i in order[10:]]
    assert times == sorted(times) and times[0] > NOW
    assert times[0] == NOW + timedelta(seconds=30) and times[-1] == NOW + timedelta(seconds=60)
    assert any("25 rebuilds exceed rebuilds.max_burst (10)" in note for note in result.notes)


def test_the_limit_covers_a_whole_batch() -> None:
    config = _config(
        [_target(f"t{i}", "python:3.12-slim", "node:20") for i in range(3)], rebuilds={"max_burst": 4}
    )
    events = [_event(), _event(repository="library/node", tag="20", digest="sha256:" + "1" * 64), _event()]
    result = route_image_pushes(events, config, last_builds=_none, correlation_id="c", now=NOW)
    assert len(result.accepted) == 6  # three targets, two updates; the repeated event adds nothing
    assert len(result.scheduled) == 2


def test_default_branch_of() -> None:
    config = _config(
        [
            _target("a", branches=["main"]),
            _target("b", branches=["release/*", "develop"]),
            _target("c", branches=["**"], default_branch="trunk"),
            _target("d", branches=["feature/*"]),
            _target("e", branches=["develop", "main"]),
        ]
    )
    # The one plain filter is the default; of several plain ones none is guessed (issue #17 item 5:
    # the first, develop, used to be rebuilt with `latest`).
    assert [default_branch_of(t) for t in config.targets] == ["main", "develop", "trunk", None, None]
    # The recorded last build reports the default to a rebuild; a configured one still wins.
    main = _last("e", ref="refs/heads/main")
    assert [default_branch_of(t, main) for t in config.targets] == ["main", "main", "trunk", "main", "main"]
    recorded = _last("e", ref="refs/heads/main", default_branch="main")
    assert recorded.reported_default == "main"


def test_a_rebuild_moves_latest_only_on_the_default_branch() -> None:
    # Two plain branch filters, develop first: no record means no rebuild (not develop's head
    # tagged latest); a record of main rebuilds main, the branch the push was routed as default.
    config = _config([_target("web", "python:3.12-slim", branches=["develop", "main"])])
    result = route_image_pushed(_event(), config, last_builds=_none, correlation_id="c", now=NOW)
    assert result.accepted == []
    assert "set default_branch" in result.ignored[0].reason
    recorded = {"web": _last("web", ref="refs/heads/main", default_branch="main")}
    routed = route_image_pushed(_event(), config, last_builds=recorded.get, correlation_id="c", now=NOW)
    [request] = routed.accepted
    assert request.source.ref == "refs/heads/main" and "latest" in request.image.tags
    assert request.source.default_branch == "main"
    # A record of a branch that is not the configured default is not rebuilt with latest.
    config = _config(
        [_target("web", "python:3.12-slim", branches=["develop", "main"], default_branch="main")]
    )
    develop = {"web": _last("web", ref="refs/heads/develop", default_branch="develop")}
    routed = route_image_pushed(_event(), config, last_builds=develop.get, correlation_id="c", now=NOW)
    [request] = routed.accepted
    assert (request.source.ref, request.source.commit) == ("refs/heads/main", None)


def test_image_reference_properties() -> None:
    reference = ImageReference("docker.io", "library/python", "3.12", None)
    assert reference.name == "docker.io/library/python"
    assert _event().image == "docker.io/library/python:3.12-slim"


# --- the loop: push → dispatch → record → base image push → rebuild ---------------------------

LOOP_CONFIG = SlipwayConfig.model_validate(
    {
        "registry": "slipway.azurecr.io",
        "targets": [
            {
                "name": "azure-test",
                "repo": "https://github.com/dougbu/AzureTest",
                "image": "dougbu/azure-test",
                "branches": ["master", "feature/*"],
                "tags": ["v*"],
                "base_images": ["jolovcr.azurecr.io/samples/nginx:latest"],
            }
        ],
    }
)


@pytest.fixture(params=["blob", "folder"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "blob":
        azurite: AzuriteServer = request.getfixturevalue("azurite")
        return BlobStateStore(azurite.new_container("state"))
    return FolderStateStore(tmp_path / "state")


class Loop:
    def __init__(self, tmp_path: Path, state: StateStore, config: SlipwayConfig = LOOP_CONFIG) -> None:
        self.config = config
        self.queue = LocalQueue(tmp_path / "queue.sqlite3", clock=lambda: NOW)
        self.state = state
        self.dispatcher = Dispatcher(
            config=lambda: self.config,
            ledger=FolderLedger(tmp_path / "ledger"),
            backend=DryRunBackend(),
            settings={},
            clock=lambda: NOW,
            state=state,
        )

    def context(self) -> Any:
        from shared.intake.receivers.pipeline import ReceiverContext

        return ReceiverContext(
            settings={**SETTINGS, "GITHUB_WEBHOOK_SECRET": github.SECRET},
            config=lambda: self.config,
            queue=lambda: self.queue,
            clock=lambda: NOW,
            state=lambda: self.state,
        )

    def push(self, ref: str = "refs/heads/master") -> None:
        payload = github.fixture_json("push-branch-signed-aspnet.json")
        payload["ref"] = ref
        resp = receive_github(github.signed_request(json.dumps(payload).encode()), self.context())
        assert resp.status == 202, resp.body

    def base_image_pushed(self) -> list[BuildRequest]:
        resp = receive_eventgrid(
            eventgrid_request(as_array("ImagePushed-eventgridschema-restspec.json")), self.context()
        )
        assert resp.status == 202, resp.body
        return [BuildRequest.from_json(m.body) for m in self.queue.peek()]

    def dispatch_all(self) -> list[Outcome]:
        outcomes = []
        for message in self.queue.receive(max_count=10):
            outcomes.append(self.dispatcher.dispatch(message.body, message_id=message.message_id).outcome)
            self.queue.complete(message)
        return outcomes


def test_a_base_image_update_rebuilds_the_recorded_commit(tmp_path: Path, state: StateStore) -> None:
    loop = Loop(tmp_path, state)
    loop.push()
    assert loop.dispatch_all() == [Outcome.DISPATCHED]
    recorded = read_last_build(state, "azure-test")
    assert recorded is not None and (recorded.commit, recorded.ref) == (COMMIT, "refs/heads/master")
    assert recorded.repo_url == "https://github.com/dougbu/AzureTest.git"

    [rebuild] = loop.base_image_pushed()
    assert (rebuild.source.commit, rebuild.source.ref, rebuild.trigger.kind) == (
        COMMIT,
        "refs/heads/master",
        "base-image",
    )
    spec = render_run(rebuild, LOOP_CONFIG, RunSecrets())
    assert f"https://github.com/dougbu/AzureTest.git#{COMMIT}" in spec.scripts["build.sh"]
    assert loop.dispatch_all() == [Outcome.DISPATCHED]
    # A rebuild records nothing: the last build is still the push.
    assert read_last_build(state, "azure-test") == recorded

    # Event Grid delivers the same update again: the same request, which the ledger absorbs.
    loop.queue.duplicate_detection_window = timedelta(0)
    [again] = loop.base_image_pushed()
    assert again.id == rebuild.id
    assert loop.dispatch_all() == [Outcome.DUPLICATE]


def test_without_a_record_the_branch_head_is_rebuilt(tmp_path: Path, state: StateStore) -> None:
    loop = Loop(tmp_path, state)
    loop.push("refs/heads/feature/x")  # not the default branch (master): not recorded
    assert loop.dispatch_all() == [Outcome.DISPATCHED]
    assert read_last_build(state, "azure-test") is None

    [rebuild] = loop.base_image_pushed()
    assert rebuild.source.commit is None
    assert rebuild.source.ref == "refs/heads/master"  # the one plain name in the branch filters
    assert "latest" in rebuild.image.tags
    spec = render_run(rebuild, LOOP_CONFIG, RunSecrets())
    script = spec.scripts["build.sh"]
    assert "https://github.com/dougbu/AzureTest.git#refs/heads/master" in script
    assert "org.opencontainers.image.revision" not in script
    assert loop.dispatch_all() == [Outcome.DISPATCHED]


def test_without_a_record_two_plain_filters_rebuild_nothing(tmp_path: Path, state: StateStore) -> None:
    # Which of master and develop is the default no one says: nothing is rebuilt (the first plain
    # filter used to be, and took `latest`), until default_branch says it.
    target = LOOP_CONFIG.targets[0]
    ambiguous = LOOP_CONFIG.model_copy(
        update={"targets": [target.model_copy(update={"branches": ["develop", "master", "feature/*"]})]}
    )
    loop = Loop(tmp_path, state, ambiguous)
    resp = receive_eventgrid(
        eventgrid_request(as_array("ImagePushed-eventgridschema-restspec.json")), loop.context()
    )
    assert resp.status == 200 and "set default_branch" in json.dumps(resp.body)
    configured = ambiguous.model_copy(
        update={"targets": [ambiguous.targets[0].model_copy(update={"default_branch": "master"})]}
    )
    (tmp_path / "configured").mkdir()
    [rebuild] = Loop(tmp_path / "configured", state, configured).base_image_pushed()
    assert (rebuild.source.ref, rebuild.source.commit) == ("refs/heads/master", None)
    assert "latest" in rebuild.image.tags


def test_tags_are_not_recorded(tmp_path: Path, state: StateStore) -> None:
    loop = Loop(tmp_path, state)
    loop.push("refs/tags/v1.0.0")
    loop.dispatch_all()
    assert read_last_build(state, "azure-test") is None


def test_a_spread_fan_out_reaches_the_queue_as_scheduled_messages(tmp_path: Path) -> None:
    from shared.intake.receivers.pipeline import ReceiverContext

    config = _config(
        [_target(f"t{i}", "jolovcr.azurecr.io/samples/nginx:latest") for i in range(5)],
        rebuilds={"max_burst": 2, "spread_seconds": 45},
    )
    queue = LocalQueue(tmp_path / "q.sqlite3", clock=lambda: NOW)
    ctx = ReceiverContext(settings=SETTINGS, config=lambda: config, queue=lambda: queue, clock=lambda: NOW)
    resp = receive_eventgrid(eventgrid_request(as_array("ImagePushed-eventgridschema-restspec.json")), ctx)
    assert resp.status == 202
    accepted = resp.body["accepted"]
    assert [a.get("scheduled_at") for a in accepted] == [
        None,
        None,
        (NOW + timedelta(seconds=45)).isoformat(),
        (NOW + timedelta(seconds=45)).isoformat(),
        (NOW + timedelta(seconds=90)).isoformat(),
    ]
    assert queue.count() == 2  # scheduled messages are not receivable yet
    messages = queue.peek()
    assert len(messages) == 5 and sum(m.is_scheduled for m in messages) == 3

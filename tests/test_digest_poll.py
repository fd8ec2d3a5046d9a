"""Base-image digest polling against a real OCI registry (Debian's docker-registry).

The registry is real, the bearer challenge goes through a loopback token realm in front of it,
ACR's Entra ID token exchange through a loopback HTTPS fake; the queue is the local SQLite queue
with Service Bus duplicate detection, the state store a folder. Only the clock is controlled.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.functions.timer import TimerRequest

from shared.app.runtime import Runtime, set_runtime
from shared.intake.base_images import route_image_pushed
from shared.intake.digest_poll import (
    DigestRecord,
    RegistryBackoff,
    image_key,
    poll_base_images,
    polled_images,
    registry_clients,
    registry_key,
)
from shared.model.config import SlipwayConfig, parse_config
from shared.model.events import ImagePushedEvent
from shared.platform.oci import AcrTokenProvider, RegistryClient
from shared.platform.queue.local import LocalQueue
from shared.platform.state import FolderStateStore, StateStore
from tests.support.registry import FakeAadCredential, FakeAcr, OciRegistry, TokenServer
from tests.support.sending import UnreachableQueue, queued_bodies, store_last_build

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
COMMIT = "c72d62bc4e992806a012ccaca139a8a6ef41a07c"


def _config(*base_images: str, targets: Sequence[str] = ("web", "api"), extra: str = "") -> SlipwayConfig:
    listed = "".join(f"      - {image}\n" for image in base_images)
    text = "registry: slipway.azurecr.io\n" + extra + "targets:\n"
    for name in targets:
        text += (
            f"  - name: {name}\n    repo: https://github.com/contoso/{name}\n    image: contoso/{name}\n"
            f"    base_images:\n{listed}"
        )
    return parse_config(text, source="slipway.yaml")


def _record(state: StateStore, image: str) -> DigestRecord:
    found = state.get(image_key(image))
    assert found is not None
    return DigestRecord.model_validate(found.value)


def _poll(config: SlipwayConfig, at: datetime, state: StateStore, queue: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("clients", registry_clients({}))
    return poll_base_images(config, now=at, state=state, queue=queue, **kwargs)


def test_first_sighting_records_then_a_moved_tag_rebuilds_once(
    oci_registry: OciRegistry, state: StateStore, queue: LocalQueue
) -> None:
    repo = oci_registry.new_repo("base")
    first = oci_registry.push_image(repo, "1.0")
    image = f"{oci_registry.host}/{repo}:1.0"
    config = _config(image)
    last = store_last_build(state, "web", commit=COMMIT, at=T0 - timedelta(days=1))

    seen = _poll(config, T0, state, queue)
    assert [(p.image, p.outcome, p.digest) for p in seen.images] == [(image, "first-seen", first)]
    assert seen.queued == [] and queued_bodies(queue) == [] and seen.errors == []
    assert _record(state, image).digest == first

    unchanged = _poll(config, T0 + timedelta(minutes=15), state, queue)
    assert [p.outcome for p in unchanged.images] == ["unchanged"] and queued_bodies(queue) == []

    moved = oci_registry.move_tag(repo, "1.0")
    changed = _poll(config, T0 + timedelta(minutes=30), state, queue)
    assert [(p.outcome, p.digest, p.previous) for p in changed.images] == [("changed", moved, first)]
    messages = {m["target"]: m for m in queued_bodies(queue)}
    assert set(messages) == {"web", "api"}  # one image, polled once, rebuilds both dependents
    assert messages["web"]["source"]["commit"] == COMMIT
    assert messages["api"]["source"]["commit"] is None  # nothing recorded: the branch head
    assert messages["web"]["trigger"] == {
        **messages["web"]["trigger"],
        "kind": "base-image",
        "provider": "registry-poll",
    }
    record = _record(state, image)
    assert (record.digest, record.previous_digest, record.changed_at) == (
        moved,
        first,
        T0 + timedelta(minutes=30),
    )

    # The ids are the ones a registry webhook reporting this push produces: the two coincide.
    webhook = ImagePushedEvent(
        provider="acr",
        delivery_id="d-1",
        received_at=T0,
        registry=oci_registry.host,
        repository=repo,
        tag="1.0",
        digest=moved,
    )
    lookup = {"web": last}.get
    routed = route_image_pushed(webhook, config, last_builds=lookup, correlation_id="hook", now=T0)
    assert {r.id for r in routed.accepted} == {m["id"] for m in messages.values()}

    again = _poll(config, T0 + timedelta(minutes=45), state, queue)
    assert [p.outcome for p in again.images] == ["unchanged"]
    assert len(queued_bodies(queue)) == 2


def test_each_image_is_polled_once_through_the_bearer_challenge(
    oci_registry: OciRegistry, token_server: TokenServer, state: StateStore, queue: LocalQueue
) -> None:
    one, two = oci_registry.new_repo("base"), oci_registry.new_repo("base")
    oci_registry.push_image(one, "v1")
    oci_registry.push_image(two, "v1")
    images = [f"{token_server.host}/{one}:v1", f"{token_server.host}/{two}:v1"]
    config = _config(*images, targets=("web", "api", "worker"))
    summary = _poll(config, T0, state, queue)
    assert sorted(p.outcome for p in summary.images) == ["first-seen", "first-seen"]
    heads = [r for r in token_server.requests if r.method == "HEAD"]
    authorised = [r for r in heads if r.headers.get("authorization", "").startswith("Bearer ")]
    assert len(authorised) == 2  # two images, three targets each: each image once
    assert all("authorization" not in r.headers for r in token_server.token_requests)  # anonymous
    assert sorted(s for r in token_server.token_requests for s in r.params["scope"]) == sorted(
        [f"repository:{one}:pull", f"repository:{two}:pull"]
    )
    accept = authorised[0].headers["accept"]
    for media_type in (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ):
        assert media_type in accept


def test_a_registry_that_is_down_is_reported_and_nothing_changes(
    fresh_oci_registry: OciRegistry, state: StateStore, queue: LocalQueue
) -> None:
    registry = fresh_oci_registry
    a, b = registry.new_repo("base"), registry.new_repo("base")
    digest_a = registry.push_image(a, "v1")
    registry.push_image(b, "v1")
    images = sorted([f"{registry.host}/{a}:v1", f"{registry.host}/{b}:v1"])
    config = _config(*images)
    _poll(config, T0, state, queue)
    registry.stop()

    down = _poll(config, T0 + timedelta(minutes=15), state, queue)
    assert [p.outcome for p in down.images] == ["failed", "skipped"]  # the rest of that registry waits
    assert "connection failed" in (down.images[0].detail or "")
    assert down.errors and down.queued == [] and queued_bodies(queue) == []
    record = _record(state, images[0])
    assert record.error and record.error_at == T0 + timedelta(minutes=15)
    assert _record(state, f"{registry.host}/{a}:v1").digest == digest_a  # still the last seen digest


def test_a_missing_image_fails_alone(oci_registry: OciRegistry, state: StateStore, queue: LocalQueue) -> None:
    repo = oci_registry.new_repo("base")
    oci_registry.push_image(repo, "v1")
    present, missing = f"{oci_registry.host}/{repo}:v1", f"{oci_registry.host}/{repo}:nope"
    summary = _poll(_config(missing, present), T0, state, queue)
    outcomes = {p.image: p.outcome for p in summary.images}
    assert outcomes == {missing: "failed", present: "first-seen"}
    assert any("HTTP 404" in e and ":nope" in e for e in summary.errors)
    assert _record(state, missing).digest is None
    recovered = _poll(_config(present), T0 + timedelta(minutes=15), state, queue)
    assert [p.outcome for p in recovered.images] == ["unchanged"]


def test_retry_after_is_honoured_and_stored(
    oci_registry: OciRegistry, token_server: TokenServer, state: StateStore, queue: LocalQueue
) -> None:
    repo = oci_registry.new_repo("base")
    oci_registry.push_image(repo, "v1")
    oci_registry.push_image(repo, "v2")
    images = sorted([f"{token_server.host}/{repo}:v1", f"{token_server.host}/{repo}:v2"])
    config = _config(*images)
    token_server.fail_next(429, headers={"Retry-After": "600"})
    limited = _poll(config, T0, state, queue)
    assert [p.outcome for p in limited.images] == ["rate-limited", "skipped"]
    assert "HTTP 429" in limited.errors[0]
    found = state.get(registry_key(token_server.host))
    assert found is not None
    backoff = RegistryBackoff.model_validate(found.value)
    assert backoff.until == T0 + timedelta(seconds=600)
    assert queued_bodies(queue) == [] and _record(state, images[0]).digest is None

    asked = len(token_server.requests)
    waiting = _poll(config, T0 + timedelta(minutes=5), state, queue)
    assert [p.outcome for p in waiting.images] == ["skipped", "skipped"]
    assert len(token_server.requests) == asked  # the registry is left alone until then

    after = _poll(config, T0 + timedelta(minutes=11), state, queue)
    assert [p.outcome for p in after.images] == ["first-seen", "first-seen"]


def test_pinned_images_are_not_polled() -> None:
    digest = "sha256:" + "a" * 64
    config = _config(f"python:3.12@{digest}", f"python@{digest}", "python:3.12-slim", "ghcr.io/o/i:1")
    grouped = polled_images(config)
    assert {registry: [str(r) for r in refs] for registry, refs in grouped.items()} == {
        "docker.io": ["docker.io/library/python:3.12-slim"],
        "ghcr.io": ["ghcr.io/o/i:1"],
    }


def test_the_digest_moves_on_only_once_the_rebuilds_are_queued(
    oci_registry: OciRegistry, state: StateStore, queue: LocalQueue
) -> None:
    repo = oci_registry.new_repo("base")
    first = oci_registry.push_image(repo, "v1")
    image = f"{oci_registry.host}/{repo}:v1"
    config = _config(image)
    _poll(config, T0, state, queue)
    moved = oci_registry.move_tag(repo, "v1")
    failed = _poll(config, T0 + timedelta(minutes=15), state, UnreachableQueue())
    assert [p.outcome for p in failed.images] == ["changed"]
    assert any("namespace unreachable" in e for e in failed.errors)
    assert _record(state, image).digest == first
    retried = _poll(config, T0 + timedelta(minutes=30), state, queue)
    assert [p.outcome for p in retried.images] == ["changed"] and len(queued_bodies(queue)) == 2
    assert _record(state, image).digest == moved
    twice = _poll(config, T0 + timedelta(minutes=30), FolderStateStore(Path(state.root)), queue)  # type: ignore[attr-defined]
    assert [p.outcome for p in twice.images] == ["unchanged"] and len(queued_bodies(queue)) == 2


def test_acr_through_entra_id_and_the_token_exchange(
    fake_acr: FakeAcr, state: StateStore, queue: LocalQueue
) -> None:
    first = fake_acr.add_image("base/dotnet", "8.0")
    image = f"{fake_acr.login_server}/base/dotnet:8.0"
    config = _config(image)

    def acr_client(registry: str) -> RegistryClient:
        assert registry == fake_acr.login_server
        provider = AcrTokenProvider(fake_acr.credential, fake_acr.url, verify=fake_acr.ca_path)
        return RegistryClient(fake_acr.url, token_provider=provider, verify=fake_acr.ca_path)

    assert [p.outcome for p in _poll(config, T0, state, queue, clients=acr_client).images] == ["first-seen"]
    fake_acr.images[("base/dotnet", "8.0")] = b'{"schemaVersion":2,"rebuilt":true}'
    summary = _poll(config, T0 + timedelta(minutes=15), state, queue, clients=acr_client)
    [poll] = summary.images
    assert (poll.outcome, poll.previous) == ("changed", first)
    assert len(queued_bodies(queue)) == 2
    assert fake_acr.credential.scopes[0] == ("https://containerregistry.azure.net/.default",)
    assert fake_acr.calls("/oauth2/exchange") and fake_acr.calls("/oauth2/token")


def test_the_default_clients_by_registry() -> None:
    credential = FakeAadCredential("entra-token")
    clients = registry_clients({}, credential=credential)
    assert clients("127.0.0.1:5000").base_url == "http://127.0.0.1:5000"
    assert clients("localhost:5000").base_url == "http://localhost:5000"
    assert clients("mcr.microsoft.com").base_url == "https://mcr.microsoft.com"
    assert clients("docker.io").base_url == "https://registry-1.docker.io"
    acr = clients("contoso.azurecr.io")
    assert acr.base_url == "https://contoso.azurecr.io"
    assert credential.scopes == []  # no token is asked for before a request needs one


def test_the_timer_function_polls_with_the_runtime(
    oci_registry: OciRegistry, tmp_path: Path, queue: LocalQueue
) -> None:
    from handlers import schedules

    repo = oci_registry.new_repo("base")
    oci_registry.push_image(repo, "v1")
    image = f"{oci_registry.host}/{repo}:v1"
    (tmp_path / "slipway.yaml").write_text(
        "registry: slipway.azurecr.io\ntargets:\n  - name: web\n    repo: https://github.com/contoso/web\n"
        f"    image: contoso/web\n    base_images: [{image}]\n"
    )
    state = FolderStateStore(tmp_path / "state")
    settings = {"SLIPWAY_CONFIG": str(tmp_path / "slipway.yaml"), "BUILD_QUEUE": "build-requests"}
    set_runtime(Runtime(settings, app_root=tmp_path, queue=queue, state=state))
    try:
        timer = schedules.base_image_poll.build().get_user_function()
        timer(TimerRequest(past_due=False))
        assert _record(state, image).digest is not None and queued_bodies(queue) == []
        oci_registry.move_tag(repo, "v1")
        timer(TimerRequest(past_due=True))
        [message] = queued_bodies(queue)
        assert message["target"] == "web" and message["trigger"]["kind"] == "base-image"
    finally:
        set_runtime(None)

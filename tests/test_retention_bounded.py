"""The timer's time bound on image retention (SLIPWAY_IMAGE_PRUNE_MAX_SECONDS), the registry of
``bench.retention_pass`` (generator and fast listing) with a pass through it, and the client's
environment read once. Clocks are controlled: nothing here is timed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme

from bench.retention_pass_data import BenchRegistry, FastListing, builds_for, repository_names, rule_for, seed
from shared.model.config.slipway_config import SlipwayConfig
from shared.model.retention_rules import ImageRule
from shared.pruning.retention import prune
from shared.pruning.retention.acr_backend import AcrRetentionBackend
from shared.pruning.retention.prune import PruneReport, prune_images, run_scheduled_prune
from tests.support.acr_dataplane import AcrDataPlane, acr_dataplane  # noqa: F401 (fixture)
from tests.support.loopback_server import loopback_tls, serve_loopback

OLD = datetime.now(UTC) - timedelta(days=40)
RULES = [ImageRule(repositories=["app", "team/*"], keep_tags=["latest"], min_age="7d")]
# The setting's name and default as the README states them (not read from the code).
SETTING = "SLIPWAY_IMAGE_PRUNE_MAX_SECONDS"
README_DEFAULT = 240


def backend(plane: AcrDataPlane) -> AcrRetentionBackend:
    return AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)


class Clock:
    """Time that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


class SlowDeletes(AcrRetentionBackend):
    """Each DELETE takes ``step`` seconds of the controlled clock."""

    clock: Clock
    step = 0.0

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.clock.now += self.step
        super().delete_manifest(repository, digest)


def slow(plane: AcrDataPlane, clock: Clock, step: float) -> SlowDeletes:
    made = SlowDeletes.connect(plane.url, plane.credential, connection_verify=plane.ca_path)
    assert isinstance(made, SlowDeletes)
    made.clock, made.step = clock, step
    return made


def references_intact(plane: AcrDataPlane) -> None:
    """Nothing left in the registry lists (an index) or names (a subject) a manifest that is gone."""
    for repository in plane.repositories.values():
        for stored in repository.manifests.values():
            content = json.loads(stored.body)
            for child in content.get("manifests", []):
                assert child["digest"] in repository.manifests
            if "subject" in content:
                assert content["subject"]["digest"] in repository.manifests


def builds(plane: AcrDataPlane, repo: str, count: int) -> list[str]:
    indexes = []
    for _ in range(count):
        index, _children = plane.add_index(repo, created=OLD)
        indexes.append(index)
    plane.tag(repo, "latest", indexes[-1], updated=OLD)
    return indexes


def test_past_the_bound_the_pass_stops_between_batches_and_the_next_run_finishes(
    acr_dataplane: AcrDataPlane,  # noqa: F811
) -> None:
    plane = acr_dataplane
    indexes = builds(plane, "app", 8)  # 7 doomed indexes: wave 0 of 7, then 28 children
    everything = set(plane.repositories["app"].manifests)
    clock = Clock()
    first = prune_images(slow(plane, clock, 100.0), RULES, dry_run=False, max_seconds=50, clock=clock)
    assert first.stopped_early and first.ok
    outcome = first.repositories[0]
    assert outcome.plan is not None
    assert sorted(outcome.deleted) == sorted(indexes[:-1])  # the first batch, then the bound
    not_done = set(outcome.plan.deletions) - set(outcome.deleted)
    assert len(not_done) == 28
    assert all(prune.STOPPED_NOTE in outcome.skipped[d] for d in not_done)
    assert set(plane.repositories["app"].manifests) == everything - set(outcome.deleted)
    references_intact(plane)
    listed = first.to_json()
    assert listed["stopped_early"] is True
    statuses = {m["status"] for m in listed["repositories"][0]["manifests"] if m["digest"] in not_done}
    assert statuses == {"skipped"}

    second = prune_images(backend(plane), RULES, dry_run=False, max_seconds=50, clock=Clock())
    assert not second.stopped_early and second.ok
    assert set(second.repositories[0].deleted) == not_done
    references_intact(plane)
    latest = plane.repositories["app"].tags["latest"].digest
    children = json.loads(plane.repositories["app"].manifests[latest].body)["manifests"]
    kept = {latest, *(c["digest"] for c in children)}
    assert set(plane.repositories["app"].manifests) == kept


def test_past_the_bound_no_further_repository_is_read(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    plane = acr_dataplane
    builds(plane, "app", 3)
    builds(plane, "team/api", 3)
    builds(plane, "team/web", 3)
    clock = Clock()
    # app's 10 deletions take 200 s (2 indexes at 1040, still inside; then 8 children): done,
    # and then nothing new starts.
    report = prune_images(slow(plane, clock, 20.0), RULES, dry_run=False, max_seconds=50, clock=clock)
    assert report.stopped_early
    assert [r.repository for r in report.repositories] == ["app"]
    assert report.repositories[0].plan is not None and len(report.repositories[0].deleted) == 10
    assert report.not_reached == ["team/api", "team/web"]
    assert len(plane.repositories["team/api"].manifests) == 15
    assert len(plane.repositories["team/web"].manifests) == 15  # untouched
    references_intact(plane)


def test_without_a_bound_or_within_it_the_pass_is_complete(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    plane = acr_dataplane
    builds(plane, "app", 4)
    clock = Clock()
    report = prune_images(slow(plane, clock, 1.0), RULES, dry_run=False, max_seconds=50, clock=clock)
    assert not report.stopped_early and report.not_reached == []
    assert report.summary()["deleted"] == 15
    assert report.to_json()["stopped_early"] is False


def _events(caplog: pytest.LogCaptureFixture) -> list[tuple[int, dict[str, Any]]]:
    """(level, fields) of each structured event."""
    return [(r.levelno, r.slipway) for r in caplog.records if hasattr(r, "slipway")]


def test_the_timer_reads_the_bound_and_logs_a_stopped_pass_as_a_warning(
    acr_dataplane: AcrDataPlane,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plane = acr_dataplane
    builds(plane, "app", 8)
    clock = Clock()
    monkeypatch.setattr(prune, "backend_from_settings", lambda *a, **k: slow(plane, clock, 7.0))
    config = SlipwayConfig(registry=plane.login_server, images=RULES)
    caplog.set_level(logging.INFO)
    # 7 deletes of 7 s each: past 40 s, not past the README's default 240 s.
    report = run_scheduled_prune(config, {SETTING: " 40 "}, clock=clock)
    assert report is not None and report.stopped_early
    summary = [(level, e) for level, e in _events(caplog) if e["event"] == "image_prune"]
    assert len(summary) == 1 and summary[0][0] == logging.WARNING
    assert summary[0][1]["stopped_early"] is True and summary[0][1]["deleted"] == 7

    caplog.clear()
    again = run_scheduled_prune(config, {}, clock=clock)
    assert again is not None and not again.stopped_early
    level, event = next((level, e) for level, e in _events(caplog) if e["event"] == "image_prune")
    assert level == logging.INFO and event["stopped_early"] is False
    assert prune.max_seconds_setting({}) == README_DEFAULT


@pytest.mark.parametrize("value", ["0", "-5", "4m", "1.5"])
def test_a_bad_bound_fails_before_anything_is_read(
    value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    contacted = lambda *a, **k: pytest.fail("the registry was contacted")  # noqa: E731
    monkeypatch.setattr(prune, "backend_from_settings", contacted)
    config = SlipwayConfig(registry="myregistry.azurecr.io", images=RULES)
    caplog.set_level(logging.INFO)
    with pytest.raises(ValueError, match=f"{SETTING} .*{value!r}"):
        run_scheduled_prune(config, {SETTING: value})
    assert [e["event"] for _, e in _events(caplog)] == ["image_prune_failed"]


# -- the benchmark's registry ------------------------------------------------------------------


@pytest.fixture
def bench_registry(oci_test_ca: tuple[trustme.CA, str]) -> Iterator[BenchRegistry]:
    ca, ca_path = oci_test_ca
    plane = BenchRegistry(ca_path, repository_names(2), builds_for(200))
    with serve_loopback(plane.handle, tls=loopback_tls(ca)) as port:
        plane.port = port
        yield plane


def test_the_fast_listing_lists_what_the_plain_one_does(oci_test_ca: tuple[trustme.CA, str]) -> None:
    ca, ca_path = oci_test_ca
    now = datetime.now(UTC)
    listings = []
    for kind in (AcrDataPlane, FastListing):
        plane = kind(ca_path)
        plane.page_size = 7
        seed(plane, ["app-0000"], 12, now=now)
        if isinstance(plane, FastListing):
            plane.index_listings()
        with serve_loopback(plane.handle, tls=loopback_tls(ca)) as port:
            plane.port = port
            client = backend(plane)
            doomed = sorted(plane.repositories["app-0000"].manifests)[3]
            client.delete_manifest("app-0000", doomed)  # the fast listing forgets it too
            listed = client.list_manifests("app-0000")
        listings.append([(e.digest, e.media_type, e.config_media_type, e.references) for e in listed])
    assert listings[0] == listings[1] and len(listings[0]) == len(plane.repositories["app-0000"].manifests)


def test_the_benchmark_pass_deletes_what_its_plan_says(bench_registry: BenchRegistry) -> None:
    plane = bench_registry
    rule = rule_for(plane.builds)
    before = plane.remaining()
    dry = prune_images(backend(plane), [rule], dry_run=True)
    planned = {r.repository: set(r.plan.deletions) for r in dry.repositories if r.plan is not None}
    total = sum(len(m) for m in before.values())
    share = sum(len(d) for d in planned.values()) / total
    assert 0.35 < share < 0.65, share  # "about half", as the benchmark's docstring says
    report: PruneReport = prune_images(backend(plane), [rule], dry_run=False)
    assert report.ok and not report.stopped_early
    assert {r.repository: set(r.deleted) for r in report.repositories} == planned
    assert plane.remaining() == {repo: before[repo] - planned[repo] for repo in before}
    references_intact(plane)
    counts = plane.counts
    assert counts["delete"] == sum(len(d) for d in planned.values())
    plane.reset()  # the same manifests again: the floor replays the pass on them
    assert plane.remaining() == before and plane.counts == {}


def _session(made: AcrRetentionBackend) -> Any:
    """The ``requests`` session under the SDK client's pipeline."""
    return made.client._client._client._pipeline._transport.session  # type: ignore[attr-defined]


def test_the_client_reads_its_environment_once(
    acr_dataplane: AcrDataPlane,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plane = acr_dataplane
    plane.add_platform_image("app", created=OLD)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", plane.ca_path)  # trusted only through the environment
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = AcrRetentionBackend.connect(plane.url, plane.credential)
    assert len(direct.list_manifests("app")) == 1
    session = _session(direct)
    assert session.trust_env is False and not session.proxies
    monkeypatch.setenv("NO_PROXY", "")
    proxied = AcrRetentionBackend.connect(plane.url, plane.credential)
    session = _session(proxied)
    assert session.proxies.get("https") == "http://proxy.invalid:3128"

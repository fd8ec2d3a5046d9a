"""Bounded parallel deletes (issue 22.5): waves keep the order safe, the tag re-check runs before
every batch, and no more DELETEs are in flight than the ceiling acr purge uses."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model.retention_rules import ImageRule
from shared.pruning.retention.acr_backend import AcrRetentionBackend
from shared.pruning.retention.graph import ManifestNode, RepositoryGraph, TagNode
from shared.pruning.retention.planner import deletion_order
from shared.pruning.retention.prune import MAX_DELETE_CONCURRENCY, deletion_waves, prune_images
from tests.support.acr_dataplane import (  # noqa: F401 (fixture)
    AcrDataPlane,
    MovesLatestAtFirstDelete,
    acr_dataplane,
)
from tests.test_retention_planner import d

OLD = datetime.now(UTC) - timedelta(days=40)
RULES = [ImageRule(repositories=["app"], keep_tags=["latest"], min_age="7d")]
# Azure/acr-cli cmd/acr/purge.go (commit 774474b0361781874b818b9a62c93f993e5671f5):
# "maxPoolSize = 32 // The max number of parallel delete requests recommended by ACR server".
ACR_PURGE_MAX_POOL_SIZE = 32


def test_the_ceiling_is_acr_purges() -> None:
    assert MAX_DELETE_CONCURRENCY == ACR_PURGE_MAX_POOL_SIZE
    assert AcrRetentionBackend.delete_concurrency <= ACR_PURGE_MAX_POOL_SIZE


@st.composite
def graphs_and_deletions(draw: st.DrawFn) -> tuple[RepositoryGraph, set[str]]:
    count = draw(st.integers(1, 40))
    nodes: dict[str, ManifestNode] = {}
    digests: list[str] = []
    for position in range(count):
        digest = d(f"w{position}")
        earlier = digests[:position]
        children = tuple(draw(st.lists(st.sampled_from(earlier), max_size=4))) if earlier else ()
        subject = draw(st.one_of(st.none(), st.sampled_from(earlier))) if earlier else None
        nodes[digest] = ManifestNode(digest, children=children, subject=subject)
        digests.append(digest)
    return RepositoryGraph("app", nodes, {}), set(draw(st.lists(st.sampled_from(digests), unique=True)))


@settings(max_examples=300, deadline=None)
@given(graphs_and_deletions())
def test_a_wave_starts_only_when_everything_referencing_it_is_in_an_earlier_wave(
    case: tuple[RepositoryGraph, set[str]],
) -> None:
    graph, deleted = case
    order = deletion_order(graph, deleted)
    waves = deletion_waves(graph, order)
    assert sorted(d for wave in waves for d in wave) == sorted(deleted)
    assert all(waves)
    wave_of = {digest: n for n, wave in enumerate(waves) for digest in wave}
    for digest in deleted:
        for target in graph.references(digest):
            if target in deleted and target != digest:
                assert wave_of[digest] < wave_of[target]


class Watching(AcrRetentionBackend):
    """The SDK backend, counting DELETEs in flight and tag listings."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.tag_reads = 0

    def read_tags(self, repository: str) -> list[TagNode]:
        self.tag_reads += 1
        return super().read_tags(repository)

    def delete_manifest(self, repository: str, digest: str) -> None:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(0.02)  # long enough for the pool's other workers to start theirs
            super().delete_manifest(repository, digest)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_deletes_run_in_parallel_within_the_ceiling_and_recheck_each_batch(
    acr_dataplane: AcrDataPlane,  # noqa: F811
) -> None:
    plane = acr_dataplane
    plane.page_size = 100
    leftovers = [plane.add_platform_image("app", created=OLD) for _ in range(40)]  # one wave
    old, old_children = plane.add_index("app", created=OLD)  # index, then its children: two waves
    plane.tag("app", "v1", old, updated=OLD)
    live, live_children = plane.add_index("app", created=OLD)
    plane.tag("app", "latest", live, updated=OLD)
    sdk = AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)
    backend = Watching(sdk.client, sdk.registry)

    report = prune_images(backend, RULES, dry_run=False)

    assert report.ok, report.to_json()
    (outcome,) = report.repositories
    assert sorted(outcome.deleted) == sorted([*leftovers, old, *old_children])
    assert 1 < backend.most <= ACR_PURGE_MAX_POOL_SIZE
    # The index went before any child; the live image is whole.
    assert outcome.deleted.index(old) < min(outcome.deleted.index(c) for c in old_children)
    assert set(plane.repositories["app"].manifests) == {live, *live_children}
    # Waves: [40 leftovers + the old index] then [its 4 children]; batches of 32: 41 → 2, 4 → 1.
    # One tag listing per batch, after the one read_graph made: not one per deletion.
    assert backend.tag_reads == 1 + 3


def test_a_tag_moved_during_one_batch_saves_its_target_in_a_later_batch(
    acr_dataplane: AcrDataPlane,  # noqa: F811
) -> None:
    plane = acr_dataplane
    plane.page_size = 100
    for _ in range(40):
        plane.add_platform_image("app", created=OLD)
    live = plane.add_platform_image("app", created=OLD)
    plane.tag("app", "latest", live, updated=OLD)
    sdk = AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)
    dry = prune_images(sdk, RULES, dry_run=True)
    assert dry.repositories[0].plan is not None
    (wave,) = deletion_waves(sdk.read_graph("app"), dry.repositories[0].plan.deletions)
    first_batch, target = wave[:MAX_DELETE_CONCURRENCY], wave[-1]
    backend = MovesLatestAtFirstDelete(sdk.client, sdk.registry)
    backend.plane, backend.target = plane, target

    report = prune_images(backend, RULES, dry_run=False)

    assert backend.moved and report.ok, report.to_json()
    (outcome,) = report.repositories
    assert set(first_batch) <= set(outcome.deleted)  # sent before the move could be seen
    assert target not in outcome.deleted and "tag written during the pass" in outcome.skipped[target]
    assert target in plane.repositories["app"].manifests
    assert plane.repositories["app"].tags["latest"].digest == target

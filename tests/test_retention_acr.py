"""Image retention on ACR through the real azure-containerregistry SDK, against a loopback data plane."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.model.retention_rules import ImageRule
from shared.pruning.retention.acr_backend import AcrRetentionBackend
from shared.pruning.retention.prune import guess_api, prune_images
from tests.support.acr_dataplane import (  # noqa: F401 (fixture)
    AcrDataPlane,
    MovesLatestAtFirstDelete,
    acr_dataplane,
)

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
NOTATION = "application/vnd.cncf.notary.signature"
RULES = [ImageRule(repositories=["app", "team/*"], keep_tags=["latest", "v*"], keep_newest=1, min_age="7d")]


def backend(plane: AcrDataPlane) -> AcrRetentionBackend:
    return AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)


def resolves_fully(plane: AcrDataPlane, repo: str, digest: str) -> None:
    import json

    stored = plane.repositories[repo].manifests[digest]
    for child in json.loads(stored.body).get("manifests", []):
        resolves_fully(plane, repo, child["digest"])


def test_prune_on_acr_respects_locks_indexes_and_untags(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    plane = acr_dataplane
    latest, latest_children = plane.add_index("app", created=OLD)
    plane.tag("app", "latest", latest, updated=OLD)
    plane.tag("app", "build-9", latest, updated=OLD)  # dropped, but its manifest stays: untag
    old, old_children = plane.add_index("app", created=OLD)
    plane.tag("app", "build-1", old, updated=OLD - timedelta(days=2))
    newest_build = plane.add_platform_image("app", created=OLD)
    plane.tag("app", "build-2", newest_build, updated=OLD)  # keep_newest 1
    locked_image = plane.add_platform_image("app", created=OLD, locked=True)
    write_locked = plane.add_platform_image("app", created=OLD)
    plane.repositories["app"].manifests[
        write_locked
    ].write_enabled = False  # az acr update --write-enabled false
    locked_tag_image = plane.add_platform_image("app", created=OLD)
    plane.tag("app", "frozen", locked_tag_image, updated=OLD - timedelta(days=9), locked=True)
    leftover = plane.add_platform_image("app", created=OLD)
    young = plane.add_platform_image("app", created=NOW)
    # A Notation signature as an OCI 1.1 referrer (its own config type, so its JSON is read).
    signature = plane.add_referrer("app", latest, artifact_type=NOTATION, annotations={}, created=OLD)
    team_old = plane.add_platform_image("team/api", created=OLD)
    plane.tag("team/api", "sha-abc", team_old, updated=OLD - timedelta(days=1))
    team_new = plane.add_platform_image("team/api", created=OLD)
    plane.tag("team/api", "sha-def", team_new, updated=OLD)
    other = plane.add_platform_image("other", created=OLD)  # no rule matches: never touched

    dry = prune_images(backend(plane), RULES, dry_run=True)
    assert dry.ok and plane.deletes() == []
    assert {o.repository for o in dry.repositories} == {"app", "team/api"}

    report = prune_images(backend(plane), RULES, dry_run=False)
    assert report.ok, report.to_json()
    outcomes = {o.repository: o for o in report.repositories}
    app = plane.repositories["app"]
    assert sorted(outcomes["app"].deleted) == sorted([old, *old_children, leftover])
    assert outcomes["app"].untagged == ["build-9"]
    assert sorted(app.tags) == ["build-2", "frozen", "latest"]
    for digest in (
        latest,
        *latest_children,
        newest_build,
        locked_image,
        write_locked,
        locked_tag_image,
        young,
        signature,
    ):
        assert digest in app.manifests
    resolves_fully(plane, "app", latest)
    assert outcomes["team/api"].deleted == [team_old]
    assert other in plane.repositories["other"].manifests
    # Never a delete request for a locked manifest, and the index before its children.
    deleted_paths = [r.path for r in plane.deletes()]
    assert not any(locked_image in p or locked_tag_image in p for p in deleted_paths)
    order = outcomes["app"].deleted
    assert order.index(old) < min(order.index(c) for c in old_children)

    data = report.to_json()
    manifests = {m["digest"]: m for r in data["repositories"] for m in r["manifests"]}
    assert manifests[locked_image]["reason"] == "locked"
    assert manifests[write_locked]["reason"] == "locked"
    assert manifests[locked_tag_image]["reason"] == "tag frozen (locked)"
    assert manifests[newest_build]["reason"] == "tag build-2 (keep_newest 1)"
    assert manifests[signature]["action"] == "keep-referenced"
    assert manifests[latest_children[3]]["kind"] == "attestation"
    assert manifests[leftover]["status"] == "deleted"
    # The SDK authenticated through the token exchange, never with the Entra token itself.
    assert any(r.path == "/oauth2/exchange" for r in plane.requests)
    assert all(r.headers.get("authorization") != f"Bearer {plane.aad_token}" for r in plane.requests)


def test_acr_is_chosen_for_azurecr_hosts() -> None:
    assert guess_api("myacr.azurecr.io") == "acr"
    assert guess_api("https://myacr.azurecr.cn") == "acr"
    assert guess_api("ghcr.io") == "oci"
    assert guess_api("http://127.0.0.1:5000") == "oci"


def test_a_rollback_of_latest_mid_pass_keeps_the_manifest(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    """Issue 17.9 on ACR: ``latest`` moved onto a doomed index after the pass started deleting."""
    plane = acr_dataplane
    current, _ = plane.add_index("app", created=OLD)
    plane.tag("app", "latest", current, updated=OLD)
    rollback, rollback_children = plane.add_index("app", created=OLD)
    plane.tag("app", "build-1", rollback, updated=OLD - timedelta(days=3))
    newest = plane.add_platform_image("app", created=OLD)
    plane.tag("app", "build-2", newest, updated=OLD)  # keep_newest 1
    signature = plane.add_referrer(  # deleted first
        "app", rollback, artifact_type=NOTATION, annotations={}, created=OLD
    )
    sdk = backend(plane)
    watched = MovesLatestAtFirstDelete(sdk.client, sdk.registry)
    watched.plane, watched.target = plane, rollback

    report = prune_images(watched, RULES, dry_run=False)

    assert watched.moved and report.ok, report.to_json()
    (outcome,) = [o for o in report.repositories if o.repository == "app"]
    assert outcome.plan is not None and rollback in outcome.plan.deletions
    assert outcome.deleted == [signature]
    app = plane.repositories["app"]
    assert app.tags["latest"].digest == rollback and "build-1" in app.tags
    for digest in (rollback, *rollback_children, current):
        assert digest in app.manifests
    resolves_fully(plane, "app", rollback)


class MovesATagAtFirstUntag(AcrRetentionBackend):
    """Before the first tag deletion goes out, ``tag`` is pushed again onto a new image."""

    plane: AcrDataPlane
    tag: str
    target: str
    moved = False

    def delete_tag(self, repository: str, tag: str) -> None:
        if not self.moved:
            self.moved = True
            self.plane.tag(repository, self.tag, self.target, updated=datetime.now(UTC))
        super().delete_tag(repository, tag)


def test_a_tag_pushed_again_mid_pass_is_not_untagged(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    """Untags are by name: the name is re-checked before each, so a tag written since stays."""
    plane = acr_dataplane
    latest, _ = plane.add_index("app", created=OLD)
    plane.tag("app", "latest", latest, updated=OLD)
    newest = plane.add_platform_image("app", created=OLD)
    plane.tag("app", "build-3", newest, updated=OLD)  # keep_newest 1
    for name in ("build-1", "build-2"):  # dropped, their manifest stays for latest: untagged
        plane.tag("app", name, latest, updated=OLD - timedelta(days=2))
    fresh = plane.add_platform_image("app", created=NOW)
    sdk = backend(plane)
    watched = MovesATagAtFirstUntag(sdk.client, sdk.registry)
    watched.plane, watched.tag, watched.target = plane, "build-2", fresh

    report = prune_images(watched, RULES, dry_run=False)

    assert watched.moved and report.ok, report.to_json()
    (outcome,) = [o for o in report.repositories if o.repository == "app"]
    assert outcome.plan is not None and outcome.plan.untags == ("build-1", "build-2")
    assert outcome.untagged == ["build-1"] and "build-2" in outcome.skipped
    assert plane.repositories["app"].tags["build-2"].digest == fresh


def test_the_retention_client_logs_http_at_debug_not_info(acr_dataplane: AcrDataPlane, caplog: Any) -> None:  # noqa: F811
    """Each call's request/response dump (two records) stays out of the INFO log the Functions
    host collects, and is still there at DEBUG."""
    plane = acr_dataplane
    plane.add_platform_image("app", created=datetime.now(UTC))
    backend = AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)
    http_logger = "azure.core.pipeline.policies.http_logging_policy"
    with caplog.at_level(logging.INFO):
        backend.list_manifests("app")
    assert [r for r in caplog.records if r.name == http_logger] == []
    with caplog.at_level(logging.DEBUG):
        backend.list_manifests("app")
    dumps = [r for r in caplog.records if r.name == http_logger]
    assert any("/acr/v1/app/_manifests" in r.getMessage() for r in dumps)
    assert {r.levelno for r in dumps} == {logging.DEBUG}

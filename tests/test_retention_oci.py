"""Image retention against the real registry (Debian's docker-registry, distribution 2.8)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.app.cli import main
from shared.app.runtime import Runtime
from shared.model.retention_rules import ImageRule
from shared.platform.oci import NotFound, RegistryClient
from shared.pruning.retention.oci_backend import OciRetentionBackend
from shared.pruning.retention.prune import prune_images, run_scheduled_prune
from tests.support.registry import OciRegistry
from tests.support.timer_parts import timer_parts

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
RULES = [ImageRule(repositories=["app/*"], keep_tags=["latest", "stable"], min_age="7d", untagged="delete")]


def resolves_fully(client: RegistryClient, repo: str, reference: str) -> None:
    """The manifest, every manifest it references, and every blob of those, all fetchable."""
    manifest = client.get_manifest(repo, reference)
    for child in manifest.manifests:
        resolves_fully(client, repo, child.digest)
    for blob in (manifest.config, *manifest.layers):
        if blob is not None:
            client.get_blob(repo, blob.digest, max_bytes=64 * 1024 * 1024)


def gone(client: RegistryClient, repo: str, digest: str) -> bool:
    try:
        client.get_manifest(repo, digest)
    except NotFound:
        return True
    return False


class Scene:
    """One repository with everything the rules must tell apart."""

    def __init__(self, registry: OciRegistry) -> None:
        self.repo = registry.new_repo("app")
        r, repo = registry, self.repo
        self.latest, self.latest_children = r.push_index(repo, "latest", created=OLD)
        self.old, self.old_children = r.push_index(repo, "v1", created=OLD)
        self.stable, self.stable_children = r.push_index(repo, "v2", created=OLD)
        r.add_tag(repo, "stable", self.stable)  # v2 must go, but its manifest stays for stable
        self.feature = r.push_image(repo, "feature-x", created=OLD)
        self.young = r.push_image(repo, "pr-7", created=NOW)
        self.leftover = r.push_image(repo, None, created=OLD)  # untagged, pushed by digest
        self.moved_from = r.push_image(repo, "nightly", created=OLD)
        self.moved_to = r.move_tag(repo, "nightly", created=NOW)
        self.sig_live = r.push_referrer(repo, self.latest)
        self.sig_dead = r.push_referrer(repo, self.old)
        # Distribution cannot list untagged manifests: tell the backend the ones we know of.
        self.known = [self.leftover, self.moved_from, self.sig_live, self.sig_dead]


def test_prune_keeps_every_kept_tag_whole_and_deletes_the_rest(fresh_oci_registry: OciRegistry) -> None:
    registry = fresh_oci_registry
    scene = Scene(registry)
    client = registry.client()
    backend = OciRetentionBackend(client, extra_digests=scene.known)
    tags_before = sorted(client.list_tags(scene.repo))

    seen: list[tuple[str, int, int]] = []
    dry = prune_images(backend, RULES, dry_run=True, progress=lambda *step: seen.append(step))
    assert dry.ok and sorted(client.list_tags(scene.repo)) == tags_before
    assert seen == [(scene.repo, 1, 1)]  # the progress bar's steps: one per repository a rule matches
    for digest in [scene.old, *scene.old_children, scene.feature, scene.leftover]:
        assert not gone(client, scene.repo, digest), "--dry-run deleted something"

    report = prune_images(backend, RULES, dry_run=False)
    assert report.ok, report.to_json()
    (outcome,) = report.repositories
    doomed = [scene.old, *scene.old_children, scene.feature, scene.leftover, scene.moved_from, scene.sig_dead]
    assert sorted(outcome.deleted) == sorted(doomed)
    for digest in doomed:
        assert gone(client, scene.repo, digest)
    # The index went before its children.
    assert outcome.deleted.index(scene.old) < min(outcome.deleted.index(c) for c in scene.old_children)
    # v2 could not be untagged alone on distribution 2.8: it stays, and so does its manifest.
    assert "v2" in outcome.skipped and "cannot delete tag" in outcome.skipped["v2"]
    assert sorted(client.list_tags(scene.repo)) == ["latest", "nightly", "pr-7", "stable", "v2"]

    # Blobs too: collect garbage as an operator would afterwards, then read every kept tag whole.
    registry.garbage_collect()
    for tag in ("latest", "stable", "pr-7", "nightly"):
        resolves_fully(client, scene.repo, tag)
    resolves_fully(client, scene.repo, scene.sig_live)

    data = report.to_json()
    manifests = {m["digest"]: m for m in data["repositories"][0]["manifests"]}
    assert manifests[scene.old]["reason"].startswith("images[0]: tags v1 not kept")
    assert manifests[scene.old_children[0]]["reason"].startswith("with sha256:")
    assert manifests[scene.leftover]["reason"] == "images[0]: untagged, older than min_age 7d"
    assert manifests[scene.latest_children[2]]["action"] == "keep-referenced"
    assert manifests[scene.latest_children[2]]["kind"] == "attestation"
    assert manifests[scene.latest_children[2]]["referenced_by"] == [scene.latest]
    assert manifests[scene.sig_live]["referenced_by"] == [scene.latest]
    assert manifests[scene.young]["reason"] == "tag pr-7 (younger than min_age 7d)"
    assert {m["status"] for m in manifests.values() if m["action"] == "delete"} == {"deleted"}


def test_naive_delete_untagged_breaks_multi_arch_images(fresh_oci_registry: OciRegistry) -> None:
    """Why Slipway exists: distribution's own --delete-untagged deletes a live index's children."""
    registry = fresh_oci_registry
    repo = registry.new_repo("app")
    registry.push_index(repo, "latest")
    registry.garbage_collect(delete_untagged=True)
    with pytest.raises(NotFound):
        resolves_fully(registry.client(), repo, "latest")


def test_cli_dry_run_json_and_table(
    oci_registry: OciRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = oci_registry.new_repo("cli")
    old, children = oci_registry.push_index(repo, "v1", created=OLD)
    keep = oci_registry.push_image(repo, "latest", created=OLD)
    config = tmp_path / "slipway.yaml"
    config.write_text(
        "registry: myregistry.azurecr.io\n"
        "images:\n"
        f"  - repositories: [{repo}]\n"
        "    keep_tags: [latest]\n"
        "    min_age: 1d\n"
    )
    args = ["prune", "images", "--config", str(config), "--registry", oci_registry.url, "--api", "oci"]
    assert main([*args, "--dry-run", "--json", "--repository", "cli/*"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] is True and data["ok"] is True
    (repository,) = data["repositories"]
    actions = {m["digest"]: (m["action"], m["status"]) for m in repository["manifests"]}
    assert actions[old] == ("delete", "planned") and actions[keep] == ("keep", "kept")
    assert all(actions[c] == ("delete", "planned") for c in children)
    oci_registry.client().get_manifest(repo, old)  # still there

    assert main([*args, "--repository", "cli/*"]) == 0
    out = capsys.readouterr().out
    assert "deleted 5 manifests" in out and repo in out  # the index, 2 images, 2 attestations
    assert gone(oci_registry.client(), repo, old)
    resolves_fully(oci_registry.client(), repo, "latest")


def test_cli_errors_and_no_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "slipway.yaml"
    config.write_text("registry: myregistry.azurecr.io\n")
    assert main(["prune", "images", "--config", str(config)]) == 0
    assert "no images: rules" in capsys.readouterr().out
    config.write_text("registry: myregistry.azurecr.io\nimages:\n  - repositories: [a]\n    min_age: soon\n")
    assert main(["prune", "images", "--config", str(config)]) == 1
    assert "images[0].min_age" in capsys.readouterr().err
    config.write_text("registry: myregistry.azurecr.io\nimages:\n  - repositories: [a]\n")
    assert (
        main(["prune", "images", "--config", str(config), "--registry", "http://127.0.0.1:9", "--api", "oci"])
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("slipway: error: http://127.0.0.1:9:") and len(err.strip().splitlines()) == 1


def _events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.slipway for r in caplog.records if hasattr(r, "slipway")]


def test_timer_without_rules_returns_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    (tmp_path / "slipway.yaml").write_text("registry: myregistry.azurecr.io\n")
    runtime = Runtime({"SLIPWAY_CONFIG": "slipway.yaml"}, app_root=tmp_path)
    assert run_scheduled_prune(*timer_parts(runtime)) is None
    assert [e["event"] for e in _events(caplog)] == ["image_prune_skipped"]


def test_timer_prunes_the_configured_registry(
    tmp_path: Path, fresh_oci_registry: OciRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    registry = fresh_oci_registry
    repo = registry.new_repo("app")
    kept, kept_children = registry.push_index(repo, "latest", created=OLD)
    doomed, doomed_children = registry.push_index(repo, "v1", created=OLD)
    (tmp_path / "slipway.yaml").write_text(
        f"registry: {registry.host}\n"  # a loopback registry is spoken to over plain http
        "images:\n  - repositories: ['app/*']\n    keep_tags: [latest]\n    min_age: 7d\n"
    )
    settings = {"SLIPWAY_CONFIG": "slipway.yaml", "SLIPWAY_IMAGE_PRUNE_DRY_RUN": "true"}
    dry = run_scheduled_prune(*timer_parts(Runtime(settings, app_root=tmp_path)))
    assert dry is not None and dry.dry_run
    client = registry.client()
    assert not gone(client, repo, doomed)
    report = run_scheduled_prune(
        *timer_parts(Runtime({**settings, "SLIPWAY_IMAGE_PRUNE_DRY_RUN": "false"}, app_root=tmp_path))
    )
    assert report is not None and report.ok
    events = _events(caplog)
    summaries = [e for e in events if e["event"] == "image_prune"]
    assert [(s["dry_run"], s["deleted"]) for s in summaries] == [
        (True, 0),
        (False, len(report.repositories[0].deleted)),
    ]
    deleted = {e["digest"] for e in events if e["event"] == "image_deleted"}
    assert deleted == {doomed, *doomed_children} and all(
        e["repository"] == repo for e in events if e["event"] == "image_deleted"
    )
    assert all(gone(client, repo, d) for d in [doomed, *doomed_children])
    assert not any(gone(client, repo, d) for d in [kept, *kept_children])
    resolves_fully(client, repo, "latest")


class MovesATagMidPass(OciRetentionBackend):
    """The real backend; just before its first manifest deletion goes out, someone points ``tag``
    at ``target`` (what ``docker buildx imagetools create -t app:latest app@<old digest>`` does)."""

    def __init__(
        self, client: RegistryClient, registry: OciRegistry, repo: str, tag: str, target: str, **kw: Any
    ):
        super().__init__(client, **kw)
        self.registry_under_test, self.repo, self.tag, self.target = registry, repo, tag, target
        self.moved = False

    def delete_manifest(self, repository: str, digest: str) -> None:
        if not self.moved:
            self.moved = True
            self.registry_under_test.add_tag(self.repo, self.tag, self.target)
        super().delete_manifest(repository, digest)


@pytest.mark.parametrize("tag", ["latest", "hotfix"])  # a keep_tags tag, and one no rule keeps
def test_a_tag_moved_mid_pass_onto_a_doomed_manifest_keeps_it_whole(
    fresh_oci_registry: OciRegistry, tag: str
) -> None:
    """Issue 17.9: a rollback of ``latest`` to a manifest planned for deletion, during the deletions."""
    registry = fresh_oci_registry
    repo = registry.new_repo("app")
    current, current_children = registry.push_index(repo, "latest", created=OLD)
    rollback, rollback_children = registry.push_index(repo, "v1", created=OLD)
    # A signature of the doomed index: it goes first (a manifest before what it references), so
    # the tag moves after the pass has started deleting and before it reaches the index.
    signature = registry.push_referrer(repo, rollback)
    client = registry.client()
    backend = MovesATagMidPass(client, registry, repo, tag, rollback, extra_digests=[signature])

    report = prune_images(backend, RULES, dry_run=False)

    assert backend.moved and report.ok, report.to_json()
    (outcome,) = report.repositories
    assert outcome.plan is not None and rollback in outcome.plan.deletions  # it was doomed
    assert outcome.deleted == [signature]  # deleted before the tag moved: nothing saves that
    assert client.resolve_digest(f"{registry.host}/{repo}:{tag}") == rollback
    resolves_fully(client, repo, tag)
    for digest in [rollback, *rollback_children, current, *current_children]:
        assert not gone(client, repo, digest)
    assert outcome.skipped[rollback] == "a tag written during the pass needs it; kept"
    assert sorted(client.list_tags(repo)) == sorted({"latest", "v1", tag})

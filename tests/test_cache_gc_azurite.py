"""The cache collector against Azurite, with BuildKit's real layout (tests/fixtures/buildkit-azblob-cache).

Azurite stamps last-modified itself, so "old" and "young" are made by uploading in two phases
one server second apart and running the collector with a clock an hour after the first phase:
with a grace and max_age of one hour, the first phase is old and the second young.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shared.app.cli import main
from shared.app.runtime import Runtime
from shared.pruning.cache_gc.collector import CacheCollector
from shared.pruning.cache_gc.layout import BlobEntry, CacheLayout
from shared.pruning.cache_gc.planner import Policy
from shared.pruning.cache_gc.prune import prune_on_schedule
from shared.pruning.cache_gc.store import AzureCacheStore, BlobPage, DeleteOutcome
from tests.support.azurite import AzuriteServer
from tests.support.ports import free_port
from tests.support.timer_parts import timer_parts

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from shared.model.config import CacheStorage

FIXTURE = Path(__file__).parent / "fixtures" / "buildkit-azblob-cache"
LISTING = json.loads((FIXTURE / "listing.json").read_text())
HOUR = timedelta(hours=1)
POLICY = Policy(grace=HOUR, max_age=HOUR, keep_names=("main", "release-*", "cacheB"))


def orphan() -> str:
    return f"sha256:{uuid.uuid4().hex * 2}"


def upload(container: ContainerClient, name: str, data: bytes) -> datetime:
    result = container.get_blob_client(name).upload_blob(data, overwrite=True)
    modified: datetime = result["last_modified"]
    return modified


def fixture_blobs(prefix: str) -> dict[str, int]:
    layout = CacheLayout(prefix)
    return {
        layout.blob_key(e["name"].removeprefix("blobs/")): e["size"]
        for e in LISTING
        if e["name"].startswith("blobs/")
    }


def manifest_for(digests: Sequence[str]) -> bytes:
    layers = [{"blob": d, "annotations": {"size": 7}} for d in digests]
    return json.dumps({"layers": layers, "records": []}).encode()


class Seeded:
    """The container after the two phases, and what a collection of ``prefix`` must leave."""

    def __init__(self, container: ContainerClient, prefixes: Sequence[str]) -> None:
        self.container = container
        self.expected_deleted: dict[str, set[str]] = {}
        self.young: dict[str, set[str]] = {}
        old_phase: list[datetime] = []
        for prefix in prefixes:
            layout = CacheLayout(prefix)
            for name, size in fixture_blobs(prefix).items():
                old_phase.append(upload(container, name, os.urandom(size)))
            for name in ("cacheA", "cacheB"):  # cacheA expires; cacheB is in keep_names
                old_phase.append(
                    upload(container, layout.manifest_key(name), (FIXTURE / "manifests" / name).read_bytes())
                )
            released = orphan()
            old_phase.append(upload(container, layout.blob_key(released), b"r" * 7))
            old_phase.append(upload(container, layout.manifest_key("release-1"), manifest_for([released])))
            orphans = [layout.blob_key(orphan()) for _ in range(3)]
            for name in orphans:
                old_phase.append(upload(container, name, b"o" * 1000))
            only_in_a = layout.blob_key(
                "sha256:ab4ad32e99534a2bfdd194062b49055935c533027c3cfe6dfe6f96086f55a412"
            )
            self.expected_deleted[prefix] = {*orphans, only_in_a, layout.manifest_key("cacheA")}
        self.old = max(old_phase)
        # One server second later (timestamps have one-second granularity): the young phase.
        while upload(container, "zz-clock-probe", b"") <= self.old:
            pass
        for prefix in prefixes:
            layout = CacheLayout(prefix)
            upload(container, layout.manifest_key("cacheC"), (FIXTURE / "manifests" / "cacheC").read_bytes())
            self.young[prefix] = {layout.blob_key(orphan()) for _ in range(2)}
            for name in self.young[prefix]:
                upload(container, name, b"y" * 10)

    @property
    def now(self) -> datetime:
        return self.old + HOUR + timedelta(milliseconds=500)

    def names(self) -> set[str]:
        return cache_names(self.container)


def cache_names(container: ContainerClient) -> set[str]:
    """Every blob but the collector's own candidates documents."""
    return {b.name for b in container.list_blobs() if "slipway-gc/" not in b.name}


@pytest.fixture
def container(azurite: AzuriteServer) -> ContainerClient:
    return azurite.new_container("cache")


def test_collects_the_real_layout_and_a_dry_run_changes_nothing(container: ContainerClient) -> None:
    seeded = Seeded(container, ["", "ci/team"])
    before = seeded.names()
    layout = CacheLayout("")
    store = AzureCacheStore(container, layout)

    dry = CacheCollector(store, layout, POLICY, dry_run=True, clock=lambda: seeded.now).collect()
    assert seeded.names() == before
    report = CacheCollector(store, layout, POLICY, clock=lambda: seeded.now).collect()

    assert report.complete and report.error is None
    # The first run expires cacheA and only records the unreferenced blobs (two-phase deletion).
    assert seeded.names() == before - {layout.manifest_key("cacheA")}
    assert {n.name: (n.expired, n.reason) for n in report.names} == {
        "cacheA": (True, "max_age"),
        "cacheB": (False, "keep_names"),
        "cacheC": (False, "recent"),
        "release-1": (False, "keep_names"),
    }
    assert (report.manifests_kept, report.manifests_expired) == (3, 1)
    # Live: cacheB and cacheC share 0052 and a8a5, plus 2101, ab29 and release-1's blob.
    assert (report.blobs_live, report.blobs_deleted, report.blobs_kept_grace) == (5, 0, 2)
    assert report.blobs_candidates == 4
    assert report.names[0].size_bytes == 204535 + 105 + 110
    counts = (
        "manifests_kept",
        "manifests_expired",
        "blobs_live",
        "blobs_deleted",
        "blobs_kept_grace",
        "blobs_candidates",
        "bytes_freed",
    )
    assert {k: getattr(dry, k) for k in counts} == {k: getattr(report, k) for k in counts}
    assert dry.dry_run and not report.dry_run

    second = CacheCollector(store, layout, POLICY, clock=lambda: seeded.now).collect()
    assert seeded.names() == before - seeded.expected_deleted[""]
    assert (second.blobs_live, second.blobs_deleted, second.blobs_kept_grace) == (5, 4, 2)
    assert second.bytes_freed == 110 + 3 * 1000 and second.blobs_candidates == 0

    # The other prefix is another cache: untouched, and collected on its own.
    ci = CacheLayout("ci/team")
    assert {n for n in seeded.names() if n.startswith("ci/")} == {n for n in before if n.startswith("ci/")}
    for _ in range(2):
        CacheCollector(AzureCacheStore(container, ci), ci, POLICY, clock=lambda: seeded.now).collect()
    assert seeded.names() == before - seeded.expected_deleted[""] - seeded.expected_deleted["ci/team"]
    assert "zz-clock-probe" in seeded.names()  # not a cache blob


def test_a_corrupt_manifest_stops_the_sweep(container: ContainerClient) -> None:
    layout = CacheLayout()
    orphans = {layout.blob_key(orphan()) for _ in range(3)}
    for name in orphans:
        upload(container, name, b"o")
    upload(container, layout.manifest_key("main"), manifest_for([]))
    modified = upload(container, layout.manifest_key("feature"), b'{"layers": [{"blob": "sha256:ab"')
    before = {b.name for b in container.list_blobs()}
    report = CacheCollector(
        AzureCacheStore(container, layout), layout, POLICY, clock=lambda: modified + 10 * HOUR
    ).collect()
    assert not report.complete
    assert report.error is not None and "'feature'" in report.error and "not JSON" in report.error
    assert (report.blobs_deleted, report.manifests_expired) == (0, 0)
    assert {b.name for b in container.list_blobs()} == before


class ExportDuringListing:
    """The real store, with BuildKit exporting a manifest while the collector lists blobs."""

    def __init__(self, inner: AzureCacheStore, container: ContainerClient, key: str, manifest: bytes) -> None:
        self.inner = inner
        self.container_client = container
        self.key = key
        self.manifest = manifest
        self.exported = False

    @property
    def container(self) -> str:
        return self.inner.container

    def list_manifests(self) -> list[BlobEntry]:
        return self.inner.list_manifests()

    def manifest_etags(self) -> dict[str, str]:
        return self.inner.manifest_etags()

    def read_manifest(self, key: str) -> tuple[bytes, str, datetime] | None:
        return self.inner.read_manifest(key)

    def blob_pages(self, token: str | None = None) -> Iterator[BlobPage]:
        for page in self.inner.blob_pages(token):
            yield page  # classified by the collector before the generator resumes
            if not self.exported:
                upload(self.container_client, self.key, self.manifest)
                self.exported = True

    def write_blob(self, key: str, data: bytes, *, etag: str | None) -> bool:
        return self.inner.write_blob(key, data, etag=etag)

    def delete(self, blobs: Sequence[BlobEntry]) -> list[DeleteOutcome]:
        return self.inner.delete(blobs)


def test_blobs_of_a_manifest_exported_during_the_run_survive(container: ContainerClient) -> None:
    """The exporter uploaded a new blob and found an old orphan present (HEAD); its manifest lands
    after the collector listed both as unreferenced. The clock is far ahead, so the grace period
    protects nothing here: only the re-check before the delete batch does."""
    layout = CacheLayout()
    reused, fresh = layout.blob_key(orphan()), layout.blob_key(orphan())
    others = {layout.blob_key(orphan()) for _ in range(4)}
    for name in (reused, fresh, *others):
        modified = upload(container, name, b"b")
    clock = lambda: modified + 10 * HOUR  # noqa: E731
    first = CacheCollector(AzureCacheStore(container, layout), layout, POLICY, clock=clock).collect()
    assert (first.blobs_deleted, first.blobs_candidates) == (0, 6)  # recorded; a later run deletes
    store = ExportDuringListing(
        AzureCacheStore(container, layout),
        container,
        layout.manifest_key("feature-new"),
        manifest_for([reused.removeprefix("blobs/"), fresh.removeprefix("blobs/")]),
    )
    report = CacheCollector(store, layout, POLICY, clock=clock).collect()
    assert store.exported and report.complete
    remaining = {b.name for b in container.list_blobs()}
    assert {reused, fresh, layout.manifest_key("feature-new")} <= remaining
    assert not others & remaining
    assert (report.blobs_deleted, report.blobs_live) == (4, 2)
    assert [(n.name, n.reason) for n in report.names] == [("feature-new", "rewritten")]


def _config(tmp_path: Path, container: ContainerClient, extra: str = "") -> Path:
    path = tmp_path / "slipway.yaml"
    path.write_text(
        "registry: r.azurecr.io\n"
        "cache:\n"
        "  account_url: https://unused.blob.core.windows.net\n"
        f"  container: {container.container_name}\n"
        "  keep_names: [main]\n"
        f"{extra}"
    )
    return path


def test_cli_dry_run_then_collect(
    container: ContainerClient,
    azurite: AzuriteServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SLIPWAY_CACHE_CONNECTION_STRING", azurite.connection_string)
    layout = CacheLayout()
    kept = orphan()
    upload(container, layout.blob_key(kept), b"k")
    upload(container, layout.manifest_key("main"), manifest_for([kept]))
    upload(container, layout.manifest_key("feature"), manifest_for([orphan()]))
    for _ in range(3):
        upload(container, layout.blob_key(orphan()), b"o" * 10)
    config = _config(tmp_path, container)
    before = {b.name for b in container.list_blobs()}
    # Everything is seconds old: zero grace and max_age make it all eligible.
    argv = ["prune", "cache", "--config", str(config), "--grace", "0s", "--max-age", "0s"]

    assert main([*argv, "--dry-run", "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert "warning: grace 0s is shorter than run.timeout" in out.err
    assert {b.name for b in container.list_blobs()} == before
    assert report["dry_run"] is True
    keys = ("manifests_kept", "manifests_expired", "blobs_live", "blobs_deleted", "blobs_candidates")
    assert {k: report[k] for k in keys} == {
        "manifests_kept": 1,
        "manifests_expired": 1,
        "blobs_live": 1,
        "blobs_deleted": 0,  # nothing recorded by an earlier run yet
        "blobs_candidates": 3,
    }
    assert report["bytes_freed"] == 0 and report["complete"] is True
    assert [(n["name"], n["expired"], n["reason"]) for n in report["names"]] == [
        ("feature", True, "max_age"),
        ("main", False, "keep_names"),
    ]

    assert main(argv) == 0  # expires "feature", records the three orphans
    out = capsys.readouterr()
    assert "feature" in out.out and "blobs_deleted" in out.out.replace(" ", "_")
    assert len(cache_names(container)) == 5  # main, its blob, the three recorded orphans
    assert main([*argv, "--json"]) == 0  # --grace 0s: settle 0s, so the next run deletes them
    assert json.loads(capsys.readouterr().out)["blobs_deleted"] == 3
    assert cache_names(container) == {layout.blob_key(kept), layout.manifest_key("main")}


def test_cli_refuses_a_config_without_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "slipway.yaml"
    path.write_text("registry: r.azurecr.io\n")
    assert main(["prune", "cache", "--config", str(path)]) == 1
    assert "no cache: section" in capsys.readouterr().err


def test_timer_logs_one_line_and_returns_quickly_without_cache(
    container: ContainerClient, azurite: AzuriteServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="slipway.cache_gc")
    bare = tmp_path / "bare.yaml"
    bare.write_text("registry: r.azurecr.io\n")
    assert prune_on_schedule(*timer_parts(Runtime({"SLIPWAY_CONFIG": str(bare)}, app_root=tmp_path))) is None
    assert json.loads(caplog.records[-1].getMessage())["event"] == "cache_prune_skipped"

    upload(container, CacheLayout().blob_key(orphan()), b"young")
    settings = {
        "SLIPWAY_CONFIG": str(_config(tmp_path, container)),
        "SLIPWAY_CACHE_CONNECTION_STRING": azurite.connection_string,
    }
    caplog.clear()
    report = prune_on_schedule(*timer_parts(Runtime(settings, app_root=tmp_path)))
    assert report is not None and report.complete
    [record] = caplog.records
    line = json.loads(record.getMessage())
    assert line["event"] == "cache_prune"
    assert (line["blobs_kept_grace"], line["blobs_deleted"], line["grace"]) == (1, 0, "1d")
    assert "names" not in line and line["expired_names"] == []


def test_a_missing_container_is_one_clear_error(
    azurite: AzuriteServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SLIPWAY_CACHE_CONNECTION_STRING", azurite.connection_string)
    path = tmp_path / "slipway.yaml"
    path.write_text(
        "registry: r.azurecr.io\ncache:\n  account_url: https://a.blob.core.windows.net\n  container: gone\n"
    )
    assert main(["prune", "cache", "--config", str(path), "--dry-run"]) == 1
    assert capsys.readouterr().err.strip() == "slipway: error: container 'gone' does not exist"


def _cache(account_url: str) -> CacheStorage:
    from shared.model.config import CacheStorage

    return CacheStorage.model_validate({"account_url": account_url, "container": "buildkit-cache"})


def test_azurites_development_account_needs_no_setting() -> None:
    """The local example points at Azurite's well-known account over http, where no token may go:
    its public development key is used, as UseDevelopmentStorage=true does."""
    from shared.platform.storage import DEVELOPMENT_STORAGE_ACCOUNT, DEVELOPMENT_STORAGE_BLOB_ENDPOINT
    from shared.pruning.cache_gc.store import cache_service

    service = cache_service(_cache(DEVELOPMENT_STORAGE_BLOB_ENDPOINT), {})
    assert service.credential.account_name == DEVELOPMENT_STORAGE_ACCOUNT


def test_another_http_account_is_one_clear_error_logged_by_the_timer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.pruning.cache_gc.store import CacheStoreError

    caplog.set_level(logging.INFO, logger="slipway.cache_gc")
    path = tmp_path / "slipway.yaml"
    path.write_text(
        "registry: r.azurecr.io\ncache:\n  account_url: http://127.0.0.1:10000/otheracct\n"
        "  container: buildkit-cache\n"
    )
    with pytest.raises(CacheStoreError, match=r"plain http.*SLIPWAY_CACHE_CONNECTION_STRING"):
        prune_on_schedule(*timer_parts(Runtime({"SLIPWAY_CONFIG": str(path)}, app_root=tmp_path)))
    [line] = [json.loads(r.getMessage()) for r in caplog.records]
    assert line["event"] == "cache_prune_failed" and "plain http" in line["error"]


def test_the_cli_reports_a_dead_endpoint_in_seconds_not_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from tests.support.azurite import dead_storage_connection_string

    dead = free_port()
    connection = dead_storage_connection_string(dead)
    monkeypatch.setenv("SLIPWAY_CACHE_CONNECTION_STRING", connection)
    path = tmp_path / "slipway.yaml"
    path.write_text(
        "registry: r.azurecr.io\ncache:\n  account_url: https://a.blob.core.windows.net\n"
        "  container: buildkit-cache\n"
    )
    started = time.monotonic()
    assert main(["prune", "cache", "--config", str(path), "--dry-run"]) == 1
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert err.startswith("slipway: error: ") and str(dead) in err and len(err.splitlines()) == 1
    assert elapsed < 40, f"{elapsed:.0f} s"


def test_an_export_that_reuses_an_old_orphan_keeps_it(container: ContainerClient) -> None:
    """Issue 17.10. BuildKit's azblob exporter (moby/buildkit cache/remotecache/azblob/exporter.go,
    ``Finalize``) asks ``blobExists`` for each layer, uploads only the missing ones, and writes the
    manifest after the last layer: a blob found present is reused without being touched. Here the
    layers of the real cacheA manifest are old orphans (the name expired long ago); an export of
    the same layers checks them, takes 5 s, and the collector runs in between."""
    layout = CacheLayout()
    manifest = (FIXTURE / "manifests" / "cacheA").read_bytes()
    keys = [layout.blob_key(layer["blob"]) for layer in json.loads(manifest)["layers"]]
    for key in keys:
        modified = upload(container, key, b"layer")
    clock = lambda: modified + 10 * HOUR  # noqa: E731 (the layers are far past grace)
    checked = threading.Event()

    def export() -> None:
        assert all(container.get_blob_client(key).exists() for key in keys)  # present: no upload
        checked.set()
        time.sleep(5)  # the rest of the export (other layers uploading)
        upload(container, layout.manifest_key("main"), manifest)  # main: in keep_names

    exporter = threading.Thread(target=export)
    exporter.start()
    assert checked.wait(30)
    store = AzureCacheStore(container, layout)
    report = CacheCollector(store, layout, POLICY, clock=clock).collect()
    assert exporter.is_alive(), "the collector must run inside the export window"
    exporter.join()

    assert report.complete and report.blobs_deleted == 0 and report.blobs_candidates == len(keys)
    remaining = cache_names(container)
    assert set(keys) <= remaining and layout.manifest_key("main") in remaining
    # The next run finds them referenced: live, and no longer candidates.
    later = CacheCollector(store, layout, POLICY, clock=clock).collect()
    assert (later.blobs_deleted, later.blobs_live, later.blobs_candidates) == (0, len(keys), 0)
    assert set(keys) <= cache_names(container)


def test_the_recheck_listing_gives_what_the_full_listing_gives(
    container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``manifest_etags`` reads the raw List Blobs XML: it must agree with the SDK's models, over
    more than one page, and for names with spaces and non-ASCII characters."""
    from shared.pruning.cache_gc import store as store_module

    layout = CacheLayout("ci")
    names = [f"name-{i}" for i in range(7)] + ["team a/f\u00e9ature & <x>"]
    for name in names:
        upload(container, layout.manifest_key(name), b'{"layers": []}')
    upload(container, layout.blob_key(orphan()), b"not a manifest")
    store = AzureCacheStore(container, layout)
    full = {e.name: e.etag for e in store.list_manifests()}
    assert len(full) == len(names)
    monkeypatch.setattr(store_module, "LIST_PAGE_SIZE", 3)  # three pages
    assert store.manifest_etags() == full


def test_the_batch_is_the_batch_api_s_limit_which_azurite_enforces(container: ContainerClient) -> None:
    """256 sub-requests a batch: "The maximum number of sub operations that may be part of a batch"
    (learn.microsoft.com/dotnet/api/microsoft.azure.storage.shared.protocol.constants
    .maxsuboperationperbatch); the emulator deletes that many in one request and refuses one more."""
    from azure.core.exceptions import HttpResponseError

    from shared.pruning.cache_gc.store import MAX_BATCH

    assert MAX_BATCH == 256
    names = [f"limit/{i:03d}" for i in range(257)]
    for name in names:
        container.upload_blob(name, b"")
    with pytest.raises(HttpResponseError):
        container.delete_blobs(*names)
    container.delete_blobs(*names[:256])
    assert [b.name for b in container.list_blobs(name_starts_with="limit/")] == names[256:]

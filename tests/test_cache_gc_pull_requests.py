"""A closed pull request's cache expires (issue #20, item 4), on Azurite with BuildKit's real layout.

The close comes in as GitHub's published ``closed`` sample through the real receiver, which records
it in the state store (Blob, on Azurite); the cache collector reads the same record, through the
timer's own function. The cache holds the real manifests of tests/fixtures/buildkit-azblob-cache
under the names a pull request of target ``hello`` (``hello-pr-2``), another, open one
(``hello-pr-3``) and the base branch (``hello-main``) write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shared.app.runtime import Runtime, set_runtime
from shared.intake.receivers.github import receive_github
from shared.intake.receivers.pipeline import ReceiverContext
from shared.model.config import parse_config
from shared.platform.state import BlobStateStore
from shared.pruning.cache_gc.collector import CacheCollector
from shared.pruning.cache_gc.layout import CacheLayout
from shared.pruning.cache_gc.planner import Policy
from shared.pruning.cache_gc.prune import closed_pull_requests
from shared.pruning.cache_gc.store import AzureCacheStore
from tests.support.azurite import AzuriteServer
from tests.support.receiving import fixture_bytes
from tests.test_receiver_pull_requests import SETTINGS, github_request

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

FIXTURE = Path(__file__).parent / "fixtures" / "buildkit-azblob-cache"
LISTING = json.loads((FIXTURE / "listing.json").read_text())
# The only blob of cacheA no other fixture manifest references (tests/fixtures/.../manifests).
ONLY_IN_A = "blobs/sha256:ab4ad32e99534a2bfdd194062b49055935c533027c3cfe6dfe6f96086f55a412"
HOUR = timedelta(hours=1)


def _config(container: str, keep: str = "[]") -> str:
    return (
        "registry: slipway.azurecr.io\n"
        "cache:\n"
        "  account_url: https://unused.blob.core.windows.net\n"
        f"  container: {container}\n"
        f"  keep_names: {keep}\n"
        "  max_age: null\n"
        "targets:\n"
        "  - name: hello\n"
        "    repo: https://github.com/Codertocat/Hello-World\n"
        "    image: codertocat/hello-world\n"
        "    branches: ['**']\n"
        "    pull_requests: {enabled: true}\n"
    )


def _seed(container: ContainerClient) -> datetime:
    """The fixture's blobs, and its manifests as three names; the last upload time."""
    last: datetime | None = None
    for entry in LISTING:
        if entry["name"].startswith("blobs/"):
            container.get_blob_client(entry["name"]).upload_blob(os.urandom(entry["size"]), overwrite=True)
    for name, source in (("hello-pr-2", "cacheA"), ("hello-pr-3", "cacheC"), ("hello-main", "cacheB")):
        data = (FIXTURE / "manifests" / source).read_bytes()
        last = container.get_blob_client(f"manifests/{name}").upload_blob(data, overwrite=True)[
            "last_modified"
        ]
    assert last is not None
    return last


def _names(container: ContainerClient) -> set[str]:
    return {b.name for b in container.list_blobs() if "slipway-gc/" not in b.name}


class Setup:
    def __init__(self, azurite: AzuriteServer, tmp_path: Path, keep: str = "[]") -> None:
        self.cache = azurite.new_container("cache")
        state_container = azurite.new_container("state")
        self.state = BlobStateStore(state_container)
        (tmp_path / "slipway.yaml").write_text(_config(self.cache.container_name, keep))
        self.settings = {
            **SETTINGS,
            "SLIPWAY_CONFIG": str(tmp_path / "slipway.yaml"),
            "SLIPWAY_CACHE_CONNECTION_STRING": azurite.connection_string,
            "AzureWebJobsStorage": azurite.connection_string,
            "SLIPWAY_STATE_CONTAINER": state_container.container_name,
            "SLIPWAY_STATE_DIR": str(tmp_path / ".slipway"),  # the local queue a reopening sends to
        }
        self.runtime = Runtime(self.settings, app_root=tmp_path)
        self.last_upload = _seed(self.cache)

    def deliver(self, action: str) -> None:
        config = parse_config(Path(self.settings["SLIPWAY_CONFIG"]).read_text(), source="slipway.yaml")
        ctx = ReceiverContext(
            settings=self.settings, config=lambda: config, queue=self.runtime.queue, state=lambda: self.state
        )
        body = fixture_bytes("github", f"pull_request-{action}.json")
        response = receive_github(github_request(body), ctx)
        assert response.status in (200, 202), response.body

    def timer(self) -> None:
        """The ``prune_cache`` timer's function, as the Functions host calls it."""
        from handlers import prune_cache

        set_runtime(self.runtime)
        try:
            prune_cache.prune_cache.build().get_user_function()(timer=None)
        finally:
            set_runtime(None)


@pytest.fixture
def setup(azurite: AzuriteServer, tmp_path: Path) -> Iterator[Setup]:
    yield Setup(azurite, tmp_path)


def test_the_timer_expires_the_cache_of_a_closed_pull_request_only(setup: Setup) -> None:
    before = _names(setup.cache)
    setup.timer()
    assert _names(setup.cache) == before  # nothing closed yet, and no max_age: all kept

    setup.deliver("closed")  # pull request #2 of Codertocat/Hello-World
    setup.timer()
    assert _names(setup.cache) == before - {"manifests/hello-pr-2"}


def test_its_blobs_go_two_runs_later_and_a_reopened_request_keeps_its_cache(setup: Setup) -> None:
    setup.deliver("closed")
    layout = CacheLayout()
    store = AzureCacheStore(setup.cache, layout)
    policy = Policy(grace=HOUR, pull_request_closed=closed_pull_requests(setup.state))
    later = setup.last_upload + 2 * HOUR  # every blob past its grace period
    first = CacheCollector(store, layout, policy, clock=lambda: later).collect()
    assert {n.name: (n.expired, n.reason) for n in first.names} == {
        "hello-pr-2": (True, "pr_closed"),
        "hello-pr-3": (False, "recent"),  # another request, open
        "hello-main": (False, "recent"),
    }
    assert first.blobs_candidates == 1  # recorded; a later run deletes it (two-phase)
    second = CacheCollector(store, layout, policy, clock=lambda: later).collect()
    assert second.blobs_deleted == 1 and ONLY_IN_A not in _names(setup.cache)

    # Reopened, and built again: its new export is the request's cache again, kept.
    setup.deliver("reopened")
    data = (FIXTURE / "manifests" / "cacheA").read_bytes()
    setup.cache.get_blob_client("manifests/hello-pr-2").upload_blob(data, overwrite=True)
    third = CacheCollector(store, layout, policy, clock=lambda: later).collect()
    assert {n.name: n.expired for n in third.names}["hello-pr-2"] is False


def test_keep_names_outrank_a_close(azurite: AzuriteServer, tmp_path: Path) -> None:
    setup = Setup(azurite, tmp_path, keep="['hello-pr-*']")
    setup.deliver("closed")
    before = _names(setup.cache)
    setup.timer()
    assert _names(setup.cache) == before


def test_slipway_prune_cache_reads_the_closes_slipway_serve_recorded(
    azurite: AzuriteServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI, locally: the close is in the state folder (``--state-dir``), where ``slipway serve``'s
    receiver wrote it; without that folder the CLI reads no close and only ``max_age`` applies."""
    from shared.app.cli import main
    from shared.platform.state import FolderStateStore
    from shared.runs.pull_request_state import record_close

    cache = azurite.new_container("cache")
    _seed(cache)
    config = tmp_path / "slipway.yaml"
    config.write_text(_config(cache.container_name))
    monkeypatch.setenv("SLIPWAY_CACHE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.chdir(tmp_path)
    argv = ["prune", "cache", "--config", str(config), "--dry-run", "--json"]

    assert main([*argv, "--state-dir", str(tmp_path / "absent")]) == 0
    assert all(not n["expired"] for n in json.loads(capsys.readouterr().out)["names"])

    state_dir = tmp_path / ".slipway"
    closed_at = datetime.now().astimezone()
    record_close(
        FolderStateStore(state_dir / "state"),
        "hello",
        2,
        at=closed_at,
        head=None,
        merged=True,
        delivery_id="c",
    )
    assert main([*argv, "--state-dir", str(state_dir)]) == 0
    names = {n["name"]: (n["expired"], n["reason"]) for n in json.loads(capsys.readouterr().out)["names"]}
    assert names["hello-pr-2"] == (True, "pr_closed")
    assert not names["hello-pr-3"][0] and not names["hello-main"][0]

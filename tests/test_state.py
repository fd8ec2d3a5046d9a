"""The state store on Azurite and on a local folder: conditional writes, and the last-build records."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.pipeline import PipelineResponse
from azure.storage.blob import ContainerClient, LinearRetry

from shared.model.build_request import BuildRequest, request_id
from shared.platform.state import (
    BlobStateStore,
    FolderStateStore,
    StateConflict,
    StateStore,
    state_from_settings,
    update,
    validate_key,
)
from shared.runs.last_build import (
    is_default_branch_push,
    last_build_key,
    read_last_build,
    record_last_build,
)
from tests.support.azurite import AzuriteServer

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
COMMIT = "c72d62bc4e992806a012ccaca139a8a6ef41a07c"


@pytest.fixture(params=["blob", "folder"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "blob":
        azurite: AzuriteServer = request.getfixturevalue("azurite")
        return BlobStateStore(azurite.new_container("state"))
    return FolderStateStore(tmp_path / "state")


def test_stores_implement_the_protocol(store: StateStore) -> None:
    assert isinstance(store, StateStore)


def test_create_get_replace_delete(store: StateStore) -> None:
    assert store.get("a/doc.json") is None
    etag = store.create("a/doc.json", {"n": 1})
    assert etag
    assert store.create("a/doc.json", {"n": 2}) is None  # never overwrites
    found = store.get("a/doc.json")
    assert found is not None and found.value == {"n": 1} and found.etag == etag

    new_etag = store.replace("a/doc.json", {"n": 3}, etag)
    assert new_etag != etag
    with pytest.raises(StateConflict):
        store.replace("a/doc.json", {"n": 4}, etag)  # stale
    found = store.get("a/doc.json")
    assert found is not None and found.value == {"n": 3}

    with pytest.raises(StateConflict):
        store.delete("a/doc.json", etag=etag)
    assert store.delete("a/doc.json", etag=new_etag) is True
    assert store.delete("a/doc.json") is False
    with pytest.raises(StateConflict):
        store.replace("a/doc.json", {"n": 5}, new_etag)  # gone


def test_keys_by_prefix(store: StateStore) -> None:
    for key in ("last-build/a.json", "last-build/b.json", "digests/x.json"):
        store.create(key, {})
    assert sorted(store.keys("last-build/")) == ["last-build/a.json", "last-build/b.json"]
    assert len(list(store.keys())) == 3


def test_update_retries_when_another_writer_wins(store: StateStore) -> None:
    store.create("counter.json", {"n": 0})
    raced = False

    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        nonlocal raced
        assert current is not None
        if not raced:  # another writer slips in between this writer's read and its write
            raced = True
            found = store.get("counter.json")
            assert found is not None
            store.replace("counter.json", {"n": found.value["n"] + 10}, found.etag)
        return {"n": current["n"] + 1}

    assert update(store, "counter.json", change) == {"n": 11}
    found = store.get("counter.json")
    assert found is not None and found.value == {"n": 11}


def test_update_creates_and_may_leave_things_alone(store: StateStore) -> None:
    assert update(store, "new.json", lambda current: {"created": current is None}) == {"created": True}
    assert update(store, "new.json", lambda current: None) == {"created": True}
    assert update(store, "absent.json", lambda current: None) is None
    assert store.get("absent.json") is None


def test_concurrent_updates_lose_nothing(store: StateStore) -> None:
    store.create("counter.json", {"n": 0})

    def bump() -> None:
        for _ in range(5):
            update(store, "counter.json", lambda c: {"n": (c or {"n": 0})["n"] + 1}, attempts=50)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = store.get("counter.json")
    assert found is not None and found.value == {"n": 20}


@pytest.mark.parametrize("key", ["", "../x", "a/../b", ".hidden", "a//b", "/abs", "a b", "a/" * 9 + "x"])
def test_keys_that_could_escape_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)


def test_folder_store_writes_readable_json_and_hides_its_lock(tmp_path: Path) -> None:
    store = FolderStateStore(tmp_path)
    store.create("last-build/web.json", {"b": 1, "a": 2})
    assert (tmp_path / "last-build" / "web.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}'
    assert list(store.keys()) == ["last-build/web.json"]


def test_blob_store_creates_its_container_and_sets_the_content_type(azurite: AzuriteServer) -> None:
    container = azurite.service_client().get_container_client("state-not-yet-created")
    store = BlobStateStore(container)
    assert list(store.keys()) == []
    assert store.create("x.json", {"a": 1})
    props = container.get_blob_client("x.json").get_blob_properties()
    assert props.content_settings.content_type == "application/json"
    container.delete_container()


class LoseFirstWriteResponse:
    """Fails the first PUT after the service has applied it, as a dropped connection would."""

    def __init__(self) -> None:
        self.lost = 0

    def __call__(self, response: PipelineResponse[Any, Any]) -> None:
        from azure.core.exceptions import ServiceResponseError

        request = response.http_request
        if request.method == "PUT" and "/doc.json" in request.url and self.lost == 0:
            self.lost += 1
            raise ServiceResponseError("connection reset while reading the response")


def test_blob_writes_retried_after_a_lost_response_are_still_ours(azurite: AzuriteServer) -> None:
    name = azurite.new_container("flaky").container_name
    hook = LoseFirstWriteResponse()
    client = ContainerClient.from_connection_string(
        azurite.connection_string,
        name,
        raw_response_hook=hook,
        retry_policy=LinearRetry(backoff=0, random_jitter_range=0),
    )
    store = BlobStateStore(client)
    assert store.create("doc.json", {"v": 1}) is not None
    assert hook.lost == 1
    found = store.get("doc.json")
    assert found is not None
    hook.lost = 0
    assert store.replace("doc.json", {"v": 2}, found.etag)
    assert hook.lost == 1
    again = store.get("doc.json")
    assert again is not None and again.value == {"v": 2}


def test_state_from_settings(azurite: AzuriteServer, tmp_path: Path) -> None:
    folder = state_from_settings({}, state_dir=tmp_path)
    assert isinstance(folder, FolderStateStore) and folder.root == tmp_path / "state"
    container = azurite.new_container("settings").container_name
    blob = state_from_settings(
        {"AzureWebJobsStorage": azurite.connection_string, "SLIPWAY_STATE_CONTAINER": container},
        state_dir=tmp_path,
    )
    assert isinstance(blob, BlobStateStore)
    assert blob.container_client.container_name == container
    default = BlobStateStore.from_settings({"AzureWebJobsStorage": azurite.connection_string})
    assert default.container_client.container_name == "slipway-state"


# --- last builds ------------------------------------------------------------------------------


def _request(
    *, ref: str = "refs/heads/main", kind: str = "push", received: datetime = T0, **source: Any
) -> BuildRequest:
    commit = source.pop("commit", COMMIT)
    return BuildRequest.model_validate(
        {
            "id": request_id("web", ref, commit or "", str(received)),
            "target": "web",
            "trigger": {"kind": kind, "provider": "github", "received_at": received, "correlation_id": "c"},
            "source": {
                "repo_url": "https://github.com/contoso/web.git",
                "ref": ref,
                "commit": commit,
                "default_branch": "main",
                **source,
            },
            "image": {"registry": "r.azurecr.io", "repository": "contoso/web", "tags": ["main"]},
            "platforms": ["linux/amd64"],
            "cache": {"name": "web-main"},
            "coalesce_key": f"web:{ref}",
        }
    )


def test_which_builds_are_default_branch_pushes() -> None:
    assert is_default_branch_push(_request(), None)
    assert not is_default_branch_push(_request(ref="refs/heads/feature"), None)
    assert not is_default_branch_push(_request(ref="refs/tags/v1"), None)
    assert not is_default_branch_push(_request(kind="base-image"), None)
    assert not is_default_branch_push(_request(kind="base-image", commit=None), None)
    assert not is_default_branch_push(_request(kind="manual"), None)
    assert is_default_branch_push(_request(ref="refs/heads/trunk"), "trunk")  # the configured one wins
    assert not is_default_branch_push(_request(), "trunk")
    assert not is_default_branch_push(_request(default_branch=None), None)


def test_record_and_read_the_last_build(store: StateStore) -> None:
    assert read_last_build(store, "web") is None
    recorded = record_last_build(store, _request(), now=T0 + timedelta(seconds=5))
    assert recorded is not None
    last = read_last_build(store, "web")
    assert last == recorded
    assert (last.commit, last.ref, last.branch) == (COMMIT, "refs/heads/main", "main")
    assert last.repo_url == "https://github.com/contoso/web.git"
    assert last_build_key("web") == "last-build/web.json"


def test_an_older_push_dispatched_late_does_not_replace_a_newer_record(store: StateStore) -> None:
    newer = _request(received=T0, commit="b" * 40)
    older = _request(received=T0 - timedelta(minutes=1), commit="a" * 40)
    record_last_build(store, newer, now=T0)
    kept = record_last_build(store, older, now=T0 + timedelta(minutes=1))
    assert kept is not None and kept.commit == "b" * 40
    later = _request(received=T0 + timedelta(minutes=2), commit="c" * 40)
    moved = record_last_build(store, later, now=T0)
    assert moved is not None and moved.commit == "c" * 40


def test_an_unreadable_record_reads_as_none_and_is_replaced(tmp_path: Path) -> None:
    store = FolderStateStore(tmp_path)
    (tmp_path / "last-build").mkdir()
    (tmp_path / "last-build" / "web.json").write_text("{not json")
    assert read_last_build(store, "web") is None
    assert record_last_build(store, _request(), now=T0) is not None
    assert read_last_build(store, "web") is not None
    (tmp_path / "last-build" / "web.json").write_text('{"target": "web"}')
    assert read_last_build(store, "web") is None
    assert record_last_build(store, _request(), now=T0) is not None
    assert read_last_build(store, "web") is not None

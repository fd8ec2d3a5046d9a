"""The dispatch ledger against real storage: Azurite (Blob) and a local folder.

Both stores must give the same guarantees the dispatcher relies on: a create never overwrites
and has exactly one winner under concurrency, a replace with a stale ETag fails, and records
round-trip unchanged.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceResponseError
from azure.core.pipeline import PipelineResponse
from azure.storage.blob import ContainerClient, LinearRetry
from pydantic import ValidationError

import shared.platform.storage
from shared.platform.ledger import (
    BlobLedger,
    ConflictError,
    FolderLedger,
    Ledger,
    LedgerRecord,
    RecordSummary,
    RunStatus,
    ledger_from_settings,
)
from tests.support.azurite import AzuriteServer, AzuriteUnavailable, start_azurite

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_record(request_id: str = "app.0123456789abcdef", **overrides: Any) -> LedgerRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "target": "app",
        "status": RunStatus.DISPATCHING,
        "created_at": T0,
        "updated_at": T0,
        "correlation_id": "delivery-1",
        "payload_hash": "0" * 64,
        "request": {"id": request_id, "target": "app"},
        "attempts": 1,
        "history": [{"at": T0.isoformat(), "event": "claimed", "detail": "message m1"}],
    }
    fields.update(overrides)
    return LedgerRecord(**fields)


def full_record() -> LedgerRecord:
    """A record with every field set, including non-ASCII text and nested JSON."""
    return LedgerRecord(
        request_id="app.full-record.r1",
        target="app",
        status=RunStatus.DISPATCHED,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=3, microseconds=123456),
        correlation_id="72d3162e-cc78-11e3-81ab-4c9367dc0958",
        payload_hash="1" * 64,
        request={
            "id": "app.full-record.r1",
            "source": {"commit": "a" * 40, "ref": "refs/heads/main"},
            "platforms": ["linux/amd64", "linux/arm64"],
            "build_args": {"NOTE": "crème brûlée ✓"},
            "n": 1.5,
            "none": None,
        },
        backend="acr",
        run_id="ca1",
        run_status="Running",
        task_yaml="version: v1.1.0\nsteps:\n  - cmd: echo 'hi'\n",
        run_request={
            "type": "EncodedTaskRunRequest",
            "values": [{"name": "key", "value": "***", "isSecret": True}],
        },
        error="first attempt: 503",
        attempts=2,
        history=[
            {"at": T0.isoformat(), "event": "claimed", "detail": "message m1"},
            {"at": T0.isoformat(), "event": "run_started", "detail": None},
        ],
    )


@pytest.fixture(params=["blob", "folder"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    if request.param == "blob":
        azurite: AzuriteServer = request.getfixturevalue("azurite")
        return BlobLedger(azurite.new_container("ledger"))
    return FolderLedger(tmp_path / "ledger")


# --------------------------------------------------------------------------- both stores


def test_stores_implement_the_protocol(ledger: Ledger) -> None:
    assert isinstance(ledger, Ledger)


def test_get_of_an_unknown_id_is_none(ledger: Ledger) -> None:
    assert ledger.get("app.unknown") is None


def test_create_twice_returns_false_and_does_not_overwrite(ledger: Ledger) -> None:
    first = make_record(correlation_id="first")
    assert ledger.create(first) is True
    assert ledger.create(make_record(correlation_id="second", status=RunStatus.FAILED)) is False

    found = ledger.get(first.request_id)
    assert found is not None
    assert found[0] == first


def test_replace_with_the_current_etag(ledger: Ledger) -> None:
    record = make_record()
    assert ledger.create(record)
    found = ledger.get(record.request_id)
    assert found is not None
    _, etag = found

    updated = record.model_copy(
        update={"status": RunStatus.DISPATCHED, "run_id": "ca7", "updated_at": T0 + timedelta(1)}
    )
    new_etag = ledger.replace(updated, etag)

    assert new_etag != etag
    assert ledger.get(record.request_id) == (updated, new_etag)


def test_replace_with_a_stale_etag_conflicts_and_changes_nothing(ledger: Ledger) -> None:
    record = make_record()
    ledger.create(record)
    found = ledger.get(record.request_id)
    assert found is not None
    stale = found[1]
    winner = record.model_copy(update={"status": RunStatus.DISPATCHED, "run_id": "ca1"})
    current = ledger.replace(winner, stale)

    loser = record.model_copy(update={"status": RunStatus.FAILED, "error": "late"})
    with pytest.raises(ConflictError) as info:
        ledger.replace(loser, stale)

    assert info.value.request_id == record.request_id
    assert ledger.get(record.request_id) == (winner, current)


def test_replace_of_a_missing_record_conflicts(ledger: Ledger) -> None:
    record = make_record()
    ledger.create(make_record("app.other"))  # the container/folder exists; this record does not
    with pytest.raises(ConflictError):
        ledger.replace(record, '"0x8DDEADBEEF"')
    assert ledger.get(record.request_id) is None


def test_concurrent_creates_have_exactly_one_winner(ledger: Ledger) -> None:
    n = 16
    barrier = threading.Barrier(n)

    def claim(index: int) -> bool:
        barrier.wait(timeout=30)
        return ledger.create(make_record("app.contended", correlation_id=f"delivery-{index}"))

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(claim, range(n)))

    assert results.count(True) == 1
    found = ledger.get("app.contended")
    assert found is not None
    assert found[0].correlation_id == f"delivery-{results.index(True)}"


def test_concurrent_replaces_with_one_etag_have_exactly_one_winner(ledger: Ledger) -> None:
    record = make_record()
    ledger.create(record)
    found = ledger.get(record.request_id)
    assert found is not None
    etag = found[1]
    n = 8
    barrier = threading.Barrier(n)

    def update(index: int) -> str | None:
        barrier.wait(timeout=30)
        try:
            return ledger.replace(record.model_copy(update={"run_id": f"run-{index}"}), etag)
        except ConflictError:
            return None

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(update, range(n)))

    winners = [i for i, result in enumerate(results) if result is not None]
    assert len(winners) == 1
    stored = ledger.get(record.request_id)
    assert stored is not None
    assert stored[0].run_id == f"run-{winners[0]}"
    assert stored[1] == results[winners[0]]


def test_list_is_newest_first_and_honours_limit(ledger: Ledger) -> None:
    assert list(ledger.list()) == []
    # Names sort opposite to age, so a name-ordered listing would fail.
    for i, request_id in enumerate(["app.c", "app.b", "app.a"]):
        ledger.create(make_record(request_id, created_at=T0 + timedelta(minutes=i)))

    assert [r.request_id for r in ledger.list()] == ["app.a", "app.b", "app.c"]
    assert [r.request_id for r in ledger.list(limit=2)] == ["app.a", "app.b"]
    assert list(ledger.list(limit=0)) == []


def test_create_versioned_returns_the_etag_a_read_would_give(ledger: Ledger) -> None:
    record = make_record("app.v")
    etag = ledger.create_versioned(record)
    assert etag is not None
    assert ledger.get(record.request_id) == (record, etag)
    assert ledger.create_versioned(make_record("app.v", correlation_id="second")) is None
    ledger.replace(record.model_copy(update={"run_id": "run-1"}), etag)  # the ETag is usable as is


def test_a_listed_record_carries_the_etag_that_replaces_it(ledger: Ledger) -> None:
    for i, request_id in enumerate(["app.b", "app.a"]):
        ledger.create(make_record(request_id, created_at=T0 + timedelta(minutes=i)))
    listed = list(ledger.list_versioned())
    assert [r.request_id for r, _ in listed] == ["app.a", "app.b"]
    for record, etag in listed:
        found = ledger.get(record.request_id)
        assert found is not None and found == (record, etag)
    [(first, etag)] = list(ledger.list_versioned(limit=1))
    ledger.replace(first.model_copy(update={"run_id": "run-1"}), etag)
    with pytest.raises(ConflictError):  # the listing's ETag is stale now
        ledger.replace(first.model_copy(update={"run_id": "run-2"}), etag)


def test_every_field_round_trips(ledger: Ledger) -> None:
    record = full_record()
    assert ledger.create(record)
    found = ledger.get(record.request_id)
    assert found is not None
    stored, _ = found
    assert stored == record
    assert stored.model_dump(mode="json") == record.model_dump(mode="json")
    assert list(ledger.list()) == [record]


def test_unsafe_request_ids_are_refused(ledger: Ledger) -> None:
    for bad in ["../escape", "a/b", ".hidden", "", "x" * 300]:
        with pytest.raises(ValueError, match="invalid ledger request id"):
            ledger.get(bad)


# --------------------------------------------------------------------------- the record model


def test_record_json_round_trip_and_strictness() -> None:
    record = full_record()
    assert LedgerRecord.from_json(record.to_json()) == record
    assert LedgerRecord.model_validate_json(record.model_dump_json()) == record
    stored = json.loads(record.to_json())
    assert stored["status"] == "dispatched"
    assert stored["created_at"] == "2025-03-01T12:00:00Z"

    with pytest.raises(ValidationError):
        LedgerRecord.model_validate({**stored, "status": "exploded"})
    with pytest.raises(ValidationError, match="invalid ledger request id"):
        make_record("runs/../x")


def test_a_field_from_a_newer_version_survives_a_read_modify_write(ledger: Ledger) -> None:
    """An older instance during a rolling deploy: it reads, updates and writes back a record a
    newer one wrote, and the newer one's field is still there."""
    newer = json.loads(make_record("app.newer").to_json())
    newer["field_from_the_future"] = {"nested": [1, "two"]}
    assert ledger.create(LedgerRecord.model_validate(newer))
    found = ledger.get("app.newer")
    assert found is not None
    record, etag = found
    updated = record.with_event(T0 + timedelta(minutes=1), "run_started", "cb1", status=RunStatus.DISPATCHED)
    ledger.replace(updated, etag)
    stored = ledger.get("app.newer")
    assert stored is not None
    assert stored[0].status is RunStatus.DISPATCHED
    assert json.loads(stored[0].to_json())["field_from_the_future"] == {"nested": [1, "two"]}


def test_record_defaults_and_naive_times_are_utc() -> None:
    naive = datetime(2025, 3, 1, 12, 0, 0)
    record = make_record(created_at=naive, updated_at=naive, history=[], attempts=0)
    assert record.created_at == T0
    assert record.created_at.tzinfo is not None
    bare = LedgerRecord(
        request_id="app.bare",
        target="app",
        status=RunStatus.DISPATCHING,
        created_at=T0,
        updated_at=T0,
        correlation_id="c",
        payload_hash="h",
        request={},
    )
    assert (bare.backend, bare.run_id, bare.run_status, bare.task_yaml, bare.run_request, bare.error) == (
        None,
    ) * 6
    assert bare.attempts == 0
    assert bare.history == []
    assert bare.history is not LedgerRecord(**bare.model_dump()).history  # no shared mutable default


# --------------------------------------------------------------------------- Blob specifics


def test_blob_layout_and_content_type(azurite: AzuriteServer) -> None:
    container = azurite.new_container("layout")
    ledger = BlobLedger(container)
    record = make_record("app.layout")
    ledger.create(record)

    [blob] = list(container.list_blobs(name_starts_with="runs/"))  # the index lives beside it
    assert blob.name == "runs/app.layout.json"
    assert blob.content_settings.content_type == "application/json"
    assert LedgerRecord.from_json(container.download_blob(blob.name).readall()) == record


def test_blob_ledger_creates_its_container_on_first_write(azurite: AzuriteServer) -> None:
    container = azurite.service_client().get_container_client("ledger-not-yet-created")
    ledger = BlobLedger(container)
    assert ledger.get("app.x") is None
    assert list(ledger.list()) == []

    assert ledger.create(make_record("app.x")) is True
    assert container.exists()
    ledger.ensure_container()  # idempotent
    assert ledger.create(make_record("app.x")) is False


class LoseFirstWriteResponse:
    """A response hook: the first record write reaches the server, then its response is "lost".

    The storage SDK calls the hook inside its retry loop, so it retries the write, as it would
    after a connection reset while reading the response.
    """

    def __init__(self) -> None:
        self.lost = 0

    def __call__(self, response: PipelineResponse[Any, Any]) -> None:
        request = response.http_request
        if request.method == "PUT" and "/runs/" in request.url and self.lost == 0:
            self.lost += 1
            raise ServiceResponseError("connection reset while reading the response")


def _flaky_ledger(azurite: AzuriteServer) -> tuple[BlobLedger, LoseFirstWriteResponse]:
    name = azurite.new_container("flaky").container_name
    hook = LoseFirstWriteResponse()
    client = ContainerClient.from_connection_string(
        azurite.connection_string,
        name,
        raw_response_hook=hook,
        retry_policy=LinearRetry(backoff=0, random_jitter_range=0),
    )
    return BlobLedger(client), hook


def test_blob_create_retried_after_a_lost_response_is_still_ours(azurite: AzuriteServer) -> None:
    ledger, transport = _flaky_ledger(azurite)
    record = make_record()
    assert ledger.create(record) is True
    assert transport.lost == 1
    assert ledger.create(make_record(correlation_id="other")) is False
    found = ledger.get(record.request_id)
    assert found is not None
    assert found[0] == record


def test_blob_create_versioned_after_a_lost_response_returns_our_etag(azurite: AzuriteServer) -> None:
    ledger, transport = _flaky_ledger(azurite)
    record = make_record()
    etag = ledger.create_versioned(record)
    assert transport.lost == 1 and etag is not None
    assert ledger.get(record.request_id) == (record, etag)


def test_blob_replace_retried_after_a_lost_response_is_still_ours(azurite: AzuriteServer) -> None:
    ledger, transport = _flaky_ledger(azurite)
    transport.lost = 1  # let the create through
    record = make_record()
    ledger.create(record)
    found = ledger.get(record.request_id)
    assert found is not None
    transport.lost = 0

    updated = record.model_copy(update={"run_id": "ca9"})
    new_etag = ledger.replace(updated, found[1])

    assert transport.lost == 1
    assert ledger.get(record.request_id) == (updated, new_etag)
    with pytest.raises(ConflictError):
        ledger.replace(record, found[1])


def test_from_settings_with_a_connection_string(azurite: AzuriteServer) -> None:
    container = azurite.new_container("settings").container_name
    settings = {"AzureWebJobsStorage": azurite.connection_string, "SLIPWAY_LEDGER_CONTAINER": container}
    ledger = BlobLedger.from_settings(settings)
    assert ledger.container_client.container_name == container
    assert ledger.container_client.url.startswith(azurite.blob_endpoint)
    assert ledger.create(make_record())

    chosen = ledger_from_settings(settings, state_dir=Path("/nonexistent"))
    assert isinstance(chosen, BlobLedger)
    found = chosen.get(make_record().request_id)
    assert found is not None


def test_from_settings_with_use_development_storage(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = BlobLedger.from_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert default.container_client.url == "http://127.0.0.1:10000/devstoreaccount1/slipway-ledger"
    assert default.container_client.account_name == "devstoreaccount1"
    assert default.container_client.credential.account_key == azurite.account_key

    # The same settings against this test's Azurite (its port is not the default 10000).
    monkeypatch.setattr(shared.platform.storage, "DEVELOPMENT_STORAGE_BLOB_ENDPOINT", azurite.blob_endpoint)
    ledger = BlobLedger.from_settings(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=True;",
            "SLIPWAY_LEDGER_CONTAINER": "devstorage-ledger",
        }
    )
    ledger.ensure_container()
    ledger.ensure_container()
    record = make_record("app.devstorage")
    assert ledger.create(record)
    found = ledger.get(record.request_id)
    assert found is not None
    assert found[0] == record


class RecordingCredential:
    made: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, kind: str, **kwargs: Any) -> None:
        RecordingCredential.made.append((kind, kwargs))

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", 4102444800)


def test_from_settings_with_an_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    RecordingCredential.made = []
    monkeypatch.setattr(
        azure.identity, "DefaultAzureCredential", lambda **kw: RecordingCredential("default", **kw)
    )
    monkeypatch.setattr(
        azure.identity, "ManagedIdentityCredential", lambda **kw: RecordingCredential("mi", **kw)
    )

    by_account = BlobLedger.from_settings({"AzureWebJobsStorage__accountName": "slipwaystore"})
    assert by_account.container_client.url == "https://slipwaystore.blob.core.windows.net/slipway-ledger"
    by_uri = BlobLedger.from_settings(
        {
            "AzureWebJobsStorage": "",
            "AzureWebJobsStorage__blobServiceUri": "https://other.blob.core.windows.net/",
            "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
            "SLIPWAY_LEDGER_CONTAINER": "runs-ledger",
        }
    )
    assert by_uri.container_client.url == "https://other.blob.core.windows.net/runs-ledger"
    managed = ledger_from_settings(
        {
            "AzureWebJobsStorage__accountName": "slipwaystore",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": "cid",
        },
        state_dir=Path("/nonexistent"),
    )
    assert isinstance(managed, BlobLedger)

    assert RecordingCredential.made == [
        ("default", {"managed_identity_client_id": None}),
        ("default", {"managed_identity_client_id": "11111111-2222-3333-4444-555555555555"}),
        ("mi", {"client_id": "cid"}),
    ]


def test_without_storage_settings_the_ledger_is_a_folder(tmp_path: Path) -> None:
    for settings in [{}, {"AzureWebJobsStorage": ""}, {"AzureWebJobsStorage": "  ", "OTHER": "x"}]:
        ledger = ledger_from_settings(settings, state_dir=tmp_path)
        assert isinstance(ledger, FolderLedger)
        assert ledger.root == tmp_path / "ledger"
    assert not (tmp_path / "ledger").exists()  # nothing is written until a record is


def test_a_malformed_connection_string_is_refused() -> None:
    with pytest.raises(ValueError, match="malformed"):
        BlobLedger.from_settings({"AzureWebJobsStorage": "not a connection string"})


def test_importing_the_ledger_does_not_import_the_azure_sdks() -> None:
    code = (
        "import sys, shared.platform.ledger\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('azure.storage', 'azure.identity')))\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


# --------------------------------------------------------------------------- folder specifics


def _create_in_child(root: str, index: int, barrier: Any, results: Any) -> None:
    """Runs in a separate process: claim the same id as every other child."""
    ledger = FolderLedger(Path(root))
    barrier.wait(timeout=60)
    results.put((index, ledger.create(make_record("app.contended", correlation_id=f"process-{index}"))))


def _replace_in_child(root: str, index: int, etag: str, barrier: Any, results: Any) -> None:
    ledger = FolderLedger(Path(root))
    record = make_record(run_id=f"run-{index}")
    barrier.wait(timeout=60)
    try:
        results.put((index, ledger.replace(record, etag)))
    except ConflictError:
        results.put((index, None))


def _run_children(target: Any, args: list[tuple[Any, ...]]) -> dict[int, Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args))
    results = ctx.Queue()
    processes = [ctx.Process(target=target, args=(*a, barrier, results)) for a in args]
    for process in processes:
        process.start()
    outcome = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return outcome


def test_folder_concurrent_creates_from_processes_have_one_winner(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    outcome = _run_children(_create_in_child, [(str(root), i) for i in range(6)])

    winners = [i for i, created in outcome.items() if created]
    assert len(winners) == 1
    found = FolderLedger(root).get("app.contended")
    assert found is not None
    assert found[0].correlation_id == f"process-{winners[0]}"


def test_folder_concurrent_replaces_from_processes_have_one_winner(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    ledger = FolderLedger(root)
    ledger.create(make_record())
    found = ledger.get(make_record().request_id)
    assert found is not None
    outcome = _run_children(_replace_in_child, [(str(root), i, found[1]) for i in range(6)])

    winners = [i for i, etag in outcome.items() if etag is not None]
    assert len(winners) == 1
    assert ledger.get(make_record().request_id) == (
        make_record(run_id=f"run-{winners[0]}"),
        outcome[winners[0]],
    )


def test_folder_without_hard_links_still_creates_exclusively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    ledger = FolderLedger(tmp_path)
    assert ledger.create(make_record(correlation_id="first")) is True
    assert ledger.create(make_record(correlation_id="second")) is False
    found = ledger.get(make_record().request_id)
    assert found is not None
    assert found[0].correlation_id == "first"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["app.0123456789abcdef.json"]


def test_folder_layout_leaves_no_temporary_files(tmp_path: Path) -> None:
    ledger = FolderLedger(tmp_path)
    record = make_record()
    ledger.create(record)
    ledger.create(record)
    found = ledger.get(record.request_id)
    assert found is not None
    ledger.replace(record.model_copy(update={"attempts": 2}), found[1])
    with pytest.raises(ConflictError):
        ledger.replace(record, found[1])

    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"{record.request_id}.json"]
    assert (
        LedgerRecord.from_json((tmp_path / "runs" / f"{record.request_id}.json").read_bytes()).attempts == 2
    )


def test_folder_list_skips_unreadable_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = FolderLedger(tmp_path)
    ledger.create(make_record("app.good"))
    ledger.create(make_record("app.bad", created_at=T0 + timedelta(seconds=1)))
    (tmp_path / "runs" / "app.bad.json").write_text("{not json")  # damaged after it was indexed
    (tmp_path / "runs" / ".tmp-leftover.part").write_text("{}")

    assert [r.request_id for r in ledger.list()] == ["app.good"]
    assert "ledger_record_unreadable" in caplog.text
    with pytest.raises(ValidationError):
        ledger.get("app.bad")


# --------------------------------------------------------------------------- the Azurite fixture


def test_missing_azurite_is_a_failure_with_a_fix(tmp_path: Path) -> None:
    with pytest.raises(AzuriteUnavailable, match=r"\./dev setup"):
        start_azurite(root=tmp_path)


def test_fresh_azurite_is_a_separate_instance(azurite: AzuriteServer, fresh_azurite: AzuriteServer) -> None:
    assert fresh_azurite.port != azurite.port
    private = fresh_azurite.new_container("private").container_name
    assert private in {c.name for c in fresh_azurite.service_client().list_containers()}
    assert private not in {c.name for c in azurite.service_client().list_containers()}


# --- summaries (run budgets, orphan recovery) --------------------------------------------------


def test_summaries_follow_every_write(ledger: Ledger) -> None:
    first, second = make_record("app.first"), make_record("app.second", created_at=T0 + timedelta(seconds=5))
    etag = ledger.create_versioned(first)
    assert etag is not None and ledger.create(second)
    finished = first.model_copy(
        update={
            "status": RunStatus.DISPATCHED,
            "run_id": "cb1",
            "run_status": "Succeeded",
            "following": False,
            "backend": "acr",
            "start_uncertain_at": T0 + timedelta(seconds=1),
            "updated_at": T0 + timedelta(minutes=2),
        }
    )
    ledger.replace(finished, etag)
    summaries = list(ledger.list_summaries(since=T0 - timedelta(days=1)))
    assert summaries == [RecordSummary.of(second), RecordSummary.of(finished)]


def test_blob_summaries_come_from_the_listing_alone(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget check lists; it must not download one record per run in flight. A record an
    older version wrote (no summary metadata) is read once instead."""
    container = ContainerClient.from_connection_string(azurite.connection_string, "summaries")
    ledger = BlobLedger(container)
    records = [make_record(f"app.r{i}", created_at=T0 + timedelta(seconds=i)) for i in range(3)]
    for record in records:
        assert ledger.create(record)
    old = make_record("app.old", created_at=T0 - timedelta(seconds=1))
    container.upload_blob("runs/app.old.json", old.to_json())  # as before summaries existed
    reads: list[str] = []
    real_read = ledger._read_listed

    def counted(name: str) -> tuple[LedgerRecord, str] | None:
        reads.append(name)
        return real_read(name)

    monkeypatch.setattr(ledger, "_read_listed", counted)
    summaries = {s.request_id: s for s in ledger.list_summaries(since=T0 - timedelta(days=1))}
    assert summaries == {r.request_id: RecordSummary.of(r) for r in [*records, old]}
    assert reads == ["runs/app.old.json"]


@pytest.mark.parametrize(
    "text",
    ["", "not json", "{}", '{"request_id": "a", "status": "bogus"}', '["a"]', '{"request_id": 1}'],
)
def test_a_summary_this_version_cannot_read_means_read_the_record(text: str) -> None:
    assert RecordSummary.from_metadata(text) is None


def test_a_summary_round_trips_as_ascii_metadata() -> None:
    summary = RecordSummary.of(full_record().model_copy(update={"start_uncertain_at": T0}))
    text = summary.to_metadata()
    assert text.isascii() and len(text) < 1024
    assert RecordSummary.from_metadata(text) == summary


def test_summaries_since_the_beginning_of_time(ledger: Ledger) -> None:
    record = make_record("app.ancient")
    assert ledger.create(record)
    assert [s.request_id for s in ledger.list_summaries(since=datetime.min.replace(tzinfo=UTC))] == [
        "app.ancient"
    ]

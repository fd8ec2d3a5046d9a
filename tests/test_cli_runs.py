"""``slipway runs list/show/logs/watch`` through the real CLI entry point: on the local folder
ledger and on the Blob ledger (Azurite), and against the loopback ACR server (the real
management SDK over HTTPS) for the run's log and its status."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.acr.run_backend import AcrBackend, DryRunBackend
from shared.app.cli import main
from shared.app.commands import _runs_logs, _runs_records, _runs_watch
from shared.app.runtime import Runtime, set_runtime
from shared.dispatch.dispatcher import Dispatcher
from shared.platform.ledger import FolderLedger, LedgerRecord, RunStatus
from tests.support.acr_server import LOG_SAS_SIGNATURE, AcrServer, ScriptedResponse, StaticTokenCredential

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_REQUEST = ROOT / "examples" / "build-request.json"
EXAMPLE_CONFIG = ROOT / "examples" / "slipway.yaml"
ACR_NAMES = {"ACR_SUBSCRIPTION_ID": "sub-1", "ACR_RESOURCE_GROUP": "rg-1", "ACR_NAME": "slipwayreg"}


def _clear_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in (
        "ServiceBusConnection",
        "ServiceBusConnection__fullyQualifiedNamespace",
        "AzureWebJobsStorage",
        "SLIPWAY_LEDGER_CONTAINER",
        "SLIPWAY_PORTAL_TENANT",
        *ACR_NAMES,
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SLIPWAY_CONFIG", str(EXAMPLE_CONFIG))


@pytest.fixture(params=["folder", "blob"])
def ledger_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The CLI's state: the local folder, or Blob Storage (Azurite) through AzureWebJobsStorage."""
    _clear_env(monkeypatch, tmp_path)
    if request.param == "blob":
        azurite = request.getfixturevalue("azurite")
        container = azurite.new_container("runs")
        monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
        monkeypatch.setenv("SLIPWAY_LEDGER_CONTAINER", container.container_name)
    return str(request.param)


@pytest.fixture
def cli(ledger_kind: str) -> Iterator[Runtime]:
    runtime = Runtime()
    set_runtime(runtime)
    yield runtime
    set_runtime(None)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def _record(
    request_id: str,
    created_at: datetime,
    *,
    target: str = "web",
    kind: str = "push",
    ref: str = "refs/heads/main",
    status: RunStatus = RunStatus.DISPATCHED,
    run_status: str | None = "Succeeded",
    started: datetime | None = None,
    finished: datetime | None = None,
    backend: str = "acr",
    task_yaml: str | None = "version: v1.1.0\nsteps: []\n",
) -> LedgerRecord:
    request = json.loads(EXAMPLE_REQUEST.read_text())
    request.update(id=request_id, target=target)
    request["trigger"]["kind"] = kind
    request["source"]["ref"] = ref
    dispatched = status is RunStatus.DISPATCHED
    return LedgerRecord(
        request_id=request_id,
        target=target,
        status=status,
        created_at=created_at,
        updated_at=created_at,
        correlation_id="c-" + request_id,
        payload_hash="h",
        request=request,
        backend=backend if dispatched else None,
        run_id=f"run-{request_id}" if dispatched else None,
        run_status=run_status if dispatched else None,
        run_started_at=started,
        run_finished_at=finished,
        following=False,
        task_yaml=task_yaml,
    )


NOW = datetime.now(UTC).replace(microsecond=0)


def _history(runtime: Runtime) -> list[LedgerRecord]:
    """Eight requests over three days, newest first."""
    records = [
        _record(
            "r8",
            NOW - timedelta(minutes=10),
            kind="rerun",
            run_status="Running",
            started=NOW - timedelta(minutes=5),
        ),
        _record("r7", NOW - timedelta(minutes=50), target="api", kind="tag", ref="refs/tags/v1.2.0"),
        _record(
            "r6",
            NOW - timedelta(hours=1),
            run_status="Failed",
            started=NOW - timedelta(hours=1),
            finished=NOW - timedelta(hours=1) + timedelta(minutes=3, seconds=12),
        ),
        _record("r5", NOW - timedelta(hours=3), status=RunStatus.FAILED, kind="base-image"),
        _record("r4", NOW - timedelta(hours=5), target="api", kind="schedule", ref="refs/heads/release"),
        _record("r3", NOW - timedelta(days=1), kind="replay", run_status="Canceled"),
        _record("r2", NOW - timedelta(days=2), status=RunStatus.SUPERSEDED),
        _record("r1", NOW - timedelta(days=3), target="api"),
    ]
    ledger = runtime.ledger()
    for record in records:
        assert ledger.create(record)
    return records


def _ids(listing: Any) -> list[str]:
    return [row["request_id"] for row in listing["runs"]]


def test_list_filters_columns_and_paging(cli: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    _history(cli)
    every = _json(capsys, "runs", "list")
    assert _ids(every) == ["r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1"]
    rows = {row["request_id"]: row for row in every["runs"]}
    assert [rows[i]["trigger"] for i in ("r8", "r7", "r5", "r4", "r3")] == [
        "rerun",
        "tag",
        "base-image",
        "schedule",
        "replay",
    ]
    assert rows["r6"]["duration_seconds"] == 192.0  # 3 min 12 s from start to finish
    assert rows["r8"]["duration_seconds"] >= 300  # running: the time so far
    assert rows["r7"]["duration_seconds"] is None  # no start time recorded
    assert rows["r6"]["run_status"] == "Failed"

    assert _ids(_json(capsys, "runs", "list", "--target", "api")) == ["r7", "r4", "r1"]
    # "failed" is the ledger's (refused by ACR) or ACR's (the run failed); any case.
    assert _ids(_json(capsys, "runs", "list", "--status", "FAILED")) == ["r6", "r5"]
    assert _ids(_json(capsys, "runs", "list", "--status", "running,canceled")) == ["r8", "r3"]
    assert _ids(_json(capsys, "runs", "list", "--status", "superseded", "--status", "dispatching")) == ["r2"]
    assert _ids(_json(capsys, "runs", "list", "--ref", "release")) == ["r4"]
    assert _ids(_json(capsys, "runs", "list", "--ref", "refs/tags/v1.2.0")) == ["r7"]
    assert _ids(_json(capsys, "runs", "list", "--ref", "v1.2.0", "--target", "web")) == []
    assert _ids(_json(capsys, "runs", "list", "--since", "2h")) == ["r8", "r7", "r6"]
    since_iso = (NOW - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%S")  # naive: UTC
    assert _ids(_json(capsys, "runs", "list", "--since", since_iso, "--target", "api")) == ["r7", "r4"]

    # Filtered pages continue with --before exactly like plain ones.
    pages: list[list[str]] = []
    argv = ["runs", "list", "--target", "web", "--limit", "2"]
    cursor = None
    while True:
        page = _json(capsys, *argv, *(["--before", cursor] if cursor else []))
        pages.append(_ids(page))
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == [["r8", "r6"], ["r5", "r3"], ["r2"]]


def test_a_filter_that_matches_little_reads_a_bounded_page(
    cli: Runtime, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _history(cli)
    monkeypatch.setattr(_runs_records, "SCAN_LIMIT", 3)
    ledger = cli.ledger()
    reads_before = ledger.record_reads if isinstance(ledger, FolderLedger) else 0
    # A ref is in the record only: each page reads at most SCAN_LIMIT records.
    first = _json(capsys, "runs", "list", "--ref", "nothing-matches")
    assert first["runs"] == [] and first["next"] is not None
    if isinstance(ledger, FolderLedger):
        assert ledger.record_reads - reads_before == 3
    seen = 1
    cursor = first["next"]
    while cursor is not None:
        page = _json(capsys, "runs", "list", "--ref", "nothing-matches", "--before", cursor)
        assert page["runs"] == []
        cursor = page["next"]
        seen += 1
    assert seen == 3  # 8 records, at most 3 read per page
    code, out, _err = _run(capsys, "runs", "list", "--target", "api")
    assert code == 0
    code, out, _err = _run(capsys, "runs", "list", "--ref", "nothing-matches")
    assert "without filling the page" in out and "--before" in out
    # A target is in the summaries: on Blob, decided from the listing, without reading a record.
    if not isinstance(ledger, FolderLedger):
        assert _json(capsys, "runs", "list", "--target", "nothing-matches") == {"runs": [], "next": None}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "yesterday"], "--since"),
        (["--before", "not-a-cursor"], "--before"),
        (["--limit", "0"], "positive"),
        (["--limit", "x"], "positive"),
        (["--status", "running,finished"], "unknown status finished"),
    ],
)
def test_bad_list_options_are_one_line(
    cli: Runtime, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _run(capsys, "runs", "list", *argv)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("width", [60, 100, 120, 200])
def test_ids_stay_whole_and_the_table_fits_the_terminal(
    cli: Runtime, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    long_id = "web.0123456789abcdef0123456789abcdef"  # the length request ids have
    cli.ledger().create(_record(long_id, NOW, kind="schedule"))
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, err = _run(capsys, "runs", "list")
    assert code == 0
    assert long_id in out and f"run-{long_id}" in out
    widest = max(len(line) for line in out.splitlines())
    ids = len(long_id) + len(f"run-{long_id}") + 3 * 3 + 1  # the two ids, their padding, borders
    if width >= ids + 8 * 11:  # the ids and the other columns at a readable width
        assert widest <= width, out
    if width >= 200:  # room for everything: nothing left out
        assert "left out" not in err
        for heading in ("acr", "trigger", "duration", "created"):
            assert heading in out
    if width <= 120:  # the least needed columns give way first, and the operator is told
        assert "created at" in err and "--json" in err
        assert "status" in out and "target" in out


def test_show_prints_the_whole_task_and_the_portal_link(
    cli: Runtime, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    long_line = "      - " + "x" * 400
    task = f"version: v1.1.0\nsteps:\n  - cmd: |\n{long_line}\n    timeout: 3600\n"
    cli.ledger().create(_record("r1", NOW, task_yaml=task))
    for name, value in ACR_NAMES.items():
        monkeypatch.setenv(name, value)
    shown = _json(capsys, "runs", "show", "run-r1")
    # The portal's resource deep link (#@<tenant>/resource<ARM id of the run>).
    assert shown["portal_url"] == (
        "https://portal.azure.com/#@/resource/subscriptions/sub-1/resourceGroups/rg-1/providers"
        "/Microsoft.ContainerRegistry/registries/slipwayreg/runs/run-r1"
    )
    assert shown["task_yaml"] == task and shown["trigger"] == "push"
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _err = _run(capsys, "runs", "show", "r1")
    assert code == 0
    assert long_line in out.splitlines()  # not cropped, not folded
    assert f"portal url: {shown['portal_url']}" in out.splitlines()  # one line, copyable
    code, _out, err = _run(capsys, "runs", "show", "../etc/passwd")
    assert code == 1 and "no run with request id or run id" in err and "Traceback" not in err


def test_logs_of_a_dry_run_print_its_task_and_a_note(
    cli: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    dispatcher = Dispatcher(config=cli.config, ledger=cli.ledger(), backend=DryRunBackend(), settings={})
    result = dispatcher.dispatch(EXAMPLE_REQUEST.read_bytes(), message_id="m-1")
    record = cli.ledger().get(str(result.request_id))
    assert record is not None and record[0].task_yaml
    code, out, err = _run(capsys, "runs", "logs", str(result.request_id))
    assert code == 0
    assert out == record[0].task_yaml if record[0].task_yaml.endswith("\n") else record[0].task_yaml + "\n"
    assert "no ACR run" in err and len(err.strip().splitlines()) == 1
    # watch has nothing to wait for.
    outcome = _json(capsys, "runs", "watch", str(result.run_id), "--exit-status")
    assert outcome["exit_code"] == 0 and outcome["backend"] == "dry-run"


# --- against the loopback ACR server --------------------------------------------------------


@pytest.fixture
def acr_cli(
    ledger_kind: str, acr_server: AcrServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Runtime, AcrServer]]:
    for name, value in ACR_NAMES.items():
        monkeypatch.setenv(name, value)
    backend = AcrBackend(
        subscription_id=ACR_NAMES["ACR_SUBSCRIPTION_ID"],
        resource_group=ACR_NAMES["ACR_RESOURCE_GROUP"],
        registry_name=ACR_NAMES["ACR_NAME"],
        credential=StaticTokenCredential(),
        base_url=acr_server.base_url,
        connection_verify=acr_server.ca_path,
    )
    runtime = Runtime(backend=backend)
    set_runtime(runtime)
    yield runtime, acr_server
    set_runtime(None)


def _dispatch(runtime: Runtime) -> tuple[str, str]:
    dispatcher = Dispatcher(
        config=runtime.config, ledger=runtime.ledger(), backend=runtime.backend(), settings={}
    )
    result = dispatcher.dispatch(EXAMPLE_REQUEST.read_bytes(), message_id="m-1")
    assert result.run_id
    return str(result.request_id), str(result.run_id)


class _Script:
    """Stands in for the waits: each wait moves the run on, so following needs no real time."""

    def __init__(self, steps: list[Callable[[], None]]) -> None:
        self.steps = steps
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.steps:
            self.steps.pop(0)()
        assert len(self.waits) < 50, "following never ended"


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert LOG_SAS_SIGNATURE not in text and "sig=" not in text


def test_logs_of_a_finished_run(
    acr_cli: tuple[Runtime, AcrServer], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    runtime, server = acr_cli
    request_id, run_id = _dispatch(runtime)
    log = "2026/12/04 03:00:00 Downloading source code...\nslipway-result: ok ✓\n"
    server.set_log(run_id, log, complete=True)
    server.set_status(run_id, "Succeeded")
    caplog.set_level(logging.DEBUG)
    code, out, err = _run(capsys, "runs", "logs", request_id)
    assert code == 0 and out == log
    _no_secret(out, err, caplog.text)
    # One read from the start, one more that finds nothing past the end (416).
    assert [r.headers["range"] for r in server.log_reads(run_id)] == [
        "bytes=0-",
        f"bytes={len(log.encode())}-",
    ]


def test_logs_follow_a_growing_log_through_throttling(
    acr_cli: tuple[Runtime, AcrServer],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, server = acr_cli
    _request_id, run_id = _dispatch(runtime)
    server.set_status(run_id, "Running")
    server.set_log(run_id, "step 1\n")
    throttled: list[str] = []

    def throttle_second_blob_read(request: Any) -> ScriptedResponse | None:
        if request.path == f"/logs/{run_id}" and len(server.log_reads(run_id)) == 2 and not throttled:
            throttled.append(request.headers.get("range", ""))
            return ScriptedResponse(429, {"Retry-After": "7"}, {"error": "ServerBusy"})
        return None

    def finish() -> None:
        # The run ends with its last line not read yet: following must still read it.
        server.set_status(run_id, "Succeeded")
        server.append_log(run_id, "done\n")

    server.fault_hook = throttle_second_blob_read
    script = _Script(
        [
            lambda: server.append_log(run_id, "step 2: héllo\n"),
            lambda: None,
            lambda: server.append_log(run_id, "step 3\n"),
            finish,
        ]
    )
    monkeypatch.setattr(_runs_logs, "sleep", script)
    # The first look at the run is throttled by ARM too.
    server.fail_next(429, headers={"Retry-After": "4"})
    caplog.set_level(logging.DEBUG)
    code, out, err = _run(capsys, "runs", "logs", run_id, "--follow")
    assert code == 0, err
    assert out == "step 1\nstep 2: héllo\nstep 3\ndone\n"
    assert 4.0 in script.waits and 7.0 in script.waits  # each Retry-After was honoured
    assert throttled, "the blob read was never throttled"
    ranges = [r.headers.get("range") for r in server.log_reads(run_id)]
    assert ranges[0] == "bytes=0-"
    # Only the new bytes are asked for, from where the last read ended (é is two bytes).
    first_two = len("step 1\nstep 2: héllo\n".encode())
    assert f"bytes={first_two}-" in ranges
    starts = [int(str(r).removeprefix("bytes=").rstrip("-")) for r in ranges]
    assert starts == sorted(starts) and starts[-1] == len(out.encode())
    assert "Succeeded" in err
    _no_secret(out, err, caplog.text)


def test_logs_follow_stop_at_the_complete_metadata(
    acr_cli: tuple[Runtime, AcrServer], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, server = acr_cli
    _request_id, run_id = _dispatch(runtime)
    server.set_status(run_id, "Running")  # ARM still says running
    script = _Script([lambda: server.set_log(run_id, "all of it\n", complete=True)])
    monkeypatch.setattr(_runs_logs, "sleep", script)
    code, out, _err = _run(capsys, "runs", "logs", run_id, "-f")
    assert code == 0 and out == "all of it\n"


def test_logs_of_an_acr_run_without_acr_settings_is_one_line(
    acr_cli: tuple[Runtime, AcrServer], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, _server = acr_cli
    request_id, _run_id = _dispatch(runtime)
    for name in ACR_NAMES:
        monkeypatch.delenv(name)
    set_runtime(Runtime())
    code, out, err = _run(capsys, "runs", "logs", request_id)
    assert code == 1 and out == ""
    assert "ACR_SUBSCRIPTION_ID" in err and len(err.strip().splitlines()) == 1


def test_logs_failure_names_the_status_not_the_link(
    acr_cli: tuple[Runtime, AcrServer], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime, server = acr_cli
    request_id, run_id = _dispatch(runtime)
    server.set_log(run_id, "x\n")
    server.fault_hook = lambda r: (
        ScriptedResponse(500 + 2, {}, {"error": "x"}) if r.path.startswith("/logs/") else None
    )
    code, out, err = _run(capsys, "runs", "logs", request_id)
    assert code == 1 and "HTTP 502" in err
    _no_secret(out, err)


@pytest.mark.parametrize(
    ("final", "exit_code"),
    [("Succeeded", 0), ("Failed", 3), ("Error", 3), ("Canceled", 4), ("Timeout", 5)],
)
def test_watch_exit_status(
    acr_cli: tuple[Runtime, AcrServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    final: str,
    exit_code: int,
) -> None:
    runtime, server = acr_cli
    request_id, run_id = _dispatch(runtime)
    script = _Script(
        [
            lambda: server.set_status(run_id, "Running"),
            lambda: server.set_status(
                run_id, final, error=None if final == "Succeeded" else "step build failed"
            ),
        ]
    )
    monkeypatch.setattr(_runs_watch, "sleep", script)
    server.fail_next(429, headers={"Retry-After": "9"})
    code, out, err = _run(capsys, "runs", "watch", request_id, "--exit-status", "--json")
    assert code == exit_code, err
    outcome = json.loads(out)
    assert outcome["run_status"] == final and outcome["run_id"] == run_id
    assert outcome["exit_code"] == exit_code and outcome["request_id"] == request_id
    assert 9.0 in script.waits  # ARM's Retry-After
    assert outcome["run_finished_at"] is not None


def test_watch_without_exit_status_exits_zero_and_prints_plain_lines(
    acr_cli: tuple[Runtime, AcrServer], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, server = acr_cli
    request_id, run_id = _dispatch(runtime)
    script = _Script(
        [
            lambda: server.set_status(run_id, "Running"),
            lambda: None,
            lambda: server.set_status(run_id, "Failed", error="exit status 1"),
        ]
    )
    monkeypatch.setattr(_runs_watch, "sleep", script)
    code, out, err = _run(capsys, "runs", "watch", run_id, "--interval", "2")
    assert code == 0
    assert script.waits == [2.0, 2.0, 2.0]
    assert f"run {run_id}: Queued" in err and f"run {run_id}: Running" in err
    assert err.count("Running") == 1  # one line per change, not per look
    assert out.strip().startswith(f"run {run_id} ({request_id}): Failed") and "exit status 1" in out


def test_watch_waits_for_the_dispatcher_then_reports_a_refused_request(
    cli: Runtime, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = cli.ledger()
    ledger.create(_record("r1", NOW, status=RunStatus.DISPATCHING))

    def refuse() -> None:
        found = ledger.get("r1")
        assert found is not None
        refused = found[0].model_copy(
            update={"status": RunStatus.FAILED, "error": "HTTP 400 InvalidRequestBody"}
        )
        ledger.replace(refused, found[1])

    script = _Script([lambda: None, refuse])
    monkeypatch.setattr(_runs_watch, "sleep", script)
    code, out, err = _run(capsys, "runs", "watch", "r1", "--exit-status")
    assert code == 3 and len(script.waits) == 2
    assert "r1: dispatching, no run yet" in err
    assert out.strip() == "r1: failed, no run was started: HTTP 400 InvalidRequestBody"


def test_watch_and_follow_end_when_a_pending_request_is_cancelled(
    cli: Runtime, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request cancelled before its run started ends the wait: watch says cancelled (exit 4),
    logs --follow stops, rather than both waiting for a run that will never exist."""
    ledger = cli.ledger()
    ledger.create(_record("r1", NOW, status=RunStatus.RETRYING))

    def cancel() -> None:
        assert main(["cancel", "r1", "--reason", "not needed", "--actor", "ops"]) == 0

    script = _Script([cancel])
    monkeypatch.setattr(_runs_watch, "sleep", script)
    code, _out, _err = _run(capsys, "runs", "watch", "r1", "--exit-status")
    assert code == 4 and len(script.waits) == 1
    found = ledger.get("r1")
    assert found is not None and found[0].status is RunStatus.CANCELLED
    code, out, err = _run(capsys, "runs", "logs", "r1", "--follow")
    assert "cancelled" in (out + err)


def test_watch_on_a_terminal_shows_a_spinner_and_keeps_stdout_for_the_outcome(
    acr_cli: tuple[Runtime, AcrServer], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, server = acr_cli
    request_id, run_id = _dispatch(runtime)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats the streams as a terminal
    script = _Script([lambda: server.set_status(run_id, "Succeeded")])
    monkeypatch.setattr(_runs_watch, "sleep", script)
    code, out, err = _run(capsys, "runs", "watch", request_id, "--exit-status")
    assert code == 0
    assert "\x1b[?25l" in err and f"run {run_id}: Queued" in err  # a live display (cursor hidden)
    assert f"{run_id}" in out and "Succeeded" in out


def test_logs_of_a_run_without_a_log_yet_say_so(
    acr_cli: tuple[Runtime, AcrServer], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime, _server = acr_cli
    request_id, run_id = _dispatch(runtime)  # Queued: the log blob does not exist yet (404)
    code, out, err = _run(capsys, "runs", "logs", request_id)
    assert code == 0 and out == ""
    assert f"run {run_id} has no log yet" in err


def test_logs_ask_for_a_new_link_when_the_old_one_is_refused(
    acr_cli: tuple[Runtime, AcrServer], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime, server = acr_cli
    request_id, run_id = _dispatch(runtime)
    server.set_log(run_id, "line\n", complete=True)
    refused: list[bool] = []

    def expire_once(request: Any) -> ScriptedResponse | None:
        if request.path.startswith("/logs/") and not refused:
            refused.append(True)
            return ScriptedResponse(403, {}, {"error": "AuthenticationFailed"})  # an expired SAS
        return None

    server.fault_hook = expire_once
    code, out, _err = _run(capsys, "runs", "logs", request_id)
    assert code == 0 and out == "line\n"
    assert len([r for r in server.requests if r.path.endswith("/listLogSasUrl")]) == 2


def test_logs_follow_waits_for_a_request_still_being_dispatched(
    acr_cli: tuple[Runtime, AcrServer], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, server = acr_cli
    request_id, run_id = _dispatch(runtime)
    ledger = runtime.ledger()
    found = ledger.get(request_id)
    assert found is not None
    dispatched, etag = found
    pending = dispatched.model_copy(
        update={"status": RunStatus.DISPATCHING, "run_id": None, "backend": None, "run_status": None}
    )
    etag = ledger.replace(pending, etag)

    def run_starts() -> None:
        ledger.replace(dispatched, etag)
        server.set_log(run_id, "started\n", complete=True)
        server.set_status(run_id, "Succeeded")

    script = _Script([run_starts])
    monkeypatch.setattr(_runs_logs, "sleep", script)
    code, out, err = _run(capsys, "runs", "logs", request_id, "--follow")
    assert code == 0, err
    assert out == "started\n" and script.waits == [_runs_logs.DISPATCH_POLL]
    assert "dispatching, no run yet; waiting for its run" in err

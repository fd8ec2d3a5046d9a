"""`slipway render` prints the task the dispatcher sends; a dry run that lacks secrets is recorded.

Both go through ``shared.acr.run_prepare.prepare_run``. The task text holds secrets only as
``{{.Values.x}}`` placeholders, so the two tasks must be equal but for the run's result marker
(random per claim), which the comparison replaces inside the decoded step scripts.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.acr.run_backend import DryRunBackend, RunHandle
from shared.acr.task import RESULT_MARKER, RunSpec
from shared.app.cli import main
from shared.dispatch.dispatcher import Dispatcher, Outcome
from shared.model.config import load_config
from shared.platform.ledger import FolderLedger, RunStatus
from tests.support.agent import Agent

COMMIT = "3f5a0c9e1b7d2486a1c0e9f8b7d6c5a4e3f2a1b0"
ACCOUNT_KEY = "c2VjcmV0LWtleS1kby1ub3QtbGVhaw=="
GIT_TOKEN = "ATCTT3xFfGN0-not-a-real-token"
SETTINGS = {"SLIPWAY_CACHE_ACCOUNT_KEY": ACCOUNT_KEY, "GIT_TOKEN_APP": GIT_TOKEN}
CONFIG = """\
registry: slipway.azurecr.io
cache:
  account_url: https://slipwaycache.blob.core.windows.net
  auth: account-key
targets:
  - name: app
    repo: https://bitbucket.org/workspace/private-app
    branches: [develop]
    default_branch: develop
    image: team/app
    platforms: [linux/amd64, linux/arm64]
    git_token_setting: GIT_TOKEN_APP
"""
RENDER = ["--target", "app", "--commit", COMMIT, "--ref", "refs/heads/develop"]


class RecordingBackend(DryRunBackend):
    """A real backend as far as the dispatcher can tell; keeps what it was asked to start."""

    name = "acr"

    def __init__(self) -> None:
        self.started: list[RunSpec] = []

    def start(self, spec: RunSpec, *, request_id: str, correlation_id: str) -> RunHandle:
        self.started.append(spec)
        return RunHandle(run_id="run-1", status="Queued", backend=self.name)


def _script(launcher_b64: str) -> str:
    """The step script a launcher (a ``slipway`` volume file) decodes and runs."""
    lines = base64.b64decode(launcher_b64).decode().splitlines()
    start = lines.index("base64 -d <<'SLIPWAY_SCRIPT' | sh -eu") + 1
    return base64.b64decode("".join(lines[start : lines.index("SLIPWAY_SCRIPT")])).decode()


def normalised(task_yaml: str, marker: str) -> dict[str, Any]:
    """The task with each step script decoded and the run's marker replaced."""
    task: dict[str, Any] = yaml.safe_load(task_yaml)
    for volume in task["volumes"]:
        if volume["name"] == "slipway":
            volume["secret"] = {
                name: _script(value).replace(marker, "<marker>") for name, value in volume["secret"].items()
            }
    return task


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "slipway.yaml"
    path.write_text(CONFIG)
    return path


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


def _dispatcher(
    tmp_path: Path, config_file: Path, backend: DryRunBackend, settings: dict[str, str]
) -> Dispatcher:
    config = load_config(config_file)
    return Dispatcher(
        config=lambda: config, ledger=FolderLedger(tmp_path / "ledger"), backend=backend, settings=settings
    )


def test_render_prints_what_the_dispatcher_sends(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request_json = _cli(capsys, "render", "--config", str(config_file), *RENDER, "--request")
    request_file = tmp_path / "request.json"
    request_file.write_text(request_json)
    printed = _cli(capsys, "render", "--config", str(config_file), *RENDER)
    assert (
        _cli(capsys, "render", "--config", str(config_file), "--request-file", str(request_file)) == printed
    )
    # The default branch is the target's: develop gets `latest` (nothing assumes main).
    assert "latest" in json.loads(request_json)["image"]["tags"]

    backend = RecordingBackend()
    result = _dispatcher(tmp_path, config_file, backend, SETTINGS).dispatch(request_json, message_id="m-1")
    assert result.outcome is Outcome.DISPATCHED, result
    [sent] = backend.started
    assert sent.result_marker != RESULT_MARKER
    assert normalised(printed, RESULT_MARKER) == normalised(sent.task_yaml, sent.result_marker)

    # What the printed task holds that a render without secrets used to lose.
    task = yaml.safe_load(printed)
    secrets_volume = next(v for v in task["volumes"] if v["name"] == "slipway-secrets")
    assert secrets_volume["secret"] == {
        "cache-account-key": "{{.Values.slipwayCacheAccountKey}}",
        "git-token": "{{.Values.slipwayGitToken}}",
    }
    build_step = next(s for s in task["steps"] if s["id"] == "build")
    assert {"name": "slipway-secrets", "mountPath": "/run/slipway-secrets"} in build_step["volumeMounts"]
    assert [v.name for v in sent.values] == ["slipwayCacheAccountKey", "slipwayGitToken"]

    # The printed task runs as sent: given the run's values, the build step gets both secrets.
    (tmp_path / "agent").mkdir()
    agent = Agent(tmp_path / "agent")
    results = agent.run_task(printed, ((v.name, v.value) for v in sent.values))
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    build = next(c["argv"] for c in agent.docker_calls() if c["argv"][:2] == ["buildx", "build"])
    assert build[build.index("--cache-to") + 1].endswith(f",secret_access_key={ACCOUNT_KEY}")
    assert "id=GIT_AUTH_HEADER.bitbucket.org,env=GIT_AUTH_HEADER" in build


def test_a_dry_run_without_its_secrets_is_recorded_as_one_that_could_not_run(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request_json = _cli(capsys, "render", "--config", str(config_file), *RENDER, "--request")
    printed = _cli(capsys, "render", "--config", str(config_file), *RENDER)
    dry = _dispatcher(tmp_path, config_file, DryRunBackend(), {"GIT_TOKEN_APP": GIT_TOKEN})
    result = dry.dispatch(request_json, message_id="m-1")
    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTER, "MissingSetting")
    assert "SLIPWAY_CACHE_ACCOUNT_KEY" in (result.description or "")

    ledger = FolderLedger(tmp_path / "ledger")
    found = ledger.get(json.loads(request_json)["id"])
    assert found is not None
    record = found[0]
    assert (record.status, record.failure_reason, record.backend) == (
        RunStatus.FAILED,
        "MissingSetting",
        "dry-run",
    )
    assert record.run_id is None and record.dead_letter_message_id == "m-1"
    assert "SLIPWAY_CACHE_ACCOUNT_KEY is not set" in (record.error or "")
    assert [entry["event"] for entry in record.history] == ["not_run"]
    # It records the task a real run would have been sent, secrets as placeholders only.
    assert record.task_yaml is not None and record.result_marker is not None
    assert normalised(record.task_yaml, record.result_marker) == normalised(printed, RESULT_MARKER)
    assert record.run_request is not None
    assert [(v["name"], v["value"]) for v in record.run_request["values"]] == [
        ("slipwayCacheAccountKey", "***"),
        ("slipwayGitToken", "***"),
    ]
    assert GIT_TOKEN not in json.dumps(record.model_dump(mode="json"))

    # A redelivery is refused the same way; nothing else is written.
    again = dry.dispatch(request_json, message_id="m-1")
    assert (again.outcome, again.reason) == (Outcome.DEAD_LETTER, "MissingSetting")
    after = ledger.get(record.request_id)
    assert after is not None and after[0].history == record.history

    # Nothing is lost: with the setting set, the replayed message dispatches.
    fixed = _dispatcher(tmp_path, config_file, DryRunBackend(), SETTINGS)
    replayed = fixed.dispatch(request_json, message_id=f"{record.request_id}-r1")
    assert replayed.outcome is Outcome.DISPATCHED, replayed
    final = ledger.get(record.request_id)
    assert final is not None and final[0].status is RunStatus.DISPATCHED


def test_render_takes_runs_show_output_and_refuses_what_the_dispatcher_refuses(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--request-file`` takes the whole ``slipway runs show --json`` output, and a request the
    dispatcher would dead-letter (``RequestNotAllowedForTarget``) is refused with its reason."""
    request_json = _cli(capsys, "render", "--config", str(config_file), *RENDER, "--request")
    printed = _cli(capsys, "render", "--config", str(config_file), *RENDER)
    state = tmp_path / "state"
    dispatched = Dispatcher(
        config=lambda: load_config(config_file),
        ledger=FolderLedger(state / "ledger"),
        backend=DryRunBackend(),
        settings=SETTINGS,
    ).dispatch(request_json, message_id="m-1")
    assert dispatched.outcome is Outcome.DISPATCHED, dispatched
    flags = ["--config", str(config_file), "--state-dir", str(state)]
    shown = _cli(capsys, "runs", "show", str(dispatched.request_id), *flags, "--json")
    show_file = tmp_path / "show.json"
    show_file.write_text(shown)
    assert _cli(capsys, "render", *flags, "--request-file", str(show_file)) == printed

    # The record's request, edited to push to another image: the dispatcher's reason, no task.
    forged: dict[str, Any] = json.loads(shown)
    forged["request"]["image"]["repository"] = "team/other"
    forged["request"]["id"] = "app-forged"
    show_file.write_text(json.dumps(forged))
    capsys.readouterr()
    assert main(["render", *flags, "--request-file", str(show_file)]) == 1
    out, err = capsys.readouterr()
    refused = Dispatcher(
        config=lambda: load_config(config_file),
        ledger=FolderLedger(tmp_path / "other-ledger"),
        backend=DryRunBackend(),
        settings=SETTINGS,
    ).dispatch(json.dumps(forged["request"]), message_id="m-2")
    assert (refused.outcome, refused.reason) == (Outcome.DEAD_LETTER, "RequestNotAllowedForTarget")
    assert out == "" and err.startswith(
        "error: the dispatcher refuses this request (RequestNotAllowedForTarget)"
    )
    assert refused.description is not None and refused.description in err
    # Not JSON at all: one line, no traceback.
    show_file.write_text("not json")
    assert main(["render", *flags, "--request-file", str(show_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --request-file is not JSON (") and "Traceback" not in err


def test_render_without_target_or_request_file_says_what_is_missing(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "--config", str(config_file), "--target", "app"]) == 2
    assert "--commit, --ref required" in capsys.readouterr().err


def test_the_local_example_dispatches_with_azurites_published_key(tmp_path: Path) -> None:
    """examples/slipway.yaml's cache is Azurite's development account, whose key is public: the
    README's local demo needs no SLIPWAY_CACHE_ACCOUNT_KEY for its dry run to be a run."""
    from shared.platform.storage import DEVELOPMENT_STORAGE_KEY

    root = Path(__file__).resolve().parents[1]
    backend = RecordingBackend()
    result = _dispatcher(tmp_path, root / "examples" / "slipway.yaml", backend, {}).dispatch(
        (root / "examples" / "build-request.json").read_bytes()
    )
    assert result.outcome is Outcome.DISPATCHED, result
    [sent] = backend.started
    [value] = sent.values
    assert (value.name, base64.b64decode(value.value).decode()) == (
        "slipwayCacheAccountKey",
        DEVELOPMENT_STORAGE_KEY,
    )


def test_render_takes_the_default_branch_the_git_host_would_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "slipway.yaml"
    path.write_text(CONFIG.replace("    default_branch: develop\n", ""))
    args = ["render", "--config", str(path), *RENDER, "--request"]
    assert main(args) == 0
    captured = capsys.readouterr()
    # The target's only branch filter is its default (default_branch_for), as for a push whose
    # sender reports none; the note says so, and the host's report overrides it.
    assert "latest" in json.loads(captured.out)["image"]["tags"]
    assert "taking 'develop'" in captured.err and "--default-branch" in captured.err
    assert main([*args, "--default-branch", "main"]) == 0
    captured = capsys.readouterr()
    assert "latest" not in json.loads(captured.out)["image"]["tags"] and captured.err == ""

"""The global options through the real entry point: ``--config``, ``--state-dir`` and ``--settings``
on every command, one-line errors for files that are not there, and no empty state folder left
behind by a command that only reads state."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.acr.run_backend import DryRunBackend
from shared.app.cli import build_parser, main
from shared.app.runtime import current_runtime
from shared.dispatch.dispatcher import Dispatcher
from shared.model.config import load_config
from shared.platform.ledger import FolderLedger
from tests.support.azurite import AzuriteServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "examples" / "slipway.yaml"
EXAMPLE_REQUEST = ROOT / "examples" / "build-request.json"
SLIPWAY = Path(sys.executable).with_name("slipway")
SCRUBBED = (
    "ServiceBusConnection",
    "ServiceBusConnection__fullyQualifiedNamespace",
    "AzureWebJobsStorage",
    "SLIPWAY_CONFIG",
    "SLIPWAY_STATE_DIR",
    "BUILD_QUEUE",
)
# Commands that only read state, with the arguments they need.
READERS = [
    ["runs", "list"],
    ["runs", "show", "some-request"],
    ["queue", "list"],
    ["queue", "list", "--dead-letter"],
    ["schedules", "list"],
    ["polls", "list"],
    ["replay", "--dry-run"],
]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory and an environment without any Slipway setting."""
    for name in SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work
    assert current_runtime() is None, "main() left its runtime installed"


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
        return
    for group in groups:
        for name, child in group.choices.items():
            yield from _leaves(child, (*path, name))


def _argv(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    """The command with a placeholder for each required argument, so that it parses."""
    argv = list(path)
    for action in parser._actions:
        if action.option_strings:
            if action.required:
                value = str(next(iter(action.choices))) if action.choices else "x"
                argv += [action.option_strings[0], value]
        elif action.nargs not in ("?", "*", argparse.REMAINDER) and not isinstance(
            action, argparse._SubParsersAction
        ):
            count = action.nargs if isinstance(action.nargs, int) else 1
            argv += [str(next(iter(action.choices))) if action.choices else "x"] * count
    return argv


LEAVES = sorted(_leaves(build_parser()), key=lambda leaf: leaf[0])


def test_every_command_has_the_three_options_once() -> None:
    assert len(LEAVES) > 10
    for path, parser in LEAVES:
        options = [o for a in parser._actions for o in a.option_strings]
        for option in ("--config", "--state-dir", "--settings"):
            assert options.count(option) == 1, (path, option)


@pytest.mark.parametrize(("path", "parser"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_a_missing_config_or_settings_file_is_one_line(
    path: tuple[str, ...], parser: argparse.ArgumentParser, here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The error comes before the command runs, so even `serve` stops here.
    argv = _argv(path, parser)
    before = dict(os.environ)
    for option in ("--config", "--settings"):
        assert main([*argv, option, "missing.file"]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == f"slipway: error: {option} missing.file: no such file\n"
    assert dict(os.environ) == before
    assert list(here.iterdir()) == []


@pytest.mark.parametrize("argv", READERS, ids=" ".join)
def test_a_reader_on_a_missing_state_folder_says_so_and_creates_nothing(
    argv: list[str], here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--config", str(EXAMPLE_CONFIG)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"no state folder {here / '.slipway'}" in err and "--state-dir" in err
    assert list(here.iterdir()) == []
    typo = here / "stat"
    assert main([*argv, "--config", str(EXAMPLE_CONFIG), "--state-dir", str(typo)]) == 1
    assert f"no state folder {typo}" in capsys.readouterr().err
    assert not typo.exists()


def _populate(state: Path) -> str:
    """A state folder with one queued message and one dry-run dispatch in its ledger."""
    assert (
        main(["queue", "send", str(EXAMPLE_REQUEST), "--state-dir", str(state)]) == 0
    )  # a writer creates it
    config = load_config(EXAMPLE_CONFIG)
    dispatcher = Dispatcher(
        config=lambda: config, ledger=FolderLedger(state / "ledger"), backend=DryRunBackend(), settings={}
    )
    result = dispatcher.dispatch(EXAMPLE_REQUEST.read_bytes(), message_id="m-1")
    return str(result.request_id)


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_state_dir_points_every_reader_at_that_folder(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = here / "elsewhere"
    request_id = _populate(state)
    flags = ["--state-dir", str(state), "--config", str(EXAMPLE_CONFIG)]
    [run] = _json(capsys, "runs", "list", *flags)["runs"]
    assert run["request_id"] == request_id
    assert _json(capsys, "runs", "show", request_id, *flags)["request_id"] == request_id
    [message] = _json(capsys, "queue", "list", *flags)["messages"]
    assert message["message_id"] == json.loads(EXAMPLE_REQUEST.read_text())["id"]
    assert _json(capsys, "schedules", "list", *flags)["schedules"]
    assert _json(capsys, "polls", "list", *flags)["images"]
    assert _json(capsys, "replay", "--dry-run", *flags)["dry_run"] is True
    assert not (here / ".slipway").exists()


def test_settings_file_values_become_settings_and_the_environment_wins(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = here / "from-settings"
    request_id = _populate(state)
    settings = here / "trial.settings.json"
    values = {"SLIPWAY_STATE_DIR": str(state), "SLIPWAY_CONFIG": str(EXAMPLE_CONFIG)}
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    for argv in (["runs", "list"], ["schedules", "list"], ["queue", "list"]):
        assert main([*argv, "--settings", str(settings), "--json"]) == 0, argv
    [run] = _json(capsys, "runs", "list", "--settings", str(settings))["runs"]
    assert run["request_id"] == request_id
    # The default file, ./local.settings.json, is read when present (as `slipway serve` reads it).
    shutil.copy(settings, here / "local.settings.json")
    assert [r["request_id"] for r in _json(capsys, "runs", "list")["runs"]] == [request_id]
    # A variable already in the environment wins over the file.
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(here / "not-there"))
    assert main(["runs", "list", "--settings", str(settings)]) == 1
    assert "no state folder" in capsys.readouterr().err
    # ... and --state-dir wins over both.
    assert _json(capsys, "runs", "list", "--settings", str(settings), "--state-dir", str(state))["runs"]


def test_a_settings_file_that_is_not_json_is_one_line(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "broken.json").write_text("{not json")
    assert main(["runs", "list", "--settings", "broken.json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("slipway: error: broken.json: ") and err.count("\n") == 1


def test_config_option_for_the_commands_that_read_the_configuration(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(EXAMPLE_CONFIG, here / "mine.yaml")
    targets = [t.name for t in load_config(EXAMPLE_CONFIG).targets]
    assert _json(capsys, "config", "validate", "--config", "mine.yaml")["targets"] == targets
    assert _json(capsys, "tools", "list", "--config", "mine.yaml")["images"]
    commit = "c72d62bc4e992806a012ccaca139a8a6ef41a07c"
    render = ["render", "--config", "mine.yaml", "--target", targets[0], "--commit", commit]
    assert main([*render, "--ref", "refs/heads/master"]) == 0
    assert capsys.readouterr().out.startswith("version: v1.1.0")
    doctor = _json(capsys, "doctor", "--config", "mine.yaml")
    [config_check] = [c for c in doctor["checks"] if c["name"] == "config"]
    assert config_check["status"] == "pass" and "mine.yaml" in config_check["detail"]
    assert not (here / ".slipway").exists()


MINIMAL_CONFIG = """
registry: slipway.azurecr.io
targets:
  - name: azure-test
    repo: https://github.com/dougbu/AzureTest
    image: dougbu/azure-test
    branches: ["**"]
"""


def test_config_option_for_prune(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A configuration without cache: and images: sections: each collector says so, naming the file.
    (here / "bare.yaml").write_text(MINIMAL_CONFIG)
    assert main(["prune", "cache", "--dry-run", "--config", "bare.yaml"]) == 1
    assert (
        capsys.readouterr().err
        == "slipway: error: bare.yaml: no cache: section, so there is no cache to prune\n"
    )
    assert main(["prune", "images", "--dry-run", "--config", "bare.yaml"]) == 0
    assert capsys.readouterr().out == "bare.yaml: no images: rules; nothing to prune\n"
    # Through SLIPWAY_CONFIG from a settings file, the same.
    (here / "s.json").write_text(json.dumps({"Values": {"SLIPWAY_CONFIG": str(here / "bare.yaml")}}))
    assert main(["prune", "images", "--dry-run", "--settings", "s.json"]) == 0
    assert capsys.readouterr().out == f"{here / 'bare.yaml'}: no images: rules; nothing to prune\n"


def test_schedules_and_polls_name_a_missing_or_invalid_configuration(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / ".slipway").mkdir()
    (here / "bad.yaml").write_text("registry: x\ntargets: [1]\n")
    for argv in (["schedules", "list"], ["polls", "list"]):
        assert main([*argv, "--config", "bad.yaml"]) == 1
        err = capsys.readouterr().err
        assert f"{here / 'bad.yaml'}:2: targets[0]" in err and "Traceback" not in err
    # Through the console script: a setting naming a file that is not there is one line, no traceback.
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED} | {
        "SLIPWAY_CONFIG": str(here / "gone.yaml")
    }
    for argv in (["schedules", "list"], ["polls", "list"]):
        done = subprocess.run(
            [str(SLIPWAY), *argv], cwd=here, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1
        assert done.stderr.startswith(f"slipway: error: {here / 'gone.yaml'}: cannot read the file")
        assert done.stderr.count("\n") == 1 and "--config" in done.stderr


def test_queue_send_creates_the_state_folder(here: Path) -> None:
    state = here / "new-state"
    assert main(["queue", "send", str(EXAMPLE_REQUEST), "--state-dir", str(state)]) == 0
    assert (state / "queue.sqlite3").is_file()


def test_settings_pointing_at_azurite_read_the_blob_ledger_and_need_no_local_folder(
    here: Path, azurite: AzuriteServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.platform.ledger import BlobLedger

    values = {
        "AzureWebJobsStorage": azurite.connection_string,
        "SLIPWAY_LEDGER_CONTAINER": azurite.new_container("ledger").container_name,
        "SLIPWAY_STATE_CONTAINER": azurite.new_container("state").container_name,
        "SLIPWAY_CONFIG": str(EXAMPLE_CONFIG),
    }
    config = load_config(EXAMPLE_CONFIG)
    ledger = BlobLedger.from_settings(values)
    dispatcher = Dispatcher(config=lambda: config, ledger=ledger, backend=DryRunBackend(), settings={})
    request_id = str(dispatcher.dispatch(EXAMPLE_REQUEST.read_bytes(), message_id="m-1").request_id)
    (here / "azurite.settings.json").write_text(json.dumps({"Values": values}))
    flags = ["--settings", "azurite.settings.json"]
    assert [r["request_id"] for r in _json(capsys, "runs", "list", *flags)["runs"]] == [request_id]
    assert _json(capsys, "runs", "show", request_id, *flags)["backend"] == "dry-run"
    assert [s["target"] for s in _json(capsys, "schedules", "list", *flags)["schedules"]] == ["azure-test"]
    assert _json(capsys, "polls", "list", *flags)["images"]
    # The queue is still the local one (no Service Bus setting): it lives in the state folder.
    assert main(["queue", "list", *flags]) == 1
    assert "no state folder" in capsys.readouterr().err
    assert sorted(p.name for p in here.iterdir()) == ["azurite.settings.json"]

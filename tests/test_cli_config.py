"""`slipway` and `slipway config ...`: in-process through main(), and as the installed script."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from shared.app import cli
from shared.app.cli import main
from shared.model.schemas import BUILD_REQUEST_SCHEMA_FILE, CONFIG_SCHEMA_FILE

ROOT = Path(__file__).resolve().parents[1]
SLIPWAY = Path(sys.executable).with_name("slipway")
EXAMPLE = ROOT / "examples" / "slipway.yaml"

GOOD = """\
registry: slipway.azurecr.io
targets:
  - name: web
    repo: https://github.com/contoso/web
    image: contoso/web
  - name: api
    repo: https://github.com/contoso/api
    image: contoso/api
"""


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich must not colour captured output, whatever the CI environment asks for."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "SLIPWAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def write(tmp_path: Path, text: str, name: str = "slipway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# --- help and version --------------------------------------------------------------------------

HELP_LEVELS = [
    ["--help"],
    ["config", "--help"],
    ["config", "validate", "--help"],
    ["config", "schema", "--help"],
]


@pytest.mark.parametrize("args", HELP_LEVELS)
def test_help_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(args, capsys)
    assert code == 0
    assert out.startswith("usage: slipway")
    assert err == ""


@pytest.mark.parametrize("args", [*HELP_LEVELS, ["config", "validate", "-h"]])
def test_help_of_the_installed_script(args: list[str]) -> None:
    result = subprocess.run([str(SLIPWAY), *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: slipway")
    assert "warning" not in result.stderr


def test_top_level_help_lists_config_and_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    _code, out, _err = run(["--help"], capsys)
    assert "config" in out and "--version" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(["--version"], capsys)
    assert code == 0
    assert out.startswith("slipway ") and out.strip() != "slipway"
    result = subprocess.run(
        [str(SLIPWAY), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and result.stdout == out


@pytest.mark.parametrize("args", [[], ["config"]])
def test_a_group_without_a_command_shows_help_and_exits_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(args, capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("usage: slipway")


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["config", "bogus"],
        ["config", "validate", "--bogus"],
        ["config", "schema", "--write", "a", "b"],
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(args, capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "error:" in err and "--help" in err


def test_importing_the_cli_is_cheap() -> None:
    code = (
        "import sys, shared.app.cli; "
        "print(sorted(m for m in ('rich', 'pydantic', 'yaml') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


# --- config validate ---------------------------------------------------------------------------


def test_validate_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["config", "validate", str(write(tmp_path, GOOD))], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == "OK: 2 targets"
    assert "contoso/web" in out and "contoso/api" in out
    assert err == ""


def test_validate_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["config", "validate", str(EXAMPLE)], capsys)
    assert code == 0, err
    assert out.startswith("OK: 2 targets")


def test_validate_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    code, out, _err = run(["config", "validate", "--json", str(path)], capsys)
    assert code == 0
    assert json.loads(out) == {
        "ok": True,
        "file": str(path),
        "targets": ["web", "api"],
        "problems": [],
        "warnings": [],
    }
    bad = write(tmp_path, GOOD + "    branchs: [main]\n", "bad.yaml")
    code, out, _err = run(["config", "validate", "--json", str(bad)], capsys)
    assert code == 1
    assert json.loads(out) == {
        "ok": False,
        "file": str(bad),
        "problems": [
            {
                "file": str(bad),
                "line": 9,
                "path": "targets[1].branchs",
                "message": "unknown key (did you mean 'branches'?)",
            }
        ],
    }


def test_validate_reports_an_unknown_key_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, GOOD.replace("    image: contoso/web\n", "    image: contoso/web\n    branchs: [main]\n")
    )
    code, out, err = run(["config", "validate", str(path)], capsys)
    assert code == 1
    assert out == ""
    assert err == f"{path}:6: targets[0].branchs: unknown key (did you mean 'branches'?)\n"


def test_validate_reports_a_duplicate_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD + "    image: contoso/api2\n")
    code, _out, err = run(["config", "validate", str(path)], capsys)
    assert code == 1
    assert f"{path}:9: targets[1].image: duplicate key (first at line 8)" in err


def test_validate_reports_a_bad_glob_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD + "    branches: [main, 1]\n    paths: {src: yes}\n")
    code, _out, err = run(["config", "validate", str(path)], capsys)
    assert code == 1
    lines = err.splitlines()
    assert lines == [
        f"{path}:9: targets[1].branches[1]: expected a string, got the number 1; "
        'quote it ("1") to keep it as text',
        f"{path}:10: targets[1].paths: expected a list, got a mapping",
        f"{path}: 2 problems",
    ]


def test_validate_reports_a_bad_platform(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD + "    platforms: [linux/amd64, darwin/arm64]\n")
    code, _out, err = run(["config", "validate", str(path)], capsys)
    assert code == 1
    assert err.startswith(
        f"{path}:9: targets[1].platforms[1]: platform 'darwin/arm64' is not os/arch[/variant]"
    )


def test_validate_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["config", "validate", str(tmp_path / "nope.yaml")], capsys)
    assert code == 1
    assert out == ""
    assert err == f"{tmp_path / 'nope.yaml'}: cannot read the file: No such file or directory\n"


def test_validate_defaults_to_slipway_yaml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, GOOD + "    whatever: 1\n")
    code, _out, err = run(["config", "validate"], capsys)
    assert code == 1
    assert err.startswith("slipway.yaml:9: targets[1].whatever: unknown key")


def test_validate_defaults_to_the_slipway_config_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", GOOD, "prod.yaml")
    monkeypatch.setenv("SLIPWAY_CONFIG", "conf/prod.yaml")
    code, out, _err = run(["config", "validate", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["file"] == "conf/prod.yaml"


def test_validate_through_the_installed_script(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "    branchs: [main]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "SLIPWAY_CONFIG")}
    result = subprocess.run(
        [str(SLIPWAY), "config", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == f"{path}:9: targets[1].branchs: unknown key (did you mean 'branches'?)\n"


# --- config schema -----------------------------------------------------------------------------


def test_schema_prints_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(["config", "schema"], capsys)
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "Slipway configuration (slipway.yaml)"
    assert out == (ROOT / "schemas" / CONFIG_SCHEMA_FILE).read_text()


def test_schema_write_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "schemas"
    code, out, err = run(["config", "schema", "--write", str(target)], capsys)
    assert code == 0 and out == ""
    assert sorted(p.name for p in target.iterdir()) == sorted([CONFIG_SCHEMA_FILE, BUILD_REQUEST_SCHEMA_FILE])
    assert str(target / CONFIG_SCHEMA_FILE) in err
    assert run(["config", "schema", "--check", str(target)], capsys)[0] == 0
    (target / BUILD_REQUEST_SCHEMA_FILE).write_text("{}")
    code, _out, err = run(["config", "schema", "--check", str(target)], capsys)
    assert code == 1
    assert err.strip() == (
        f"slipway: error: out of date in {target}: {BUILD_REQUEST_SCHEMA_FILE} "
        "(run 'slipway config schema --write')"
    )


def test_schema_write_failure_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _out, err = run(["config", "schema", "--write", str(blocker / "sub")], capsys)
    assert code == 1
    assert err.startswith("slipway: error: cannot write schemas into") and len(err.splitlines()) == 1


def test_schema_default_directory_is_the_projects() -> None:
    assert cli._default_schema_dir() == ROOT / "schemas"


# --- extension mechanism -----------------------------------------------------------------------


def test_plugin_modules_add_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = types.ModuleType("slipway_test_plugin")

    def hello(args: argparse.Namespace) -> int:
        print(f"hello {args.name}")
        return 0

    def register(subparsers: cli.Subparsers) -> None:
        parser = subparsers.add_parser("hello", help="say hello")
        parser.add_argument("name")
        parser.set_defaults(handler=hello)

    plugin.register = register  # type: ignore[attr-defined]
    broken = "slipway_test_broken_plugin"  # not importable
    monkeypatch.setitem(sys.modules, plugin.__name__, plugin)
    monkeypatch.setattr(cli, "_command_modules", lambda: [plugin.__name__, broken])
    code, out, err = run(["hello", "world"], capsys)
    assert (code, out) == (0, "hello world\n")
    assert f"warning: command module {broken} cannot be loaded" in err
    code, out, _err = run(["config", "validate", str(EXAMPLE)], capsys)
    assert code == 0 and out.startswith("OK: 2 targets")


def test_a_reader_that_goes_away_gets_no_traceback() -> None:
    """``slipway ... | head`` closes the pipe early: exit 141 (as for SIGPIPE), stderr quiet."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from shared.app.cli import main; sys.exit(main(['config', 'schema']))",
        ],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # before the child has even imported the CLI
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err

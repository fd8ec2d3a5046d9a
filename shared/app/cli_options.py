"""The options every ``slipway`` command takes: ``--config``, ``--state-dir``, ``--settings``.

They mean what ``slipway serve`` made them mean: ``--config`` sets SLIPWAY_CONFIG,
``--state-dir`` sets SLIPWAY_STATE_DIR, ``--settings`` is a local.settings.json whose Values
become settings (the environment wins). ``shared.app.cli`` adds them to every leaf command after
the plug-ins registered (a plug-in never declares them) and applies them before the handler runs.

Cheap to import (argparse, os, pathlib): it is imported with the CLI for ``--help``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import MutableMapping
from pathlib import Path

GLOBAL_OPTIONS = ("--config", "--state-dir", "--settings")
DEFAULT_SETTINGS_FILE = Path("local.settings.json")  # read when present, as the Functions host does


class GlobalOptionError(Exception):
    """A global option names a file or folder that cannot be used (one line, exit 1)."""


def leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that run a command: those without subcommands of their own (aliases once)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return [parser]
    children = {id(child): child for group in groups for child in group.choices.values()}
    return [leaf for child in children.values() for leaf in leaf_parsers(child)]


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--state-dir``, ``--settings`` on ``parser``, each unless it has it already."""
    have = parser._option_string_actions
    missing = [option for option in GLOBAL_OPTIONS if option not in have]
    if not missing:
        return
    group = parser.add_argument_group("global options (every command)")
    if "--config" in missing:
        group.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="slipway.yaml to use (sets SLIPWAY_CONFIG; default: that setting, else slipway.yaml)",
        )
    if "--state-dir" in missing:
        group.add_argument(
            "--state-dir",
            type=Path,
            metavar="DIR",
            help="the local state folder: queue, ledger, state (sets SLIPWAY_STATE_DIR; default .slipway)",
        )
    if "--settings" in missing:
        group.add_argument(
            "--settings",
            type=Path,
            metavar="FILE",
            help="local.settings.json whose Values become settings; the environment wins "
            f"(default: {DEFAULT_SETTINGS_FILE} when it exists)",
        )


def apply_global_options(args: argparse.Namespace, environ: MutableMapping[str, str] | None = None) -> None:
    """Put ``--config``, ``--state-dir`` and ``--settings`` into the settings, as ``serve`` does.

    ``--config`` and ``--state-dir`` are resolved against the working directory and set outright;
    then the Values of the settings file fill in what the environment does not set. A file named
    on the command line must exist (``CliError``); the default local.settings.json may be absent."""
    env = os.environ if environ is None else environ
    config: Path | None = getattr(args, "config", None)
    if config is not None:
        if not Path(config).is_file():
            raise GlobalOptionError(f"--config {config}: no such file")
        env["SLIPWAY_CONFIG"] = str(Path(config).resolve())
    state_dir: Path | None = getattr(args, "state_dir", None)
    if state_dir is not None:
        if Path(state_dir).exists() and not Path(state_dir).is_dir():
            raise GlobalOptionError(f"--state-dir {state_dir}: not a folder")
        env["SLIPWAY_STATE_DIR"] = str(Path(state_dir).resolve())
    named: Path | None = getattr(args, "settings", None)
    if named is not None and not Path(named).is_file():
        raise GlobalOptionError(f"--settings {named}: no such file")
    path = Path(named) if named is not None else DEFAULT_SETTINGS_FILE
    if not path.is_file():
        return
    from shared.app.local_host.functions import HostError, apply_settings, load_local_settings

    try:
        apply_settings(load_local_settings(path), env)
    except (OSError, ValueError, HostError) as exc:
        raise GlobalOptionError(
            f"{path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def install_runtime(*, creates_state: bool) -> bool:
    """The runtime the command uses, unless the caller installed one (tests): it refuses to create
    a missing local state folder for a command that only reads state (``creates_state`` unset), so
    a mistyped ``--state-dir`` is an error, not an empty ``.slipway/`` and an empty answer."""
    from shared.app import runtime as app_runtime

    if app_runtime.current_runtime() is not None:
        return False
    app_runtime.set_runtime(app_runtime.Runtime(require_state=not creates_state))
    return True

"""The ``slipway`` command run in this process, as the CLI tests drive it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.app.cli import main


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """``slipway ARGV --json``, which must succeed: what it printed, parsed."""
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)

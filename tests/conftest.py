"""Shared fixtures. Real components live in tests/support/ and are registered here."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

from shared.platform.queue.local import LocalQueue
from shared.platform.state import FolderStateStore

pytest_plugins = [
    "tests.support.azurite",
    "tests.support.acr_server",
    "tests.support.registry",
    "tests.support.git_hosts",
]

# No timed tests: Hypothesis's 200 ms deadline fails property tests when the machine is busy (a
# full local run on 2 cores with other jobs). Under CI, Hypothesis loads its own "ci" profile
# (deadline off, derandomised); locally the same deadline-free settings, still randomised.
if not os.environ.get("CI"):
    settings.register_profile("slipway-local", deadline=None)
    settings.load_profile("slipway-local")


@pytest.fixture
def state(tmp_path: Path) -> FolderStateStore:
    """A local state store (a test module may define its own, on another store)."""
    return FolderStateStore(tmp_path / "state")


@pytest.fixture
def queue(tmp_path: Path) -> LocalQueue:
    """A local queue on the wall clock (a test module may define its own, on a controlled clock)."""
    return LocalQueue(tmp_path / "queue.sqlite3")

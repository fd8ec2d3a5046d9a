"""Shared fixtures. Real components live in tests/support/ and are registered here."""

from pathlib import Path

import pytest

from shared.platform.queue.local import LocalQueue
from shared.platform.state import FolderStateStore

pytest_plugins = [
    "tests.support.azurite",
    "tests.support.acr_server",
    "tests.support.registry",
    "tests.support.git_hosts",
]


@pytest.fixture
def state(tmp_path: Path) -> FolderStateStore:
    """A local state store (a test module may define its own, on another store)."""
    return FolderStateStore(tmp_path / "state")


@pytest.fixture
def queue(tmp_path: Path) -> LocalQueue:
    """A local queue on the wall clock (a test module may define its own, on a controlled clock)."""
    return LocalQueue(tmp_path / "queue.sqlite3")

"""What every webhook sender's test sets up: the test clock, a queue on it, a receiver context,
the recorded payloads (tests/fixtures/<sender>/) and what the queue then holds.

The ``queue`` fixture replaces conftest's wall-clock one in a module that imports it
(``from tests.support.receiving import queue as queue``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.intake.receivers.pipeline import ReceiverContext
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig
from shared.platform.queue.local import LocalQueue
from shared.platform.state import StateStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ZERO = "0" * 40
# How every Git host's answer starts when a payload's URLs name two repositories.
DIFFERENT_REPOSITORIES = "the payload's repository URLs name different repositories"


def clocked_queue(folder: Path) -> LocalQueue:
    """A local queue in ``folder`` on the test clock (``NOW``); hypothesis tests make one per example."""
    return LocalQueue(folder / "queue.sqlite3", clock=lambda: NOW)


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[LocalQueue]:
    """A local queue on the test clock (``NOW``)."""
    with clocked_queue(tmp_path) as local:
        yield local


def receiver_context(
    queue: object,
    config: SlipwayConfig,
    settings: Mapping[str, str],
    *,
    state: StateStore | None = None,
) -> ReceiverContext:
    """A receiver's context on the test clock: ``queue`` may be any sender (or a failing one)."""
    sender: Any = queue
    return ReceiverContext(
        settings=dict(settings),
        config=lambda: config,
        queue=lambda: sender,
        clock=lambda: NOW,
        state=(lambda: state) if state is not None else None,
    )


def queued(queue: LocalQueue, *, key: Callable[[BuildRequest], str] | None = None) -> list[BuildRequest]:
    """The build requests the queue holds, in order (or sorted by ``key``)."""
    requests = [BuildRequest.from_json(m.body) for m in queue.peek()]
    return requests if key is None else sorted(requests, key=key)


def fixture_bytes(sender: str, name: str) -> bytes:
    return (FIXTURES / sender / name).read_bytes()


def fixture_json(sender: str, name: str) -> Any:
    return json.loads(fixture_bytes(sender, name))


def fixture_headers(sender: str, name: str) -> dict[str, str]:
    """The headers recorded with a sample (``<name>.headers.json``), or none."""
    path = FIXTURES / sender / name.replace(".json", ".headers.json")
    headers: dict[str, str] = json.loads(path.read_bytes()) if path.is_file() else {}
    return headers

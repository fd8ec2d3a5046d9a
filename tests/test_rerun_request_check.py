"""A rerun is held against its target exactly as its original was (issue 19).

The rerun is made by the real ``Rerunner`` and read back from the local queue it was sent to.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dispatch.claims import new_record
from shared.dispatch.rerun import Rerunner
from shared.model.build_request import BuildRequest
from shared.platform.ledger import FolderLedger, RunStatus
from shared.platform.queue.local import LocalQueue
from tests.test_request_check import CONFIG, TARGET, _routed, _with

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)

FORGERIES: list[Callable[[BuildRequest], BuildRequest]] = [
    lambda r: r,
    _with("source", repo_url="https://github.com/attacker/web.git"),
    _with("source", ref="refs/heads/feature/x"),
    _with("image", tags=["main", "v9.9.9"]),
    _with("image", tags=["main"]),
    _with("request", platforms=["linux/amd64"]),
    _with("request", platforms=["linux/amd64", "linux/s390x"]),
    _with("request", build_args={"PYTHON_VERSION": "2.7"}),
    _with("cache", name="web-release-1.0"),
]


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[FolderLedger, LocalQueue]]:
    queue = LocalQueue(tmp_path / "queue.sqlite3")
    yield FolderLedger(tmp_path / "ledger"), queue
    queue.close()


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    forge=st.sampled_from(FORGERIES),
    branch=st.sampled_from(["main", "release/1.0"]),
    commit=st.text(alphabet="0123456789abcdef", min_size=40, max_size=40),
    status=st.sampled_from([RunStatus.FAILED, RunStatus.SUPERSEDED, RunStatus.CANCELLED]),
)
def test_the_request_check_gives_a_rerun_the_original_s_verdict(
    parts: tuple[FolderLedger, LocalQueue],
    forge: Callable[[BuildRequest], BuildRequest],
    branch: str,
    commit: str,
    status: RunStatus,
) -> None:
    from shared.dispatch.request_check import request_mismatch

    ledger, queue = parts
    original = forge(_routed(f"refs/heads/{branch}", commit))
    original = original.model_copy(update={"id": f"web.{commit[:32]}-{len(queue.peek(max_count=1000))}"})
    ledger.create(new_record(original, status, NOW, "test", "settled"))
    clock = iter(NOW + timedelta(seconds=s) for s in range(1000))
    plan = Rerunner(ledger, queue, clock=lambda: next(clock)).rerun(
        original.id, actor="alice@host", reason="why", dry_run=False
    )
    [message] = [m for m in queue.peek(max_count=1000) if m.message_id == plan.new_request_id]
    rerun = BuildRequest.from_json(message.body)
    assert rerun.trigger.kind == "rerun" and rerun.trigger.rerun_of == original.id
    assert request_mismatch(rerun, CONFIG, TARGET) == request_mismatch(original, CONFIG, TARGET)
    assert json.loads(rerun.to_json())["image"] == json.loads(original.to_json())["image"]

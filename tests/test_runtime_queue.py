"""The runtime builds one queue per process, however many webhooks ask for it at once."""

from __future__ import annotations

import threading
from pathlib import Path

from shared.app.runtime import Runtime
from shared.platform.queue.local import LocalQueue


def test_concurrent_first_requests_share_one_queue(tmp_path: Path) -> None:
    """The lock guards the first build; every later call returns that queue without it."""
    runtime = Runtime({"SLIPWAY_STATE_DIR": str(tmp_path)})
    built: list[LocalQueue] = []
    build = runtime.local_queue

    def counted() -> LocalQueue:
        queue = build()
        built.append(queue)
        return queue

    runtime.local_queue = counted  # type: ignore[method-assign]
    start = threading.Barrier(8)
    seen: list[object] = []

    def first_request() -> None:
        start.wait()
        seen.append(runtime.queue())

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert all(queue is built[0] for queue in seen) and len(seen) == 8
    assert runtime.queue() is built[0]
    built[0].close()


def test_a_queue_handed_in_is_the_one_used(tmp_path: Path) -> None:
    given = LocalQueue(tmp_path / "q.sqlite3")
    runtime = Runtime({"SLIPWAY_STATE_DIR": str(tmp_path / "elsewhere")}, queue=given)
    assert runtime.queue() is given and runtime.queue() is given
    assert not (tmp_path / "elsewhere").exists()
    given.close()

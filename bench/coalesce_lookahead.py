"""The coalescing look-ahead's own CPU cost per dispatch, with 1k and 10k messages queued.

What a coalescing dispatch does that a non-coalescing one does not: ``Coalescer.superseded_by``
(the local queue's pending messages on the request's key, each parsed, then the key's
started-run document). Measured in CPU time (``time.process_time``) against the floor of one
whole dispatch by the dispatcher that does not coalesce, paired call by call with the order
alternating; the queue holds ``queued`` messages of other branches plus two older pushes on the
measured key (they do not outrank it, so every check reads to the end). Printed per size: the
median of each and the ratio look-ahead / dispatch (the share a coalescing dispatch adds), and
the look-ahead at the largest size against the smallest (flat is 1.0).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from shared.acr.run_backend import DryRunBackend
from shared.dispatch.coalesce import Coalescer
from shared.dispatch.dispatcher import Dispatcher, Outcome
from shared.platform.ledger import FolderLedger
from shared.platform.queue.local import LocalQueue
from shared.platform.queue.port import OutgoingMessage
from shared.platform.state import FolderStateStore
from tests.support.dispatch_harness import make_request

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _fill(queue: LocalQueue, size: int) -> None:
    template = json.loads(make_request(0, received_at=NOW, ref="refs/heads/other").to_json())
    batch: list[OutgoingMessage] = []
    for n in range(size):
        template["id"] = f"azure-test.other{n:08d}"
        template["source"]["ref"] = f"refs/heads/b{n}"
        template["coalesce_key"] = f"azure-test:refs/heads/b{n}"
        batch.append(OutgoingMessage(message_id=template["id"], body=json.dumps(template).encode()))
        if len(batch) == 500:
            queue.send(batch)
            batch = []
    if batch:
        queue.send(batch)


def _cpu(action: Callable[[], object]) -> float:
    started = time.process_time()
    action()
    return time.process_time() - started


def measure(size: int, calls: int, root: Path) -> tuple[float, float]:
    """Median CPU seconds of (look-ahead, non-coalescing dispatch) with ``size`` messages queued."""
    from bench.coalesce import _config

    queue = LocalQueue(root / f"queue-{size}.sqlite3", clock=lambda: NOW)
    _fill(queue, size)
    older = [make_request(n, received_at=NOW - timedelta(minutes=10 - n)) for n in range(2)]
    request = make_request(2, received_at=NOW)
    queue.send([OutgoingMessage(message_id=r.id, body=r.to_json().encode()) for r in [*older, request]])
    queue.count()  # fold the sends before timing
    coalescer = Coalescer(pending=queue, state=FolderStateStore(root / f"state-{size}"))
    assert coalescer.superseded_by(request) is None
    config = _config("0s")
    dispatcher = Dispatcher(
        config=lambda: config,
        ledger=FolderLedger(root / f"ledger-{size}"),
        backend=DryRunBackend(),
        settings={},
        clock=lambda: NOW,
        state=None,
        queue=queue,
        pending=None,
    )
    bodies = [
        make_request(100 + n, received_at=NOW, ref=f"refs/heads/floor{n}").to_json().encode()
        for n in range(calls)
    ]

    def dispatch(n: int) -> None:
        result = dispatcher.dispatch(bodies[n], message_id=f"floor-{n}")
        assert result.outcome is Outcome.DISPATCHED, result

    def look() -> None:
        coalescer.superseded_by(request)

    looks: list[float] = []
    floors: list[float] = []
    for n in range(calls):
        if n % 2:
            floors.append(_cpu(partial(dispatch, n)))
            looks.append(_cpu(look))
        else:
            looks.append(_cpu(look))
            floors.append(_cpu(partial(dispatch, n)))
    queue.close()
    return statistics.median(looks), statistics.median(floors)


def lookahead_part(sizes: list[int], calls: int) -> None:
    print("look-ahead CPU per dispatch against a whole non-coalescing dispatch (paired, alternating):")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            look, floor = measure(size, calls, Path(tmp))
            rows.append((size, look))
            print(
                f"  {size:>6,} queued: look-ahead {look * 1e6:7.0f} us, dispatch (floor) "
                f"{floor * 1e6:7.0f} us, ratio look-ahead / dispatch {look / floor:.3f}"
            )
    if len(rows) > 1 and rows[0][1] > 0:
        flat = rows[-1][1] / rows[0][1]
        print(f"  look-ahead at {rows[-1][0]:,} vs {rows[0][0]:,} queued: ratio {flat:.2f} (flat: 1)")

"""The local queue as it fills: per-operation cost at 1k, 10k and 50k queued messages.

A dispatch asks the queue two things that used to read everything it held: the coalescing
look-ahead (every active message of one coalesce key) and the duplicate-detection sweep (ids
whose window has passed). Both are index searches now. For each size the benchmark fills a
fresh queue (every message its own coalesce key and id, as a busy day's pushes), then times the
look-ahead and a send-then-look-ahead cycle (the look-ahead folds the send into SQLite and sweeps
expired duplicate ids, as every dispatch does). ``count`` (``slipway doctor``) is left out: it
counts, so it grows with what it counts, off the request path. The ratio is each
size's median against the smallest size's, measured in the same run; flat is 1.0. Never a
pass/fail.

    .venv/bin/python -m bench.queue_scale [--sizes 1000 10000 50000] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from shared.platform.queue.local import LocalQueue
from shared.platform.queue.port import OutgoingMessage


def _fill(queue: LocalQueue, size: int) -> None:
    batch: list[OutgoingMessage] = []
    for n in range(size):
        body = json.dumps({"id": f"m{n}", "coalesce_key": f"t{n % 97}:refs/heads/b{n}"}).encode()
        batch.append(OutgoingMessage(message_id=f"m{n}", body=body))
        if len(batch) == 500:
            queue.send(batch)
            batch = []
    if batch:
        queue.send(batch)
    queue.count()  # fold everything before timing


def _median_us(action: object, repeats: int) -> float:
    samples = []
    for i in range(repeats):
        started = time.perf_counter()
        action(i)  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def measure(sizes: list[int], repeats: int) -> list[tuple[int, float, float]]:
    """(size, look-ahead µs, send+fold µs) per size."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            queue = LocalQueue(Path(tmp) / f"q{size}.sqlite3")
            _fill(queue, size)
            look = _median_us(
                lambda i, queue=queue: queue.pending_with_coalesce_key(f"t{i % 97}:refs/heads/b{i}"), repeats
            )

            def cycle(i: int, queue: LocalQueue = queue) -> None:
                queue.send([OutgoingMessage(message_id=f"extra{i}", body=b'{"coalesce_key": "x"}')])
                queue.pending_with_coalesce_key("x")

            rows.append((size, look, _median_us(cycle, repeats)))
            queue.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rows = measure(args.sizes, args.repeats)
    base = rows[0]
    for size, look, send_fold in rows:
        print(
            f"{size:>7} queued: look-ahead {look:7.1f} us (x{look / base[1]:.2f}), "
            f"send+fold {send_fold:7.1f} us (x{send_fold / base[2]:.2f})"
        )
    last = rows[-1]
    print(
        f"ratio at {last[0]} vs {base[0]} queued: look-ahead {last[1] / base[1]:.2f}, "
        f"send+fold {last[2] / base[2]:.2f}"
    )


if __name__ == "__main__":
    main()

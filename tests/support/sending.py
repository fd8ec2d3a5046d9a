"""What the tests of the senders (receivers, schedules, digest polling) share: a queue that cannot
be reached, the bodies a local queue holds, and a target's recorded last build."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.platform.queue.local import LocalQueue
from shared.platform.queue.port import OutgoingMessage, QueueError
from shared.platform.state import StateStore
from shared.runs.last_build import LastBuild, last_build_key


class UnreachableQueue:
    """A queue whose every send fails, as Service Bus does while its namespace is unreachable."""

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        raise QueueError("namespace unreachable")


def queued_bodies(queue: LocalQueue) -> list[dict[str, Any]]:
    return [json.loads(m.body) for m in queue.peek(max_count=1000)]


def store_last_build(state: StateStore, target: str, *, commit: str, at: datetime) -> LastBuild:
    """Record that ``target`` last built ``commit`` of main at ``at``, as the dispatcher would."""
    last = LastBuild(
        target=target,
        repo_url=f"https://github.com/contoso/{target}.git",
        ref="refs/heads/main",
        commit=commit,
        request_id=f"{target}.0",
        received_at=at,
        recorded_at=at,
    )
    state.create(last_build_key(target), last.model_dump(mode="json"))
    return last

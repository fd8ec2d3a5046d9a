"""Rerun: build a finished request again, as a new request ``<id>-r<N>``, through the build queue.

A rerun is the original request with a new id, ``attempt`` reset and a ``rerun`` trigger that
names the original, who asked and why. Same target, commit, tags, platforms, build arguments and
cache: the dispatcher holds it against its target exactly as it held the original
(``shared.dispatch.request_check`` reads none of the trigger), and coalescing leaves it alone
(``shared.dispatch.coalesce``: it is never superseded and supersedes nothing).

N is one more than the highest number the original's ledger history has handed out (reruns, and
replays, whose message ids ``<id>-r<N>`` share the space and the queue's duplicate detection),
skipping any id the ledger already holds. The number is reserved by writing a ``rerun`` entry on
the original's record (conditional on its ETag, so two operators get two numbers) before the
message is sent; a send that fails leaves a ``rerun_not_sent`` entry, and the number unused.

The new id must still match ``REQUEST_ID_RE`` (at most 101 characters): a rerun whose id would be
longer is refused, naming the original to rerun instead (a rerun of a rerun builds the same).
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

from pydantic import ValidationError

from shared.acr.run_backend import TERMINAL_RUN_STATUSES
from shared.dispatch.failures import REPLAY_SUFFIX
from shared.intake.rebuild_queue import request_message
from shared.model.build_request import REQUEST_ID_RE, BuildRequest, Trigger
from shared.platform.ledger import ConflictError, Ledger, LedgerRecord, RunStatus
from shared.platform.logs import log_event
from shared.platform.queue.port import QueueError, QueueSender

logger = logging.getLogger("slipway.rerun")

# REQUEST_ID_RE: a first character, then at most 100 more.
MAX_REQUEST_ID_LENGTH = 101
# What a rerun's ledger entries look like on the original: "... queued as <id>-r<N>".
_QUEUED_AS = "queued as "
# A dry run's "run" starts nothing and never ends: it counts as finished.
_DRY_RUN_STATUS = "DryRun"


class RerunRefused(Exception):
    """The request cannot be rerun; the message is one line for the operator."""


@dataclass(frozen=True)
class RerunPlan:
    """What a rerun queues (or would queue, on a dry run)."""

    request_id: str  # the original
    new_request_id: str
    target: str
    ref: str
    commit: str | None
    tags: list[str]
    original_status: str
    actor: str
    reason: str
    dry_run: bool
    queued: bool

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def finished(record: LedgerRecord) -> str | None:
    """Why ``record`` counts as finished (rerun-able), or None when it is pending or running."""
    if record.status in (RunStatus.FAILED, RunStatus.SUPERSEDED, RunStatus.CANCELLED):
        return record.status.value
    if record.status is RunStatus.DISPATCHED:
        status = record.run_status or ""
        if status in TERMINAL_RUN_STATUSES or status == _DRY_RUN_STATUS:
            return f"completed ({status})"
        if not record.following:  # given up on: nobody will learn more of this run
            return f"completed (no longer followed; last status {status or 'unknown'})"
    return None


def _used_numbers(record: LedgerRecord) -> set[int]:
    """The N of every ``<id>-r<N>`` the original's history mentions (reruns and replays)."""
    pattern = re.compile(re.escape(record.request_id + REPLAY_SUFFIX) + r"(\d+)\b")
    used: set[int] = set()
    for entry in record.history:
        for match in pattern.finditer(str(entry.get("detail", ""))):
            used.add(int(match.group(1)))
    return used


class Rerunner:
    """Queues reruns on ``queue``, recording them in ``ledger``."""

    def __init__(self, ledger: Ledger, queue: QueueSender, *, clock: Callable[[], datetime]) -> None:
        self._ledger = ledger
        self._queue = queue
        self._clock = clock

    def rerun(self, request_id: str, *, actor: str, reason: str, dry_run: bool) -> RerunPlan:
        """Queue a rerun of ``request_id`` (or, with ``dry_run``, say what would be queued)."""
        for _ in range(5):
            found = self._ledger.get(request_id)
            if found is None:
                raise RerunRefused(f"no request {request_id} in the ledger (see `slipway runs list`)")
            record, etag = found
            state = finished(record)
            if state is None:
                raise RerunRefused(
                    f"{request_id} is {record.status.value}"
                    f"{f' (run {record.run_id}, {record.run_status})' if record.run_id else ''}: "
                    "only a completed, failed, superseded or cancelled request can be rerun"
                )
            original = self._request(record)
            new_id = self._next_id(record)
            rerun = self._rerun_request(original, new_id, actor, reason)
            plan = RerunPlan(
                request_id=request_id,
                new_request_id=new_id,
                target=original.target,
                ref=original.source.ref,
                commit=original.source.commit,
                tags=list(original.image.tags),
                original_status=state,
                actor=actor,
                reason=reason,
                dry_run=dry_run,
                queued=False,
            )
            if dry_run:
                return plan
            now = self._clock()
            noted = record.with_event(now, "rerun", f"by {actor}: {reason} ({_QUEUED_AS}{new_id})")
            try:
                etag = self._ledger.replace(noted, etag)
            except ConflictError:
                continue  # changed meanwhile (another rerun took the number): read it again
            self._send(rerun, noted, etag)
            log_event(
                logger,
                "request_rerun",
                request_id=request_id,
                new_request_id=new_id,
                actor=actor,
                note=reason,
            )
            return RerunPlan(**{**asdict(plan), "queued": True})
        raise RerunRefused(f"the ledger record of {request_id} kept changing: try again")

    def _request(self, record: LedgerRecord) -> BuildRequest:
        try:
            original = BuildRequest.model_validate(record.request)
        except ValidationError as exc:
            raise RerunRefused(
                f"{record.request_id}: its recorded request is not a valid BuildRequest "
                f"({exc.error_count()} problem(s)): send a repaired one with `slipway queue send`"
            ) from None
        if original.pull_request is not None:
            # A rerun is never superseded nor cancelled by its key (it stands apart, see
            # ``shared.dispatch.coalesce``): the request's lifecycle (a new head, a close) would not
            # reach it. The host's own ways to build the request again keep that lifecycle.
            raise RerunRefused(
                f"{record.request_id} is a pull-request build: build it again by pushing to the "
                "request, closing and reopening it, or (a fork under forks: label) labelling it again"
            )
        if original.source.commit is None:
            raise RerunRefused(
                f"{record.request_id} built the head of {original.source.ref}, not a recorded commit: "
                "a rerun builds the same commit, so there is none to rerun"
            )
        return original

    def _next_id(self, record: LedgerRecord) -> str:
        used = _used_numbers(record)
        number = max(used, default=0) + 1
        while True:
            candidate = f"{record.request_id}{REPLAY_SUFFIX}{number}"
            if len(candidate) > MAX_REQUEST_ID_LENGTH:
                root = (record.request.get("trigger") or {}).get("rerun_of")
                instead = f"; rerun the original, {root}, instead" if root else ""
                raise RerunRefused(
                    f"the rerun id {candidate} would be {len(candidate)} characters, over the "
                    f"{MAX_REQUEST_ID_LENGTH} a request id may have{instead}"
                )
            if self._ledger.get(candidate) is None:
                return candidate
            number += 1

    def _rerun_request(self, original: BuildRequest, new_id: str, actor: str, reason: str) -> BuildRequest:
        assert REQUEST_ID_RE.match(new_id)
        trigger = Trigger(
            kind="rerun",
            provider="operator",
            received_at=self._clock(),
            correlation_id=uuid.uuid4().hex,
            actor=actor,
            reason=reason,
            rerun_of=original.id,
        )
        return original.model_copy(update={"id": new_id, "trigger": trigger, "attempt": 0, "replay_of": None})

    def _send(self, rerun: BuildRequest, noted: LedgerRecord, etag: str) -> None:
        """Send the rerun; on failure note it on the original (best effort) and refuse."""
        message = request_message(
            rerun,
            subject="rerun",
            properties={"rerun_of": noted.request_id, "rerun_by": (rerun.trigger.actor or "")[:100]},
        )
        try:
            self._queue.send([message])
        except QueueError as exc:
            failed = noted.with_event(self._clock(), "rerun_not_sent", f"{rerun.id}: {exc}")
            with contextlib.suppress(ConflictError):  # best effort: the refusal says it anyway
                self._ledger.replace(failed, etag)
            raise RerunRefused(f"the rerun {rerun.id} could not be queued: {exc}") from None

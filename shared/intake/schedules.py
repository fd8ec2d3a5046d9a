"""Scheduled rebuilds: each target's ``schedule`` (5-field cron, UTC) turned into build requests.

One timer evaluates every target once a minute. Per target the state store keeps one document,
``schedules/<target>.json``, and the rules are:

* **A slot is built once.** The request id is derived from the target, the slot time and what is
  built, and the slot is *claimed* in the state document (a conditional write) together with the
  request before it is sent. A timer that fires twice, or a second instance, finds the slot
  claimed; if the claimer died before sending, the next evaluation sends the stored request
  (same id: the queue's duplicate detection absorbs a double send). Only then is it marked
  queued.
* **At most one missed slot is caught up.** After downtime only the latest slot since the last
  one handled is built, not every slot that passed.
* **Nothing before the first evaluation.** The first time a target's schedule is seen (or after
  its schedule changed) the evaluation only records the time; slots after it are built. A newly
  added schedule therefore never fires for a slot that passed before it existed.
* **What is built** is what a base-image update rebuilds (``base_images.rebuild_request``): the
  commit last built on the default branch, else that branch's head.
* **Spread, never dropped.** The requests of one evaluation fan out as base-image rebuilds do
  (``rebuilds.max_burst`` at once, then groups ``rebuilds.spread_seconds`` apart), so a nightly
  schedule shared by many targets does not exhaust the registry's run quota.

The domain function takes the clock, the configuration, the state store and a queue sender, so
tests drive it directly; ``handlers/schedules.py`` only wires the runtime's adapters to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.intake.base_images import rebuild_request, spread
from shared.intake.rebuild_queue import send_requests
from shared.intake.routing import Ignored, RouteResult
from shared.model.build_request import BuildRequest, Trigger
from shared.model.config import SlipwayConfig, Target
from shared.model.cron import Cron, CronError
from shared.platform.logs import log_event
from shared.platform.queue.port import QueueError, QueueSender
from shared.platform.state import StateStore, update, validate_key
from shared.runs.last_build import read_last_build

logger = logging.getLogger("slipway.schedules")
KEY_PREFIX = "schedules/"
PROVIDER = "timer"
# Look back this far, then further, for the latest slot: a cron expression has no "previous".
_LOOKBACK = (
    timedelta(minutes=1),
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=31),
    timedelta(days=366),
    timedelta(days=5 * 366),
)


class ScheduleRecord(BaseModel):
    """What the state store remembers about one target's schedule."""

    model_config = ConfigDict(extra="ignore")

    target: str
    schedule: str
    since: datetime  # first evaluation of this schedule: no slot at or before it is built
    evaluated_at: datetime
    last_slot: datetime | None = None  # the latest slot claimed
    request_id: str | None = None  # the request built for last_slot (None: nothing to build)
    pending: dict[str, Any] | None = None  # that request, until it is known to be queued
    queued_at: datetime | None = None

    @property
    def handled_until(self) -> datetime:
        return max(self.since, self.last_slot) if self.last_slot else self.since


@dataclass(frozen=True)
class QueuedSlot:
    target: str
    slot: datetime | None  # None for a request left pending by an earlier evaluation
    request_id: str
    scheduled_at: datetime | None = None


@dataclass
class ScheduleSummary:
    """What one evaluation did, for the log and for callers (the timer, tests, the CLI)."""

    queued: list[QueuedSlot] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # targets whose schedule was seen the first time
    ignored: list[Ignored] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def schedule_key(target: str) -> str:
    return validate_key(f"{KEY_PREFIX}{target}.json")


def latest_slot(cron: Cron, after: datetime, now: datetime) -> datetime | None:
    """The latest firing time in ``(after, now]``, or None when there is none."""
    if now <= after:
        return None
    for window in _LOOKBACK:
        start = max(after, now - window)
        try:
            slot = cron.next_after(start)
        except CronError:
            return None
        if slot <= now:
            while (following := cron.next_after(slot)) <= now:
                slot = following
            return slot
        if start == after:
            return None
    return None


def _record(value: Mapping[str, Any] | None) -> ScheduleRecord | None:
    if value is None:
        return None
    try:
        return ScheduleRecord.model_validate(value)
    except ValidationError:
        return None  # unreadable: started afresh, as a first sighting


@dataclass
class _Claim:
    """One target's part of an evaluation: the request to send, if any, and for which slot."""

    request: BuildRequest | None = None
    slot: datetime | None = None


def _pending(record: ScheduleRecord | None, summary: ScheduleSummary) -> BuildRequest | None:
    if record is None or record.pending is None or record.queued_at is not None:
        return None
    try:
        return BuildRequest.model_validate(record.pending)
    except ValidationError as exc:
        summary.errors.append(
            f"{record.target}: the pending request cannot be read ({exc.error_count()} errors)"
        )
        return None


def _claim(
    target: Target,
    schedule: str,
    config: SlipwayConfig,
    *,
    now: datetime,
    state: StateStore,
    trigger: Trigger,
    summary: ScheduleSummary,
) -> _Claim:
    """Find the target's due slot and claim it in the state store; what is now pending to send."""
    key = schedule_key(target.name)
    cron = Cron.parse(schedule)
    current = state.get(key)
    record = _record(None if current is None else current.value)
    if record is None or record.schedule != schedule:
        baseline = ScheduleRecord(target=target.name, schedule=schedule, since=now, evaluated_at=now)

        def start(stored: dict[str, Any] | None) -> dict[str, Any] | None:
            found = _record(stored)
            if found is not None and found.schedule == schedule:
                return None  # another instance started it first
            return baseline.model_dump(mode="json")

        update(state, key, start)
        summary.started.append(target.name)
        summary.notes.append(
            f"{target.name}: schedule {schedule!r} first seen; slots after {now.isoformat()} build"
        )
        return _Claim()

    slot = latest_slot(cron, record.handled_until, now)
    if slot is None:
        return _Claim(_pending(record, summary), record.last_slot)

    route = RouteResult()
    request = rebuild_request(
        config,
        target,
        last=read_last_build(state, target.name),
        trigger=trigger,
        id_parts=("schedule", slot.isoformat()),
        result=route,
    )
    summary.ignored.extend(route.ignored)
    summary.notes.extend(route.notes)
    if cron.next_after(record.handled_until) < slot:
        summary.notes.append(
            f"{target.name}: slots between {record.handled_until.isoformat()} and {slot.isoformat()} were "
            "missed; only the latest is built"
        )

    def claim(stored: dict[str, Any] | None) -> dict[str, Any] | None:
        found = _record(stored)
        if found is None or found.schedule != schedule:
            return None  # reset meanwhile by a configuration change: the next evaluation starts it
        if found.last_slot is not None and found.last_slot >= slot:
            return None  # another instance, or an earlier fire, claimed this slot
        claimed = found.model_copy(
            update={
                "last_slot": slot,
                "evaluated_at": now,
                "request_id": None if request is None else request.id,
                "pending": None if request is None else request.model_dump(mode="json", by_alias=True),
                "queued_at": None,
            }
        )
        return claimed.model_dump(mode="json")

    return _Claim(_pending(_record(update(state, key, claim)), summary), slot)


def _mark_queued(state: StateStore, target: str, request_id: str, now: datetime) -> None:
    def queued(stored: dict[str, Any] | None) -> dict[str, Any] | None:
        found = _record(stored)
        if found is None or found.request_id != request_id or found.queued_at is not None:
            return None
        return found.model_copy(update={"queued_at": now, "pending": None}).model_dump(mode="json")

    update(state, schedule_key(target), queued)


def evaluate_schedules(
    config: SlipwayConfig,
    *,
    now: datetime,
    state: StateStore,
    queue: QueueSender,
    correlation_id: str | None = None,
) -> ScheduleSummary:
    """Queue the due slot of every scheduled target; one target's failure never stops the others.

    ``now`` must be timezone-aware (UTC). Returns what was queued, started, ignored and failed;
    failures are also logged. A queue failure leaves the claimed requests pending: the next
    evaluation sends them.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (UTC): schedules are evaluated in UTC")
    now = now.astimezone(UTC)
    summary = ScheduleSummary()
    correlation = correlation_id or f"schedule-{now.strftime('%Y%m%dT%H%M%SZ')}"
    trigger = Trigger(
        kind="schedule", provider=PROVIDER, delivery_id=None, received_at=now, correlation_id=correlation
    )
    claims: dict[str, _Claim] = {}
    for target in config.targets:
        if target.schedule is None:
            continue
        try:
            claim = _claim(
                target, target.schedule, config, now=now, state=state, trigger=trigger, summary=summary
            )
        except Exception as exc:  # one target's broken state must not stop the others
            summary.errors.append(f"{target.name}: {exc}")
            continue
        if claim.request is not None:
            claims[target.name] = claim

    requests = [claim.request for claim in claims.values() if claim.request is not None]
    scheduled = spread(requests, config.rebuilds, now)
    try:
        send_requests(queue, requests, correlation_id=correlation, subject="schedule", scheduled=scheduled)
    except QueueError as exc:
        summary.errors.append(
            f"the build queue cannot be reached ({exc}); {len(requests)} requests stay pending"
        )
        claims = {}
    for name, claim in claims.items():
        assert claim.request is not None
        summary.queued.append(QueuedSlot(name, claim.slot, claim.request.id, scheduled.get(claim.request.id)))
        try:
            _mark_queued(state, name, claim.request.id, now)
        except Exception as exc:  # sent already: the next evaluation sends it again, absorbed as a duplicate
            summary.errors.append(f"{name}: queued, but the state store was not updated: {exc}")
    _log(summary, correlation)
    return summary


def _log(summary: ScheduleSummary, correlation_id: str) -> None:
    for item in summary.ignored:
        log_event(
            logger, "schedule_ignored", correlation_id=correlation_id, target=item.target, reason=item.reason
        )
    for error in summary.errors:
        log_event(logger, "schedule_failed", level=logging.ERROR, correlation_id=correlation_id, error=error)
    log_event(
        logger,
        "schedules_evaluated",
        correlation_id=correlation_id,
        queued=len(summary.queued),
        started=len(summary.started),
        ignored=len(summary.ignored),
        errors=len(summary.errors),
        notes=summary.notes or None,
    )


@dataclass(frozen=True)
class ScheduleStatus:
    """One scheduled target as an operator asks about it (``slipway schedules list``)."""

    target: str
    schedule: str
    next_slot: datetime | None
    record: ScheduleRecord | None  # what the state store remembers; None: nothing (yet)
    note: str | None = None


def schedule_status(config: SlipwayConfig, state: StateStore, *, now: datetime) -> list[ScheduleStatus]:
    """Every target with a schedule, with what the state store remembers of it."""
    statuses = []
    for target in config.targets:
        if target.schedule is None:
            continue
        try:
            upcoming: datetime | None = Cron.parse(target.schedule).next_after(now)
        except CronError:
            upcoming = None
        found = state.get(schedule_key(target.name))
        record = _record(found.value if found is not None else None)
        if record is None:
            note: str | None = "not evaluated yet" if found is None else "state unreadable: starts afresh"
        elif record.schedule != target.schedule:
            note = f"evaluated as {record.schedule!r}: the new schedule starts at the next evaluation"
        else:
            note = None
        statuses.append(ScheduleStatus(target.name, target.schedule, upcoming, record, note))
    return statuses

"""Crash recovery: find the run an interrupted dispatch may have started.

A dispatch claims its request in the ledger, calls ``scheduleRun`` and then records the run id.
If the worker dies between the call and the record, the claim stays ``dispatching`` and the
message comes back. ACR's ``runs.list`` cannot filter on anything the request carries (RunFilter
has ``createTime``, ``runType``, ``status``, ``taskName``, ``agentPoolName``... but no values,
and quick runs have no task name), so the run is found by *time and elimination*:

1. list the quick runs created while the interrupted ``scheduleRun`` call could have been in
   flight: from the claim (minus clock skew) to the claim plus the call's own time bound;
2. drop every run the ledger already knows (each started request records its run id);
3. none left: no run was started, the request may start one now. Exactly one left, and no other
   unsettled claim in the ledger could own it (another ``dispatching`` claim, or a start that got
   no answer, in the same window): that is the orphan, adopt it. Otherwise (several dispatches
   died in the same minutes, or someone started runs by hand): ambiguous, dead-letter
   ``DispatchInterrupted`` naming the candidates, for an operator.

The remaining window: a run started by hand (outside Slipway) within ~2 minutes of a crash would
be adopted as the orphan — one build skipped, never a second run. Two uncertain starts within
the same ~3 minutes always go to an operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.ledger import Ledger, LedgerRecord, RunStatus
from shared.run_backend import CONNECTION_TIMEOUT, READ_TIMEOUT, RunFinder, RunHandle

# Clocks of this host and ARM disagree by a little; the scheduleRun call lasts at most its timeouts.
CLOCK_SKEW = timedelta(seconds=30)
START_CALL_BOUND = timedelta(seconds=CONNECTION_TIMEOUT + READ_TIMEOUT)
# How far back the ledger is read for known run ids: a replayed request can be days old.
LEDGER_LOOKBACK = timedelta(days=14)


@dataclass(frozen=True)
class Recovery:
    """``run`` when the orphan was found; ``candidates`` when more than one run could be it."""

    run: RunHandle | None = None
    candidates: list[str] = field(default_factory=list)

    @property
    def nothing_started(self) -> bool:
        return self.run is None and not self.candidates


def find_orphan_run(
    finder: RunFinder, ledger: Ledger, claim: LedgerRecord, *, claimed_at: datetime | None = None
) -> Recovery:
    """What became of ``claim`` (a ``dispatching`` record whose holder died, or a start call that
    got no answer at ``claimed_at``)."""
    claimed_at = claimed_at or claim.updated_at
    window_from = claimed_at - CLOCK_SKEW
    runs = finder.list_runs(created_from=window_from, created_to=claimed_at + START_CALL_BOUND + CLOCK_SKEW)
    if not runs:
        return Recovery()
    known, rivals = _scan_ledger(ledger, claim.request_id, claimed_at, since=window_from - LEDGER_LOOKBACK)
    unknown = [run for run in runs if run.run_id not in known]
    if len(unknown) == 1 and not rivals:
        return Recovery(run=unknown[0])
    if not unknown:
        return Recovery()
    return Recovery(candidates=[run.run_id for run in unknown])


def _scan_ledger(
    ledger: Ledger, request_id: str, claimed_at: datetime, *, since: datetime
) -> tuple[set[str], list[str]]:
    """Run ids the ledger knows, and other unsettled claims whose run could be the same orphan."""
    overlap = START_CALL_BOUND + 2 * CLOCK_SKEW
    known: set[str] = set()
    rivals: list[str] = []
    for record in ledger.list_summaries(since=since):
        if record.created_at < since:
            break  # newest first
        if record.run_id:
            known.add(record.run_id)
        if record.request_id == request_id or record.run_id:
            continue
        uncertain_at = record.start_uncertain_at if record.status is RunStatus.RETRYING else None
        if record.status is RunStatus.DISPATCHING:
            uncertain_at = record.updated_at
        if uncertain_at is not None and abs(uncertain_at - claimed_at) <= overlap:
            rivals.append(record.request_id)
    return known, rivals

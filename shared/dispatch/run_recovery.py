"""Crash recovery: find the run an interrupted dispatch may have started.

A dispatch claims its request in the ledger, calls ``scheduleRun`` and then records the run id.
If the worker dies between the call and the record, the claim stays ``dispatching`` and the
message comes back. ACR's ``runs.list`` cannot filter on anything the request carries (RunFilter
has ``runId``, ``runType``, ``status``, ``createTime``, ``finishTime``, ``outputImageManifests``,
``isArchiveEnabled``, ``taskName``, ``agentPoolName`` and no values: azure-mgmt-containerregistry
``v2025_03_01_preview/models/_models_py3.py``, ``RunFilter._attribute_map``; quick runs have no
task name), so the run is found by *time*, then told apart by *its log* and by *elimination*:

1. list the quick runs created while the interrupted ``scheduleRun`` call could have been in
   flight: from the claim (minus clock skew) to the claim plus the call's own time bound;
2. drop every run the ledger already knows (each started request records its run id);
3. read the log of each run left: the build step prints ``slipway: request <id>, correlation
   <id>`` (``build_script`` in ``shared/acr/task/scripts.py``) before it builds. A run whose log names
   this request is the orphan: adopt it. A run whose log names another request is not this
   request's. A run whose log names none stays a candidate: it may be queued, in an earlier step,
   this request's run failed before building (ending it never makes a second run right), or a
   run started by hand;
4. no candidate left: no run was started, the request may start one now. Exactly one left, and
   no other unsettled claim in the ledger could own it (another ``dispatching`` claim, or a start
   that got no answer, in the same window): that is the orphan, adopt it. Otherwise ambiguous:
   dead-letter ``DispatchInterrupted`` naming the candidates. A replay of that request looks again
   (``shared.dispatch.claims.reopened`` keeps the doubt), by which time the logs usually tell.

The remaining window: a run started by hand (outside Slipway) within ~2 minutes of a crash and
still queued would be adopted as the orphan — one build skipped, never a second run.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.acr.run_backend import CONNECTION_TIMEOUT, READ_TIMEOUT, RunFinder, RunHandle
from shared.platform.ledger import Ledger, LedgerRecord, RunStatus
from shared.platform.logs import log_event

logger = logging.getLogger("slipway.recovery")

# Clocks of this host and ARM disagree by a little; the scheduleRun call lasts at most its timeouts.
CLOCK_SKEW = timedelta(seconds=30)
START_CALL_BOUND = timedelta(seconds=CONNECTION_TIMEOUT + READ_TIMEOUT)
# How far back the ledger is read for known run ids: a replayed request can be days old.
LEDGER_LOOKBACK = timedelta(days=14)
# The line the build step prints first (shared/acr/task/scripts.py, build_script), and how much of a
# log is read to find it: the steps before the build print little.
_REQUEST_LINE = re.compile(r"slipway: request (?P<id>[A-Za-z0-9][A-Za-z0-9._-]*), correlation ")
LOG_HEAD_BYTES = 1024 * 1024


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
    owners = {run.run_id: log_owner(finder, run) for run in unknown}
    mine = [run for run in unknown if owners[run.run_id] == claim.request_id]
    if len(mine) == 1:
        return Recovery(run=mine[0])
    if mine:  # two runs name this request: only an operator can tell which to keep
        return Recovery(candidates=[run.run_id for run in mine])
    # Runs whose logs name another request are not this request's.
    unknown = [run for run in unknown if owners[run.run_id] is None]
    if len(unknown) == 1 and not rivals:
        return Recovery(run=unknown[0])
    if not unknown:
        return Recovery()
    return Recovery(candidates=[run.run_id for run in unknown])


def log_owner(finder: RunFinder, run: RunHandle) -> str | None:
    """The request id ``run``'s log names; None when it cannot tell (no log yet, not readable,
    or no request line: the build step has not printed, or never will)."""
    log_link = getattr(finder, "log_link", None)
    if log_link is None:
        return None
    from shared.runs.run_outcome import read_log_lines

    try:
        link = log_link(run.run_id)
        if link is None:
            return None
        verify = getattr(finder, "tls_verify", True)
        for line in read_log_lines(link, max_bytes=LOG_HEAD_BYTES, verify=verify):
            if (match := _REQUEST_LINE.search(line)) is not None:
                return match.group("id")
    except Exception as exc:  # a log that cannot be read tells nothing; the run stays a candidate
        # The link is a SAS URL (a secret): log the kind of failure only.
        log_event(
            logger, "run_log_unreadable", level=logging.INFO, run_id=run.run_id, error=type(exc).__name__
        )
        return None
    return None


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

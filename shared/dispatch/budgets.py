"""Run budgets: how many runs may be in flight at once, globally and per target.

What counts is every ledger record that *may* have a run in flight or be about to start one
(``may_start_run``): a run started and not known to be final (reconciliation keeps the status
fresh, so a finished run counts until its next pass), a claim still ``dispatching`` (its holder
is calling ``scheduleRun``, or died doing so: its run may exist), and a ``retrying`` record whose
last start got no answer (its run may exist). Dry runs never count.

Checking before claiming is not enough: two dispatchers can both read "1 in flight, limit 2"
and both claim. So the budget is decided **after the claim** (``claim_standing``):

1. claim the request (a conditional create or ``If-Match`` replace, as always);
2. list the ledger's active records (``Ledger.list_active``: a superset of those that may start
   a run, kept by every write before it returns) and count every record that may start a run,
   this claim included;
3. within the limits: start the run. Over them: release the claim back to ``retrying`` and come
   back after ``budget_delay`` — unless this claim is among the first ``limit`` by claim time,
   in which case it lists again after a short pause, since the later claimants are backing off.

Why this holds under concurrency: suppose ``limit + 1`` claims all started runs. Take the claim
whose write completed last. Its deciding listing was made after that write, hence after every
other claim's write; Azure Storage lists strongly consistently ("after the service performs an
insert or update operation, subsequent read or list operations return the latest update",
https://learn.microsoft.com/azure/storage/blobs/concurrency-manage), and a claim that goes on to
start a run stays counted (``dispatching``, then ``dispatched``, both active). So that listing counted
``limit + 1`` and the claim would have backed off: contradiction. The folder ledger publishes a
record with ``link(2)``, then its active index entry with ``rename(2)``, before the writer's
create returns and so before it lists, which gives the same order; the Blob ledger lists its
``active/`` markers, each uploaded before its record is written (``ledger.blob_index``). No claim-time or
clock comparison enters the safety argument; claim times only decide who waits rather than
backs off (liveness: without that, claimants arriving together could all back off forever).

``check_budget`` (before the claim) is a cheap filter that spares a claim and a release when the
budget is plainly used up; ``claim_standing`` is the one that bounds the runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.acr.run_backend import TERMINAL_RUN_STATUSES
from shared.model.config import SlipwayConfig, Target
from shared.platform.ledger import Ledger, RecordSummary, RunStatus

# Runs last at most 8 hours (ACR's limit); a record untouched for longer has no run in flight.
HORIZON = timedelta(hours=9)
# How far back records are listed: a replayed request's record can be days old yet claimed now.
LOOKBACK = timedelta(days=14)


@dataclass(frozen=True)
class BudgetCheck:
    over: bool
    detail: str


@dataclass(frozen=True)
class ClaimStanding:
    """A claim's place in the budget: ``over`` the limits counting every claim; ``first``: within
    them counting only the claims made before it (worth a second look rather than backing off)."""

    over: bool
    first: bool
    detail: str


def limits(config: SlipwayConfig, target: Target) -> tuple[int | None, int | None]:
    """(all targets, this target): None where unlimited."""
    settings = config.dispatch
    return settings.max_concurrent_runs, target.max_concurrent_runs or settings.max_concurrent_runs_per_target


def may_start_run(record: RecordSummary, *, now: datetime) -> bool:
    """Whether ``record`` may have a run in flight, or be about to start one."""
    if record.backend == "dry-run" or record.updated_at < now - HORIZON:
        return False
    if record.status is RunStatus.DISPATCHING:
        return True
    if record.status is RunStatus.RETRYING:
        return record.start_uncertain_at is not None
    return (
        # A cancelled run counts until ACR says it ended: cancelling takes a moment.
        record.status in (RunStatus.DISPATCHED, RunStatus.CANCELLED)
        and record.following
        and (record.run_status or "") not in TERMINAL_RUN_STATUSES
    )


def _counted(ledger: Ledger, now: datetime) -> Iterable[RecordSummary]:
    # ``list_active`` holds every record ``may_start_run`` can count (``ledger.is_active``), so
    # the listing costs O(active runs), not O(history). Not ordered strictly: filter, no early stop.
    for record in ledger.list_active():
        if record.created_at >= now - LOOKBACK and may_start_run(record, now=now):
            yield record


def _over(total: int, mine: int, overall: int | None, per_target: int | None) -> bool:
    return (overall is not None and total > overall) or (per_target is not None and mine > per_target)


def check_budget(ledger: Ledger, config: SlipwayConfig, target: Target, *, now: datetime) -> BudgetCheck:
    """Whether one more run of ``target`` would exceed a configured limit (before claiming).

    Only a filter: two dispatchers can pass it together; ``claim_standing`` decides.
    """
    overall, per_target = limits(config, target)
    if per_target is None and overall is None:
        return BudgetCheck(False, "no limits")
    total = mine = 0
    for record in _counted(ledger, now):
        total += 1
        mine += record.target == target.name
    if overall is not None and total >= overall:
        return BudgetCheck(True, f"{total} runs in flight or starting, limit {overall}")
    if per_target is not None and mine >= per_target:
        return BudgetCheck(True, f"{mine} runs of {target.name} in flight or starting, limit {per_target}")
    return BudgetCheck(False, f"{total} in flight or starting ({mine} of {target.name})")


def claim_standing(
    ledger: Ledger,
    config: SlipwayConfig,
    target: Target,
    claim: RecordSummary,
    *,
    now: datetime,
) -> ClaimStanding:
    """Where ``claim`` (already written, ``dispatching``) stands against the limits."""
    overall, per_target = limits(config, target)
    if per_target is None and overall is None:
        return ClaimStanding(False, True, "no limits")
    counted = {r.request_id: r for r in _counted(ledger, now)}
    counted[claim.request_id] = claim  # written before this listing: counted even if not listed

    def order(record: RecordSummary) -> tuple[int, datetime, str]:
        # Started (or maybe started) runs come first; then claims by claim time, then id.
        return (record.status is RunStatus.DISPATCHING, record.updated_at, record.request_id)

    total = len(counted)
    mine = sum(r.target == target.name for r in counted.values())
    ahead = [r for r in counted.values() if order(r) < order(claim)]
    ahead_mine = sum(r.target == target.name for r in ahead)
    detail = f"{total} runs in flight or starting ({mine} of {target.name}), limits {overall}/{per_target}"
    return ClaimStanding(
        over=_over(total, mine, overall, per_target),
        first=not _over(len(ahead) + 1, ahead_mine + 1, overall, per_target),
        detail=detail,
    )

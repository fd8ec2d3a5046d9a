"""Run budgets: how many runs may be in flight at once, globally and per target.

Runs in flight are counted from the ledger: records whose run started, that reconciliation still
follows and whose last known ACR status is not final. Reconciliation keeps those statuses fresh,
so the count errs on the high side between two passes (a finished run counts until the next
pass) — the safe side for a budget. Dry runs never count. A request over budget is rescheduled,
never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.config import SlipwayConfig, Target
from shared.ledger import Ledger, RunStatus
from shared.run_backend import TERMINAL_RUN_STATUSES

# Runs last at most 8 hours (ACR's limit); older records cannot be in flight.
HORIZON = timedelta(hours=9)


@dataclass(frozen=True)
class BudgetCheck:
    over: bool
    detail: str


def check_budget(ledger: Ledger, config: SlipwayConfig, target: Target, *, now: datetime) -> BudgetCheck:
    """Whether one more run of ``target`` would exceed a configured limit."""
    settings = config.dispatch
    per_target = target.max_concurrent_runs or settings.max_concurrent_runs_per_target
    overall = settings.max_concurrent_runs
    if per_target is None and overall is None:
        return BudgetCheck(False, "no limits")
    total = mine = 0
    # Summaries: a blob ledger answers from its listing, not one download per recent run.
    for record in ledger.list_summaries(since=now - HORIZON):
        if record.created_at < now - HORIZON:
            break  # newest first
        if (
            record.status is RunStatus.DISPATCHED
            and record.following
            and record.backend != "dry-run"
            and (record.run_status or "") not in TERMINAL_RUN_STATUSES
        ):
            total += 1
            mine += record.target == target.name
    if overall is not None and total >= overall:
        return BudgetCheck(True, f"{total} runs in flight, limit {overall}")
    if per_target is not None and mine >= per_target:
        return BudgetCheck(True, f"{mine} runs of {target.name} in flight, limit {per_target}")
    return BudgetCheck(False, f"{total} in flight ({mine} of {target.name})")

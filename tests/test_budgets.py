"""The budget rule of ``shared.dispatch.budgets`` under every interleaving of claims, looks and releases.

Each claimant writes its claim, later looks (``claim_standing``) and then either starts (not
over) or releases its claim back to ``retrying``. Hypothesis picks the order in which the steps of
several claimants interleave, and the claim times (which need not follow the write order: clocks
differ between instances). However they interleave, no more than the limit start.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dispatch.budgets import claim_standing
from shared.dispatch.claims import new_record
from shared.model.config import parse_config
from shared.platform.ledger import BlobLedger, FolderLedger, Ledger, LedgerRecord, RecordSummary, RunStatus
from tests.support.azurite import AzuriteServer
from tests.support.dispatch_harness import CONFIG, make_request

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
LIMIT = 2


@settings(max_examples=60, deadline=None)
@given(
    order=st.lists(st.integers(min_value=0, max_value=4), min_size=10, max_size=10),
    skews=st.lists(st.integers(min_value=-5, max_value=5), min_size=5, max_size=5),
    per_target=st.booleans(),
)
def test_no_interleaving_starts_more_than_the_limit(
    order: list[int], skews: list[int], per_target: bool
) -> None:
    with tempfile.TemporaryDirectory() as root:
        interleave(FolderLedger(Path(root)), order, skews, per_target)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    order=st.lists(st.integers(min_value=0, max_value=4), min_size=10, max_size=10),
    skews=st.lists(st.integers(min_value=-5, max_value=5), min_size=5, max_size=5),
    per_target=st.booleans(),
)
def test_no_interleaving_starts_more_than_the_limit_on_blob_storage(
    azurite: AzuriteServer, order: list[int], skews: list[int], per_target: bool
) -> None:
    """The same on the Blob ledger (Azurite), whose budgets read its ``active/`` markers."""
    interleave(BlobLedger(azurite.new_container("budgets")), order, skews, per_target)


def interleave(ledger: Ledger, order: list[int], skews: list[int], per_target: bool) -> None:
    dispatch = "  quiet_period: 0s\n" + ("" if per_target else f"  max_concurrent_runs: {LIMIT}")
    extra = f"    max_concurrent_runs: {LIMIT}" if per_target else ""
    config = parse_config(CONFIG.format(dispatch=dispatch, target_extra=extra), source="test")
    target = config.targets[0]
    claimants = len(skews)
    claims: dict[int, LedgerRecord] = {}
    started: set[int] = set()
    # Each claimant's steps in order (claim, then look), interleaved as ``order`` says; then
    # every claimant not yet done finishes its steps.
    schedule = [n % claimants for n in order] + [n for n in range(claimants) for _ in range(2)]
    for n in schedule:
        if n not in claims:
            claim_at = NOW + timedelta(seconds=skews[n])
            record = new_record(
                make_request(n, received_at=NOW, ref=f"refs/heads/b{n}"),
                RunStatus.DISPATCHING,
                claim_at,
                "claimed",
                "test",
                backend="acr",
            )
            assert ledger.create(record)
            claims[n] = record
        elif n not in started and claims[n].status is RunStatus.DISPATCHING:
            standing = claim_standing(ledger, config, target, RecordSummary.of(claims[n]), now=NOW)
            if not standing.over:
                started.add(n)  # starts its run: the claim stays counted
            else:
                found = ledger.get(claims[n].request_id)
                assert found is not None
                claims[n] = found[0].model_copy(update={"status": RunStatus.RETRYING})
                ledger.replace(claims[n], found[1])
        assert len(started) <= LIMIT, (order, skews, started)

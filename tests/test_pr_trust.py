"""A fork's trust label under ``forks: label``: each trusting delivery recorded, so a delivery of a
label older than (or delivered again after) its removal trusts nothing (the review of issue #20.6).

End to end as in ``tests/test_pr_lifecycle.py``: GitHub's and Gitea's published payloads, signed,
delivered to the real receivers, queued, dispatched to the loopback ACR server and followed by the
real reconcile timer; then the state document's rules as a property over any interleaving.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.intake.receivers.gitea import receive_gitea
from shared.platform.http import HttpRequest, HttpResponse
from shared.platform.ledger import RunStatus
from shared.platform.state import FolderStateStore
from shared.runs.pull_request_state import read_state, record_trust, record_withdrawal
from tests import test_pr_lifecycle as lifecycle
from tests.support.acr_server import AcrServer
from tests.support.dispatch_harness import Clock, Rig, acr_backend
from tests.support.receiving import fixture_bytes
from tests.test_pr_lifecycle import (
    CONFIG,
    REMOVED_BY,
    ForkLife,
    _accepted,
    _ignored,
    _state,
)
from tests.test_receiver_pull_requests import gitea_request

# GitHub's samples date the label added 15:20:35 and removed 15:20:36 (octokit payload-examples);
# a maintainer's label added again after the removal is dated later.
LATER = "2019-05-15T15:25:00Z"


# The same rig as the lifecycle tests' fork cases (their fixture, registered here by name).
fork_life = lifecycle.fork_life


def test_a_label_delivered_again_after_its_removal_trusts_nothing(fork_life: ForkLife) -> None:
    life = fork_life
    trusted = _accepted(life.github("labeled", delivery="gh-label-1"))
    # At-least-once before any removal: the same delivery, or the same event under a new delivery
    # id (a host that numbers its retries), is the same trust: the same id, one run.
    assert _accepted(life.github("labeled", delivery="gh-label-1")) == trusted
    assert _accepted(life.github("labeled", delivery="gh-label-1-retry")) == trusted
    life.settle()
    [run] = life.runs_of(trusted)
    assert len(life.acr.runs) == 1

    life.rig.clock.advance(60)
    assert "trust withdrawn" in _ignored(life.github("unlabeled", delivery="gh-unlabel-1"))
    life.reconcile()
    assert life.status(run) == "Canceled"
    assert life.record(trusted).cancelled_by == REMOVED_BY
    before = _state(life)

    # "Redeliver" of the trusting delivery after the removal: refused, nothing queued or written.
    life.rig.clock.advance(60)
    reason = _ignored(life.github("labeled", delivery="gh-label-1"))
    assert "trust refused: this delivery came again after the removal of the label 'bug'" in reason
    # A late delivery of the same label event under an id never seen: refused by the host's date.
    late = _ignored(life.github("labeled", delivery="gh-label-late"))
    assert "dated 2019-05-15T15:20:35+00:00, is not after the removal" in late
    assert life.rig.queue.peek() == [] and _state(life) == before
    life.settle()
    assert len(life.acr.runs) == 1

    # The maintainer adds the label again: a new trust, a new id, built; its own duplicate is it.
    again = _accepted(life.github("labeled", delivery="gh-label-2", updated_at=LATER))
    assert again != trusted
    assert _accepted(life.github("labeled", delivery="gh-label-2", updated_at=LATER)) == again
    life.settle()
    [second] = life.runs_of(again)
    life.reconcile()
    assert life.status(second) == "Queued" and life.record(again).status is RunStatus.DISPATCHED
    state = _state(life)
    assert state is not None
    assert (state["withdrawals"], state["trust_epoch"]) == (1, 1)
    assert state["trusts"] == {"gh-label-1": 0, "gh-label-1-retry": 0, "gh-label-2": 1}


def test_a_removal_received_by_a_clock_behind_still_cancels_the_trust_recorded_before_it(
    fork_life: ForkLife,
) -> None:
    """Two instances, one clock behind: the removal is recorded after the trust but stamped
    earlier. The document's order decides: the trusted build is still cancelled."""
    life = fork_life
    trusted = _accepted(life.github("labeled", delivery="gh-label-1"))
    life.rig.clock.now -= timedelta(seconds=30)
    assert "trust withdrawn" in _ignored(life.github("unlabeled", delivery="gh-unlabel-1"))
    life.settle()
    record = life.record(trusted)
    assert (record.status, record.cancelled_by) == (RunStatus.CANCELLED, REMOVED_BY)
    assert life.acr.runs == {}
    # And the label added again, received by that same clock, is not cancelled by the removal.
    again = _accepted(life.github("labeled", delivery="gh-label-2", updated_at=LATER))
    life.settle()
    assert life.record(again).status is RunStatus.DISPATCHED and len(life.runs_of(again)) == 1


@pytest.mark.parametrize(
    ("action", "event", "other"),
    [
        ("unlabeled", "withdrawn_cancel_failed", "closed_cancel_failed"),
        ("closed", "closed_cancel_failed", "withdrawn_cancel_failed"),
    ],
)
def test_a_failed_cancel_is_logged_under_its_cause_s_own_event(
    fork_life: ForkLife, caplog: pytest.LogCaptureFixture, action: str, event: str, other: str
) -> None:
    life = fork_life
    trusted = _accepted(life.github("labeled", delivery="gh-label-1"))
    life.settle()
    [run] = life.runs_of(trusted)
    life.acr.set_status(run, "Running")
    life.rig.clock.advance(60)
    assert life.github(action, delivery=f"gh-{action}").status == 200
    life.acr.fail_next(503, times=1)
    with caplog.at_level("WARNING"):
        life.reconcile()
    assert event in caplog.text and other not in caplog.text
    life.reconcile()  # the next tick cancels it
    assert life.status(run) == "Canceled"


# --- Gitea: label_updated/label_cleared do not say the trust label was there ----------------------

GITEA_CONFIG = CONFIG + (
    "  - name: hi\n"
    "    repo: https://gitea.com/a_nice_user/hello_world_ci\n"
    "    image: a-nice-user/hello-world-ci\n"
    '    branches: ["**"]\n'
    "    pull_requests: {enabled: true, forks: label, label: trusted,"
    " fork_registry_token_setting: REGISTRY_TOKEN_HI}\n"
)


def _gitea_fork(name: str, delivery: str) -> HttpRequest:
    """A Gitea (woodpecker) sample as a fork's request: its head in another repository."""
    payload: Any = json.loads(fixture_bytes("gitea", name))
    payload["pull_request"]["head"]["repo_id"] = 4321
    payload["pull_request"]["head"]["repo"].update(
        id=4321,
        clone_url="https://gitea.com/someone/hello_world_ci.git",
        html_url="https://gitea.com/someone/hello_world_ci",
    )
    signed = gitea_request(json.dumps(payload).encode())
    return HttpRequest("POST", signed.url, {**signed.headers, "X-Gitea-Delivery": delivery}, signed.body)


@pytest.mark.parametrize(
    "sample", ["pull_request-label_updated-woodpecker.json", "pull_request-label_cleared-woodpecker.json"]
)
def test_a_gitea_label_change_without_a_recorded_trust_withdraws_nothing(
    tmp_path: Path, acr_server: AcrServer, sample: str
) -> None:
    rig = Rig(tmp_path, Clock(), acr_backend(acr_server), config=GITEA_CONFIG)
    rig.settings["REGISTRY_TOKEN_HI"] = "slipway-fork-hi:fork-token-password-0456"
    try:
        life = ForkLife(rig, acr_server)
        for attempt in range(2):  # neither the first such change nor the next counts as a removal
            response: HttpResponse = receive_gitea(_gitea_fork(sample, f"gitea-{attempt}"), life.ctx)
            reason = _ignored(response)
            assert "no trust of it is recorded: nothing to withdraw" in reason
        assert _state(life, "hi", 7) is None
    finally:
        rig.close()


# --- the state document's rules, over any interleaving --------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# ("trust", None): a new label event; ("again", k): the k-th trusting delivery delivered again;
# ("remove", None): the label removed (explicitly, as GitHub and GitLab say it).
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("trust"), st.none()),
        st.tuples(st.just("again"), st.integers(0, 5)),
        st.tuples(st.just("remove"), st.none()),
    ),
    max_size=14,
)


@settings(max_examples=60, deadline=None)
@given(steps=STEPS, undated=st.booleans())
def test_a_trust_is_refused_after_a_removal_that_followed_it_and_duplicates_keep_their_epoch(
    steps: list[tuple[str, int | None]], undated: bool
) -> None:
    """Whatever the order: a trusting delivery delivered again builds under its first epoch while
    no removal followed it, and is refused once one did (dated by the host, or not: then by its
    delivery id); a new label event builds under the epoch of the removals recorded so far; and a
    removal always cancels (``withdrawn_for``) the builds of the trusts recorded before it."""
    with tempfile.TemporaryDirectory() as folder:
        store = FolderStateStore(Path(folder))
        first: list[tuple[str, datetime, int]] = []  # (delivery, host date, epoch) of each new trust
        removals = 0
        trusted_builds: list[tuple[int, datetime]] = []  # (epoch, received_at) of the builds
        for tick, (kind, which) in enumerate(steps, start=1):
            at = T0 + timedelta(seconds=tick)
            if kind == "remove":
                record_withdrawal(
                    store,
                    "t",
                    1,
                    at=at,
                    label="ok",
                    delivery_id=f"rm-{tick}",
                    event_at=None if undated else at,
                )
                removals += 1
                state = read_state(store, "t", 1)
                assert state is not None
                assert all(state.withdrawn_for(received, fork=True) for _, received in trusted_builds)
                continue
            if kind == "trust" or not first:
                delivery, dated, expected = f"label-{tick}", at, removals
            else:
                delivery, dated, expected = first[(which or 0) % len(first)]
            verdict = record_trust(
                store, "t", 1, at=at, delivery_id=delivery, event_at=None if undated else dated
            )
            if delivery == f"label-{tick}":
                first.append((delivery, dated, removals))
            if expected < removals:
                assert verdict.refused is not None and verdict.epoch is None
            else:
                assert verdict.refused is None and verdict.epoch == expected == removals
                received = verdict.state.trusted_received_at(at)
                assert verdict.state.withdrawn_for(received, fork=True) is None
                trusted_builds.append((expected, received))
            state = read_state(store, "t", 1)
            assert state is not None and state.withdrawals == removals


def test_an_unspelt_removal_is_recorded_only_while_a_trust_is(tmp_path: Path) -> None:
    store = FolderStateStore(tmp_path)
    assert (
        record_withdrawal(store, "t", 1, at=T0, label="ok", delivery_id="g-1", only_if_trusted=True) is None
    )
    assert read_state(store, "t", 1) is None
    record_trust(store, "t", 1, at=T0, delivery_id="l-1", event_at=None)
    state = record_withdrawal(store, "t", 1, at=T0, label="ok", delivery_id="g-2", only_if_trusted=True)
    assert state is not None and (state.withdrawals, state.trusted) == (1, False)
    # The next unspelt change finds no trust left to withdraw: the epoch stays.
    assert (
        record_withdrawal(store, "t", 1, at=T0, label="ok", delivery_id="g-3", only_if_trusted=True) is None
    )
    found = read_state(store, "t", 1)
    assert found is not None and found.withdrawals == 1

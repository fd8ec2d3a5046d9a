"""The coalescing rules between pushes and rebuilds, on the Coalescer alone (folder state store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from shared.dispatch.coalesce import Coalescer, Started, outranks, state_key
from shared.model.build_request import BuildRequest
from shared.platform.state import FolderStateStore
from tests.support.dispatch_harness import make_request

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Pending:
    def __init__(self, *requests: BuildRequest) -> None:
        self.bodies = [r.to_json().encode() for r in requests]

    def pending_with_coalesce_key(self, coalesce_key: str) -> list[bytes]:
        return self.bodies


def _as(request: BuildRequest, kind: str) -> BuildRequest:
    trigger = request.trigger.model_copy(update={"kind": kind})
    return request.model_copy(update={"trigger": trigger, "id": f"{request.id}.{kind}"})


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


kinds = st.sampled_from(["push", "base-image", "schedule", "manual"])
offsets = st.integers(min_value=0, max_value=3_600)


@given(kinds, offsets, kinds, offsets)
def test_of_two_pending_requests_exactly_one_builds_and_a_push_always_beats_a_rebuild(
    kind_a: str, at_a: int, kind_b: str, at_b: int
) -> None:
    a = _as(make_request(1, received_at=_at(at_a)), kind_a)
    b = _as(make_request(2, received_at=_at(at_b)), kind_b)
    assert outranks(a, b) != outranks(b, a)
    rebuilds = {"base-image", "schedule"}
    if kind_a not in rebuilds and kind_b in rebuilds:
        assert outranks(a, b)  # whichever was received first
    if (kind_a in rebuilds) == (kind_b in rebuilds):
        assert outranks(a, b) == ((at_a, a.id) > (at_b, b.id))


def test_a_pending_push_serves_a_newer_rebuild_and_says_it_is_a_push(tmp_path: Path) -> None:
    push = make_request(2, received_at=_at(0))
    rebuild = _as(make_request(1, received_at=_at(10)), "base-image")
    coalescer = Coalescer(pending=Pending(push, rebuild), state=FolderStateStore(tmp_path))
    newer = coalescer.superseded_by(rebuild)
    assert newer is not None and (newer.request_id, newer.push, newer.pending) == (push.id, True, True)
    assert coalescer.superseded_by(push) is None
    # A pending push the dispatcher would refuse serves nothing.
    refused = Coalescer(pending=Pending(push), state=None)
    assert refused.superseded_by(rebuild, buildable=lambda _: False) is None


def test_a_rebuild_is_served_only_by_a_run_started_once_it_was_received(tmp_path: Path) -> None:
    coalescer = Coalescer(pending=None, state=FolderStateStore(tmp_path))
    push = make_request(2, received_at=_at(0))
    assert coalescer.record_started(push, "ca1", now=_at(30)) == []
    before = _as(make_request(1, received_at=_at(20)), "schedule")
    after = _as(make_request(1, received_at=_at(40)), "base-image")
    newer = coalescer.superseded_by(before)
    assert newer is not None and (newer.request_id, newer.push, newer.pending) == (push.id, True, False)
    assert coalescer.superseded_by(after) is None
    # Once that rebuild ran, a late copy of an older rebuild is served by it.
    assert coalescer.record_started(after, "ca2", now=_at(50)) == []
    late = _as(make_request(3, received_at=_at(45)), "base-image")
    served = coalescer.superseded_by(late)
    assert served is not None and (served.request_id, served.push) == (after.id, False)


def test_a_started_rebuild_never_supersedes_a_push_and_a_push_moots_an_earlier_rebuild(
    tmp_path: Path,
) -> None:
    coalescer = Coalescer(pending=None, state=FolderStateStore(tmp_path))
    rebuild = _as(make_request(1, received_at=_at(100)), "base-image")
    assert coalescer.record_started(rebuild, "ca1", now=_at(130)) == []
    late_push = make_request(2, received_at=_at(50))  # e.g. a retry copy, received before the rebuild
    assert coalescer.superseded_by(late_push) is None
    replaced = coalescer.record_started(late_push, "ca2", now=_at(160))
    assert [(s.request_id, s.run_id) for s in replaced] == [(rebuild.id, "ca1")]
    # An older push arriving after that is superseded by the newest started push, as before.
    older = make_request(3, received_at=_at(40))
    newer = coalescer.superseded_by(older)
    assert newer is not None and newer.request_id == late_push.id
    # A rebuild starting never makes a push's run moot.
    second = _as(make_request(1, received_at=_at(200)), "schedule")
    assert [s.request_id for s in coalescer.record_started(second, "ca3", now=_at(230))] == [rebuild.id]


def test_a_state_document_written_before_rebuilds_were_told_apart_still_counts(tmp_path: Path) -> None:
    store = FolderStateStore(tmp_path)
    started = make_request(5, received_at=_at(100))
    legacy = {
        "coalesce_key": started.coalesce_key,
        "request_id": started.id,
        "received_at": started.trigger.received_at.isoformat(),
        "run_id": "ca9",
    }
    assert store.create(state_key(started), legacy) is not None
    coalescer = Coalescer(pending=None, state=store)
    older = make_request(4, received_at=_at(50))
    newer = coalescer.superseded_by(older)
    assert newer is not None and newer.request_id == started.id
    assert coalescer.superseded_by(_as(make_request(4, received_at=_at(150)), "base-image")) is None
    replaced = coalescer.record_started(make_request(6, received_at=_at(200)), "ca10", now=_at(230))
    assert replaced == [Started(started.id, _at(100), "ca9")]

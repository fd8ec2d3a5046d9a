"""A rebuild (base-image update, schedule slot) never replaces a pending push of a newer commit.

Push A is built and recorded as the branch's last build; push B (a newer commit of the same
branch) waits out its quiet period; a rebuild of the target arrives inside that quiet period. The
rebuild request is made by the real ACR webhook receiver (the ACR docs' push sample) or the real
schedule evaluation (``evaluate_schedules``), which rebuild the recorded last build, commit A.
The survivor must be B, built once, carrying the rebuild's reason; nothing builds A again with
the branch's tags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.intake.receivers.acr import receive_acr
from shared.intake.receivers.pipeline import ReceiverContext
from shared.intake.schedules import evaluate_schedules
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig, parse_config
from shared.platform.ledger import RunStatus
from shared.runs.last_build import read_last_build
from tests.support.acr_server import AcrServer
from tests.support.dispatch_harness import Clock, Rig, acr_backend, make_request
from tests.support.receiving import fixture_bytes
from tests.support.registry_hooks import ACR, SETTINGS, acr_request

# The image of the ACR webhook reference's push sample (tests/fixtures/azure-container-registry).
TARGET_EXTRA = '    base_images: ["myregistry.azurecr.io/hello-world:v1"]\n    schedule: "0 * * * *"'


def _config(rig: Rig) -> SlipwayConfig:
    return parse_config(Path(rig.settings["SLIPWAY_CONFIG"]).read_text(), source="rig")


@pytest.fixture
def make_rig(tmp_path: Path, acr_server: AcrServer) -> Iterator[Callable[..., Rig]]:
    """A rig with a 30 s quiet period on the loopback ACR server, closed after the test."""
    rigs: list[Rig] = []

    def make(*, start: datetime | None = None, target_extra: str = TARGET_EXTRA) -> Rig:
        rig = Rig(
            tmp_path,
            Clock(start),
            acr_backend(acr_server),
            dispatch="  quiet_period: 30s",
            target_extra=target_extra,
        )
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def _base_image_update(rig: Rig) -> list[BuildRequest]:
    """The ACR webhook's published push sample, delivered to the real ACR receiver."""
    config = _config(rig)
    ctx = ReceiverContext(
        settings=SETTINGS,
        config=lambda: config,
        queue=lambda: rig.queue,
        clock=rig.clock,
        state=lambda: rig.state,
    )
    before = {message.message_id for message in rig.queue.peek()}
    response = receive_acr(acr_request(fixture_bytes(ACR, "push-webhook-docs.json")), ctx)
    assert response.status == 202, response.body
    sent = [message for message in rig.queue.peek() if message.message_id not in before]
    return [BuildRequest.from_json(message.body) for message in sent]


def _schedule_slot(rig: Rig) -> list[BuildRequest]:
    config = _config(rig)
    summary = evaluate_schedules(config, now=rig.clock(), state=rig.state, queue=rig.queue)
    queued = {slot.request_id for slot in summary.queued}
    pending = [BuildRequest.from_json(message.body) for message in rig.queue.peek()]
    return [request for request in pending if request.id in queued]


def _run_ids_for(acr: AcrServer, request_id: str) -> list[str]:
    return [run_id for run_id in acr.runs if acr.request_id_of(run_id) == request_id]


@pytest.mark.parametrize("rebuild", ["base-image", "schedule"])
def test_a_rebuild_inside_a_pending_push_s_quiet_period_builds_the_push_s_commit(
    make_rig: Callable[..., Rig], acr_server: AcrServer, rebuild: str
) -> None:
    # 10 minutes before the top of an hour: the hourly schedule's next slot comes during the test.
    start = datetime.now(UTC).replace(minute=50, second=0, microsecond=0) - timedelta(hours=1)
    rig = make_rig(start=start)
    send_rebuild: Callable[[Rig], list[BuildRequest]] = (
        _base_image_update if rebuild == "base-image" else _schedule_slot
    )
    if rebuild == "schedule":
        assert _schedule_slot(rig) == []  # first evaluation: records the time only
    push_a = make_request(1, received_at=rig.clock())
    rig.send(push_a)
    rig.run_until_idle(step=10)
    assert _run_ids_for(acr_server, push_a.id) == ["ca1"]
    last = read_last_build(rig.state, "azure-test")
    assert last is not None and last.commit == push_a.source.commit

    rig.clock.now = start + timedelta(minutes=9, seconds=50)
    push_b = make_request(2, received_at=rig.clock())
    rig.send(push_b)
    rig.drain()  # B waits out its quiet period
    rig.clock.advance(10)  # the top of the hour, inside B's quiet period
    rebuilds = send_rebuild(rig)
    assert len(rebuilds) == 1
    rebuild_request = rebuilds[0]
    # The real routing rebuilds the recorded last build (A), with the branch's tags.
    assert rebuild_request.source.commit == push_a.source.commit
    assert rebuild_request.trigger.kind == rebuild and "latest" in rebuild_request.image.tags

    rig.run_until_idle(step=5)

    record_b, _ = rig.ledger.get(push_b.id) or (None, None)
    assert record_b is not None and record_b.status is RunStatus.DISPATCHED
    assert _run_ids_for(acr_server, push_b.id) == [record_b.run_id]
    # Exactly two runs: A's push and B's push; the rebuild of A never ran.
    assert len(acr_server.runs) == 2
    assert _run_ids_for(acr_server, rebuild_request.id) == []
    record_r, _ = rig.ledger.get(rebuild_request.id) or (None, None)
    assert record_r is not None and record_r.status is RunStatus.SUPERSEDED
    assert push_b.id in record_r.history[-1]["detail"]
    # B's record says it also serves the rebuild, and why the rebuild was asked for.
    covered = [entry for entry in record_b.history if entry["event"] == "covers_rebuild"]
    assert len(covered) == 1
    assert rebuild_request.id in covered[0]["detail"] and rebuild in covered[0]["detail"]
    # The branch's last build is B now: the next rebuild builds B.
    last = read_last_build(rig.state, "azure-test")
    assert last is not None and last.commit == push_b.source.commit


def test_a_rebuild_received_after_the_push_started_still_builds(
    make_rig: Callable[..., Rig], acr_server: AcrServer
) -> None:
    """A base image updated after the newest push's run started needs its own run."""
    rig = make_rig()
    push = make_request(1, received_at=rig.clock())
    rig.send(push)
    rig.run_until_idle(step=10)
    rig.clock.advance(60)
    (rebuild,) = _base_image_update(rig)
    assert rebuild.source.commit == push.source.commit
    rig.run_until_idle(step=10)
    record, _ = rig.ledger.get(rebuild.id) or (None, None)
    assert record is not None and record.status is RunStatus.DISPATCHED
    assert len(acr_server.runs) == 2


def test_a_newer_push_still_supersedes_a_pending_rebuild(
    make_rig: Callable[..., Rig], acr_server: AcrServer
) -> None:
    rig = make_rig()
    first = make_request(1, received_at=rig.clock())
    rig.send(first)
    rig.run_until_idle(step=10)
    rig.clock.advance(60)
    (rebuild,) = _base_image_update(rig)
    rig.drain()
    rig.clock.advance(10)
    push = make_request(2, received_at=rig.clock())
    rig.send(push)
    rig.run_until_idle(step=5)
    assert len(acr_server.runs) == 2 and _run_ids_for(acr_server, push.id) == ["ca2"]
    record, _ = rig.ledger.get(rebuild.id) or (None, None)
    assert record is not None and record.status is RunStatus.SUPERSEDED


def test_cancel_superseded_never_cancels_a_push_for_a_rebuild_but_a_push_cancels_a_rebuild(
    make_rig: Callable[..., Rig], acr_server: AcrServer
) -> None:
    rig = make_rig(target_extra=TARGET_EXTRA + "\n    cancel_superseded: true")
    rig.send(make_request(1, received_at=rig.clock()))
    rig.run_until_idle(step=10)
    acr_server.set_status("ca1", "Running")
    rig.clock.advance(60)
    (rebuild,) = _base_image_update(rig)  # the base image changed under run ca1
    rig.run_until_idle(step=10)
    assert _run_ids_for(acr_server, rebuild.id) == ["ca2"]
    assert acr_server.cancelled() == []  # the push's run is left alone
    acr_server.set_status("ca1", "Succeeded")
    acr_server.set_status("ca2", "Running")
    rig.clock.advance(60)
    push = make_request(2, received_at=rig.clock())
    rig.send(push)
    rig.run_until_idle(step=10)
    assert _run_ids_for(acr_server, push.id) == ["ca3"]
    assert acr_server.cancelled() == ["ca2"]  # the newer commit's run serves the rebuild
    record, _ = rig.ledger.get(rebuild.id) or (None, None)
    assert record is not None and record.history[-1]["event"] == "cancelled"


def test_an_older_push_is_superseded_at_once_by_a_newer_pending_push(
    make_rig: Callable[..., Rig], acr_server: AcrServer
) -> None:
    """Only a rebuild waits for the push that serves it; an older push does not linger."""
    rig = make_rig(target_extra="")
    older = make_request(1, received_at=rig.clock())
    rig.clock.advance(1)
    newer = make_request(2, received_at=rig.clock())
    rig.send(older, newer)
    rig.drain()
    rig.clock.advance(31)
    rig.drain()  # the older one's quiet period ends first: the newer one is still queued
    record, _ = rig.ledger.get(older.id) or (None, None)
    assert record is not None and record.status is RunStatus.SUPERSEDED
    assert _run_ids_for(acr_server, newer.id) == ["ca1"] and rig.queue.peek() == []

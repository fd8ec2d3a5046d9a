"""Scheduled rebuilds with a controlled clock: first run, double fire, two instances, downtime.

Everything real but the clock: the local queue (SQLite, Service Bus duplicate detection), the
state store on a folder and on Azurite, and the timer function object as the worker calls it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.app.runtime import Runtime, set_runtime
from shared.intake.schedules import (
    ScheduleRecord,
    evaluate_schedules,
    latest_slot,
    schedule_key,
)
from shared.model.config import ConfigError, SlipwayConfig, parse_config
from shared.model.cron import Cron
from shared.platform.queue.local import LocalQueue
from shared.platform.queue.port import OutgoingMessage, QueueError
from shared.platform.state import BlobStateStore, FolderStateStore, StateStore
from tests.support.azurite import AzuriteServer
from tests.support.sending import UnreachableQueue, queued_bodies, store_last_build

T0 = datetime(2026, 11, 23, 2, 30, 7, tzinfo=UTC)  # a Monday
COMMIT = "c72d62bc4e992806a012ccaca139a8a6ef41a07c"

CONFIG = """\
registry: slipway.azurecr.io
targets:
  - name: web
    repo: https://github.com/contoso/web
    image: contoso/web
    schedule: "0 3 * * *"
  - name: api
    repo: https://github.com/contoso/api
    image: contoso/api
    branches: [trunk]
  - name: nightly
    repo: https://github.com/contoso/nightly
    branches: [main]
    image: contoso/nightly
    schedule: "*/10 * * * *"
"""


def _config(text: str = CONFIG) -> SlipwayConfig:
    return parse_config(text, source="slipway.yaml")


def _only(queue: LocalQueue, target: str) -> list[dict[str, Any]]:
    return [m for m in queued_bodies(queue) if m["target"] == target]


def _tick(config: SlipwayConfig, at: datetime, state: StateStore, queue: Any) -> Any:
    return evaluate_schedules(config, now=at, state=state, queue=queue)


# --- configuration ------------------------------------------------------------------------------


def test_schedule_is_a_five_field_cron_in_utc() -> None:
    config = _config(CONFIG.replace('"0 3 * * *"', '"  0   3 * * mon-fri "'))
    assert config.target("web").schedule == "0 3 * * mon-fri"  # type: ignore[union-attr]
    assert config.target("api").schedule is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ('"0 0 3 * * *"', "is not a 5-field cron expression (minute hour day month weekday, UTC)"),
        ('"0 3 * *"', "is not a 5-field cron expression"),
        ('"61 3 * * *"', "minute: '61' is out of range 0-59"),
        ('"0 3 31 2 *"', "the expression never fires"),
        ("3", "expected a string, got the number 3"),
    ],
)
def test_a_bad_schedule_names_the_field(written: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(CONFIG.replace('"0 3 * * *"', written))
    [problem] = caught.value.problems
    assert (problem.line, problem.path) == (6, "targets[0].schedule")
    assert message in problem.message


# --- the latest slot ----------------------------------------------------------------------------


def _brute_latest(cron: Cron, after: datetime, now: datetime) -> datetime | None:
    found, slot = None, cron.next_after(after)
    while slot <= now:
        found, slot = slot, cron.next_after(slot)
    return found


@settings(max_examples=60, deadline=None)
@given(
    expression=st.sampled_from(["* * * * *", "*/7 * * * *", "0 3 * * *", "30 */5 * * 1-5", "0 0 1 * *"]),
    after_minutes=st.integers(min_value=0, max_value=60 * 24 * 40),
    span_minutes=st.integers(min_value=-5, max_value=60 * 24 * 40),
    seconds=st.integers(min_value=0, max_value=59),
)
def test_latest_slot_is_the_last_firing_in_the_window(
    expression: str, after_minutes: int, span_minutes: int, seconds: int
) -> None:
    cron = Cron.parse(expression)
    after = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=after_minutes, seconds=seconds)
    now = after + timedelta(minutes=span_minutes, seconds=seconds)
    expected = _brute_latest(cron, after, now) if now > after else None
    assert latest_slot(cron, after, now) == expected


# --- evaluation ---------------------------------------------------------------------------------


def test_first_run_records_and_builds_only_later_slots(state: StateStore, queue: LocalQueue) -> None:
    config = _config()
    first = _tick(config, T0, state, queue)
    assert sorted(first.started) == ["nightly", "web"]
    assert first.queued == [] and queued_bodies(queue) == []  # 02:30 passed before the schedule was seen
    record = ScheduleRecord.model_validate(state.get(schedule_key("web")).value)  # type: ignore[union-attr]
    assert (record.since, record.last_slot, record.schedule) == (T0, None, "0 3 * * *")
    assert state.get(schedule_key("api")) is None  # no schedule, no document

    assert _tick(config, T0 + timedelta(seconds=40), state, queue).queued == []  # no slot yet
    due = _tick(config, datetime(2026, 11, 23, 2, 40, 0, 300000, tzinfo=UTC), state, queue)
    [queued] = due.queued
    assert (queued.target, queued.slot) == ("nightly", datetime(2026, 11, 23, 2, 40, tzinfo=UTC))
    [message] = queued_bodies(queue)
    assert message["id"] == queued.request_id
    assert message["trigger"]["kind"] == "schedule" and message["trigger"]["provider"] == "timer"
    # Nothing recorded for nightly: its default branch's head, as a base-image rebuild would build.
    assert (message["source"]["ref"], message["source"]["commit"]) == ("refs/heads/main", None)
    assert "nightly: no build of main is recorded yet; rebuilding its head" in due.notes


def test_double_fire_enqueues_once(state: StateStore, queue: LocalQueue) -> None:
    config = _config()
    _tick(config, T0, state, queue)
    slot_time = datetime(2026, 11, 23, 3, 0, 1, tzinfo=UTC)
    first = _tick(config, slot_time, state, queue)
    again = _tick(config, slot_time, state, queue)  # the host fired the same slot twice
    later = _tick(config, slot_time + timedelta(seconds=30), state, queue)
    assert [q.target for q in first.queued] == ["web", "nightly"]
    assert again.queued == [] and later.queued == []
    assert len(_only(queue, "web")) == 1 and len(_only(queue, "nightly")) == 1
    record = ScheduleRecord.model_validate(state.get(schedule_key("web")).value)  # type: ignore[union-attr]
    assert record.last_slot == datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    assert record.queued_at == slot_time and record.pending is None


def test_the_request_builds_the_last_build_and_its_id_follows_the_slot(
    state: StateStore, queue: LocalQueue
) -> None:
    config = _config()
    store_last_build(state, "web", commit=COMMIT, at=T0 - timedelta(days=2))
    _tick(config, T0, state, queue)
    monday = _tick(config, datetime(2026, 11, 23, 3, 0, 5, tzinfo=UTC), state, queue)
    tuesday = _tick(config, datetime(2026, 11, 24, 3, 0, 5, tzinfo=UTC), state, queue)
    [monday_web] = [q for q in monday.queued if q.target == "web"]
    [tuesday_web] = [q for q in tuesday.queued if q.target == "web"]
    assert monday_web.request_id != tuesday_web.request_id
    assert monday_web.request_id.startswith("web.")
    messages = _only(queue, "web")
    assert [m["source"]["commit"] for m in messages] == [COMMIT, COMMIT]
    assert "sha-c72d62b" in messages[0]["image"]["tags"]
    assert messages[0]["coalesce_key"] == "web:refs/heads/main"


def test_downtime_catches_up_only_the_latest_slot(state: StateStore, queue: LocalQueue) -> None:
    config = _config()
    _tick(config, T0, state, queue)
    back = T0 + timedelta(days=4, hours=6)  # down from Monday 02:30 to Friday 08:30
    summary = _tick(config, back, state, queue)
    slots = {q.target: q.slot for q in summary.queued}
    assert slots == {
        "web": datetime(2026, 11, 27, 3, 0, tzinfo=UTC),
        "nightly": datetime(2026, 11, 27, 8, 30, tzinfo=UTC),
    }
    assert len(queued_bodies(queue)) == 2
    assert any(n.startswith("web: slots between") and "only the latest" in n for n in summary.notes)
    assert _tick(config, back + timedelta(minutes=1), state, queue).queued == []


def test_two_instances_sharing_the_state_enqueue_each_slot_once(tmp_path: Path, queue: LocalQueue) -> None:
    config = _config()
    one, two = FolderStateStore(tmp_path / "shared"), FolderStateStore(tmp_path / "shared")
    _tick(config, T0, one, queue)
    instant = datetime(2026, 11, 23, 3, 0, 0, 200000, tzinfo=UTC)
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def run(store: StateStore) -> None:
        barrier.wait()
        results.append(_tick(config, instant, store, queue))

    threads = [threading.Thread(target=run, args=(store,)) for store in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not any(r.errors for r in results)
    assert len(_only(queue, "web")) == 1 and len(_only(queue, "nightly")) == 1


class _LostAnswerQueue:
    """Delivers the batch, then fails as if the answer was lost: the sender cannot know it arrived."""

    def __init__(self, inner: LocalQueue) -> None:
        self.inner = inner

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        self.inner.send(messages)
        raise QueueError("connection reset after the send")


@pytest.mark.parametrize("store_kind", ["folder", "blob"])
def test_a_claim_left_unsent_is_sent_by_the_next_evaluation_once(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path, queue: LocalQueue
) -> None:
    if store_kind == "blob":
        azurite: AzuriteServer = request.getfixturevalue("azurite")
        one: StateStore = BlobStateStore(azurite.new_container("sched"))
        two: StateStore = BlobStateStore(one.container_client)  # type: ignore[attr-defined]
    else:
        one, two = FolderStateStore(tmp_path / "s"), FolderStateStore(tmp_path / "s")
    config = _config()
    _tick(config, T0, one, queue)
    slot = datetime(2026, 11, 23, 3, 0, 2, tzinfo=UTC)
    failed = _tick(config, slot, one, UnreachableQueue())  # instance one claims, cannot send
    assert failed.queued == [] and "namespace unreachable" in failed.errors[0]
    assert queued_bodies(queue) == []
    lost = _tick(config, slot + timedelta(seconds=20), two, _LostAnswerQueue(queue))  # sent, not acknowledged
    assert lost.queued == [] and len(queued_bodies(queue)) == 2
    resent = _tick(config, slot + timedelta(seconds=40), one, queue)  # same ids: duplicates dropped
    assert {q.target for q in resent.queued} == {"web", "nightly"}
    assert all(q.slot == datetime(2026, 11, 23, 3, 0, tzinfo=UTC) for q in resent.queued)
    assert len(_only(queue, "web")) == 1 and len(_only(queue, "nightly")) == 1
    assert _tick(config, slot + timedelta(seconds=50), two, queue).queued == []


def test_a_changed_schedule_starts_again(state: StateStore, queue: LocalQueue) -> None:
    config = _config()
    _tick(config, T0, state, queue)
    changed = _config(CONFIG.replace('"0 3 * * *"', '"0 2 * * *"'))
    summary = _tick(changed, datetime(2026, 11, 24, 2, 30, tzinfo=UTC), state, queue)
    assert summary.started == ["web"]  # Tuesday 02:00 passed before the new schedule was seen: not built
    assert [q.target for q in summary.queued] == ["nightly"]
    assert [
        q.target for q in _tick(changed, datetime(2026, 11, 25, 2, 0, 9, tzinfo=UTC), state, queue).queued
    ] == [
        "web",
        "nightly",
    ]


def test_many_targets_on_one_slot_are_spread(state: StateStore, queue: LocalQueue) -> None:
    targets = "".join(
        f"  - name: t{i}\n    repo: https://github.com/contoso/t{i}\n    image: contoso/t{i}\n"
        f'    schedule: "0 3 * * *"\n'
        for i in range(5)
    )
    config = _config(
        f"registry: slipway.azurecr.io\nrebuilds:\n  max_burst: 2\n  spread_seconds: 90\ntargets:\n{targets}"
    )
    _tick(config, T0, state, queue)
    slot = datetime(2026, 11, 23, 3, 0, 1, tzinfo=UTC)
    summary = _tick(config, slot, state, queue)
    assert [q.scheduled_at for q in summary.queued] == [
        None,
        None,
        slot + timedelta(seconds=90),
        slot + timedelta(seconds=90),
        slot + timedelta(seconds=180),
    ]
    assert len(queued_bodies(queue)) == 5


def test_a_target_whose_branch_cannot_be_told_is_reported(state: StateStore, queue: LocalQueue) -> None:
    config = _config(
        "registry: slipway.azurecr.io\ntargets:\n  - name: globs\n    repo: https://github.com/c/g\n"
        '    image: c/g\n    branches: ["**"]\n    schedule: "*/5 * * * *"\n'
    )
    _tick(config, T0, state, queue)
    summary = _tick(config, T0 + timedelta(minutes=5), state, queue)
    assert summary.queued == [] and queued_bodies(queue) == []
    [ignored] = summary.ignored
    assert ignored.target == "globs" and "set default_branch" in ignored.reason
    assert _tick(config, T0 + timedelta(minutes=6), state, queue).ignored == []  # reported once per slot


def test_a_broken_state_document_does_not_stop_the_others(state: StateStore, queue: LocalQueue) -> None:
    config = _config()
    _tick(config, T0, state, queue)
    path = Path(state.root) / schedule_key("web")  # type: ignore[attr-defined]
    path.write_text("{not json")
    summary = _tick(config, datetime(2026, 11, 23, 3, 0, 1, tzinfo=UTC), state, queue)
    assert [q.target for q in summary.queued] == ["nightly"]
    assert summary.errors and summary.errors[0].startswith("web: ")


# --- through the timer function, as the worker calls it -----------------------------------------


def test_the_timer_function_evaluates_with_the_runtime(tmp_path: Path, queue: LocalQueue) -> None:
    from handlers import schedules

    (tmp_path / "slipway.yaml").write_text(CONFIG.replace('"*/10 * * * *"', '"* * * * *"'))
    state = FolderStateStore(tmp_path / "state")
    settings = {"SLIPWAY_CONFIG": str(tmp_path / "slipway.yaml"), "BUILD_QUEUE": "build-requests"}
    set_runtime(Runtime(settings, app_root=tmp_path, queue=queue, state=state))
    try:
        timer = schedules.scheduled_rebuilds.build().get_user_function()
        timer(TimerRequest(past_due=False))
        assert state.get(schedule_key("nightly")) is not None
        record = ScheduleRecord.model_validate(state.get(schedule_key("nightly")).value)  # type: ignore[union-attr]
        # Pretend the first evaluation happened two minutes ago: the next call has a slot to build.
        earlier = record.since - timedelta(minutes=2)
        state.replace(
            schedule_key("nightly"),
            record.model_copy(update={"since": earlier}).model_dump(mode="json"),
            state.get(schedule_key("nightly")).etag,  # type: ignore[union-attr]
        )
        timer(TimerRequest(past_due=True))
        [message] = queued_bodies(queue)
        assert message["target"] == "nightly" and message["trigger"]["kind"] == "schedule"
    finally:
        set_runtime(None)


def test_the_timers_bind_their_schedule_settings() -> None:
    from handlers import schedules

    root = Path(__file__).resolve().parents[1]
    sample = json.loads((root / "local.settings.sample.json").read_text())["Values"]
    from shared.app.local_host import DEFAULT_SCHEDULES  # what `slipway serve` sets when unset

    for function, setting, default in [
        (schedules.scheduled_rebuilds, "SLIPWAY_SCHEDULE_TIMER", "0 * * * * *"),
        (schedules.base_image_poll, "SLIPWAY_BASE_IMAGE_POLL_SCHEDULE", "0 */15 * * * *"),
    ]:
        [trigger] = json.loads(function.build().get_function_json())["bindings"]
        assert (trigger["type"], trigger["schedule"]) == ("timerTrigger", f"%{setting}%")
        assert sample[setting] == default
        assert DEFAULT_SCHEDULES[setting] == default  # `slipway serve` works bare
        Cron.parse(default)  # the local host parses it as the Functions host does


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([0, 1, 20, 60, 61, 420, 3600, 86400 * 3]),  # seconds since the previous fire
            st.sampled_from([0, 1]),  # which of two instances fires
        ),
        min_size=1,
        max_size=12,
    )
)
def test_any_sequence_of_fires_queues_each_due_slot_once(steps: list[tuple[int, int]]) -> None:
    import tempfile

    config = _config()
    cron = Cron.parse("*/10 * * * *")  # nightly's schedule
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        stores = [FolderStateStore(root / "state"), FolderStateStore(root / "state")]
        queue = LocalQueue(root / "queue.sqlite3")
        at, handled, expected, queued = T0, T0, set(), []
        _tick(config, at, stores[0], queue)
        for seconds, instance in steps:
            at += timedelta(seconds=seconds)
            slot = latest_slot(cron, handled, at)
            if slot is not None:
                expected.add(slot)
                handled = slot
            summary = _tick(config, at, stores[instance], queue)
            assert not summary.errors
            queued += [q.slot for q in summary.queued if q.target == "nightly"]
        assert sorted(queued) == sorted(expected)  # every due slot once, only the latest after a gap
        assert len(_only(queue, "nightly")) == len(expected)
        queue.close()

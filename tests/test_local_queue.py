"""The local SQLite queue keeps the Service Bus semantics the dispatcher relies on.

Time-based rules run on an injected clock, so nothing here sleeps on the queue's behalf.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shared.platform.queue import (
    MAX_DELIVERY_COUNT_EXCEEDED,
    NOT_LOCKED,
    LocalQueue,
    LockLostError,
    MessageState,
    OutgoingMessage,
    QueueBrowser,
    QueueError,
    QueueReceiver,
    QueueSender,
    ReceivedMessage,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LOCK = timedelta(seconds=30)
REPO_ROOT = Path(__file__).resolve().parent.parent


class Clock:
    """A settable clock: the queue's only notion of time."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def msg(message_id: str, body: bytes = b"{}", **kwargs: object) -> OutgoingMessage:
    return OutgoingMessage(message_id=message_id, body=body, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(tmp_path: Path, clock: Clock) -> Iterator[LocalQueue]:
    with LocalQueue(tmp_path / "queue.sqlite3", lock_duration=LOCK, max_delivery_count=3, clock=clock) as q:
        yield q


# --- sending and receiving -------------------------------------------------------------------


def test_implements_the_ports(queue: LocalQueue) -> None:
    sender: QueueSender = queue
    browser: QueueBrowser = queue
    receiver: QueueReceiver = queue
    assert isinstance(sender, QueueSender)
    assert isinstance(browser, QueueBrowser)
    assert isinstance(receiver, QueueReceiver)


def test_every_field_round_trips(queue: LocalQueue, clock: Clock) -> None:
    queue.send(
        [
            OutgoingMessage(
                message_id="req-1",
                body=b'{"a": 1}',
                content_type="application/json",
                subject="git-push",
                correlation_id="delivery-7",
                application_properties={"repo": "org/app", "attempt": 2, "ratio": 0.5, "forced": True},
            )
        ]
    )
    [received] = queue.receive()
    assert received.message_id == "req-1"
    assert received.body == b'{"a": 1}'
    assert received.content_type == "application/json"
    assert received.subject == "git-push"
    assert received.correlation_id == "delivery-7"
    assert received.application_properties == {"repo": "org/app", "attempt": 2, "ratio": 0.5, "forced": True}
    assert type(received.application_properties["forced"]) is bool
    assert received.scheduled_enqueue_time is None
    assert received.delivery_count == 1
    assert received.enqueued_time == clock.now
    assert received.locked_until == clock.now + LOCK
    assert received.lock_token
    assert received.state is MessageState.ACTIVE
    assert received.dead_letter_reason is None and received.dead_letter_description is None


def test_receive_is_oldest_first_and_respects_max_count(queue: LocalQueue) -> None:
    queue.send([msg(f"m{i}") for i in range(5)])
    first = queue.receive(max_count=2)
    rest = queue.receive(max_count=10)
    assert [m.message_id for m in first] == ["m0", "m1"]
    assert [m.message_id for m in rest] == ["m2", "m3", "m4"]
    sequence = [m.sequence_number for m in first + rest]
    assert sequence == sorted(sequence) and len(set(sequence)) == 5
    assert queue.receive() == []


def test_empty_send_and_bad_arguments(queue: LocalQueue) -> None:
    queue.send([])
    assert queue.count() == 0
    with pytest.raises(ValueError):
        queue.receive(max_count=0)
    with pytest.raises(ValueError):
        OutgoingMessage(message_id="", body=b"")
    with pytest.raises(ValueError):
        OutgoingMessage(message_id="x" * 129, body=b"")
    with pytest.raises(ValueError, match="timezone-aware"):
        OutgoingMessage(message_id="x", body=b"", scheduled_enqueue_time=datetime(2025, 1, 1))


def test_queues_in_one_file_are_separate(tmp_path: Path, clock: Clock) -> None:
    a = LocalQueue(tmp_path / "q.sqlite3", name="a", clock=clock)
    b = LocalQueue(tmp_path / "q.sqlite3", name="b", clock=clock)
    a.send([msg("same-id")])
    b.send([msg("same-id")])  # duplicate detection is per queue
    assert (a.count(), b.count()) == (1, 1)
    [m] = a.receive()
    with pytest.raises(LockLostError):
        b.complete(m)
    a.complete(m)
    assert (a.count(), b.count()) == (0, 1)
    a.close()
    b.close()


# --- duplicate detection ---------------------------------------------------------------------


def test_duplicate_inside_the_window_is_accepted_and_dropped(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("dup", b"first")])
    clock.advance(599)
    queue.send([msg("dup", b"second")])  # no error: Service Bus reports success
    assert [m.body for m in queue.peek()] == [b"first"]


def test_duplicate_detection_survives_completion(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("dup")])
    queue.complete(queue.receive()[0])
    clock.advance(60)
    queue.send([msg("dup")])
    assert queue.count() == 0


def test_duplicates_inside_one_batch(queue: LocalQueue) -> None:
    queue.send([msg("a", b"1"), msg("a", b"2"), msg("b")])
    assert [(m.message_id, m.body) for m in queue.peek()] == [("a", b"1"), ("b", b"{}")]


def test_same_id_after_the_window_is_a_new_message(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("dup", b"first")])
    clock.advance(600)  # the window is 10 minutes from the accepted send
    queue.send([msg("dup", b"second")])
    assert [m.body for m in queue.peek()] == [b"first", b"second"]
    clock.advance(10)
    queue.send([msg("dup", b"third")])  # the second send opened a new window
    assert queue.count() == 2


def test_scheduled_messages_take_part_in_duplicate_detection(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("s", scheduled_enqueue_time=clock.now + timedelta(hours=1))])
    queue.send([msg("s")])
    [only] = queue.peek()
    assert only.is_scheduled


def test_zero_window_disables_duplicate_detection(tmp_path: Path, clock: Clock) -> None:
    q = LocalQueue(tmp_path / "q.sqlite3", duplicate_detection_window=timedelta(0), clock=clock)
    q.send([msg("x"), msg("x")])
    assert q.count() == 2
    q.close()


# --- peek-lock -------------------------------------------------------------------------------


def test_a_locked_message_is_not_received_twice(queue: LocalQueue) -> None:
    queue.send([msg("m")])
    [m] = queue.receive()
    assert queue.receive() == []
    assert queue.count() == 1  # still in the queue, as Service Bus counts it
    queue.complete(m)
    assert queue.count() == 0
    with pytest.raises(LockLostError):
        queue.complete(m)


def test_abandon_makes_it_available_at_once(queue: LocalQueue) -> None:
    queue.send([msg("m")])
    [first] = queue.receive()
    queue.abandon(first)
    [second] = queue.receive()
    assert second.sequence_number == first.sequence_number
    assert second.delivery_count == 2
    assert second.lock_token != first.lock_token
    with pytest.raises(LockLostError):
        queue.abandon(first)


def test_an_expired_lock_means_redelivery_and_the_old_lock_is_lost(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("m")])
    [first] = queue.receive()
    clock.advance(29.999)
    assert queue.receive() == []
    clock.advance(0.001)  # locked_until is exclusive
    with pytest.raises(LockLostError):
        queue.complete(first)
    [second] = queue.receive()
    assert second.delivery_count == 2
    for settle in (queue.complete, queue.abandon, queue.renew_lock):
        with pytest.raises(LockLostError):
            settle(first)  # superseded by the redelivery
    with pytest.raises(LockLostError):
        queue.dead_letter(first, "x", "y")
    queue.complete(second)
    assert queue.count() == 0


def test_renew_lock_extends_from_now(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("m")])
    [m] = queue.receive()
    clock.advance(20)
    assert queue.renew_lock(m) == clock.now + LOCK
    clock.advance(20)  # past the original expiry, inside the renewed one
    assert queue.receive() == []
    queue.complete(m)  # the token is unchanged by renewal
    assert queue.count() == 0


def test_a_peeked_message_holds_no_lock(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("m")])
    [peeked] = queue.peek()
    assert peeked.lock_token == "" and peeked.locked_until == NOT_LOCKED
    assert peeked.delivery_count == 0
    with pytest.raises(LockLostError):
        queue.complete(peeked)
    [received] = queue.receive()
    [peeked] = queue.peek()  # peek shows locked messages, with when the lock ends
    assert peeked.lock_token == "" and peeked.locked_until == received.locked_until
    assert peeked.delivery_count == 1


# --- max delivery count ----------------------------------------------------------------------


def test_abandoning_the_last_delivery_dead_letters(queue: LocalQueue) -> None:
    queue.send([msg("poison")])
    for attempt in (1, 2):
        [m] = queue.receive()
        assert m.delivery_count == attempt
        queue.abandon(m)
        assert queue.count(dead_letter=True) == 0
    [m] = queue.receive()
    assert m.delivery_count == 3
    queue.abandon(m)
    assert queue.count() == 0
    [dead] = queue.peek(dead_letter=True)
    assert dead.dead_letter_reason == MAX_DELIVERY_COUNT_EXCEEDED == "MaxDeliveryCountExceeded"
    assert dead.dead_letter_description == "Message could not be consumed after 3 delivery attempts."
    assert dead.delivery_count == 3
    assert dead.sequence_number == m.sequence_number


def test_an_expired_last_delivery_dead_letters(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("slow")])
    for _ in range(3):
        assert len(queue.receive()) == 1
        clock.advance(30)
    assert queue.receive() == []
    assert queue.count() == 0
    [dead] = queue.peek(dead_letter=True)
    assert dead.dead_letter_reason == MAX_DELIVERY_COUNT_EXCEEDED


# --- dead-letter sub-queue -------------------------------------------------------------------


def test_dead_letter_keeps_reason_and_can_be_drained(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("bad", b"payload", subject="git-push")])
    [m] = queue.receive()
    queue.dead_letter(m, reason="InvalidBuildRequest", description="field 'repo' is missing")
    assert queue.count() == 0 and queue.count(dead_letter=True) == 1
    assert queue.receive() == []
    [peeked] = queue.peek(dead_letter=True)
    assert (peeked.message_id, peeked.body, peeked.subject) == ("bad", b"payload", "git-push")
    assert peeked.dead_letter_reason == "InvalidBuildRequest"
    assert peeked.dead_letter_description == "field 'repo' is missing"

    [locked] = queue.receive_dead_letter()
    assert queue.receive_dead_letter() == []
    with pytest.raises(QueueError, match="cannot be dead-lettered again"):
        queue.dead_letter(locked, "again", "no")
    queue.abandon(locked)
    clock.advance(1)
    [locked] = queue.receive_dead_letter(max_count=5)
    assert locked.dead_letter_reason == "InvalidBuildRequest"
    queue.complete(locked)
    assert queue.count(dead_letter=True) == 0
    assert queue.peek(dead_letter=True) == []


def test_the_dead_letter_queue_never_dead_letters_again(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("m")])
    [m] = queue.receive()
    queue.dead_letter(m, "Reason", "Description")
    for _ in range(5):  # well past max_delivery_count=3
        [d] = queue.receive_dead_letter()
        queue.abandon(d)
        [d] = queue.receive_dead_letter()
        clock.advance(31)
    assert queue.count(dead_letter=True) == 1
    [d] = queue.peek(dead_letter=True)
    assert d.dead_letter_reason == "Reason"


# --- scheduled messages ----------------------------------------------------------------------


def test_scheduled_message_is_invisible_until_due(queue: LocalQueue, clock: Clock) -> None:
    due = clock.now + timedelta(minutes=5)
    queue.send([msg("later", scheduled_enqueue_time=due), msg("now")])
    assert queue.count() == 1
    assert [m.message_id for m in queue.receive(max_count=10)] == ["now"]
    [scheduled, _now] = queue.peek()
    assert scheduled.state is MessageState.SCHEDULED and scheduled.is_scheduled
    assert scheduled.scheduled_enqueue_time == due
    assert scheduled.enqueued_time == due
    assert not queue.wait_for_message(0)
    clock.advance(300)
    assert queue.wait_for_message(0)
    assert queue.count() == 2
    [received] = queue.receive()
    assert received.message_id == "later" and received.state is MessageState.ACTIVE


def test_scheduled_in_the_past_is_available_at_once(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("late", scheduled_enqueue_time=clock.now - timedelta(minutes=1))])
    [m] = queue.receive()
    assert m.enqueued_time == clock.now
    assert m.scheduled_enqueue_time == clock.now - timedelta(minutes=1)


def test_cancel_scheduled(queue: LocalQueue, clock: Clock) -> None:
    queue.send([msg("later", scheduled_enqueue_time=clock.now + timedelta(minutes=5)), msg("now")])
    scheduled, ready = queue.peek()
    with pytest.raises(QueueError, match="no scheduled message"):
        queue.cancel_scheduled(ready.sequence_number)
    queue.cancel_scheduled(scheduled.sequence_number)
    assert [m.message_id for m in queue.peek()] == ["now"]
    with pytest.raises(QueueError):
        queue.cancel_scheduled(scheduled.sequence_number)
    clock.advance(600)
    assert [m.message_id for m in queue.receive(max_count=10)] == ["now"]


# --- durability, polling, concurrency --------------------------------------------------------


def test_messages_and_locks_survive_reopening(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "q.sqlite3"
    with LocalQueue(path, clock=clock) as q:
        q.send([msg("a"), msg("b"), msg("c", scheduled_enqueue_time=clock.now + timedelta(minutes=1))])
        [a] = q.receive()
        [b] = q.receive()
        q.dead_letter(b, "Why", "Because")
    with pytest.raises(QueueError, match="closed"):
        q.count()
    with LocalQueue(path, clock=clock) as q:
        assert q.receive() == []  # "a" is still locked, "c" still scheduled
        q.complete(a)
        assert [m.dead_letter_reason for m in q.peek(dead_letter=True)] == ["Why"]
        q.send([msg("a")])  # the duplicate history is durable too
        clock.advance(60)
        assert [m.message_id for m in q.receive()] == ["c"]


def test_wait_for_message_wakes_when_another_thread_sends(queue: LocalQueue) -> None:
    assert not queue.wait_for_message(0.01)
    timer = threading.Timer(0.05, lambda: queue.send([msg("m")]))
    timer.start()
    assert queue.wait_for_message(5, poll_interval=0.01)
    timer.join()


def _open_handles(path: Path) -> int:
    return sum(1 for fd in Path("/proc/self/fd").iterdir() if fd.resolve() == path.resolve())


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_short_lived_threads_do_not_leak_connections(tmp_path: Path) -> None:
    """The local host's HTTP server runs one thread per request, each of which sends."""
    path = tmp_path / "q.sqlite3"
    with LocalQueue(path) as q:
        baseline = _open_handles(path)
        for i in range(20):
            t = threading.Thread(target=q.send, args=([msg(f"m{i}")],))
            t.start()
            t.join()
        gc.collect()
        assert _open_handles(path) <= baseline + 1
        assert q.count() == 20
    assert _open_handles(path) == 0


def test_two_threads_never_hold_the_same_message(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    total = 200
    producer_queue = LocalQueue(path)
    consumer_queue = LocalQueue(path)  # a second object, as the HTTP server and dispatcher have
    held: set[int] = set()
    held_lock = threading.Lock()
    delivered: Counter[str] = Counter()
    overlaps: list[int] = []
    done = threading.Event()

    def produce() -> None:
        for start in range(0, total, 10):
            producer_queue.send([msg(f"m{i}") for i in range(start, start + 10)])
        done.set()

    def consume() -> None:
        while True:
            batch = consumer_queue.receive(max_count=3)
            if not batch:
                if done.is_set() and consumer_queue.count() == 0:
                    return
                consumer_queue.wait_for_message(0.01, poll_interval=0.002)
                continue
            for m in batch:
                with held_lock:
                    if m.sequence_number in held:
                        overlaps.append(m.sequence_number)
                    held.add(m.sequence_number)
                    delivered[m.message_id] += 1
            for m in batch:
                with held_lock:
                    held.discard(m.sequence_number)
                consumer_queue.complete(m)

    threads = [threading.Thread(target=produce)] + [threading.Thread(target=consume) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert overlaps == []
    assert delivered == Counter({f"m{i}": 1 for i in range(total)})
    producer_queue.close()
    consumer_queue.close()


def test_another_process_can_send_to_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    with LocalQueue(path) as q:
        script = (
            "import sys\n"
            "from shared.platform.queue.local import LocalQueue\n"
            "from shared.platform.queue.port import OutgoingMessage\n"
            "q = LocalQueue(sys.argv[1])\n"
            "for i in range(50):\n"
            "    q.send([OutgoingMessage(message_id=f'p{i}', body=b'{}')])\n"
        )
        child = subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=REPO_ROOT)
        received: list[str] = []
        while len(received) < 50:
            for m in q.receive(max_count=10):
                received.append(m.message_id)
                q.complete(m)
            if child.poll() is not None and q.count() == 0:
                break
        assert child.wait(timeout=30) == 0
        assert sorted(received) == sorted(f"p{i}" for i in range(50))


# --- property: nothing is lost, nothing is held twice ----------------------------------------


class QueueModel(RuleBasedStateMachine):
    """Random send/receive/settle/renew/clock moves against a model of who holds which lock."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.queue = LocalQueue(
            Path(self.tmp.name) / "q.sqlite3",
            lock_duration=LOCK,
            max_delivery_count=3,
            duplicate_detection_window=timedelta(seconds=90),
            clock=self.clock,
        )
        self.sent_ids: set[str] = set()
        # handle -> message as last received or renewed; handles, not the random lock tokens, so that
        # hypothesis replays draw the same choices
        self.held: dict[int, ReceivedMessage] = {}
        self.handles = 0
        self.deliveries: dict[int, int] = {}
        self.completed: dict[int, str] = {}
        self.seen: set[int] = set()

    def teardown(self) -> None:
        self.queue.close()
        self.tmp.cleanup()

    @rule(
        ids=st.lists(st.sampled_from("abcde"), min_size=1, max_size=3), delay=st.sampled_from([None, 0, 45])
    )
    def send(self, ids: list[str], delay: int | None) -> None:
        when = None if delay is None else self.clock.now + timedelta(seconds=delay)
        self.queue.send([msg(i, scheduled_enqueue_time=when) for i in ids])
        self.sent_ids.update(ids)

    @rule(count=st.integers(1, 3))
    def receive(self, count: int) -> None:
        now = self.clock.now
        for m in self.queue.receive(count):
            for other in self.held.values():
                if other.sequence_number == m.sequence_number:
                    assert other.locked_until <= now, "delivered while another holder's lock was live"
            assert m.sequence_number not in self.completed
            assert m.delivery_count == self.deliveries.get(m.sequence_number, 0) + 1 <= 3
            assert m.enqueued_time <= now and m.locked_until == now + LOCK
            self.deliveries[m.sequence_number] = m.delivery_count
            self.handles += 1
            self.held[self.handles] = m

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), action=st.sampled_from(["complete", "abandon", "dead_letter", "renew"]))
    def settle(self, data: st.DataObject, action: str) -> None:
        handle = data.draw(st.sampled_from(sorted(self.held)))
        m = self.held[handle]
        live = m.locked_until > self.clock.now
        try:
            if action == "complete":
                self.queue.complete(m)
            elif action == "abandon":
                self.queue.abandon(m)
            elif action == "dead_letter":
                self.queue.dead_letter(m, "Test", "by the model")
            else:
                renewed = self.queue.renew_lock(m)
                assert renewed == self.clock.now + LOCK
                self.held[handle] = replace(m, locked_until=renewed)
        except LockLostError:
            assert not live, "a live lock was refused"
            del self.held[handle]
            return
        assert live, "an expired or superseded lock was accepted"
        if action != "renew":
            del self.held[handle]
        if action == "complete":
            self.completed[m.sequence_number] = m.message_id

    @rule(seconds=st.sampled_from([1, 15, 29, 30, 31, 100]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @invariant()
    def nothing_lost(self) -> None:
        active = self.queue.peek(max_count=10_000)
        dead = self.queue.peek(dead_letter=True, max_count=10_000)
        present = {m.sequence_number for m in active + dead}
        assert len(present) == len(active) + len(dead)
        assert not present & self.completed.keys()
        assert self.seen - present <= self.completed.keys(), "a message vanished without being completed"
        self.seen |= present
        assert self.sent_ids <= {m.message_id for m in active + dead} | set(self.completed.values())
        assert all(m.dead_letter_reason for m in dead)
        assert all(m.delivery_count == 3 for m in dead if m.dead_letter_reason == MAX_DELIVERY_COUNT_EXCEEDED)
        assert self.queue.count() == sum(1 for m in active if m.state is MessageState.ACTIVE)
        assert self.queue.count(dead_letter=True) == len(dead)


QueueModel.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueModel = QueueModel.TestCase


def test_the_look_ahead_and_the_duplicate_sweep_are_index_searches(tmp_path: Path) -> None:
    """Their cost must not grow with the queue (issue 22.2): SQLite's own plan says which index
    answers each (CREATE INDEX IF NOT EXISTS also adds them to a queue file an older version made)."""
    import sqlite3

    from shared.platform.queue.local import schema

    queue = LocalQueue(tmp_path / "queue.sqlite3")
    queue.send([OutgoingMessage(message_id="m1", body=b'{"coalesce_key": "web:refs/heads/main"}')])
    assert queue.pending_with_coalesce_key("web:refs/heads/main") == [
        b'{"coalesce_key": "web:refs/heads/main"}'
    ]
    queue.close()
    with sqlite3.connect(tmp_path / "queue.sqlite3") as conn:
        look_ahead = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT body FROM messages WHERE queue = ? AND sub_queue = ?"  # noqa: S608
            f" AND {schema.COALESCE_KEY} = ? ORDER BY seq",
            ("build-requests", "active", "k"),
        ).fetchall()
        sweep = conn.execute(
            "EXPLAIN QUERY PLAN DELETE FROM duplicates WHERE queue = ? AND expires_at <= ?", ("q", 1)
        ).fetchall()
    assert "USING INDEX messages_by_coalesce_key" in " ".join(row[-1] for row in look_ahead)
    assert "duplicates_by_expiry" in " ".join(row[-1] for row in sweep)

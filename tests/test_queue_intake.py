"""The local queue's intake journal: sends survive crashes, races and rotation, exactly once."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import pytest

import shared.platform.queue.local.journal as intake
from shared.platform.queue import LocalQueue, OutgoingMessage
from shared.platform.queue.local.journal import IntakeJournal


def msg(message_id: str, body: bytes = b"{}") -> OutgoingMessage:
    return OutgoingMessage(message_id=message_id, body=body)


def drain(queue: LocalQueue) -> list[str]:
    ids = []
    while batch := queue.receive(max_count=50):
        for message in batch:
            ids.append(message.message_id)
            queue.complete(message)
    return ids


def _send_then_die(path: str, message_id: str) -> None:
    LocalQueue(path).send([msg(message_id)])
    os._exit(0)  # no cleanup, no close: as if the process were killed right after the 202


def _send_many(path: str, worker: int, count: int) -> None:
    queue = LocalQueue(path)
    for i in range(count):
        queue.send([msg(f"w{worker}-{i}", os.urandom(64))])
    os._exit(0)


def test_a_send_is_durable_once_it_returns_even_if_the_process_dies(tmp_path: Path) -> None:
    path = str(tmp_path / "queue.sqlite3")
    LocalQueue(path).close()
    child = multiprocessing.get_context("fork").Process(target=_send_then_die, args=(path, "survivor"))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    with LocalQueue(path) as queue:
        assert drain(queue) == ["survivor"]


def test_concurrent_senders_in_several_processes_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "queue.sqlite3")
    reader = LocalQueue(path)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_send_many, args=(path, w, 60)) for w in range(4)]
    for worker in workers:
        worker.start()
    received = drain(reader)  # folds while the writers append
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    received += drain(reader)
    assert sorted(received) == sorted(f"w{w}-{i}" for w in range(4) for i in range(60))


def test_a_torn_record_is_reported_and_skipped_and_later_sends_survive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = LocalQueue(tmp_path / "queue.sqlite3")
    queue.send([msg("before")])
    # What an OS crash in the middle of a write leaves: a record header promising more than is there.
    with open(tmp_path / "queue.sqlite3-intake", "ab") as journal:
        journal.write(intake.encode_record("build-requests", 0, 0, [msg("torn", b"x" * 100)])[:40])
    queue.send([msg("after")])
    with caplog.at_level(logging.ERROR, logger="slipway.queue.intake"):
        assert drain(queue) == ["before", "after"]
    assert "checksum mismatch" in caplog.text or "bytes skipped" in caplog.text


def test_rotation_keeps_every_message_and_senders_with_an_open_journal_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "ROTATE_BYTES", 2048)
    path = tmp_path / "queue.sqlite3"
    receiver, other_sender = LocalQueue(path), LocalQueue(path)
    generations = set()
    received: list[str] = []
    for round_ in range(6):
        for i in range(10):
            sender = receiver if i % 2 else other_sender  # the other one keeps its descriptor open
            sender.send([msg(f"r{round_}-{i}", b"y" * 200)])
        received += drain(receiver)
        generations.add((path.parent / "queue.sqlite3-intake").read_bytes()[8:40])
    assert len(generations) > 1, "the journal was never rotated"
    assert received == [f"r{r}-{i}" for r in range(6) for i in range(10)]
    assert (path.parent / "queue.sqlite3-intake").stat().st_size < 4096


def test_a_crash_between_rotation_and_its_commit_neither_loses_nor_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "ROTATE_BYTES", 0)
    path = tmp_path / "queue.sqlite3"
    queue = LocalQueue(path)
    queue.send([msg("old-1"), msg("old-2")])
    assert drain(queue) == ["old-1", "old-2"]
    journal = IntakeJournal(path.with_name("queue.sqlite3-intake"))
    # Everything is folded; a rotation replaces the file, and then "the process dies" before
    # SQLite learns the new generation (the stored offset still points into the old file).
    row = queue._connection().execute("SELECT generation, offset FROM intake").fetchone()
    assert journal.rotate_if_folded(row[0], row[1]) is not None
    queue.send([msg("new-1")])
    assert drain(queue) == ["new-1"]


def test_the_duplicate_window_runs_from_each_send_even_when_folded_later(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    queue = LocalQueue(tmp_path / "q.sqlite3", clock=lambda: now[0])
    queue.send([msg("same")])
    now[0] += timedelta(minutes=5)
    queue.send([msg("same")])  # inside the window: dropped
    now[0] += timedelta(minutes=6)
    queue.send([msg("same")])  # 11 minutes after the accepted send: a new message
    assert drain(queue) == ["same", "same"]


def _send_past_the_file_size_limit(path: str) -> None:
    import resource
    import signal

    queue = LocalQueue(path)
    journal = Path(path + "-intake")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    limit = journal.stat().st_size + 100
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        queue.send([msg("too-big", b"z" * 1000)])
    except Exception as exc:
        os._exit(0 if "short write" in str(exc) and journal.stat().st_size < limit - 99 else 3)
    os._exit(4)


def test_a_write_cut_short_by_a_full_disk_is_refused_and_leaves_no_partial_record(tmp_path: Path) -> None:
    path = str(tmp_path / "queue.sqlite3")
    queue = LocalQueue(path)
    queue.send([msg("before")])
    child = multiprocessing.get_context("fork").Process(target=_send_past_the_file_size_limit, args=(path,))
    child.start()
    child.join(30)
    assert child.exitcode == 0  # the sender saw an error (so the webhook answers 503), the file is as before
    queue.send([msg("after")])
    assert drain(queue) == ["before", "after"]


def test_text_json_cannot_encode_as_utf8_survives_a_send(tmp_path: Path) -> None:
    """The fast serializer refuses lone surrogates (a JSON escape can carry one into a ref);
    the record falls back to escaped JSON and reads back exactly."""
    queue = LocalQueue(tmp_path / "q.sqlite3")
    odd = "refs/heads/a\ud800-\u00fc"
    queue.send(
        [
            OutgoingMessage(
                message_id="m1",
                body=b"{}",
                subject="push",
                correlation_id="c\u00e9",
                application_properties={"ref": odd, "attempt": 2},
            )
        ]
    )
    (received,) = queue.receive()
    assert received.correlation_id == "c\u00e9"
    assert received.application_properties == {"ref": odd, "attempt": 2}


_INHERITED: LocalQueue | None = None


def _send_with_inherited_queue(report: str) -> None:
    assert _INHERITED is not None
    _INHERITED.send([msg("from-child")])
    Path(report).write_text(str(_INHERITED._intake._fd))
    os._exit(0)


def test_a_forked_child_appends_through_its_own_descriptor(tmp_path: Path) -> None:
    """flock locks belong to the open file description: a child writing through the parent's
    would not be excluded by the parent's lock, so the journal reopens after a fork."""
    global _INHERITED
    _INHERITED = LocalQueue(tmp_path / "queue.sqlite3")
    _INHERITED.send([msg("from-parent")])
    parent_fd = _INHERITED._intake._fd
    report = tmp_path / "child-fd"
    child = multiprocessing.get_context("fork").Process(
        target=_send_with_inherited_queue, args=(str(report),)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert int(report.read_text()) != parent_fd
    _INHERITED.send([msg("parent-again")])
    assert sorted(drain(_INHERITED)) == ["from-child", "from-parent", "parent-again"]
    _INHERITED.close()


def test_threads_sharing_one_queue_survive_rotation_under_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`slipway serve` answers webhooks on many threads through one LocalQueue (issue 22.7): a
    thread that finds the journal rotated reopens it while others are writing through the same
    descriptor. None of their sends may fail ("Bad file descriptor") or be lost."""
    import threading
    import time
    import types

    monkeypatch.setattr(intake, "ROTATE_BYTES", 1024)

    def slow_write(fd: int, data: bytes) -> int:
        time.sleep(0.0005)  # widen the window between taking the descriptor and writing to it
        return os.write(fd, data)

    slow_os = types.SimpleNamespace(
        **{name: getattr(os, name) for name in dir(os) if not name.startswith("__")}
    )
    slow_os.write = slow_write
    monkeypatch.setattr(intake, "os", slow_os)
    path = tmp_path / "queue.sqlite3"
    shared_queue, folder = LocalQueue(path), LocalQueue(path)
    errors: list[BaseException] = []
    stop = threading.Event()

    def send(worker: int) -> None:
        for i in range(150):
            try:
                shared_queue.send([msg(f"t{worker}-{i}", b"z" * 120)])
            except BaseException as exc:
                errors.append(exc)

    def fold_and_rotate() -> None:
        while not stop.is_set():
            folder.count()  # folds the journal and rotates it once it is past ROTATE_BYTES

    rotating = threading.Thread(target=fold_and_rotate)
    rotating.start()
    senders = [threading.Thread(target=send, args=(w,)) for w in range(6)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(60)
    stop.set()
    rotating.join(60)
    assert errors == []
    assert sorted(drain(folder)) == sorted(f"t{w}-{i}" for w in range(6) for i in range(150))

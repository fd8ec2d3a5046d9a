"""``slipway runs watch ID [--exit-status]``: wait for a run to end, like ``gh run watch``.

The run's state is read from ACR (``runs.get``), not from the ledger, which reconciliation
updates on its own schedule; a request not dispatched yet is waited for in the ledger first.
Progress is a rich spinner on a terminal, one plain line per change otherwise (CI logs).

Exit codes with ``--exit-status`` (without it, 0 whenever the watch completes):
0 the run succeeded (or was a dry run); 3 it failed (ACR ``Failed``/``Error``, or ACR refused
to start it); 4 it was canceled (``Canceled``, or the request was superseded before a run
started); 5 it timed out (``Timeout``). 1 is a failure of slipway itself (no such run, ACR
unreachable), 2 a usage error, as for every command.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.acr.run_backend import RunHandle
    from shared.app.runtime import Runtime
    from shared.platform.ledger import LedgerRecord

EXIT_SUCCEEDED = 0
EXIT_FAILED = 3
EXIT_CANCELED = 4
EXIT_TIMED_OUT = 5
_EXIT_BY_RUN_STATUS = {
    "Succeeded": EXIT_SUCCEEDED,
    "DryRun": EXIT_SUCCEEDED,
    "Failed": EXIT_FAILED,
    "Error": EXIT_FAILED,
    "Canceled": EXIT_CANCELED,
    "Timeout": EXIT_TIMED_OUT,
}
MAX_RETRY_AFTER = 120.0
MAX_TRANSIENT_FAILURES = 8  # ARM failures in a row before the watch gives up

# Replaced by tests that watch a run without waiting in real time.
sleep = time.sleep


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    watch = sub.add_parser(
        "watch",
        help="wait for a run to end (--exit-status: non-zero when it failed)",
        description="Wait until the run ends, showing its status. With --exit-status the exit code "
        "says how it ended: 0 succeeded (or a dry run), 3 failed, 4 canceled or superseded, "
        "5 timed out; 1 means slipway could not tell (no such run, ACR unreachable).",
    )
    watch.add_argument("id", help="request id (or ACR run id)")
    watch.add_argument("--exit-status", action="store_true", help="exit non-zero unless the run succeeded")
    watch.add_argument(
        "--interval", type=_seconds, default=5.0, help="seconds between two looks at the run (default 5)"
    )
    watch.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    watch.set_defaults(handler=run_watch)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected 0 < seconds <= 3600, got {text}")
    return value


@dataclass
class _Outcome:
    record: LedgerRecord
    run: RunHandle | None  # None: no run was started (refused, superseded)
    exit_code: int


def run_watch(args: argparse.Namespace) -> int:
    from shared.app.commands._runs_records import require_record
    from shared.app.runtime import runtime

    rt = runtime()
    record = require_record(rt.ledger(), args.id)
    with _Progress(enabled=not args.json) as progress:
        outcome = _wait(rt, record, args.interval, progress.show)
    if args.json:
        from shared.app.commands.output import print_json

        print_json(_outcome_json(outcome))
    else:
        print(_outcome_line(outcome))
    return outcome.exit_code if args.exit_status else 0


def _wait(rt: Runtime, record: LedgerRecord, interval: float, show: Callable[[str], None]) -> _Outcome:
    from shared.app.commands._runs_records import acr_backend_for, wait_for_dispatch
    from shared.platform.ledger import RunStatus

    record = wait_for_dispatch(rt, record, interval=interval, sleep=lambda s: sleep(s), show=show)
    if record.run_id is None:  # it ended before a run started: the dispatcher or an operator
        moot = record.status in (RunStatus.SUPERSEDED, RunStatus.CANCELLED)
        return _Outcome(record, None, EXIT_CANCELED if moot else EXIT_FAILED)
    backend = acr_backend_for(rt, record)
    if backend is None:  # a dry run: nothing runs, nothing to wait for
        from shared.acr.run_backend import RunHandle

        handle = RunHandle(run_id=record.run_id, status=record.run_status or "DryRun", backend="dry-run")
        return _Outcome(record, handle, EXIT_SUCCEEDED)
    from shared.acr.run_backend import TransientBackendError
    from shared.app.cli import CliError

    failures = 0
    while True:
        try:
            run = backend.get(record.run_id)
        except TransientBackendError as exc:
            failures += 1
            if failures > MAX_TRANSIENT_FAILURES:
                raise CliError(f"run {record.run_id}: {exc}") from None
            wait = exc.retry_after if exc.retry_after is not None else interval
            show(f"run {record.run_id}: {exc}; trying again in {min(wait, MAX_RETRY_AFTER):g}s")
            sleep(min(wait, MAX_RETRY_AFTER))
            continue
        except Exception as exc:  # PermanentBackendError and the like: one line
            raise CliError(f"run {record.run_id}: {exc}") from None
        failures = 0
        if run.finished:
            return _Outcome(record, run, _EXIT_BY_RUN_STATUS.get(run.status, EXIT_FAILED))
        show(f"run {record.run_id}: {run.status}{_elapsed(run.started_at)}")
        sleep(interval)


def _elapsed(started: datetime | None) -> str:
    if started is None:
        return ""
    from datetime import UTC, timedelta

    from shared.model.durations import format_duration

    seconds = max(0, round((datetime.now(UTC) - started).total_seconds()))
    return f" for {format_duration(timedelta(seconds=seconds))}"


def _outcome_json(outcome: _Outcome) -> dict[str, Any]:
    """``runs watch --json`` (documented in the README)."""
    run = outcome.run
    started = run.started_at if run is not None else None
    finished = run.finished_at if run is not None else None
    return {
        "request_id": outcome.record.request_id,
        "status": str(outcome.record.status),
        "backend": run.backend if run is not None else outcome.record.backend,
        "run_id": run.run_id if run is not None else None,
        "run_status": run.status if run is not None else None,
        "run_started_at": started.isoformat() if started else None,
        "run_finished_at": finished.isoformat() if finished else None,
        "duration_seconds": (finished - started).total_seconds() if started and finished else None,
        "run_error": run.error_message if run is not None else outcome.record.error,
        "exit_code": outcome.exit_code,
    }


def _outcome_line(outcome: _Outcome) -> str:
    record, run = outcome.record, outcome.run
    if run is None:
        why = f": {record.error}" if record.error else ""
        return f"{record.request_id}: {record.status}, no run was started{why}"
    if run.backend == "dry-run":
        return f"{record.request_id}: dry run {run.run_id}: no ACR run exists, nothing to wait for"
    took = ""
    if run.started_at and run.finished_at:
        from shared.model.durations import format_duration

        took = f" after {format_duration(run.finished_at - run.started_at)}"
    error = f": {run.error_message}" if run.error_message else ""
    return f"run {run.run_id} ({record.request_id}): {run.status}{took}{error}"


class _Progress:
    """A rich spinner on a terminal (stderr); elsewhere, one plain line per change (stderr too, so
    stdout holds only the outcome)."""

    def __init__(self, *, enabled: bool) -> None:
        self._enabled = enabled
        self._status: Any = None
        self._last = ""

    def __enter__(self) -> _Progress:
        from rich.console import Console

        console = Console(stderr=True)
        if self._enabled and console.is_terminal:
            self._status = console.status("waiting for the run")
            self._status.__enter__()
        return self

    def show(self, text: str) -> None:
        if not self._enabled:
            return
        if self._status is not None:
            self._status.update(text)
        elif _changed(self._last, text):
            print(text, file=sys.stderr, flush=True)
        self._last = text

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)


def _changed(last: str, text: str) -> bool:
    """Plain lines only when the state changes, not the elapsed time (``... for 3m2s``)."""
    return last.split(" for ")[0] != text.split(" for ")[0]

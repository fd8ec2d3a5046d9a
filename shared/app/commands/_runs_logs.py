"""``slipway runs logs ID [--follow]``: the ACR run's log, read through the run's log SAS link
(``shared.runs.log_tail``); for a dry run, the task it rendered (no ACR run exists)."""

from __future__ import annotations

import argparse
import codecs
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.acr.run_backend import AcrBackend

# Replaced by tests that follow a run without waiting in real time.
sleep = time.sleep
DISPATCH_POLL = 5.0  # seconds between two reads of a record still being dispatched


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    logs = sub.add_parser(
        "logs",
        help="the ACR run's log (--follow: stream it until the run ends)",
        description="Print the ACR run's log, read through the run's log link (a SAS link, never "
        "printed). With --follow, keep reading as the run writes until it ends and the log is fully "
        "read. A dry run has no ACR run: its rendered task is printed instead, with a note.",
    )
    logs.add_argument("id", help="request id (or ACR run id)")
    logs.add_argument("--follow", "-f", action="store_true", help="stream until the run ends")
    logs.set_defaults(handler=run_logs)


def run_logs(args: argparse.Namespace) -> int:
    from shared.app.cli import CliError
    from shared.app.commands._runs_records import acr_backend_for, require_record, wait_for_dispatch
    from shared.app.runtime import runtime

    rt = runtime()
    record = require_record(rt.ledger(), args.id)
    if args.follow:  # a request still being dispatched: its log is about to exist
        shown: list[str] = []

        def note(text: str) -> None:
            if not shown:
                print(f"note: {text}; waiting for its run", file=sys.stderr)
            shown.append(text)

        record = wait_for_dispatch(rt, record, interval=DISPATCH_POLL, sleep=lambda s: sleep(s), show=note)
    backend = acr_backend_for(rt, record)
    if backend is None:
        if record.backend == "acr" or record.run_id is None or not record.task_yaml:
            raise CliError(f"no ACR run was started for {record.request_id} (status {record.status})")
        print(
            f"note: {record.request_id} is a dry run (backend {record.backend or 'none'}): no ACR run "
            "exists, so there is no log; this is the task it rendered",
            file=sys.stderr,
        )
        sys.stdout.write(record.task_yaml if record.task_yaml.endswith("\n") else record.task_yaml + "\n")
        return 0
    assert record.run_id is not None  # acr_backend_for returns a backend only for a run
    _print_log(backend, record.run_id, follow=args.follow)
    return 0


def _print_log(backend: AcrBackend, run_id: str, *, follow: bool) -> None:
    """Stream the log to stdout as it is read (decoded as UTF-8; a character split between two
    reads is kept whole). Every failure is one line without the link."""
    from shared.acr.run_backend import PermanentBackendError, RunHandle, TransientBackendError
    from shared.app.cli import CliError
    from shared.platform.http.client import ConnectionFailed
    from shared.runs.log_tail import LogReadError, read_log

    last: list[RunHandle] = []

    def status() -> RunHandle:
        handle = backend.get(run_id)
        last[:] = [handle]
        return handle

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    read = 0
    try:
        for chunk in read_log(
            lambda: backend.log_link(run_id),
            status if follow else None,
            verify=backend.tls_verify,
            sleep=lambda seconds: sleep(seconds),
        ):
            read += len(chunk)
            sys.stdout.write(decoder.decode(chunk))
            sys.stdout.flush()
    except (TransientBackendError, PermanentBackendError, LogReadError, ConnectionFailed) as exc:
        raise CliError(f"run {run_id}: {exc}") from None
    sys.stdout.write(decoder.decode(b"", final=True))
    sys.stdout.flush()
    if not read:
        print(f"note: run {run_id} has no log yet (or an empty one)", file=sys.stderr)
    if follow and last:
        print(f"run {run_id}: {last[0].status}", file=sys.stderr)

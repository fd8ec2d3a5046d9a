"""When reconciliation sees a run end: name the gate that failed it, lift quarantine when it passed.

``Reconciler(on_finished=SupplyChainOutcome(...))`` calls this once per ended run, before it
records the outcome and posts the commit status:

* A failed run whose log says a gate failed (``slipway-result:`` lines, ``shared.run_report``)
  gets a ``run_error`` naming the gate in a sentence (``shared.build_status.gate_failure``);
  ACR's own message ("failed during run, err: exit status 1") names nothing.
* A successful run, with top-level ``quarantine: true``, has each digest it pushed marked
  ``Passed`` through the registry's data-plane API (``shared.quarantine``). A failed run's digests
  stay quarantined: nothing is patched for it.

The log is read only when one of these applies. Its link (a SAS URL) is a secret while it is
valid: it is used for one GET and never logged or stored. If the registry cannot be reached the
exception propagates, the ledger is not updated, and the next reconcile tick tries again.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.build_status import gate_failure
from shared.logs import log_event
from shared.quarantine import PASSED
from shared.run_report import GATE_PLATFORM_CHECK, GATE_SCAN, RunReport, parse_run_report
from shared.task_render import RESULT_MARKER

if TYPE_CHECKING:
    from shared.config import SlipwayConfig
    from shared.ledger import LedgerRecord
    from shared.quarantine import QuarantineClient
    from shared.run_backend import AcrBackend, RunHandle

logger = logging.getLogger("slipway.run_outcome")

MAX_LOG_BYTES = 64 * 1024 * 1024
LOG_TIMEOUT = 30.0

LogLines = Callable[[str], Iterable[str]]  # run id → the lines of its log


class SupplyChainOutcome:
    """The ``on_finished`` hook of ``Reconciler``; see the module docstring."""

    def __init__(
        self,
        *,
        config: Callable[[], SlipwayConfig],
        log_lines: LogLines,
        quarantine: Callable[[str], QuarantineClient],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._log_lines = log_lines
        self._quarantine = quarantine  # registry login server → client
        self._clock = clock

    def __call__(self, record: LedgerRecord, handle: RunHandle) -> LedgerRecord:
        config = self._config()
        succeeded = handle.status == "Succeeded"
        if succeeded and not config.quarantine:
            return record
        if not succeeded and handle.status not in ("Failed", "Error"):
            return record  # canceled or timed out: no gate to name, nothing to lift
        report = parse_run_report(
            self._log_lines(handle.run_id), marker=record.result_marker or RESULT_MARKER
        )
        if not succeeded:
            return self._name_the_gate(record, report)
        return self._lift_quarantine(record, handle, report, config)

    def _name_the_gate(self, record: LedgerRecord, report: RunReport) -> LedgerRecord:
        if report.failed_gate == GATE_SCAN:
            detail = report.findings_text() or "the scanner reported findings"
        elif report.failed_gate == GATE_PLATFORM_CHECK:
            detail = f"the pushed image lacks {', '.join(report.missing_platforms)}"
        else:
            return record
        return record.model_copy(update={"run_error": gate_failure(report.failed_gate, detail)})

    def _lift_quarantine(
        self, record: LedgerRecord, handle: RunHandle, report: RunReport, config: SlipwayConfig
    ) -> LedgerRecord:
        image: dict[str, Any] = record.request.get("image", {})
        registry, repository = image.get("registry", ""), image.get("repository", "")
        # Only digests under the request's own repository (the log is the run's word, not ours).
        digests = [d for name, d in report.pushed if name == f"{registry}/{repository}"]
        target = config.target(record.target)
        details = {
            "run": handle.run_id,
            "request": record.request_id,
            "scanner": config.scanner.image if target is not None and target.scan is not None else None,
            "result": "scan gate passed" if report.scan_passed else "run succeeded (no scan gate)",
            "checkedBy": "slipway",
        }
        if not digests:
            log_event(logger, "quarantine_no_digest", level=logging.ERROR, request_id=record.request_id)
            return record.with_event(
                self._clock(), "quarantine_skipped", "the run log names no pushed digest"
            )
        client = self._quarantine(registry)
        patched = [d for d in digests if client.set_quarantine(repository, d, PASSED, details)]
        detail = f"{PASSED}: " + ", ".join(f"{repository}@{d}" for d in digests)
        return record.with_event(
            self._clock(), "quarantine_passed" if patched else "quarantine_unchanged", detail
        )


class AcrRunLog:
    """The lines of an ACR run's log, through ``runs.get_log_sas_url`` (needs the backend's client)."""

    def __init__(self, backend: AcrBackend, *, max_bytes: int = MAX_LOG_BYTES) -> None:
        self._backend = backend
        self._max_bytes = max_bytes

    def __call__(self, run_id: str) -> Iterator[str]:
        link = self._backend.log_link(run_id)
        if not link:
            return iter(())
        return read_log_lines(link, max_bytes=self._max_bytes, verify=self._backend.tls_verify)


def read_log_lines(
    url: str, *, max_bytes: int = MAX_LOG_BYTES, timeout: float = LOG_TIMEOUT, verify: str | bool = True
) -> Iterator[str]:
    """Stream a log blob line by line, at most ``max_bytes``. ``url`` is a secret: never echo it.

    ``verify`` is the ARM client's TLS setting: True (the system's CAs) or a CA bundle path.
    """
    import ssl

    if not url.startswith("https://"):
        raise ValueError("the run log link must be https")
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        raise ValueError("refusing to read a run log without TLS verification")
    request = urllib.request.Request(url, method="GET")  # noqa: S310 (https checked above)
    read = 0
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
        for raw in response:
            read += len(raw)
            if read > max_bytes:
                return
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


__all__ = ["AcrRunLog", "LogLines", "SupplyChainOutcome", "read_log_lines"]

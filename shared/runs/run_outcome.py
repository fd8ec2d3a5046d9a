"""When reconciliation sees a run end: name the gate that failed it, and settle its quarantine.

``Reconciler(on_finished=SupplyChainOutcome(...))`` calls this once per ended run, before it
records the outcome and posts the commit status:

* A failed run whose log says a gate failed (``slipway-result:`` lines, ``shared.acr.run_report``)
  gets a ``run_error`` naming the gate in a sentence (``shared.runs.build_status.gate_failure``);
  ACR's own message ("failed during run, err: exit status 1") names nothing.
* With top-level ``quarantine: true``, every manifest the run pushed (each digest it reports and,
  for an index, every manifest the index lists) is marked through the registry's data-plane API
  (``shared.acr.quarantine``): ``Passed`` for a successful run, ``Failed`` for a failed one, with
  ``quarantineDetails`` saying why. A canceled or timed-out run is left quarantined.

The log is read only when one of these applies. Its link (a SAS URL) is a secret while it is
valid: it is used for one GET and never logged or stored. If the registry cannot be reached the
exception propagates, the ledger is not updated, and the next reconcile tick tries again; the
marks already set are read back and not sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.acr.quarantine import FAILED, PASSED, details_for
from shared.acr.run_report import GATE_PLATFORM_CHECK, GATE_SCAN, RunReport, parse_run_report
from shared.acr.task import RESULT_MARKER, SCAN_REPORT_ARTIFACT_TYPE
from shared.platform.logs import log_event
from shared.runs.build_status import gate_failure

if TYPE_CHECKING:
    from shared.acr.quarantine import QuarantineClient
    from shared.acr.run_backend import AcrBackend, RunHandle
    from shared.model.config import SlipwayConfig
    from shared.platform.ledger import LedgerRecord

logger = logging.getLogger("slipway.run_outcome")

MAX_LOG_BYTES = 64 * 1024 * 1024
LOG_TIMEOUT = 30.0

LogLines = Callable[[str], Iterable[str]]  # run id → the lines of its log

# The annotation ``scan-gate`` puts on each report it attaches (``oras attach --annotation``,
# shared/acr/task/): the request whose run pushed it.
REPORT_REQUEST_ANNOTATION = "dev.slipway.request"


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
        failed = handle.status in ("Failed", "Error")
        if not failed and not (succeeded and config.quarantine):
            return record  # canceled or timed out: no gate to name, nothing to settle
        report = parse_run_report(
            self._log_lines(handle.run_id), marker=record.result_marker or RESULT_MARKER
        )
        if failed:
            record = self._name_the_gate(record, report)
        if config.quarantine:
            record = self._settle_quarantine(record, handle, report, config)
        return record

    def _name_the_gate(self, record: LedgerRecord, report: RunReport) -> LedgerRecord:
        if report.failed_gate == GATE_SCAN:
            detail = report.findings_text() or "the scanner reported findings"
        elif report.failed_gate == GATE_PLATFORM_CHECK:
            detail = f"the pushed image lacks {', '.join(report.missing_platforms)}"
        else:
            return record
        return record.model_copy(update={"run_error": gate_failure(report.failed_gate, detail)})

    def _settle_quarantine(
        self, record: LedgerRecord, handle: RunHandle, report: RunReport, config: SlipwayConfig
    ) -> LedgerRecord:
        """Mark every manifest the run pushed: ``Passed`` when it succeeded, else ``Failed``."""
        succeeded = handle.status == "Succeeded"
        image: dict[str, Any] = record.request.get("image", {})
        registry, repository = image.get("registry", ""), image.get("repository", "")
        # Only digests under the request's own repository (the log is the run's word, not ours).
        pushed = [d for name, d in report.pushed if name == f"{registry}/{repository}"]
        if not pushed:
            if succeeded:
                log_event(logger, "quarantine_no_digest", level=logging.ERROR, request_id=record.request_id)
            return record.with_event(
                self._clock(), "quarantine_skipped", "the run log names no pushed digest"
            )
        target = config.target(record.target)
        # The scanner is named only when it ran to a verdict.
        scanned = (
            target is not None
            and target.scan is not None
            and (report.scan_passed or report.failed_gate == GATE_SCAN)
        )
        if succeeded:
            state, verdict = PASSED, "scan passed" if report.scan_passed else "not scanned"
            outcome = "scan gate passed" if report.scan_passed else "run succeeded (no scan gate)"
        else:
            state = FAILED
            verdict = {GATE_SCAN: "scan failed", GATE_PLATFORM_CHECK: "platform check failed"}.get(
                report.failed_gate or "", "run failed"
            )
            outcome = record.run_error or handle.error_message or "the run failed"
        details = details_for(
            state=verdict,
            description=f"Slipway request {record.request_id}, ACR run {handle.run_id}: {outcome}",
            scanner=config.scanner.image if scanned else None,
            findings=report.findings if not succeeded else None,
        )
        client = self._quarantine(registry)
        digests: list[str] = []
        for digest in pushed:
            members = client.release_set(repository, digest)
            if target is not None and target.scan is not None:
                # The scan reports this run attached to the image are manifests it pushed too.
                members += [
                    attached.digest
                    for attached in client.referrers(
                        repository, digest, artifact_type=SCAN_REPORT_ARTIFACT_TYPE
                    )
                    if attached.annotations.get(REPORT_REQUEST_ANNOTATION) == record.request_id
                ]
            digests += [member for member in members if member not in digests]
        # Passed: the index last, so whoever can pull it can pull what it lists. Failed: it first.
        ordered = digests[::-1] if succeeded else digests
        patched = [d for d in ordered if client.set_quarantine(repository, d, state, details)]
        event = f"quarantine_{state.lower()}" if patched else "quarantine_unchanged"
        detail = f"{state}: " + ", ".join(f"{repository}@{d}" for d in digests)
        return record.with_event(self._clock(), event, detail)


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

    ``verify`` is the ARM client's TLS setting: True (the system's CAs) or a CA bundle path. A
    failure raises ``OSError`` (``ConnectionFailed``, or the blob's HTTP status) without the URL's
    query, where the signature is.
    """
    from shared.platform.http.client import HttpClient, tls_context

    if not url.startswith("https://"):
        raise ValueError("the run log link must be https")
    if verify is False:
        raise ValueError("refusing to read a run log without TLS verification")
    client = HttpClient(timeout=timeout, tls=tls_context(verify))
    read = 0
    with client.open("GET", url) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"reading the run log failed: HTTP {response.status}")
        for raw in response.lines():
            read += len(raw)
            if read > max_bytes:
                return
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


__all__ = ["AcrRunLog", "LogLines", "SupplyChainOutcome", "read_log_lines"]

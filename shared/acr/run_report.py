"""What a run reports about itself: the ``slipway-result:`` lines its steps print into the run log.

ACR's ``runErrorMessage`` says only "failed during run, err: exit status 1"; the step that failed
is named in the log alone. So the step scripts (``shared.acr.task``) print one line per fact,
and reconciliation reads them back here: which digest was pushed (for quarantine) and which gate
failed (for the ledger and the commit status).

The lines start at column 0 with the run's own marker, ``slipway-result-<nonce>:``: a random
nonce the dispatcher puts in the step scripts and keeps in the ledger. BuildKit's plain progress
prefixes every line of a Dockerfile ``RUN`` with ``#<n>``, and nothing the build runs can know
the nonce, so a build cannot print a report line. Reconciliation also accepts only digests under
the request's repository. Runs recorded before markers had a nonce use the plain
``slipway-result:``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.acr.task import RESULT_MARKER

_DIGEST = r"sha256:[0-9a-f]{64}"
_PUSHED_RE = re.compile(rf"^pushed (?P<repository>[^\s@]+)@(?P<digest>{_DIGEST})$")
_PLATFORM_FAILED_RE = re.compile(r"^platform-check failed missing(?P<missing>(?: [a-z0-9/]+)+)$")
_SCAN_RE = re.compile(r"^scan (?P<platform>[a-z0-9/]+) (?P<verdict>passed|failed)(?: (?P<counts>.*))?$")
_COUNT_RE = re.compile(r"^(UNKNOWN|LOW|MEDIUM|HIGH|CRITICAL)=(\d+)$")

GATE_SCAN = "scan"
GATE_PLATFORM_CHECK = "platform-check"


@dataclass
class RunReport:
    """The facts one run's log states; empty when the run printed none (older runs, dry runs)."""

    pushed: list[tuple[str, str]] = field(default_factory=list)  # (registry/repository, digest)
    failed_gate: str | None = None
    missing_platforms: list[str] = field(default_factory=list)
    findings: dict[str, dict[str, int]] = field(default_factory=dict)  # platform → severity → count
    scan_passed: bool = False
    tagged: bool = False

    def findings_text(self) -> str:
        """``2 CRITICAL, 1 HIGH on linux/arm64``: the failing platforms' counts, for one sentence."""
        parts = []
        for platform, counts in self.findings.items():
            found = ", ".join(f"{n} {severity}" for severity, n in counts.items() if n)
            parts.append(f"{found or 'findings'} on {platform}")
        return "; ".join(parts)


def parse_run_report(lines: Iterable[str], *, marker: str = RESULT_MARKER) -> RunReport:
    """Read the lines starting with the run's ``marker``; other lines and malformed ones are ignored.

    The dispatcher gives each run its own marker (``slipway-result-<nonce>:``) and records it;
    a line with any other marker, the plain one included, is not this run's report.
    """
    report = RunReport()
    for raw in lines:
        if not raw.startswith(marker):
            continue
        text = raw[len(marker) :].strip()
        if match := _PUSHED_RE.match(text):
            pushed = (match.group("repository"), match.group("digest"))
            if pushed not in report.pushed:
                report.pushed.append(pushed)
        elif match := _PLATFORM_FAILED_RE.match(text):
            report.failed_gate = GATE_PLATFORM_CHECK
            report.missing_platforms = match.group("missing").split()
        elif match := _SCAN_RE.match(text):
            if match.group("verdict") == "failed":
                counts = {}
                for word in (match.group("counts") or "").split():
                    if count := _COUNT_RE.match(word):
                        counts[count.group(1)] = int(count.group(2))
                report.findings[match.group("platform")] = counts
        elif text == "scan-gate failed":
            report.failed_gate = GATE_SCAN
        elif text == "scan-gate passed":
            report.scan_passed = True
        elif text.startswith("tagged "):
            report.tagged = True
    return report


__all__ = ["GATE_PLATFORM_CHECK", "GATE_SCAN", "RunReport", "parse_run_report"]

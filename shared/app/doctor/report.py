"""What a doctor run reports: one line per check, and the one-line forms of the failures it meets.

A check never pastes an SDK's exception: it becomes one line here, and a missing or refused Azure
credential (azure-identity's multi-line "attempted credentials" dump) becomes "no credential"
with the setting that picks the identity.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from shared.model.config import ConfigProblem

_DETAIL_LIMIT = 200  # characters of an exception's first line kept in a detail


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"  # does not apply to this environment (no cache, dry-run dispatch)


class CheckResult(BaseModel):
    """One line of the report; ``fix`` says what to do when it failed."""

    model_config = ConfigDict(frozen=True)

    name: str
    status: Status
    detail: str
    fix: str | None = None


class DoctorReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    mode: str
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(check.status is not Status.FAIL for check in self.checks)


class Failed(Exception):
    """A check's failure, with the fix to print."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def error_text(exc: BaseException) -> str:
    """One line, without the SDK's multi-line request dumps."""
    return f"{type(exc).__name__}: {first_line(exc)}".rstrip(": ")


def problem_text(problem: ConfigProblem) -> str:
    where = problem.file if problem.line is None else f"{problem.file}:{problem.line}"
    return f"{where}: {problem.path + ': ' if problem.path else ''}{problem.message}"


def status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def credential_failure(exc: BaseException) -> BaseException | None:
    """The credential failure behind ``exc`` (itself, or a cause it was raised from), if any.

    azure-identity raises ``CredentialUnavailableError`` (no identity to try) and
    ``ClientAuthenticationError`` (a token request refused, by the identity endpoint or Entra
    ID); the first is a subclass of the second (azure.identity._exceptions). A service that
    refuses a token it was sent answers 401/403, which Storage also raises as
    ``ClientAuthenticationError``: that is a missing role, left to the check to name."""
    try:
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import CredentialUnavailableError
    except ImportError:  # pragma: no cover - both are dependencies
        return None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, CredentialUnavailableError) or (
            isinstance(current, ClientAuthenticationError) and status_code(current) not in (401, 403)
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


def credential_fix(connection: str | None) -> str:
    """Which setting picks the identity for ``connection`` (see shared.platform.identity)."""
    own = f"{connection}__clientId or " if connection else ""
    return f"set {own}AZURE_CLIENT_ID to the app's identity (in Azure), or sign in with `az login` (locally)"


def report_rows(report: DoctorReport) -> list[dict[str, Any]]:
    """The report as rows for the table and the JSON output."""
    return [check.model_dump(mode="json") for check in report.checks]

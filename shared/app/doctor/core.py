"""The doctor itself: runs every check, each failure turned into one line with its fix."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from shared.app.doctor import registry_checks, settings_checks, storage_checks
from shared.app.doctor.report import (
    CheckResult,
    DoctorReport,
    Failed,
    Status,
    credential_failure,
    credential_fix,
    error_text,
    first_line,
)
from shared.app.doctor.settings_checks import ACR_SETTINGS
from shared.app.runtime import APP_ROOT, Runtime, service_bus_configured
from shared.platform.storage import storage_configured

if TYPE_CHECKING:
    from shared.acr.run_backend import RunFinder
    from shared.model.config import SlipwayConfig
    from shared.platform.oci import RegistryClient

# Which client answers for a registry host (shared.intake.digest_poll.registry_clients by default).
RegistryClients = Callable[[str], "RegistryClient"]
Check = Callable[["Doctor"], "tuple[Status, str] | str"]

# The connection whose ``__clientId`` picks each check's identity (shared.platform.identity);
# None: the app's own identity, AZURE_CLIENT_ID.
_CONNECTIONS: dict[str, str | None] = {
    "queue": "ServiceBusConnection",
    "ledger": "AzureWebJobsStorage",
    "ledger write": "AzureWebJobsStorage",
    "state": "AzureWebJobsStorage",
    "cache": "SLIPWAY_CACHE_CONNECTION_STRING",
}


def azure_mode(settings: Mapping[str, str]) -> bool:
    """Azure when the app runs on the Functions host or any Azure dependency is configured."""
    return bool(
        settings.get("WEBSITE_SITE_NAME")
        or service_bus_configured(settings)
        or storage_configured(settings)
        or any(settings.get(name) for name in ACR_SETTINGS)
    )


@contextmanager
def _quiet_sdk_warnings() -> Iterator[None]:
    """The Azure SDK logs a failed credential chain as a multi-line warning (azure-identity
    ``ChainedTokenCredential``: ``_LOGGER.warning(message)``) before raising it: the report
    has that failure as one line, so the log record would only repeat it at length."""
    logger = logging.getLogger("azure")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


class Doctor:
    """Runs the checks; the factories are seams for tests (a test CA, a static token)."""

    def __init__(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        app_root: Path = APP_ROOT,
        backend_factory: Callable[[Mapping[str, str]], RunFinder] | None = None,
        registry_clients: Callable[[Mapping[str, str]], RegistryClients] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings: Mapping[str, str] = settings if settings is not None else os.environ
        self.app_root = app_root
        self.runtime = Runtime(self.settings, app_root=app_root)  # where the app keeps its state
        self.backend_factory = backend_factory
        self.registry_clients = registry_clients
        self.clock = clock
        self.config: SlipwayConfig | None = None  # set by the config check when it loads
        self.results: list[CheckResult] = []

    def run(self) -> DoctorReport:
        """Every check, in order, whatever the earlier ones found: one run lists every problem."""
        self.results = []
        checks: list[tuple[str, Check]] = [
            ("config", settings_checks.check_config),
            ("settings", settings_checks.check_settings),
            ("schedules", settings_checks.check_schedules),
            ("secrets", settings_checks.check_secrets),
            ("queue", storage_checks.check_queue),
            ("ledger", storage_checks.check_ledger),
            ("ledger write", storage_checks.check_ledger_write),
            ("state", storage_checks.check_state),
            ("cache", storage_checks.check_cache),
            ("registry", registry_checks.check_registry),
            ("tools", registry_checks.check_tools),
        ]
        with _quiet_sdk_warnings():
            for name, check in checks:
                self.results.append(self._run_check(name, check))
        return DoctorReport(mode=self.mode, checks=self.results)

    @property
    def mode(self) -> str:
        return "azure" if azure_mode(self.settings) else "local"

    def failed(self, name: str) -> bool:
        return any(r.name == name and r.status is Status.FAIL for r in self.results)

    def _run_check(self, name: str, check: Check) -> CheckResult:
        try:
            outcome = check(self)
        except Exception as exc:  # a check must never take the report down with it
            credential = credential_failure(exc)
            if credential is not None:
                return CheckResult(
                    name=name,
                    status=Status.FAIL,
                    detail=f"no credential: {first_line(credential)}",
                    fix=credential_fix(_CONNECTIONS.get(name)),
                )
            if isinstance(exc, Failed):
                return CheckResult(name=name, status=Status.FAIL, detail=exc.detail, fix=exc.fix)
            return CheckResult(
                name=name,
                status=Status.FAIL,
                detail=error_text(exc),
                fix="unexpected error: run again with the same settings and report it if it persists",
            )
        status, detail = outcome if isinstance(outcome, tuple) else (Status.PASS, outcome)
        return CheckResult(name=name, status=status, detail=detail)

    def backend(self) -> RunFinder:
        if self.backend_factory is not None:
            return self.backend_factory(self.settings)
        from shared.acr.run_backend import AcrBackend

        return AcrBackend.from_settings(self.settings)

"""``slipway doctor``: does this environment work, and if not, what to fix.

Every check runs against the settings the function app itself would read, so a green doctor on
the deployed settings means the app can reach each dependency with the rights it needs: the
configuration loads; the settings the mode needs are present (no half-set registry, no Key
Vault reference left unresolved); the queue can be peeked; the ledger, state and cache
containers can be read; a probe blob can be written to the ledger and deleted again; ACR runs
can be listed.

The doctor changes nothing that outlives it: it never creates a container, a queue or a
directory, and the only thing it writes is its probe, deleted at once (its name says what it is,
should a crash leave it behind).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from shared.app.local_host import DEFAULT_SCHEDULES
from shared.app.runtime import APP_ROOT, Runtime, acr_configured, service_bus_configured
from shared.platform.ledger import BlobLedger
from shared.platform.state import BlobStateStore
from shared.platform.storage import STORAGE_SETTING, storage_configured

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from shared.acr.run_backend import RunFinder
    from shared.model.config import ConfigProblem, SlipwayConfig
    from shared.platform.oci import RegistryClient

# Which client answers for a registry host (shared.intake.digest_poll.registry_clients by default).
RegistryClients = Callable[[str], "RegistryClient"]

ACR_SETTINGS = ("ACR_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME")
# Timer bindings refer to these as %NAME%: in Azure a missing one keeps the function from loading
# (``slipway serve`` fills in defaults, so locally they are optional).
SCHEDULE_SETTINGS = tuple(DEFAULT_SCHEDULES)
# One of these makes a sender usable; without any, no webhook is accepted.
SENDER_SETTINGS = (
    "GITHUB_WEBHOOK_SECRET",
    "GITLAB_WEBHOOK_TOKEN",
    "AZURE_DEVOPS_WEBHOOK_PASSWORD",
    "BITBUCKET_WEBHOOK_SECRET",
    "GITEA_WEBHOOK_SECRET",
    "ACR_WEBHOOK_TOKEN",
    "EVENTGRID_WEBHOOK_TOKEN",
    "DOCKERHUB_WEBHOOK_TOKEN",
)
# What App Service leaves in a setting whose Key Vault reference it could not resolve.
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
PROBE_PREFIX = "slipway-doctor-probe-"
RUNS_WINDOW = timedelta(hours=24)
# Storage clients for the checks: one attempt, bounded waits. The SDK's default retries back off
# for over a minute on an endpoint that refuses connections; the doctor should say so at once.
_FAIL_FAST: dict[str, Any] = {"retry_total": 0, "connection_timeout": 10, "read_timeout": 30}


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


class _Failed(Exception):
    """A check's failure, with the fix to print."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


def azure_mode(settings: Mapping[str, str]) -> bool:
    """Azure when the app runs on the Functions host or any Azure dependency is configured."""
    return bool(
        settings.get("WEBSITE_SITE_NAME")
        or service_bus_configured(settings)
        or storage_configured(settings)
        or any(settings.get(name) for name in ACR_SETTINGS)
    )


def _error_text(exc: BaseException) -> str:
    """One line, without the SDK's multi-line request dumps."""
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}".rstrip(": ")


def _problem_text(problem: ConfigProblem) -> str:
    where = problem.file if problem.line is None else f"{problem.file}:{problem.line}"
    return f"{where}: {problem.path + ': ' if problem.path else ''}{problem.message}"


def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


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
        self._runtime = Runtime(self.settings, app_root=app_root)  # where the app keeps its state
        self._backend_factory = backend_factory
        self._registry_clients = registry_clients
        self._clock = clock
        self._config: SlipwayConfig | None = None
        self._results: list[CheckResult] = []

    # --- running ---------------------------------------------------------------------------

    def run(self) -> DoctorReport:
        self._results = []
        self._check("config", self._check_config)
        self._check("settings", self._check_settings)
        self._check("secrets", self._check_secrets)
        self._check("queue", self._check_queue)
        self._check("ledger", lambda: self._check_container(BlobLedger, "ledger"))
        self._check("ledger write", self._check_ledger_write)
        self._check("state", lambda: self._check_container(BlobStateStore, "state"))
        self._check("cache", self._check_cache)
        self._check("registry", self._check_registry)
        self._check("tools", self._check_tools)
        return DoctorReport(mode=self.mode, checks=self._results)

    @property
    def mode(self) -> str:
        return "azure" if azure_mode(self.settings) else "local"

    def _check(self, name: str, check: Callable[[], tuple[Status, str] | str]) -> None:
        try:
            outcome = check()
        except _Failed as failed:
            self._results.append(
                CheckResult(name=name, status=Status.FAIL, detail=failed.detail, fix=failed.fix)
            )
            return
        except Exception as exc:  # a check must never take the report down with it
            self._results.append(
                CheckResult(
                    name=name,
                    status=Status.FAIL,
                    detail=_error_text(exc),
                    fix="unexpected error: run again with the same settings and report it if it persists",
                )
            )
            return
        status, detail = outcome if isinstance(outcome, tuple) else (Status.PASS, outcome)
        self._results.append(CheckResult(name=name, status=status, detail=detail))

    # --- configuration and settings --------------------------------------------------------

    def _check_config(self) -> str:
        from shared.app.config_check import check_config_file
        from shared.model.config import ConfigError, config_path

        path = config_path(self.settings, self.app_root)
        if not path.is_file():
            raise _Failed(
                f"{path}: no such file",
                "set SLIPWAY_CONFIG to the configuration file (relative to the app root), or deploy one",
            )
        try:
            # The same check as `config validate`: the models, then a rendered build of each target.
            checked = check_config_file(path)
            self._config = checked.config
        except ConfigError as exc:
            first = "; ".join(_problem_text(p) for p in exc.problems[:3])
            raise _Failed(
                f"{path}: {len(exc.problems)} problem(s): {first}",
                f"fix {path}; `slipway config validate {path}` lists every problem",
            ) from exc
        except OSError as exc:
            raise _Failed(f"{path}: {exc.strerror or exc}", f"make {path} readable") from exc
        count = len(self._config.targets)
        detail = f"{path}: {count} target{'s' if count != 1 else ''}, each renders"
        if checked.warnings:
            detail += f"; warnings: {'; '.join(_problem_text(w) for w in checked.warnings)}"
        return detail

    def _check_settings(self) -> str:
        unresolved = sorted(k for k, v in self.settings.items() if v.strip().startswith(KEY_VAULT_REFERENCE))
        if unresolved:
            raise _Failed(
                f"Key Vault reference(s) not resolved: {', '.join(unresolved)}",
                "create the secret in the vault (`az keyvault secret set`) and grant the app identity "
                "Key Vault Secrets User on the vault",
            )
        acr_set = [name for name in ACR_SETTINGS if self.settings.get(name)]
        if acr_set and len(acr_set) < len(ACR_SETTINGS):
            missing = [name for name in ACR_SETTINGS if name not in acr_set]
            raise _Failed(
                f"registry half-configured: {', '.join(missing)} missing, so dispatch is a dry run",
                f"set {', '.join(missing)} (or unset all three for dry runs)",
            )
        if self.mode == "local":
            return "local mode: local queue, folder ledger, " + (
                "ACR runs" if acr_configured(self.settings) else "dry-run dispatch"
            )
        missing = []
        if not service_bus_configured(self.settings):
            missing.append("ServiceBusConnection__fullyQualifiedNamespace")
        if not storage_configured(self.settings):
            missing.append(f"{STORAGE_SETTING}__accountName")
        if not acr_configured(self.settings):
            missing.extend(ACR_SETTINGS)
        missing.extend(name for name in SCHEDULE_SETTINGS if not self.settings.get(name))
        if not self.settings.get("BUILD_QUEUE"):
            missing.append("BUILD_QUEUE")
        if not any(self.settings.get(name) for name in SENDER_SETTINGS):
            missing.append("a sender secret (GITHUB_WEBHOOK_SECRET, ...)")
        if missing:
            raise _Failed(
                f"missing: {', '.join(missing)}",
                "set them as app settings (the azd template in infra/ sets all but the senders' secrets)",
            )
        return "azure mode: Service Bus, Blob ledger, ACR runs; schedules and a sender secret set"

    def _check_secrets(self) -> tuple[Status, str] | str:
        """The secrets each target's runs need (cache auth, private repositories), as dispatch does."""
        from shared.dispatch.dispatcher import MissingSecret, resolve_secrets

        if self._config is None:
            return Status.SKIP, "configuration not loaded"
        if not acr_configured(self.settings):
            return Status.SKIP, "dry-run dispatch needs no secrets"
        problems = []
        for target in self._config.targets:
            try:
                resolve_secrets(self._config, target, self.settings, required=True)
            except MissingSecret as exc:
                problems.append(f"{target.name}: {exc}")
        if problems:
            raise _Failed("; ".join(problems), "set the settings (Key Vault references in Azure)")
        return f"every target's run secrets are set ({len(self._config.targets)} targets)"

    # --- the queue -------------------------------------------------------------------------

    def _check_queue(self) -> str:
        from shared.platform.queue.port import QueueError

        queue_name = self._runtime.queue_name
        if service_bus_configured(self.settings):
            from shared.platform.queue.servicebus import ServiceBusQueue

            try:
                queue = ServiceBusQueue.from_settings(self.settings, queue_name=queue_name)
                try:
                    peeked = queue.peek(max_count=1)
                finally:
                    queue.close()
            except QueueError as exc:
                raise _Failed(
                    f"Service Bus queue {queue_name!r}: {exc}",
                    "check ServiceBusConnection__fullyQualifiedNamespace and BUILD_QUEUE; grant the identity "
                    "Azure Service Bus Data Receiver (and Data Sender) on the queue",
                ) from exc
            return f"Service Bus queue {queue_name!r} peeked ({len(peeked)} message(s) at the head)"
        path = self._runtime.state_dir / "queue.sqlite3"
        if not path.exists():
            return f"local queue {path} does not exist yet (created on first use)"
        from shared.platform.queue.local import LocalQueue

        try:
            with LocalQueue(path, name=queue_name) as local:
                count = local.count()
        except QueueError as exc:
            raise _Failed(
                f"local queue {path}: {exc}", f"check {path} (or move it away to start afresh)"
            ) from exc
        return f"local queue {path}: {count} message(s) ready"

    # --- blob containers -------------------------------------------------------------------

    @contextmanager
    def _storage_errors(self, what: str, role: str) -> Iterator[None]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            yield
        except ResourceNotFoundError as exc:
            raise _Failed(
                f"{what} does not exist",
                f"create it (the azd template does; the doctor never creates containers), then grant {role}",
            ) from exc
        except AzureError as exc:
            denied = _status_code(exc) in (401, 403)
            raise _Failed(
                f"{what}: {_error_text(exc)}",
                f"grant the identity {role} on it"
                if denied
                else f"check the storage settings; {role} is needed",
            ) from exc

    def _container(self, store: type[BlobLedger | BlobStateStore]) -> ContainerClient:
        """The container the app's own store would use (its setting, or the default name)."""
        try:
            return store.from_settings(self.settings, **_FAIL_FAST).container_client
        except ValueError as exc:
            raise _Failed(str(exc), f"set {STORAGE_SETTING} (or its identity-based form)") from exc

    def _check_container(self, store: type[BlobLedger | BlobStateStore], what: str) -> str:
        if not storage_configured(self.settings):
            folder = self._runtime.state_dir / what
            where = "exists" if folder.is_dir() else "does not exist yet (created on first use)"
            return f"local {what} folder {folder} {where}"
        container = self._container(store)
        name = container.container_name
        with self._storage_errors(f"{what} container {name!r}", "Storage Blob Data Contributor"):
            container.get_container_properties()
            next(iter(container.list_blobs(results_per_page=1).by_page()), None)
        return f"{what} container {name!r} readable"

    def _check_ledger_write(self) -> tuple[Status, str] | str:
        """Write a probe blob where the ledger writes, with the ledger's condition, then delete it."""
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        if not storage_configured(self.settings):
            return self._probe_folder(self._runtime.state_dir / "ledger", probe)
        if any(r.name == "ledger" and r.status is Status.FAIL for r in self._results):
            return Status.SKIP, "the ledger container is not readable"
        container = self._container(BlobLedger)
        name = container.container_name
        blob = container.get_blob_client(probe)
        with self._storage_errors(f"write to ledger container {name!r}", "Storage Blob Data Contributor"):
            blob.upload_blob(b"slipway doctor probe", overwrite=False)
            blob.delete_blob()
        return f"probe blob written to {name!r} and deleted"

    @staticmethod
    def _probe_folder(folder: Path, probe: str) -> str:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            raise _Failed(
                f"{existing or folder} is not a directory", "set SLIPWAY_STATE_DIR to a writable place"
            )
        if existing != folder:
            if not os.access(existing, os.W_OK | os.X_OK):
                raise _Failed(
                    f"{existing} is not writable", f"make {existing} writable or set SLIPWAY_STATE_DIR"
                )
            return f"{folder} does not exist yet; {existing} is writable"
        path = folder / probe
        try:
            path.write_bytes(b"slipway doctor probe")
        except OSError as exc:
            raise _Failed(f"{folder}: {exc.strerror or exc}", f"make {folder} writable") from exc
        path.unlink()
        return f"probe file written to {folder} and deleted"

    def _check_cache(self) -> tuple[Status, str] | str:
        if self._config is None:
            return Status.SKIP, "configuration not loaded"
        cache = self._config.cache
        if cache is None:
            return Status.SKIP, "no cache: section"
        from shared.pruning.cache_gc.store import CONNECTION_SETTING, CacheStoreError, cache_service

        if self.mode == "local" and not (self.settings.get(CONNECTION_SETTING) or "").strip():
            return Status.SKIP, f"local mode: set {CONNECTION_SETTING} (e.g. for Azurite) to check it"
        what = f"cache container {cache.container!r} at {cache.account_url}"
        try:
            service = cache_service(cache, self.settings, **_FAIL_FAST)
            container = service.get_container_client(cache.container)
        except (ValueError, CacheStoreError) as exc:
            raise _Failed(
                f"{what}: {exc}",
                f"use an https account_url (Entra ID), or set {CONNECTION_SETTING} to a connection string",
            ) from exc
        with self._storage_errors(what, "Storage Blob Data Contributor (the cache collector deletes)"):
            next(
                iter(
                    container.list_blobs(name_starts_with=cache.prefix or None, results_per_page=1).by_page()
                ),
                None,
            )
        return f"{what} readable"

    # --- the registry ----------------------------------------------------------------------

    def _backend(self) -> RunFinder:
        if self._backend_factory is not None:
            return self._backend_factory(self.settings)
        from shared.acr.run_backend import AcrBackend

        return AcrBackend.from_settings(self.settings)

    def _check_registry(self) -> tuple[Status, str] | str:
        if not acr_configured(self.settings):
            return Status.SKIP, "ACR settings not set: dispatch is a dry run"
        from shared.acr.run_backend import PermanentBackendError, TransientBackendError

        registry = self.settings["ACR_NAME"]
        now = self._clock()
        try:
            runs = self._backend().list_runs(created_from=now - RUNS_WINDOW, created_to=now)
        except (PermanentBackendError, TransientBackendError) as exc:
            raise _Failed(
                f"registry {registry!r}: runs.list: {exc}",
                f"check ACR_SUBSCRIPTION_ID, ACR_RESOURCE_GROUP, ACR_NAME; grant the identity "
                f"Container Registry Tasks Contributor on {registry}",
            ) from exc
        return f"registry {registry!r}: runs listable ({len(runs)} quick run(s) in the last 24 h)"

    def _check_tools(self) -> tuple[Status, str] | str:
        """Every tool image a real run pulls from the mirror is there (the azd hook imports them)."""
        if self._config is None:
            return Status.SKIP, "the configuration did not load"
        if not acr_configured(self.settings):
            return Status.SKIP, "ACR settings not set: dispatch is a dry run, which pulls nothing"
        from shared.model.tool_images import mirror_prefix, resolve_tools
        from shared.platform.oci import NotFound, RegistryError, parse_reference

        mirrored = [tool for tool in resolve_tools(self._config).values() if tool.import_source is not None]
        if not mirrored:
            return Status.SKIP, "tools.mirror is off or not the registry: runs pull the tool images upstream"
        if self._registry_clients is not None:
            client_for = self._registry_clients(self.settings)
        else:
            from shared.intake.digest_poll import registry_clients

            client_for = registry_clients(self.settings)
        missing: list[str] = []
        failed: list[str] = []
        for tool in mirrored:
            reference = parse_reference(tool.pulled)
            try:
                client_for(reference.registry).resolve_digest(reference)
            except NotFound:
                missing.append(tool.pulled)
            except RegistryError as exc:
                failed.append(f"{tool.pulled}: {exc}")
        mirror = mirror_prefix(self._config)
        if missing:
            raise _Failed(
                f"{len(missing)} of {len(mirrored)} tool image(s) missing in {mirror}: {', '.join(missing)}",
                "run infra/hooks/import-tools.sh (azd provision runs it), or set tools.mirror: null "
                "to pull them upstream",
            )
        if failed:
            raise _Failed(
                f"the tool images in {mirror} cannot be read: {'; '.join(failed[:3])}",
                "grant the identity AcrPull on the registry",
            )
        return f"{len(mirrored)} tool image(s) present in {mirror}"


def report_rows(report: DoctorReport) -> list[dict[str, Any]]:
    """The report as rows for the table and the JSON output."""
    return [check.model_dump(mode="json") for check in report.checks]

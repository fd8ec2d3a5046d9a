"""Where a RunSpec goes: ACR's ``scheduleRun``, or nowhere (the local dry-run default).

The dispatcher only needs to know whether a failure is worth retrying, so every backend error
is either ``TransientBackendError`` (try again later, maybe after ``retry_after`` seconds) or
``PermanentBackendError`` (the same request will never succeed: dead-letter it).

The Azure SDK and azure-identity are imported lazily, inside the methods that use them: the
Functions host imports this module for every cold start, and the dry-run backend and the tests of
everything else should not pay for (or depend on) the management SDK.

``AcrBackend`` turns off the SDK's own retries. ``scheduleRun`` is a POST that creates a run, and
the queue already retries with backoff; retrying inside one invocation would hold the message
lock for the SDK's whole backoff and could start a second run after an ambiguous failure.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from shared.acr.task import RunSpec
from shared.acr.task.spec import SECRET_OBJECT_OPAQUE
from shared.platform.errors import ServiceError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import AzureError

__all__ = [
    "AcrBackend",
    "DryRunBackend",
    "PermanentBackendError",
    "RunBackend",
    "RunCanceller",
    "RunFinder",
    "RunHandle",
    "TransientBackendError",
]

ACR_API_VERSION = "2025-03-01-preview"
DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
REQUEST_ID_VALUE = "slipwayRequestId"
CORRELATION_ID_VALUE = "slipwayCorrelationId"
# Bounds for one HTTP exchange with ARM; the invocation must finish well inside the lock.
CONNECTION_TIMEOUT = 10
READ_TIMEOUT = 60


# ACR run statuses after which nothing changes any more.
TERMINAL_RUN_STATUSES = frozenset({"Succeeded", "Failed", "Canceled", "Error", "Timeout"})


@dataclass(frozen=True)
class RunHandle:
    """A started (or pretended) run, as far as the backend knows it now."""

    run_id: str
    status: str
    backend: str  # "acr" | "dry-run"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_message: str | None = None
    # registry/repository@digest (or :tag) of each image the run pushed, as ACR reports them.
    output_images: tuple[str, ...] = ()
    created_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES


class RunReader(Protocol):
    """What reconciliation needs: a run's current state."""

    name: str

    def get(self, run_id: str) -> RunHandle: ...


class RunBackend(RunReader, Protocol):
    """What the dispatcher needs from a backend (and reconciliation, through ``RunReader``)."""

    def start(self, spec: RunSpec, *, request_id: str, correlation_id: str) -> RunHandle: ...


class RunFinder(Protocol):
    """Backends that can list runs by creation time (crash recovery finds an orphaned run)."""

    def list_runs(self, *, created_from: datetime, created_to: datetime) -> list[RunHandle]: ...


class RunCanceller(Protocol):
    """Backends that can cancel a run (a superseded build still running)."""

    def cancel(self, run_id: str) -> None: ...


class TransientBackendError(ServiceError):
    """Throttling, a server error, a timeout or no connection: the same request may succeed later."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class PermanentBackendError(ServiceError):
    """The service refused the request (4xx other than 408/429): resending it cannot help."""

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class DryRunBackend:
    """The local default: starts nothing, so a laptop without Azure can run the whole pipeline.

    The run id is derived from the request id, so a redelivered message yields the same id.
    """

    name = "dry-run"

    def start(self, spec: RunSpec, *, request_id: str, correlation_id: str) -> RunHandle:
        return RunHandle(run_id=self.run_id_for(request_id), status="DryRun", backend=self.name)

    def get(self, run_id: str) -> RunHandle:
        return RunHandle(run_id=run_id, status="DryRun", backend=self.name)

    @staticmethod
    def run_id_for(request_id: str) -> str:
        return "dryrun-" + hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:16]


def _retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ARM's ``retry-after-ms``/``x-ms-retry-after-ms``, else ``Retry-After``."""
    from shared.platform.http.client import parse_retry_after  # urllib and ssl: not at cold start

    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = lowered.get(name)
        if raw:
            try:
                return max(0.0, float(raw) / 1000.0)
            except ValueError:
                pass
    at = time.time() if now is None else now
    return parse_retry_after(lowered.get("retry-after"), now=lambda: at)


def _is_transient_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _translate(exc: AzureError, action: str) -> TransientBackendError | PermanentBackendError:
    """Map an azure-core exception to the dispatcher's two kinds of failure."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = int(exc.status_code)
        code = exc.error.code if exc.error is not None else None
        message = exc.error.message if exc.error is not None and exc.error.message else exc.reason
        text = (
            f"{action} failed: HTTP {status}"
            + (f" {code}" if code else "")
            + (f": {message}" if message else "")
        )
        if _is_transient_status(status):
            # The pipeline response (an azure.core HttpResponse) has headers; the typed protocol omits them.
            raw_headers = getattr(exc.response, "headers", None)
            headers = {str(k): str(v) for k, v in raw_headers.items()} if raw_headers is not None else None
            return TransientBackendError(text, status_code=status, retry_after=_retry_after(headers))
        return PermanentBackendError(text, status_code=status, code=code)
    if isinstance(exc, ClientAuthenticationError):
        # No HTTP status: the credential could not get a token (IMDS or Entra hiccup).
        return TransientBackendError(f"{action} failed: no token: {exc}")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TransientBackendError(f"{action} failed: {type(exc).__name__}: {exc}")
    # Anything else from the SDK (an unreadable response, ...): the run may or may not exist.
    return TransientBackendError(f"{action} failed: {type(exc).__name__}: {exc}")


def _status_text(status: object) -> str:
    value = getattr(status, "value", status)
    return str(value) if value is not None else "Unknown"


class AcrBackend:
    """Starts quick runs with ``registries.schedule_run`` (API 2025-03-01-preview)."""

    name = "acr"

    def __init__(
        self,
        *,
        subscription_id: str,
        resource_group: str,
        registry_name: str,
        credential: TokenCredential,
        base_url: str = DEFAULT_ARM_ENDPOINT,
        connection_verify: str | bool = True,
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.registry_name = registry_name
        self.base_url = base_url.rstrip("/")
        self._credential = credential
        self._connection_verify = connection_verify
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> AcrBackend:
        """From app settings; the credential is the Function's managed identity (or a developer's)."""
        missing = [
            k for k in ("ACR_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME") if not settings.get(k)
        ]
        if missing:
            raise ValueError(f"ACR backend settings missing: {', '.join(missing)}")
        from shared.platform.identity import app_credential

        credential = app_credential(settings)
        return cls(
            subscription_id=settings["ACR_SUBSCRIPTION_ID"],
            resource_group=settings["ACR_RESOURCE_GROUP"],
            registry_name=settings["ACR_NAME"],
            credential=credential,
            base_url=settings.get("SLIPWAY_ARM_ENDPOINT") or DEFAULT_ARM_ENDPOINT,
        )

    def _registry_client(self) -> Any:
        if self._client is None:
            from azure.mgmt.containerregistry.v2025_03_01_preview import ContainerRegistryManagementClient

            self._client = ContainerRegistryManagementClient(
                self._credential,
                self.subscription_id,
                base_url=self.base_url,
                # The token audience follows the endpoint (sovereign clouds, test servers).
                credential_scopes=[f"{self.base_url}/.default"],
                connection_verify=self._connection_verify,
                connection_timeout=CONNECTION_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                retry_total=0,
            )
        return self._client

    def start(self, spec: RunSpec, *, request_id: str, correlation_id: str) -> RunHandle:
        """Schedule the run. The request and correlation ids travel as non-secret values.

        They are part of the run request for support and audit; the task itself never
        references them. (ACR's Run resource does not echo values back; the build step prints
        both ids into the run log, which is where a later reconciliation can find them.)
        """
        from azure.mgmt.containerregistry.v2025_03_01_preview import models

        ids = {REQUEST_ID_VALUE: request_id, CORRELATION_ID_VALUE: correlation_id}
        values = [
            models.SetValue(name=v.name, value=v.value, is_secret=v.is_secret)
            for v in spec.values
            if v.name not in ids
        ]
        values += [models.SetValue(name=name, value=value, is_secret=False) for name, value in ids.items()]
        run_request = models.EncodedTaskRunRequest(
            encoded_task_content=spec.encoded_task_content,
            values=values,
            timeout=spec.timeout,
            platform=models.PlatformProperties(os=spec.os, architecture=spec.architecture),
            agent_configuration=models.AgentProperties(cpu=spec.cpu),
            agent_pool_name=spec.agent_pool,
            is_archive_enabled=False,
            credentials=_credentials(spec, models),
        )
        from azure.core.exceptions import AzureError

        try:
            run = self._registry_client().registries.schedule_run(
                self.resource_group, self.registry_name, run_request
            )
        except AzureError as exc:
            raise _translate(exc, "scheduleRun") from exc
        if not run.run_id:
            raise TransientBackendError("scheduleRun returned a run without a runId")
        return RunHandle(run_id=str(run.run_id), status=_status_text(run.status), backend=self.name)

    def get(self, run_id: str) -> RunHandle:
        """The run's current status (for reconciliation)."""
        from azure.core.exceptions import AzureError

        try:
            run = self._registry_client().runs.get(self.resource_group, self.registry_name, run_id)
        except AzureError as exc:
            raise _translate(exc, "runs.get") from exc
        return RunHandle(
            run_id=str(run.run_id or run_id),
            status=_status_text(run.status),
            backend=self.name,
            started_at=run.start_time,
            finished_at=run.finish_time,
            error_message=run.run_error_message or None,
            output_images=tuple(_image_text(i) for i in run.output_images or () if i.repository),
        )

    def log_link(self, run_id: str) -> str | None:
        """The run log's read link (``runs.get_log_sas_url``). A SAS URL: a secret while valid."""
        from azure.core.exceptions import AzureError

        try:
            result = self._registry_client().runs.get_log_sas_url(
                self.resource_group, self.registry_name, run_id
            )
        except AzureError as exc:
            raise _translate(exc, "runs.get_log_sas_url") from exc
        return str(result.log_link) if result.log_link else None

    @property
    def tls_verify(self) -> str | bool:
        """What the ARM client verifies TLS with (a CA bundle path in tests), for the log download too."""
        return self._connection_verify

    def list_runs(self, *, created_from: datetime, created_to: datetime) -> list[RunHandle]:
        """Quick runs created in ``[created_from, created_to]`` (``runs.list`` with ``$filter``).

        RunFilter can filter on ``createTime`` and ``runType`` but on nothing a request could
        carry (no values, no tags), so the caller matches the runs to requests itself.
        """
        from azure.core.exceptions import AzureError

        query = (
            f"CreateTime ge {_odata_time(created_from)} and CreateTime le {_odata_time(created_to)}"
            " and RunType eq 'QuickRun'"
        )
        try:
            runs = list(
                self._registry_client().runs.list(
                    self.resource_group, self.registry_name, filter=query, top=100
                )
            )
        except AzureError as exc:
            raise _translate(exc, "runs.list") from exc
        return [
            RunHandle(
                run_id=str(run.run_id),
                status=_status_text(run.status),
                backend=self.name,
                created_at=run.create_time,
                finished_at=run.finish_time,
            )
            for run in runs
            if run.run_id
        ]

    def cancel(self, run_id: str) -> None:
        """Cancel a run (``runs.cancel``); a run that already ended is not an error.

        ``POST .../registries/{registryName}/runs/{runId}/cancel`` (operation ``Runs_Cancel``,
        api-version 2025-03-01-preview; Learn, ContainerRegistryRunResource.Cancel), answered
        200 with no body: azure-mgmt-containerregistry's v2025_03_01_preview
        ``_runs_operations.build_cancel_request`` and ``RunsOperations.cancel`` (synchronous).
        """
        from azure.core.exceptions import AzureError

        try:
            self._registry_client().runs.cancel(self.resource_group, self.registry_name, run_id)
        except AzureError as exc:
            raise _translate(exc, "runs.cancel") from exc


def _credentials(spec: RunSpec, models: Any) -> Any:
    """``credentials`` of the run request, or None (ACR's default login to its own registry).

    A fork pull request's run (``shared.acr.task.pr_isolation``) sends ``sourceRegistry.loginMode:
    None`` and its ACR token as ``customRegistries[<login server>]`` with Opaque SecretObjects (the
    shape of the REST spec's example ``RegistriesScheduleRun_FileTask_WithCustomCredentials``,
    api 2025-03-01-preview). The password travels only in this body over TLS, never in the YAML.
    """
    if spec.source_login_mode is None and not spec.registry_logins:
        return None
    source = (
        models.SourceRegistryCredentials(login_mode=spec.source_login_mode)
        if spec.source_login_mode is not None
        else None
    )
    custom = {
        login.login_server: models.CustomRegistryCredentials(
            user_name=models.SecretObject(value=login.user_name, type=SECRET_OBJECT_OPAQUE),
            password=models.SecretObject(value=login.password, type=SECRET_OBJECT_OPAQUE),
        )
        for login in spec.registry_logins
    }
    return models.Credentials(source_registry=source, custom_registries=custom or None)


def _odata_time(value: datetime) -> str:
    """An OData DateTimeOffset literal in UTC, e.g. ``2026-11-23T12:00:00Z``."""
    from datetime import UTC

    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _image_text(image: Any) -> str:
    """``registry/repository@digest`` (or ``:tag`` when ACR reports no digest)."""
    name = f"{image.registry}/{image.repository}" if image.registry else str(image.repository)
    return f"{name}@{image.digest}" if image.digest else f"{name}:{image.tag}"

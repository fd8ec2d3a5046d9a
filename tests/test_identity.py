"""Which identity each credential site resolves to under the settings the azd template gives the app.

The template (infra/app/function.bicep) gives the app a user-assigned identity and no system-assigned
one, and names it in ``AZURE_CLIENT_ID`` and in the host connections' ``__clientId``. Every site
that builds a credential is built here from the template's own app settings (read from the Bicep
file, parameters filled with test values) in a simulated App Service sandbox: ``IDENTITY_ENDPOINT``
and ``IDENTITY_HEADER`` point at a loopback stand-in for the platform's identity endpoint, which is
how ``ManagedIdentityCredential`` finds it (azure-identity ``_credentials/managed_identity.py``)
and which MSAL calls with ``client_id`` as a query parameter for a user-assigned identity (msal
``managed_identity.py`` ``_obtain_token_on_app_service``, api-version 2019-08-01, header
``X-IDENTITY-HEADER``, answer ``access_token``/``expires_on``; it cites Learn "Managed identities
for App Service", REST endpoint reference).
The stand-in answers with a token naming the identity it was asked for, so each test asserts the
identity the real azure-identity credential asks the platform for. No network beyond loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.platform import identity
from tests.support import bicep
from tests.support.loopback_server import LoopbackServer, bind_loopback, port_of, serving

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

ROOT = Path(__file__).resolve().parents[1]
FUNCTION_BICEP = ROOT / "infra" / "app" / "function.bicep"

UAMI_CLIENT_ID = "6f1e0c2a-8b3d-4e5f-9a7b-0c1d2e3f4a5b"  # the template's identityClientId parameter
SYSTEM_ASSIGNED = "system-assigned"  # what the stand-in calls a request without a client id
STORAGE_SCOPE = "https://storage.azure.com/.default"
# Test values for the template's other parameters (only their shape matters to the code).
PARAMETERS = {
    "identityClientId": UAMI_CLIENT_ID,
    "hostStorageAccountName": "slipwayhost",
    "serviceBusNamespace": "slipway-test.servicebus.windows.net",
    "buildQueueName": "build-requests",
    "registrySubscriptionId": "00000000-0000-0000-0000-000000000001",
    "registryResourceGroup": "rg-slipway",
    "registryName": "slipwayacr",
    "ledgerContainerName": "slipway-ledger",
    "stateContainerName": "slipway-state",
}
# Variables azure-identity reads that would change which credential answers (a developer's shell
# may set them): the sandbox has none of them.
_FOREIGN_ENVIRONMENT = (
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


def template_settings() -> dict[str, str]:
    """The app settings function.bicep sets whose values are literals or plain parameters."""
    root = bicep.parse(FUNCTION_BICEP)
    settings: dict[str, str] = {}
    for name, node in bicep.properties(
        bicep.body(bicep.declaration(root, "variable", "appSettings"))
    ).items():
        if node.type == "identifier":
            settings[name] = PARAMETERS.get(bicep.text(node), f"test-{bicep.text(node)}")
            continue
        try:
            settings[name] = str(bicep.literal(node))
        except ValueError:
            continue  # an interpolation or an expression: no setting the identity rule reads
    return settings


def test_the_template_gives_the_app_only_a_user_assigned_identity() -> None:
    """The premise: a credential asking for the system-assigned identity gets nothing in Azure."""
    site = bicep.declaration(bicep.parse(FUNCTION_BICEP), "resource", "site")
    kind = bicep.properties(bicep.properties(bicep.body(site))["identity"])["type"]
    assert bicep.literal(kind) == "UserAssigned"
    settings = template_settings()
    assert settings["AZURE_CLIENT_ID"] == UAMI_CLIENT_ID
    assert settings["AzureWebJobsStorage__clientId"] == UAMI_CLIENT_ID
    assert settings["ServiceBusConnection__clientId"] == UAMI_CLIENT_ID


# --- the platform's identity endpoint, on loopback -------------------------------------------


@dataclass
class IdentityEndpoint:
    """Answers the App Service managed identity protocol; records who was asked for."""

    header: str = "slipway-test-identity-header"
    asked: list[str] = field(default_factory=list)

    def answer(self, path: str, header: str | None) -> tuple[int, dict[str, Any]]:
        if header != self.header:
            return 401, {"statusCode": 401, "message": "X-IDENTITY-HEADER missing or wrong"}
        query = parse_qs(urlsplit(path).query)
        who = query.get("client_id", [SYSTEM_ASSIGNED])[0]
        self.asked.append(who)
        return 200, {
            "access_token": f"token-for:{who}",
            "expires_on": str(int(time.time()) + 3600),
            "resource": query.get("resource", [""])[0],
            "token_type": "Bearer",
        }


@pytest.fixture
def app_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityEndpoint]:
    """The process environment of the app in Azure: its app settings, and the identity endpoint."""
    endpoint = IdentityEndpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = endpoint.answer(self.path, self.headers.get("X-IDENTITY-HEADER"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = bind_loopback(LoopbackServer, Handler)
    with serving(server, name="identity-endpoint"):
        for name in _FOREIGN_ENVIRONMENT:
            monkeypatch.delenv(name, raising=False)
        for name, value in template_settings().items():  # App Service exposes app settings as variables
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{port_of(server)}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", endpoint.header)
        identity._shared_credential.cache_clear()  # credentials read the sandbox when they are built
        try:
            yield endpoint
        finally:
            identity._shared_credential.cache_clear()


def resolved(credential: TokenCredential) -> str:
    """The identity the credential obtains a token for, as the platform saw the request."""
    token = credential.get_token(STORAGE_SCOPE).token
    assert token.startswith("token-for:"), token
    return token.removeprefix("token-for:")


# --- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "connection", "expected"),
    [
        ({}, None, None),
        ({"AZURE_CLIENT_ID": " "}, None, None),  # blank means unset
        ({"AZURE_CLIENT_ID": "app"}, None, "app"),
        ({"AZURE_CLIENT_ID": "app"}, "Conn", "app"),
        ({"AZURE_CLIENT_ID": "app", "Conn__clientId": "own"}, "Conn", "own"),
        ({"AZURE_CLIENT_ID": "app", "Conn__clientId": ""}, "Conn", "app"),
        ({"Conn__clientId": "own"}, "Conn", "own"),
        ({"Conn__clientId": "own"}, "Other", None),
    ],
)
def test_client_id_rule(settings: dict[str, str], connection: str | None, expected: str | None) -> None:
    assert identity.client_id(settings, connection) == expected


def test_managed_identity_only_follows_the_connections_credential_setting() -> None:
    assert identity.managed_identity_only({"Conn__credential": "ManagedIdentity"}, "Conn")
    assert not identity.managed_identity_only({"Conn__credential": "managedidentity"}, None)
    assert not identity.managed_identity_only({}, "Conn")


def test_explicit_none_means_system_assigned_despite_azure_client_id(
    app_service: IdentityEndpoint,
) -> None:
    """Why the rule is applied in code: azure-identity's own AZURE_CLIENT_ID fallback is skipped when
    ``managed_identity_client_id=None`` is passed (today's bug in the cache collector)."""
    from azure.identity import DefaultAzureCredential

    assert resolved(DefaultAzureCredential()) == UAMI_CLIENT_ID  # the variable, read by the SDK
    assert resolved(DefaultAzureCredential(managed_identity_client_id=None)) == SYSTEM_ASSIGNED


# --- every credential site, under the template's settings -------------------------------------


def test_app_credential(app_service: IdentityEndpoint) -> None:
    settings = template_settings()
    credential = identity.app_credential(settings)
    assert credential is identity.app_credential(dict(settings))  # one per client id: shared tokens
    assert resolved(credential) == UAMI_CLIENT_ID
    assert app_service.asked == [UAMI_CLIENT_ID]


def test_ledger_and_state_storage(app_service: IdentityEndpoint) -> None:
    from shared.platform.ledger import BlobLedger
    from shared.platform.state import BlobStateStore
    from shared.platform.storage import storage_credential

    settings = template_settings()
    assert resolved(storage_credential(settings)) == UAMI_CLIENT_ID
    assert resolved(BlobLedger.from_settings(settings).container_client.credential) == UAMI_CLIENT_ID
    assert resolved(BlobStateStore.from_settings(settings).container_client.credential) == UAMI_CLIENT_ID


def test_storage_without_its_own_client_id_uses_azure_client_id(app_service: IdentityEndpoint) -> None:
    from shared.platform.storage import storage_credential

    settings = {k: v for k, v in template_settings().items() if k != "AzureWebJobsStorage__clientId"}
    assert resolved(storage_credential(settings)) == UAMI_CLIENT_ID


def test_cache_collector(app_service: IdentityEndpoint) -> None:
    """The template sets no SLIPWAY_CACHE_CONNECTION_STRING: the collector must still use the app's
    identity, not ask for a system-assigned one the app does not have."""
    from shared.model.config import CacheStorage
    from shared.pruning.cache_gc.prune import collector_for
    from shared.pruning.cache_gc.store import AzureCacheStore, cache_service

    cache = CacheStorage(account_url="https://slipwaycache.blob.core.windows.net", container="buildkit-cache")
    settings = template_settings()
    assert resolved(cache_service(cache, settings).credential) == UAMI_CLIENT_ID
    # The timer, `slipway prune cache` and the doctor all reach the storage through these.
    store = collector_for(cache, settings).store
    assert isinstance(store, AzureCacheStore)
    assert resolved(store._client.credential) == UAMI_CLIENT_ID


def test_cache_connection_with_its_own_identity(app_service: IdentityEndpoint) -> None:
    from shared.model.config import CacheStorage
    from shared.pruning.cache_gc.store import cache_service

    cache = CacheStorage(account_url="https://slipwaycache.blob.core.windows.net")
    settings = template_settings() | {
        "SLIPWAY_CACHE_CONNECTION_STRING__clientId": "cache-identity",
        "SLIPWAY_CACHE_CONNECTION_STRING__credential": "managedidentity",
    }
    credential = cache_service(cache, settings).credential
    from azure.identity import ManagedIdentityCredential

    assert isinstance(credential, ManagedIdentityCredential)
    assert resolved(credential) == "cache-identity"


class RecordingServiceBusClient:
    def __init__(self, namespace: str, credential: TokenCredential, **kwargs: Any) -> None:
        self.namespace, self.credential = namespace, credential


def test_service_bus(app_service: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.servicebus
    from azure.identity import ManagedIdentityCredential

    from shared.platform.queue.servicebus import ServiceBusConnection

    monkeypatch.setattr(azure.servicebus, "ServiceBusClient", RecordingServiceBusClient)
    client = ServiceBusConnection.from_settings(template_settings()).create_client()
    assert isinstance(client, RecordingServiceBusClient)
    assert client.namespace == "slipway-test.servicebus.windows.net"
    # ``ServiceBusConnection__credential=managedidentity``: a managed identity only, as the host.
    assert isinstance(client.credential, ManagedIdentityCredential)
    assert resolved(client.credential) == UAMI_CLIENT_ID


def test_registry_runs_backend(app_service: IdentityEndpoint) -> None:
    from shared.acr.run_backend import AcrBackend

    backend = AcrBackend.from_settings(template_settings())
    assert resolved(backend._credential) == UAMI_CLIENT_ID


def _capture(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[TokenCredential]:
    """Replace ``owner.name`` (a constructor given a credential) by one that records the credential."""
    seen: list[TokenCredential] = []

    def record(*args: Any, **kwargs: Any) -> None:
        seen.extend(a for a in (*args, *kwargs.values()) if hasattr(a, "get_token"))

    monkeypatch.setattr(owner, name, record)
    return seen


def test_image_retention_on_acr(app_service: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.pruning.retention.acr_backend import AcrRetentionBackend
    from shared.pruning.retention.prune import backend_from_settings

    seen = _capture(monkeypatch, AcrRetentionBackend, "connect")
    backend_from_settings(template_settings(), "slipwayacr.azurecr.io")
    [credential] = seen
    assert resolved(credential) == UAMI_CLIENT_ID


def test_quarantine(app_service: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.acr.quarantine import QuarantineClient, quarantine_client_from_settings

    seen = _capture(monkeypatch, QuarantineClient, "for_acr")
    quarantine_client_from_settings(template_settings(), "slipwayacr.azurecr.io")
    [credential] = seen
    assert resolved(credential) == UAMI_CLIENT_ID


def test_digest_polling(app_service: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.intake.digest_poll
    from shared.intake.digest_poll import registry_clients

    seen = _capture(monkeypatch, shared.intake.digest_poll, "AcrTokenProvider")
    monkeypatch.setattr(shared.intake.digest_poll, "RegistryClient", lambda *args, **kwargs: None)
    registry_clients(template_settings())("slipwayacr.azurecr.io")
    [credential] = seen
    assert resolved(credential) == UAMI_CLIENT_ID


# --- without Azure --------------------------------------------------------------------------------


def test_app_credential_is_shared_per_client_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    class Recording:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Recording)
    identity._shared_credential.cache_clear()
    try:
        system = identity.app_credential({})
        assert system is identity.app_credential({"AZURE_CLIENT_ID": ""})  # empty means unset
        user = identity.app_credential({"AZURE_CLIENT_ID": "1111-uami"})
        assert user is identity.app_credential({"AZURE_CLIENT_ID": "1111-uami", "OTHER": "x"})
        assert isinstance(user, Recording) and isinstance(system, Recording)
        assert user.kwargs == {"managed_identity_client_id": "1111-uami"}
        # Passed even when unset: the settings decide, not the process environment.
        assert system.kwargs == {"managed_identity_client_id": None}
    finally:
        identity._shared_credential.cache_clear()


def test_azure_identity_is_imported_only_when_a_credential_is_built() -> None:
    """Resolving the identity (at every cold start, for the queue) must not load azure-identity."""
    script = (
        "import sys\n"
        "from shared.platform import identity, ledger, storage\n"
        "from shared.pruning.cache_gc import store\n"
        "from shared.platform.queue.servicebus import ServiceBusConnection\n"
        "settings = {'AZURE_CLIENT_ID': 'x', 'ServiceBusConnection__fullyQualifiedNamespace': 'n'}\n"
        "ServiceBusConnection.from_settings(settings)\n"
        "identity.client_id(settings, 'ServiceBusConnection')\n"
        "before = 'azure.identity' in sys.modules\n"
        "identity.credential(settings)\n"
        "print(before, 'azure.identity' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == ["False", "True"]

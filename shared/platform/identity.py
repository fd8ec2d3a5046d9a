"""Which Entra ID identity the app's own Azure calls use: one rule, every credential built here.

The rule (``client_id``): a connection's ``<connection>__clientId`` when set, otherwise
``AZURE_CLIENT_ID``, otherwise none (the system-assigned identity in Azure, a developer's
``az login`` locally). The azd template gives the app only a user-assigned identity and names it
in ``AZURE_CLIENT_ID`` and in each host connection's ``__clientId`` (infra/app/function.bicep), so
every credential resolves to that identity, including those of connections the template does not
spell out (the cache's ``SLIPWAY_CACHE_CONNECTION_STRING``).

Why the rule must be applied here rather than left to azure-identity: ``DefaultAzureCredential``
falls back to the ``AZURE_CLIENT_ID`` environment variable only when ``managed_identity_client_id``
is *not passed*; passing ``None`` forces the system-assigned identity (azure-identity,
Azure/azure-sdk-for-python sdk/identity/azure-identity/azure/identity/_credentials/default.py:
``kwargs.pop("managed_identity_client_id", os.environ.get(AZURE_CLIENT_ID))`` and its docstring,
"Explicitly passing None overrides the AZURE_CLIENT_ID environment variable"). And the settings
this app reads are a mapping, not always ``os.environ``.

``<connection>__credential=managedidentity`` means a managed identity only, as the Functions host
does it: Microsoft.Extensions.Azure builds ``ManagedIdentityCredential(clientId)`` for it
(Azure/azure-sdk-for-net sdk/extensions/Microsoft.Extensions.Azure/src/Internal/ClientFactory.cs,
``CreateCredential``; Learn: "the system-assigned identity is used by default, although a
user-assigned identity can be specified with the credential and clientID properties",
https://learn.microsoft.com/training/modules/develop-azure-functions/4-connect-azure-services).
One deliberate difference: with ``managedidentity`` and no ``__clientId`` the host would use the
system-assigned identity; here ``AZURE_CLIENT_ID`` still applies, since it names the app's identity.

azure.identity is imported only when a credential is built (it is heavy for a cold start).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

from shared.platform.app_settings import setting

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

CLIENT_ID_SETTING = "AZURE_CLIENT_ID"
MANAGED_IDENTITY = "managedidentity"  # the host's ``<connection>__credential`` value (see above)


def client_id(settings: Mapping[str, str], connection: str | None = None) -> str | None:
    """The user-assigned identity to use: ``<connection>__clientId``, else ``AZURE_CLIENT_ID``."""
    own = setting(settings, f"{connection}__clientId") if connection else None
    return own or setting(settings, CLIENT_ID_SETTING)


def managed_identity_only(settings: Mapping[str, str], connection: str | None) -> bool:
    """``<connection>__credential=managedidentity``: no developer credentials in the chain."""
    if connection is None:
        return False
    return (setting(settings, f"{connection}__credential") or "").lower() == MANAGED_IDENTITY


def credential(settings: Mapping[str, str], connection: str | None = None) -> TokenCredential:
    """A new credential for ``connection`` (or the app itself), by the rule above."""
    return build_credential(
        client_id(settings, connection), managed_identity_only=managed_identity_only(settings, connection)
    )


def build_credential(client: str | None, *, managed_identity_only: bool = False) -> TokenCredential:
    """The credential for a resolved client id; callers resolve it with ``client_id``."""
    if managed_identity_only:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client)
    from azure.identity import DefaultAzureCredential

    # Always passed, even as None: the settings decide, not whatever the process environment holds.
    return DefaultAzureCredential(managed_identity_client_id=client)


def app_credential(settings: Mapping[str, str]) -> TokenCredential:
    """The app's identity for ARM, the registry token exchanges and quarantine: one per process
    and client id, so that they share its token cache instead of each fetching their own."""
    return _shared_credential(client_id(settings))


@lru_cache(maxsize=4)
def _shared_credential(client: str | None) -> TokenCredential:
    return build_credential(client)

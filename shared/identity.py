"""The function app's own Entra ID identity, for every Azure call that is not a storage binding.

One ``DefaultAzureCredential`` per process and client id: it caches its tokens, so the ARM client,
the registry token exchanges and the quarantine client share them instead of each fetching its
own. ``AZURE_CLIENT_ID`` selects a user-assigned managed identity; without it, the system-assigned
one in Azure, or a developer's ``az login`` locally. Storage keeps its own
``<prefix>__clientId`` settings (``shared.ledger.storage_credential``), as the Functions host does.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

CLIENT_ID_SETTING = "AZURE_CLIENT_ID"


def app_credential(settings: Mapping[str, str]) -> TokenCredential:
    """The app's identity (imported lazily: azure-identity is heavy for a cold start)."""
    return _credential(settings.get(CLIENT_ID_SETTING) or None)


@lru_cache(maxsize=4)
def _credential(client_id: str | None) -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id)

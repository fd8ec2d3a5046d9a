"""Storage connection settings to Blob clients: one reading, shared by the ledger, the state store
and the cache collector.

A connection is named by a setting prefix, as the Functions host names its own
(``AzureWebJobsStorage``): ``<prefix>`` holds a connection string (``UseDevelopmentStorage=true``
means Azurite on its default port), or ``<prefix>__blobServiceUri`` (``__serviceUri``) or
``<prefix>__accountName`` select identity-based access, with the identity chosen by
``shared.platform.identity``'s one rule. The Azure SDKs are imported inside functions only: the
Functions worker imports the stores on every cold start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.platform.app_settings import setting

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobServiceClient, ContainerClient

STORAGE_SETTING = "AzureWebJobsStorage"
# The endpoint and key that ``UseDevelopmentStorage=true`` stands for (Azurite's public defaults).
DEVELOPMENT_STORAGE_BLOB_ENDPOINT = "http://127.0.0.1:10000/devstoreaccount1"
DEVELOPMENT_STORAGE_ACCOUNT = "devstoreaccount1"
DEVELOPMENT_STORAGE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def storage_configured(settings: Mapping[str, str], prefix: str = STORAGE_SETTING) -> bool:
    """True when the Functions host storage is set, as a connection string or identity-based."""
    return any(
        setting(settings, name)
        for name in (prefix, f"{prefix}__blobServiceUri", f"{prefix}__serviceUri", f"{prefix}__accountName")
    )


def _parse_connection_string(value: str) -> dict[str, str]:
    """``Key=Value;...`` with case-insensitive keys (values may contain ``=``, as keys do)."""
    parts: dict[str, str] = {}
    for item in value.split(";"):
        if item.strip():
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError("the storage connection string is malformed (expected Key=Value;...)")
            parts[key.strip().lower()] = val.strip()
    return parts


def storage_credential(settings: Mapping[str, str], prefix: str = STORAGE_SETTING) -> TokenCredential:
    """The identity for the ``<prefix>__*`` storage connection, by ``shared.platform.identity``'s one rule:
    ``<prefix>__clientId``, else ``AZURE_CLIENT_ID``; ``__credential=managedidentity`` as the host."""
    from shared.platform.identity import credential

    return credential(settings, prefix)


def is_development_storage(account_url: str) -> bool:
    """Whether ``account_url`` is Azurite's well-known development account."""
    return account_url.rstrip("/") == DEVELOPMENT_STORAGE_BLOB_ENDPOINT


def blob_service_at(
    account_url: str, settings: Mapping[str, str], prefix: str, **options: Any
) -> BlobServiceClient:
    """A client for ``account_url`` with the ``<prefix>`` connection's identity; Azurite's
    development account (``is_development_storage``) with its public key instead, as
    ``UseDevelopmentStorage=true`` does (no token goes over plain http)."""
    from azure.storage.blob import BlobServiceClient

    if is_development_storage(account_url):
        key = {"account_name": DEVELOPMENT_STORAGE_ACCOUNT, "account_key": DEVELOPMENT_STORAGE_KEY}
        return BlobServiceClient(account_url, credential=key, **options)
    return BlobServiceClient(account_url, credential=storage_credential(settings, prefix), **options)


def blob_service_from_settings(
    settings: Mapping[str, str], prefix: str = STORAGE_SETTING, **options: Any
) -> BlobServiceClient:
    """A BlobServiceClient for the ``<prefix>`` connection (by default the host's storage).

    Accepts what the host accepts: a connection string (``UseDevelopmentStorage=true`` means
    Azurite on its default port), or identity-based ``__blobServiceUri`` (``__serviceUri``) or
    ``__accountName`` with a token credential. ``options`` go to the client (``slipway doctor``
    asks for no retries: the SDK's default backoff waits over a minute on a dead endpoint).
    """
    from azure.storage.blob import BlobServiceClient

    connection = setting(settings, prefix)
    if connection:
        parts = _parse_connection_string(connection)
        if parts.get("usedevelopmentstorage", "").lower() == "true":
            # Parsed here rather than by the SDK, which only accepts the exact lowercase "true".
            return BlobServiceClient(
                DEVELOPMENT_STORAGE_BLOB_ENDPOINT,
                credential={
                    "account_name": DEVELOPMENT_STORAGE_ACCOUNT,
                    "account_key": DEVELOPMENT_STORAGE_KEY,
                },
                **options,
            )
        return BlobServiceClient.from_connection_string(connection, **options)
    service_uri = setting(settings, f"{prefix}__blobServiceUri") or setting(settings, f"{prefix}__serviceUri")
    account = setting(settings, f"{prefix}__accountName")
    if not service_uri and account:
        service_uri = f"https://{account}.blob.core.windows.net"
    if not service_uri:
        raise ValueError(
            f"no blob storage configured: set {prefix} (connection string) or "
            f"{prefix}__blobServiceUri / {prefix}__accountName (managed identity)"
        )
    return BlobServiceClient(
        service_uri.rstrip("/"), credential=storage_credential(settings, prefix), **options
    )


def container_from_settings(
    settings: Mapping[str, str], container_setting: str, default: str, **options: Any
) -> ContainerClient:
    """Container ``<container_setting>`` (``default`` when unset) in the host storage."""
    name = setting(settings, container_setting) or default
    return blob_service_from_settings(settings, **options).get_container_client(name)

"""Lift ACR's quarantine from an image a successful run pushed (registry quarantine policy, preview).

With the policy on, every pushed manifest is quarantined: pulls answer "manifest not found" by tag
and "operation is disallowed" by digest until someone with ``AcrQuarantineWriter`` marks it.
Slipway marks each digest a successful run pushed (the run's gates, when configured, passed):

``PATCH /acr/v1/{repository}/_manifests/{digest}`` with
``{"quarantineState": "Passed", "quarantineDetails": "<JSON text>"}``, authenticated through ACR's
token exchange with the app's Entra ID identity (scope ``repository:<repo>:pull,push``).

Idempotent: the manifest's attributes are read first, and a digest already ``Passed`` is left
alone, so reconciling the same run twice patches once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.logs import log_event
from shared.oci import AcrTokenProvider, RegistryClient, RegistryError, check_repository, is_digest

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

logger = logging.getLogger("slipway.quarantine")

PASSED = "Passed"
FAILED = "Failed"


class QuarantineClient(RegistryClient):
    """ACR's quarantine attributes of manifests, over the data-plane API (``/acr/v1``)."""

    @classmethod
    def for_acr(
        cls, login_server: str, credential: TokenCredential, *, verify: bool | str = True
    ) -> QuarantineClient:
        """A client that authenticates with ``credential`` through ACR's token exchange."""
        provider = AcrTokenProvider(credential, login_server, verify=verify)
        return cls(login_server, token_provider=provider, verify=verify)

    def quarantine_state(self, repository: str, digest: str) -> str | None:
        """The manifest's ``quarantineState`` (None when the registry reports none)."""
        response = self._call(
            "GET",
            self._attributes_url(repository, digest),
            scope=f"repository:{repository}:pull",
            expected=(200,),
            headers={"Accept": "application/json"},
        )
        try:
            data = json.loads(response.body)
        except ValueError:
            raise RegistryError(f"{repository}@{digest}: the manifest attributes are not JSON") from None
        manifest = data.get("manifest") if isinstance(data, dict) else None
        state = manifest.get("quarantineState") if isinstance(manifest, dict) else None
        return state if isinstance(state, str) else None

    def set_quarantine(self, repository: str, digest: str, state: str, details: Mapping[str, Any]) -> bool:
        """Set the state unless it is already set; True when a PATCH was sent.

        ``quarantineDetails`` is a string holding JSON (the API's shape), not a nested object.
        """
        if state not in (PASSED, FAILED):
            raise ValueError(f"quarantine state must be {PASSED} or {FAILED}, not {state!r}")
        if self.quarantine_state(repository, digest) == state:
            return False
        body = json.dumps(
            {"quarantineState": state, "quarantineDetails": json.dumps(dict(details), sort_keys=True)}
        ).encode()
        self._call(
            "PATCH",
            self._attributes_url(repository, digest),
            scope=f"repository:{repository}:pull,push",
            expected=(200, 204),
            headers={"Content-Type": "application/json"},
            body=body,
        )
        log_event(logger, "quarantine_set", repository=repository, digest=digest, state=state)
        return True

    def _attributes_url(self, repository: str, digest: str) -> str:
        check_repository(repository)
        if not is_digest(digest):
            raise ValueError(f"quarantine applies to a digest, not {digest!r}")
        return f"{self.base_url}/acr/v1/{repository}/_manifests/{digest}"


def quarantine_client_from_settings(settings: Mapping[str, str], registry: str) -> QuarantineClient:
    """With the Function's managed identity (``AZURE_CLIENT_ID`` picks a user-assigned one)."""
    from shared.identity import app_credential

    return QuarantineClient.for_acr(registry, app_credential(settings))


__all__ = ["FAILED", "PASSED", "QuarantineClient", "quarantine_client_from_settings"]

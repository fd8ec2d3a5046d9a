"""ACR's quarantine (registry quarantine policy, preview): release what a run pushed, or mark it failed.

With the policy on, every pushed manifest is quarantined: a pull by tag answers "manifest not
found" and a pull by digest "The operation is disallowed" until it is marked ``Passed``; only
identities with ``AcrQuarantineReader`` or ``AcrQuarantineWriter`` may pull it before that
(Azure/acr docs/preview/quarantine/readme.md). A multi-platform push is several manifests: the
index, one image manifest per platform and BuildKit's attestation manifests, each quarantined on
its own. So Slipway marks all of them (``release_set``):

``PATCH /acr/v1/{repository}/_manifests/{digest}`` with
``{"quarantineState": "Passed" | "Failed", "quarantineDetails": "<JSON text>"}``, authenticated
through ACR's token exchange with the app's Entra ID identity (scope ``repository:<repo>:pull,push``).
``quarantineDetails`` follows the schema Azure/acr publishes (``QuarantineDetails``). The SDKs
do not carry these keys: ``azure-containerregistry`` 1.2.0's generated models have no quarantine
field, and the .NET SDK keeps ``QuarantineState``/``QuarantineDetails`` internal and read-only
(Azure/azure-sdk-for-net, Azure.Containers.ContainerRegistry/src/Models/ArtifactManifestProperties.cs),
so the call is made here, on ``RegistryClient``'s authenticated transport.

Idempotent: the state is read first and a digest already in the wanted state is not patched. A
``Failed`` never replaces ``Passed``: a reproducible build can push a digest an earlier run
released, and a later failure must not pull it from under the images that run deployed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field

from shared.platform.logs import log_event
from shared.platform.oci import (
    MEDIA_TYPE_OCI_INDEX,
    AcrTokenProvider,
    Descriptor,
    Manifest,
    NotFound,
    RegistryClient,
    RegistryError,
    check_repository,
    compute_digest,
    is_digest,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

logger = logging.getLogger("slipway.quarantine")

# The two states a scanner may set (readme above, "Remove the Quarantine Flag": "[Passed|Failed]").
PASSED = "Passed"
FAILED = "Failed"

# Built-in roles, https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/containers
# (MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/containers.md):
# AcrQuarantineReader: "Pull quarantined images from a container registry" (quarantine/read and the
# data action quarantinedArtifacts/read); AcrQuarantineWriter adds quarantine/write (set the state).
QUARANTINE_READER_ROLE_ID = "cdda3590-29a3-44f6-95f2-9f980659eb04"
QUARANTINE_WRITER_ROLE_ID = "c8d4ff99-41c3-41a8-9f60-21dfdad59608"

# quarantineDetails: https://github.com/Azure/acr/blob/main/docs/preview/quarantine/quarantine-details/schema.json
# (commit 81b818eba36f77132a40ff3027897d2a830792f9): an object without additional properties,
# keys scanner/state/link (strings) and result (version and summary required, summary at most 5
# {severity, count} items, description at most 1024 characters). The only version it shows is
# its example's "0.0.1".
DETAILS_SUMMARY_VERSION = "0.0.1"
MAX_SUMMARY_ITEMS = 5
MAX_DESCRIPTION = 1024
Severity = Literal["Critical", "High", "Medium", "Low", "None"]
# Trivy's severity names → the schema's enum; Trivy's UNKNOWN has no counterpart and is left out.
_SEVERITIES: dict[str, Severity] = {"CRITICAL": "Critical", "HIGH": "High", "MEDIUM": "Medium", "LOW": "Low"}


class SeverityCount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: Severity
    count: int = Field(ge=0)


class ScanSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = DETAILS_SUMMARY_VERSION
    summary: list[SeverityCount] = Field(default_factory=list, max_length=MAX_SUMMARY_ITEMS)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)


class QuarantineDetails(BaseModel):
    """The ``quarantineDetails`` object; ``to_json`` leaves unset keys out (the schema has no nulls)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scanner: str | None = None
    state: str | None = None
    result: ScanSummary | None = None
    link: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


def details_for(
    *,
    state: str,
    description: str,
    scanner: str | None = None,
    findings: Mapping[str, Mapping[str, int]] | None = None,
) -> QuarantineDetails:
    """Details from a run's outcome: ``findings`` (platform → Trivy severity → count) are summed."""
    totals: dict[Severity, int] = {}
    for counts in (findings or {}).values():
        for name, count in counts.items():
            severity = _SEVERITIES.get(name.upper())
            if severity is not None and count > 0:
                totals[severity] = totals.get(severity, 0) + count
    summary = [SeverityCount(severity=s, count=totals[s]) for s in _SEVERITIES.values() if s in totals]
    if len(description) > MAX_DESCRIPTION:
        description = description[: MAX_DESCRIPTION - 1] + "…"
    return QuarantineDetails(
        scanner=scanner or None,
        state=state,
        result=ScanSummary(summary=summary, description=description or None),
    )


class QuarantinePatch(BaseModel):
    """The PATCH body of the readme: exactly these two keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quarantineState: Literal["Passed", "Failed"]  # the API's own key names
    quarantineDetails: str


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
        data = _json(response.body, f"{repository}@{digest}: the manifest attributes")
        manifest = data.get("manifest")
        state = manifest.get("quarantineState") if isinstance(manifest, dict) else None
        return state if isinstance(state, str) else None

    def release_set(self, repository: str, digest: str) -> list[str]:
        """``digest`` and, for an index, every manifest it lists, attestation manifests included.

        BuildKit stores attestations as manifests inside the image index, after the platform
        images, marked ``unknown/unknown`` (moby/buildkit docs/attestations/attestation-storage.md);
        they are pushed, and so quarantined, like the platform images. Reading a quarantined
        index needs quarantine read rights, which ``AcrQuarantineWriter`` includes.
        """
        manifest = self.get_manifest(repository, digest)
        children = [child.digest for child in manifest.manifests] if manifest.is_index else []
        return [digest, *dict.fromkeys(d for d in children if d != digest)]

    def referrers(
        self, repository: str, digest: str, *, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """The manifests whose ``subject`` is ``digest`` (the scan reports ``oras attach`` pushed).

        OCI distribution-spec, "Listing Referrers" (opencontainers/distribution-spec spec.md):
        ``GET /v2/<name>/referrers/<digest>[?artifactType=]`` answers an image index of
        descriptors carrying each referrer's ``artifactType`` and annotations; a registry may
        ignore the filter, so it is applied here too. A registry without the API answers 404:
        then there is nothing to list. Only the first page is read; a run attaches a report per
        platform, far fewer than a page.
        """
        check_repository(repository)
        if not is_digest(digest):
            raise ValueError(f"referrers are listed for a digest, not {digest!r}")
        url = f"{self.base_url}/v2/{repository}/referrers/{digest}"
        if artifact_type is not None:
            url += "?" + urlencode({"artifactType": artifact_type})
        try:
            response = self._call(
                "GET",
                url,
                scope=f"repository:{repository}:pull",
                expected=(200,),
                headers={"Accept": MEDIA_TYPE_OCI_INDEX},
            )
        except NotFound:
            return []
        index = Manifest.parse(
            response.body, digest=compute_digest(response.body), content_type=response.header("Content-Type")
        )
        return [d for d in index.manifests if artifact_type is None or d.artifact_type == artifact_type]

    def set_quarantine(self, repository: str, digest: str, state: str, details: QuarantineDetails) -> bool:
        """Set the state unless it is already set; True when a PATCH was sent.

        ``Failed`` leaves a ``Passed`` digest alone (see the module docstring).
        ``quarantineDetails`` is a string holding JSON (the API's shape), not a nested object.
        """
        if state not in (PASSED, FAILED):
            raise ValueError(f"quarantine state must be {PASSED} or {FAILED}, not {state!r}")
        if not isinstance(details, QuarantineDetails):
            raise TypeError("details must be QuarantineDetails (the documented schema)")
        current = self.quarantine_state(repository, digest)
        if current == state or (current == PASSED and state == FAILED):
            return False
        body = QuarantinePatch(quarantineState=state, quarantineDetails=details.to_json())
        self._call(
            "PATCH",
            self._attributes_url(repository, digest),
            scope=f"repository:{repository}:pull,push",
            expected=(200, 204),
            headers={"Content-Type": "application/json"},
            body=body.model_dump_json().encode(),
        )
        log_event(logger, "quarantine_set", repository=repository, digest=digest, state=state)
        return True

    def _attributes_url(self, repository: str, digest: str) -> str:
        check_repository(repository)
        if not is_digest(digest):
            raise ValueError(f"quarantine applies to a digest, not {digest!r}")
        return f"{self.base_url}/acr/v1/{repository}/_manifests/{digest}"


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise RegistryError(f"{what} are not JSON") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{what} are not a JSON object")
    return data


def quarantine_client_from_settings(settings: Mapping[str, str], registry: str) -> QuarantineClient:
    """With the Function's managed identity (``AZURE_CLIENT_ID`` picks a user-assigned one)."""
    from shared.platform.identity import app_credential

    return QuarantineClient.for_acr(registry, app_credential(settings))


__all__ = [
    "DETAILS_SUMMARY_VERSION",
    "FAILED",
    "PASSED",
    "QUARANTINE_READER_ROLE_ID",
    "QUARANTINE_WRITER_ROLE_ID",
    "QuarantineClient",
    "QuarantineDetails",
    "ScanSummary",
    "SeverityCount",
    "details_for",
    "quarantine_client_from_settings",
]

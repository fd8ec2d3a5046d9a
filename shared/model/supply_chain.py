"""Supply-chain settings of ``slipway.yaml``: attestations, the scan gate, the scanner, the platform check.

They are separate from ``shared.model.config`` because the renderer and reconciliation read them too,
and because their rules (a scanner pinned by digest, no ``max`` provenance next to a secret-looking
build argument) are about what ends up inside a pushed image, not about routing.

What counts as a *secret build argument*: Slipway passes secrets to BuildKit only as build
*secrets* (``--secret``, e.g. ``git_token_setting``), which provenance never records. A plain
``build_args`` entry is written into the config and, with ``provenance: max``, into the image's
provenance attestation, readable by anyone who can pull. An entry whose name looks like a secret
(the words of BuildKit's ``SecretsUsedInArgOrEnv`` check: ``TOKEN``, ``PASSWORD``, ``SECRET``,
``KEY``, ``AUTH``, ...) is taken as one, and ``max`` is refused for that target.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.model.image_refs import parse_image_reference

Severity = Literal["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
SEVERITIES: tuple[Severity, ...] = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_DEFAULT_GATE_SEVERITIES: list[Severity] = ["CRITICAL", "HIGH"]

# BuildKit's SecretsUsedInArgOrEnv words, as whole '_'-separated parts of the name.
_SECRET_NAME_RE = re.compile(
    r"(?:^|_)(?:APIKEY|AUTH|CREDENTIAL|CREDENTIALS|KEY|PASSWORD|PASS|PWORD|PASSWD|SECRET|TOKEN)(?:_|$)",
    re.IGNORECASE,
)
_PUBLIC_NAME_RE = re.compile(r"(?:^|_)PUBLIC(?:_|$)", re.IGNORECASE)
_PINNED_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
SCANNER_EXAMPLE = "docker.io/aquasec/trivy:0.58.1@sha256:<digest>"


def is_secret_build_arg(name: str) -> bool:
    """A build argument whose name says it carries a secret (``NPM_TOKEN``, ``DB_PASSWORD``)."""
    return bool(_SECRET_NAME_RE.search(name)) and not _PUBLIC_NAME_RE.search(name)


def sbom_flag(enabled: bool, generator: str) -> str:
    """The buildx flag of a target's SBOM: the pinned generator image, never BuildKit's moving default.

    ``--sbom`` is buildx's shorthand for ``--attest type=sbom``: a value that is not a boolean is
    appended to ``type=sbom,`` (docker/buildx util/buildflags/attests.go, ``CanonicalizeAttest``),
    and the ``generator`` attribute names the scanner image BuildKit runs
    (docs.docker.com/build/metadata/attestations/sbom/, "SBOM generator"; moby/buildkit
    docs/attestations/sbom.md). Without it BuildKit pulls docker/buildkit-syft-scanner:stable-1
    from Docker Hub (moby/buildkit frontend/attestations/parse.go, ``defaultSBOMGenerator``).
    """
    return f"--sbom=generator={generator}" if enabled else "--sbom=false"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Attestations(_Strict):
    """BuildKit attestations attached to the pushed index (they need the docker-container driver)."""

    sbom: bool = Field(
        default=True,
        description="An SPDX SBOM per platform, by the scanner image tools.sbom_generator (BuildKit's "
        "syft scanner).",
    )
    provenance: Literal["off", "min", "max"] = Field(
        default="min",
        description="SLSA provenance. min: builder, source and timestamps. max: also every build "
        "argument with its value, the Dockerfile and the build steps; refused next to a secret-looking "
        "build argument.",
    )


class ScanGate(_Strict):
    """Scan the pushed digest before any release tag is written; absent: no gate."""

    severity: list[Severity] = Field(
        default_factory=lambda: _DEFAULT_GATE_SEVERITIES.copy(),
        min_length=1,
        description="Findings of these severities fail the gate.",
    )
    ignore_unfixed: bool = Field(default=False, description="Ignore vulnerabilities that have no fix yet.")

    @field_validator("severity")
    @classmethod
    def _unique(cls, value: list[Severity]) -> list[Severity]:
        return [s for s in SEVERITIES if s in value]  # stable order, no repeats


class Scanner(_Strict):
    """The scanner image of every scan gate (Trivy), pinned by digest."""

    image: str | None = Field(
        default=None,
        description=f"Trivy image pinned by digest, e.g. {SCANNER_EXAMPLE}. Required once a target has "
        "a scan gate: Slipway ships no digest it could not check.",
    )

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse_image_reference(value)
        except ValueError as exc:
            raise ValueError(f"scanner image {value!r}: {exc}") from None
        if not _PINNED_RE.search(value):
            raise ValueError(
                f"scanner image {value!r} must be pinned by digest ({SCANNER_EXAMPLE}); "
                "a tag can be moved to an image that lets everything pass"
            )
        return value


__all__ = [
    "SCANNER_EXAMPLE",
    "SEVERITIES",
    "Attestations",
    "ScanGate",
    "Scanner",
    "Severity",
    "is_secret_build_arg",
    "sbom_flag",
]

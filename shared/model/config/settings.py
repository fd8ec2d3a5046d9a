"""The registry-wide sections of ``slipway.yaml``: ``tools:``, ``run:`` and ``rebuilds:``."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.model.config.base import StrictModel
from shared.model.tool_images import (
    DEFAULT_SBOM_GENERATOR,
    DEFAULT_TOOLS_MIRROR,
    TOOL_ROLES,
    buildkit_version_problem,
    mirror_problem,
    pinned_image_problem,
)


class ToolImages(StrictModel):
    """The images every ACR run pulls, each pinned to a version tag (ideally tag@sha256:digest),
    and the mirror they are pulled from; azd's postprovision hook imports them there."""

    mirror: str | None = Field(
        default=DEFAULT_TOOLS_MIRROR,
        description="Registry prefix the tool images are pulled from: "
        "<mirror>/<upstream registry>/<repository>:<tag>[@digest]. {registry} is the registry above. "
        "null: pull them from their own registries (Docker Hub, GHCR).",
    )
    docker_cli: str = "docker.io/library/docker:29.7.2-cli"
    buildkit: str = "docker.io/moby/buildkit:v0.32.2"
    binfmt: str = "docker.io/tonistiigi/binfmt:qemu-v10.0.4-59"
    oras: str = Field(
        default="ghcr.io/oras-project/oras:v1.2.2",
        description="Stores a scan gate's reports as OCI artifacts referring to the image.",
    )
    sbom_generator: str = Field(
        default=DEFAULT_SBOM_GENERATOR,
        description="BuildKit's SBOM scanner image (--sbom=generator=...), run for attestations.sbom. "
        "BuildKit's own default is the moving tag docker/buildkit-syft-scanner:stable-1.",
    )

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = mirror_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value.rstrip("/")

    @field_validator(*TOOL_ROLES)
    @classmethod
    def _pinned(cls, value: str) -> str:
        # Stored normalised (docker.io/library/...): the mirror path and the import source use it.
        problem, reference = pinned_image_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return reference

    @field_validator("buildkit")
    @classmethod
    def _buildkit_version(cls, value: str) -> str:
        problem = buildkit_version_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class RunSettings(StrictModel):
    """Options of the ACR run request."""

    timeout: int = Field(default=3600, ge=300, le=28800, description="Whole-run timeout in seconds.")
    cpu: int = Field(default=2, ge=1, description="agentConfiguration.cpu (the default pool accepts 2).")
    agent_pool: str | None = Field(default=None, description="Dedicated agent pool name, if any.")


class RebuildSettings(StrictModel):
    """How base-image rebuilds fan out: a large fan-out is spread over time, never dropped.

    One base image update may rebuild many targets at once, which would exhaust the registry's
    concurrent run quota. The first ``max_burst`` rebuilds of one delivery are queued at once;
    each further group of ``max_burst`` is scheduled ``spread_seconds`` after the previous one.
    """

    max_burst: int = Field(default=10, ge=1, le=1000, description="Rebuilds queued at once per delivery.")
    spread_seconds: int = Field(
        default=60, ge=1, le=86400, description="Delay between successive groups of max_burst rebuilds."
    )

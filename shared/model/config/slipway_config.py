"""The whole ``slipway.yaml`` (``SlipwayConfig``), the single source of its JSON Schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shared.model.build_request import REGISTRY_RE
from shared.model.config.base import LocatedValueError, StrictModel
from shared.model.config.cache_storage import CacheStorage
from shared.model.config.settings import RebuildSettings, RunSettings, ToolImages
from shared.model.config.targets import Target
from shared.model.dispatch_settings import DispatchSettings
from shared.model.retention_rules import ImageRule
from shared.model.supply_chain import SCANNER_EXAMPLE, Scanner

CONFIG_SCHEMA_ID = "https://slipway.dev/schemas/slipway.schema.json"


class SlipwayConfig(StrictModel):
    """The whole ``slipway.yaml``."""

    version: Literal[1] = 1
    registry: str = Field(
        description="Registry login server, e.g. myregistry.azurecr.io.",
        json_schema_extra={"pattern": REGISTRY_RE.pattern},
    )
    cache: CacheStorage | None = None
    tools: ToolImages = Field(default_factory=ToolImages)
    images: list[ImageRule] = Field(
        default_factory=list,
        description="Image retention rules for `slipway prune images` and the prune timer; the first rule "
        "whose repositories match a repository applies to it. None: nothing is ever pruned.",
    )
    run: RunSettings = Field(default_factory=RunSettings)
    rebuilds: RebuildSettings = Field(default_factory=RebuildSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    scanner: Scanner = Field(default_factory=Scanner)
    quarantine: bool = Field(
        default=False,
        description="The registry's quarantine policy is on: mark each digest a successful run pushed as "
        "Passed (the app's identity needs AcrQuarantineWriter).",
    )
    targets: list[Target] = Field(default_factory=list)

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        if not REGISTRY_RE.match(value):
            raise ValueError("registry must be a login server such as myregistry.azurecr.io")
        return value

    @model_validator(mode="after")
    def _unique_targets(self) -> SlipwayConfig:
        # Names key ledger records, cache names and message ids: two targets sharing one would
        # silently share all of them.
        seen: dict[str, int] = {}
        for index, target in enumerate(self.targets):
            if target.name in seen:
                raise LocatedValueError(
                    f"target name {target.name!r} is used twice (first by targets[{seen[target.name]}])",
                    at=("targets", index, "name"),
                )
            seen[target.name] = index
        gated = [index for index, target in enumerate(self.targets) if target.scan is not None]
        if gated and self.scanner.image is None:
            raise LocatedValueError(
                f"targets[{gated[0]}] has a scan gate: set scanner.image to a Trivy image pinned by "
                f"digest ({SCANNER_EXAMPLE})",
                at=("scanner", "image"),
            )
        return self

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``slipway.yaml``, generated from ``SlipwayConfig``."""
    schema = SlipwayConfig.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": CONFIG_SCHEMA_ID,
        "title": "Slipway configuration (slipway.yaml)",
        **{key: value for key, value in schema.items() if key != "title"},
    }

"""The ``images:`` retention rules of ``slipway.yaml``.

A rule applies to the repositories its globs match (the first matching rule wins, as with
firewall rules, so a specific rule can precede a catch-all). Durations are written ``7d``,
``12h``, ``30m``, ``90s`` or ``2w``; ``0`` means no minimum age.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.model import durations
from shared.model.globs import any_match


def parse_duration(text: str) -> timedelta:
    """``7d`` → 7 days; ``1d12h`` works too; ``0`` is no minimum age (the cache's durations
    have no zero). Raises ``ValueError`` with the accepted forms."""
    if isinstance(text, str) and text.strip() == "0":
        return timedelta(0)
    try:
        return durations.parse_duration(text)
    except (ValueError, AttributeError):
        raise ValueError(f"duration {text!r} is not like 7d, 12h, 30m, 90s, 2w or 0") from None


class ImageRule(BaseModel):
    """Which manifests of the matching repositories to keep; everything else may be deleted.

    A manifest is kept when a kept tag points at it, when it is younger than ``min_age``, when
    the registry locks it, or when something kept references it (an index its platform
    manifests and attestations, a signature its subject and the other way round).
    """

    model_config = ConfigDict(extra="forbid")

    repositories: list[str] = Field(
        min_length=1, description="Globs on repository names (team/*, app); * stays within one segment."
    )
    keep_tags: list[str] = Field(default_factory=list, description="Globs on tags that are always kept.")
    keep_newest: int = Field(
        default=0, ge=0, le=100_000, description="The newest other tags are kept too (by push time)."
    )
    min_age: str = Field(
        default="7d",
        description="Nothing younger is deleted (7d, 12h, 30m, 0). Age comes from the registry's timestamps "
        "(ACR) or the image config's created time.",
    )
    untagged: Literal["delete", "keep"] = Field(
        default="delete",
        description="Untagged manifests nothing references, older than min_age: delete or keep.",
    )

    @field_validator("min_age")
    @classmethod
    def _min_age(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("repositories", "keep_tags")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern or pattern != pattern.strip():
                raise ValueError(f"glob {pattern!r} is empty or has surrounding spaces")
        return value

    @property
    def min_age_delta(self) -> timedelta:
        return parse_duration(self.min_age)

    def applies_to(self, repository: str) -> bool:
        return any_match(self.repositories, repository)


def rule_for(rules: Sequence[ImageRule], repository: str) -> tuple[int, ImageRule] | None:
    """The first rule matching ``repository`` and its index in ``images:``; None: leave it alone."""
    for index, rule in enumerate(rules):
        if rule.applies_to(repository):
            return index, rule
    return None

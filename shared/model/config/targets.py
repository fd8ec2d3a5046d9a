"""One entry of ``targets:``: an image built from one repository, its tag rules and cache name."""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.model.build_request import BUILD_ARG_NAME_RE, OCI_REPOSITORY_RE, PLATFORM_RE, TARGET_NAME_RE
from shared.model.config.base import LocatedValueError, StrictModel
from shared.model.config.pull_requests import PullRequestPolicy
from shared.model.cron import Cron, CronError
from shared.model.git_auth import GIT_TOKEN_USER_RE
from shared.model.image_refs import parse_image_reference
from shared.model.supply_chain import Attestations, ScanGate, is_secret_build_arg
from shared.model.tags import RuleTemplateError, validate_rule_templates

# Settings a target may name as its Git token. Slipway reads none of its own under this prefix
# (tests/test_config.py checks it against every setting the code reads).
GIT_TOKEN_SETTING_PREFIX = "GIT_TOKEN_"
DEFAULT_PLATFORMS = ["linux/amd64", "linux/arm64"]
CACHE_NAME_PLACEHOLDERS = ("target", "branch")
SCHEDULE_FIELDS = 5
# Any fixed instant: an expression that fires at all fires within the five years ``next_after`` scans.
_SCHEDULE_PROBE = datetime(2024, 1, 1, tzinfo=UTC)


class TagRule(StrictModel):
    """One image tag template and the pushes it applies to.

    Placeholders: ``{branch}``, ``{tag}``, ``{sha}``, ``{short_sha}``, ``{version}``, ``{major}``,
    ``{minor}``, ``{patch}``. A rule whose placeholders the push cannot fill produces nothing.
    """

    template: str
    when: Literal["always", "branch", "tag", "default_branch", "semver"] = "always"


def default_image_tags() -> list[str | TagRule]:
    return [
        "{branch}",
        "sha-{short_sha}",
        "{tag}",
        TagRule(template="{version}", when="semver"),
        TagRule(template="{major}.{minor}", when="semver"),
        TagRule(template="latest", when="default_branch"),
    ]


class TargetCache(StrictModel):
    """Per-target cache naming. ``name`` is a template over ``{target}`` and ``{branch}``."""

    name: str = "{target}-{branch}"
    mode: Literal["min", "max"] = "max"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # The router expands this with str.format: refuse anything but the two plain placeholders
        # here, rather than a KeyError (or attribute access) on the first push.
        try:
            fields = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"cache name template {value!r} is malformed: {exc}") from exc
        for _literal, field, spec, conversion in fields:
            if field is None:
                continue
            if field not in CACHE_NAME_PLACEHOLDERS or spec or conversion:
                raise ValueError(
                    f"cache name template {value!r} uses {{{field}}}; "
                    "only {target} and {branch} are known"
                )
        return value


class Target(StrictModel):
    """One image built from one repository."""

    # The patterns below only inform editors through the JSON Schema; the validators decide, with
    # messages that say what is wrong.
    name: str = Field(
        description="Unique; lowercase letters, digits and '-'.",
        json_schema_extra={"pattern": TARGET_NAME_RE.pattern},
    )
    repo: str = Field(description="Repository URL in any form (https, .git, ssh).")
    branches: list[str] = Field(default_factory=lambda: ["main"], description="Globs on branch names.")
    tags: list[str] = Field(default_factory=list, description="Globs on tag names; none by default.")
    paths: list[str] = Field(default_factory=list, description="Build only when a changed file matches.")
    ignore_paths: list[str] = Field(default_factory=list, description="Changed files that never trigger.")
    context: str = "."
    dockerfile: str = "Dockerfile"
    image: str = Field(
        description="Repository in the registry, e.g. team/app.",
        json_schema_extra={"pattern": OCI_REPOSITORY_RE.pattern},
    )
    image_tags: list[str | TagRule] = Field(
        default_factory=default_image_tags,
        description="Tag rules: a template string, or {template, when}. Default: {branch}, sha-{short_sha}, "
        "{tag}, {version} and {major}.{minor} when semver, latest when default_branch.",
    )
    platforms: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PLATFORMS),
        min_length=1,
        description="os/arch[/variant]; default linux/amd64 and linux/arm64.",
        json_schema_extra={"items": {"type": "string", "pattern": PLATFORM_RE.pattern}},
    )
    build_args: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": BUILD_ARG_NAME_RE.pattern}}
    )
    cache: TargetCache = Field(default_factory=TargetCache)
    default_branch: str | None = Field(
        default=None,
        description="The repository's default branch: it gets `latest`, the other branches import its "
        "cache, its pushes are what rebuilds rebuild. Overrides what the Git host reports; needed where "
        "none is reported (Bitbucket Cloud pushes) unless exactly one branch filter is a plain name.",
    )
    git_token_setting: str | None = Field(
        default=None,
        description="App setting holding a read-only token for a private repository; its name must "
        f"start with {GIT_TOKEN_SETTING_PREFIX} (e.g. {GIT_TOKEN_SETTING_PREFIX}WEB). It reaches "
        "BuildKit as a build secret scoped to the repository's host, never in a URL.",
        json_schema_extra={"pattern": f"^{GIT_TOKEN_SETTING_PREFIX}[A-Z0-9_]+$"},
    )
    git_token_user: str | None = Field(
        default=None,
        description="User name sent with the token (HTTP Basic). Default: x-token-auth for bitbucket.org "
        "(its access tokens), else BuildKit's x-access-token, which GitHub, GitLab, Azure DevOps and "
        "Gitea accept. Bitbucket API tokens: your Bitbucket user name or x-bitbucket-api-token-auth.",
        json_schema_extra={"pattern": GIT_TOKEN_USER_RE.pattern},
    )
    base_images: list[str] = Field(
        default_factory=list,
        description="Images this target builds on (python:3.12-slim, mcr.microsoft.com/dotnet/aspnet:8.0, "
        "or pinned by @sha256:...). A push of one of them, reported by ACR, Event Grid or Docker Hub, "
        "rebuilds the commit this target last built on its default branch. Normalised as Docker does "
        "(docker.io/library/python:3.12-slim).",
    )
    schedule: str | None = Field(
        default=None,
        description="Rebuild on a schedule: a classic 5-field cron expression (minute hour day month "
        "weekday), in UTC, e.g. '0 3 * * 1' for Mondays at 03:00. Each slot rebuilds the commit last "
        "built on the default branch (else its head); after downtime only the latest missed slot runs.",
    )
    cancel_superseded: bool = Field(
        default=False,
        description="Cancel a still-running run of this target when a newer commit on the same ref starts.",
    )
    max_concurrent_runs: int | None = Field(
        default=None,
        ge=1,
        description="Runs of this target in flight at once (default: dispatch's per-target limit).",
    )

    attestations: Attestations = Field(default_factory=Attestations)
    scan: ScanGate | None = Field(
        default=None,
        description="Scan gate: push by digest, scan every platform, tag only when the scan passes.",
    )
    pull_requests: PullRequestPolicy = Field(
        default_factory=PullRequestPolicy,
        description="Pull/merge request builds: which requests are built, and where they go.",
    )
    platform_check: bool = Field(
        default=True,
        description="Fail the run unless the pushed index holds every requested platform; release tags "
        "are written only after it passes.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TARGET_NAME_RE.match(value):
            raise ValueError("name must be lowercase letters, digits and '-' (at most 63)")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not OCI_REPOSITORY_RE.match(value):
            raise ValueError("image must be a repository name such as team/app (lowercase)")
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str]) -> list[str]:
        for index, platform in enumerate(value):
            if not PLATFORM_RE.match(platform):
                raise LocatedValueError(
                    f"platform {platform!r} is not os/arch[/variant] "
                    "(e.g. linux/amd64, linux/arm64, linux/arm/v7)",
                    at=(index,),
                )
        return value

    @field_validator("build_args")
    @classmethod
    def _build_args(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not BUILD_ARG_NAME_RE.match(name):
                raise LocatedValueError(f"build arg name {name!r} is not a valid identifier", at=(name,))
        return value

    @field_validator("image_tags")
    @classmethod
    def _image_tags(cls, value: list[str | TagRule]) -> list[str | TagRule]:
        if not value:
            raise ValueError("at least one tag rule is needed: a build without a tag cannot be pushed")
        try:
            validate_rule_templates(value)
        except RuleTemplateError as exc:
            rule = value[exc.index]
            at: tuple[str | int, ...] = (exc.index,) if isinstance(rule, str) else (exc.index, "template")
            raise LocatedValueError(str(exc), at=at) from exc
        return value

    @field_validator("git_token_setting")
    @classmethod
    def _setting(cls, value: str | None) -> str | None:
        # The setting's value becomes a build secret the Dockerfile can read
        # (RUN --mount=type=secret), so a config author must not be able to name any other
        # setting (a webhook secret, the cache key, a status token with write rights).
        if value is None:
            return value
        if not BUILD_ARG_NAME_RE.match(value):
            raise ValueError("git_token_setting must be an app setting name")
        if not value.startswith(GIT_TOKEN_SETTING_PREFIX) or value == GIT_TOKEN_SETTING_PREFIX:
            raise ValueError(
                f"git_token_setting must name a setting starting with {GIT_TOKEN_SETTING_PREFIX} "
                f"(e.g. {GIT_TOKEN_SETTING_PREFIX}WEB): its value is handed to the build as a secret "
                "the Dockerfile can read, so only settings that hold Git tokens may be named"
            )
        return value

    @field_validator("git_token_user")
    @classmethod
    def _token_user(cls, value: str | None) -> str | None:
        if value is not None and not GIT_TOKEN_USER_RE.match(value):
            raise ValueError("git_token_user must be a user name of letters, digits and . _ @ + - (no ':')")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        # Five fields only: the timer evaluates schedules once a minute, so a seconds field
        # (NCRONTAB, as the Functions timer itself uses) would promise what it cannot keep.
        if value is None:
            return None
        text = " ".join(value.split())
        if len(text.split()) != SCHEDULE_FIELDS:
            raise ValueError(
                f"{value!r} is not a 5-field cron expression (minute hour day month weekday, UTC), "
                "e.g. '0 3 * * *' for 03:00 every day"
            )
        try:
            Cron.parse(text).next_after(_SCHEDULE_PROBE)
        except CronError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        return text

    @model_validator(mode="after")
    def _no_max_provenance_with_secrets(self) -> Target:
        # max provenance writes every build argument's value into the pushed attestation.
        secret = [name for name in self.build_args if is_secret_build_arg(name)]
        if self.attestations.provenance == "max" and secret:
            raise LocatedValueError(
                f"provenance max records build argument values in the image, and build_args "
                f"{', '.join(secret)} look secret: use min, or pass the secret as a build secret",
                at=("attestations", "provenance"),
            )
        return self

    @model_validator(mode="after")
    def _pull_requests_fit_the_target(self) -> Target:
        policy = self.pull_requests
        if policy.scratch_repository is not None and policy.scratch_repository == self.image:
            raise LocatedValueError(
                "scratch_repository must differ from image: "
                "pull requests never push to the release repository",
                at=("pull_requests", "scratch_repository"),
            )
        for index, platform in enumerate(policy.platforms or ()):
            if platform not in self.platforms:
                raise LocatedValueError(
                    f"platform {platform!r} is not one of the target's platforms "
                    f"({', '.join(self.platforms)})",
                    at=("pull_requests", "platforms", index),
                )
        if policy.forks != "off" and self.git_token_setting is not None:
            # BuildKit fetches the Git context with the token as a build secret, and any RUN step
            # (or a frontend the Dockerfile names with `# syntax=`) can mount a build secret: a
            # fork's run never gets it, so a repository that needs one cannot build forks.
            raise LocatedValueError(
                f"forks: {policy.forks} cannot build a repository that needs git_token_setting: the "
                "token reaches the build as a secret the fork's Dockerfile could read "
                "(RUN --mount=type=secret); use forks: off",
                at=("pull_requests", "forks"),
            )
        return self

    @field_validator("base_images")
    @classmethod
    def _base_images(cls, value: list[str]) -> list[str]:
        # Stored normalised, so that matching a registry event is a plain comparison.
        normalised: dict[str, int] = {}
        for index, text in enumerate(value):
            try:
                reference = str(parse_image_reference(text))
            except ValueError as exc:
                raise LocatedValueError(str(exc), at=(index,)) from exc
            if reference in normalised:
                raise LocatedValueError(
                    f"{text!r} is {reference}, already listed as base_images[{normalised[reference]}]",
                    at=(index,),
                )
            normalised[reference] = index
        return list(normalised)

"""The ``slipway.yaml`` configuration: pydantic models, the single source of its JSON Schema.

Unknown keys are errors (``extra="forbid"``): a misspelt ``branchs:`` must not silently build
every branch. The loader (``parse_config``/``load_config``) keeps the YAML node tree so every
problem is reported as ``file:line: field.path: message``, which an operator can act on without
reading a pydantic traceback.

PyYAML is imported inside the loader only: the Functions worker imports this module on every
cold start, and most invocations use an already loaded configuration.
"""

from __future__ import annotations

import re
import string
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.model.build_request import (
    BUILD_ARG_NAME_RE,
    OCI_REPOSITORY_RE,
    PLATFORM_RE,
    REGISTRY_RE,
    TARGET_NAME_RE,
)
from shared.model.cron import Cron, CronError
from shared.model.dispatch_settings import DispatchSettings
from shared.model.durations import Duration
from shared.model.git_auth import GIT_TOKEN_USER_RE
from shared.model.image_refs import parse_image_reference
from shared.model.loopback import is_loopback
from shared.model.supply_chain import SCANNER_EXAMPLE, Attestations, ScanGate, Scanner, is_secret_build_arg
from shared.model.tags import RuleTemplateError, validate_rule_templates
from shared.model.tool_images import (
    DEFAULT_SBOM_GENERATOR,
    DEFAULT_TOOLS_MIRROR,
    TOOL_ROLES,
    buildkit_version_problem,
    mirror_problem,
    pinned_image_problem,
)
from shared.pruning.retention.rules import ImageRule

# Settings a target may name as its Git token. Slipway reads none of its own under this prefix
# (tests/test_config.py checks it against every setting the code reads).
GIT_TOKEN_SETTING_PREFIX = "GIT_TOKEN_"

if TYPE_CHECKING:
    import yaml

DEFAULT_PLATFORMS = ["linux/amd64", "linux/arm64"]
CONFIG_SETTING = "SLIPWAY_CONFIG"
DEFAULT_CONFIG_FILE = "slipway.yaml"
CONFIG_SCHEMA_ID = "https://slipway.dev/schemas/slipway.schema.json"
CACHE_NAME_PLACEHOLDERS = ("target", "branch")
SCHEDULE_FIELDS = 5
# Any fixed instant: an expression that fires at all fires within the five years ``next_after`` scans.
_SCHEDULE_PROBE = datetime(2024, 1, 1, tzinfo=UTC)


class LocatedValueError(ValueError):
    """A validator's error about one part of the value it checks.

    pydantic locates a field validator's error at the field; ``at`` is the rest of the way (a list
    index, a mapping key), so the loader can point at the exact YAML line of ``platforms[3]``
    rather than at ``platforms:``.
    """

    def __init__(self, message: str, *, at: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.at = at


class _Strict(BaseModel):
    # Frozen: a loaded configuration is a value. Routing caches what it derives from a target
    # (tag plans, request prototypes) by the target's identity.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TagRule(_Strict):
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


class TargetCache(_Strict):
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


# BuildKit's azblob cache signs with the storage account name, which it takes from the first DNS
# label of account_url's host unless the account_name attribute gives it (moby/buildkit
# cache/remotecache/azblob/utils.go getConfig; the attribute exists since v0.12.0, commit ef0a352).
# So Slipway always passes account_name, derived here: "<account>.blob.<suffix>" hosts (public and
# sovereign clouds) name it in the host; a path-style URL (Azurite, an endpoint by IP) names it in
# its one path segment. Azure account names are 3-24 lowercase letters and digits (Azurite allows
# other lengths), so the pattern checks the alphabet and the upper bound only.
STORAGE_ACCOUNT_NAME_RE = re.compile(r"^[a-z0-9]{1,24}$")
_ACCOUNT_HOST_RE = re.compile(r"^(?P<account>[a-z0-9]{1,24})\.blob\.")


def storage_account_name(account_url: str) -> str | None:
    """The account ``account_url`` names (host label or path segment), or None if it names none."""
    parts = urlsplit(account_url)
    segments = [segment for segment in parts.path.split("/") if segment]
    found = _ACCOUNT_HOST_RE.match((parts.hostname or "").lower())
    if found:  # a path after it would be taken for the container: no account URL
        return None if segments else found.group("account")
    if len(segments) == 1 and STORAGE_ACCOUNT_NAME_RE.match(segments[0]):
        return segments[0]
    return None


class CacheStorage(_Strict):
    """Where BuildKit's azblob cache lives (shared by all targets)."""

    account_url: str = Field(
        description="https://<account>.blob.core.windows.net, or path-style http(s)://host[:port]/<account> "
        "(Azurite: http://127.0.0.1:10000/devstoreaccount1)."
    )
    account_name: str | None = Field(
        default=None,
        description="The storage account's name, which BuildKit signs with. Default: the <account> of "
        "account_url; required when account_url names none (a custom domain, a private endpoint by IP).",
        json_schema_extra={"pattern": STORAGE_ACCOUNT_NAME_RE.pattern},
    )
    container: str = "buildkit-cache"
    prefix: str = ""
    auth: Literal["account-key", "service-principal"] = Field(
        default="account-key",
        description="account-key: setting SLIPWAY_CACHE_ACCOUNT_KEY. service-principal: settings "
        "SLIPWAY_CACHE_TENANT_ID, SLIPWAY_CACHE_CLIENT_ID, SLIPWAY_CACHE_CLIENT_SECRET.",
    )
    # Garbage collection (`slipway prune cache` and the cache-prune timer).
    grace: Duration = Field(
        default=timedelta(hours=24),
        json_schema_extra={"default": "24h"},
        description="Never delete a blob younger than this: an export uploads its blobs before its "
        "manifest. At least 1h; keep it above the longest build.",
    )
    keep_names: list[str] = Field(
        default_factory=list, description="Globs on cache names whose manifests never expire."
    )
    max_age: Duration | None = Field(
        default=timedelta(days=14),
        json_schema_extra={"default": "14d"},
        description="Other cache names expire when not exported for this long (null: never by age).",
    )
    max_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Optional budget for the cache's blobs: the least recently exported names expire first.",
    )

    @field_validator("account_url")
    @classmethod
    def _account_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("account_url must be an http(s) URL")
        if value.startswith("http://") and not is_loopback(urlsplit(value).hostname or ""):
            # BuildKit and the collector would send the account key's signatures or a service
            # principal's token over it in clear: plain http is only for an emulator on this machine.
            raise ValueError(
                "account_url may be plain http only on loopback (Azurite); use https for any other host"
            )
        return value.rstrip("/")

    @field_validator("grace")
    @classmethod
    def _grace(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1):
            raise ValueError("grace must be at least 1h: a shorter one can delete an export's new blobs")
        return value

    @field_validator("account_name")
    @classmethod
    def _account_name(cls, value: str | None) -> str | None:
        if value is not None and not STORAGE_ACCOUNT_NAME_RE.match(value):
            raise ValueError(
                "account_name must be a storage account name: lowercase letters and digits, at most 24"
            )
        return value

    @model_validator(mode="after")
    def _named_account(self) -> CacheStorage:
        if self.account_name is None and storage_account_name(self.account_url) is None:
            raise LocatedValueError(
                f"{self.account_url} does not name its storage account (<account>.blob.<suffix>, or "
                "a path-style .../<account>): set cache.account_name, which BuildKit signs requests with",
                at=("account_url",),
            )
        return self

    @property
    def resolved_account_name(self) -> str:
        """The account BuildKit must sign as (validated: the model refuses a URL naming none)."""
        name = self.account_name or storage_account_name(self.account_url)
        if name is None:  # only a model built without validation gets here
            raise ValueError(f"cache.account_url {self.account_url} does not name its storage account")
        return name


class ToolImages(_Strict):
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


class RunSettings(_Strict):
    """Options of the ACR run request."""

    timeout: int = Field(default=3600, ge=300, le=28800, description="Whole-run timeout in seconds.")
    cpu: int = Field(default=2, ge=1, description="agentConfiguration.cpu (the default pool accepts 2).")
    agent_pool: str | None = Field(default=None, description="Dedicated agent pool name, if any.")


class RebuildSettings(_Strict):
    """How base-image rebuilds fan out: a large fan-out is spread over time, never dropped.

    One base image update may rebuild many targets at once, which would exhaust the registry's
    concurrent run quota. The first ``max_burst`` rebuilds of one delivery are queued at once;
    each further group of ``max_burst`` is scheduled ``spread_seconds`` after the previous one.
    """

    max_burst: int = Field(default=10, ge=1, le=1000, description="Rebuilds queued at once per delivery.")
    spread_seconds: int = Field(
        default=60, ge=1, le=86400, description="Delay between successive groups of max_burst rebuilds."
    )


class Target(_Strict):
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


class SlipwayConfig(_Strict):
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


# --------------------------------------------------------------------------------------------
# Loading: YAML node tree → plain data → models, with every problem located at file:line.
# --------------------------------------------------------------------------------------------

PathPart = str | int
FieldPath = tuple[PathPart, ...]

# An alias-heavy document ("billion laughs") expands exponentially when walked or validated;
# no real configuration comes near this many nodes.
MAX_NODES = 100_000
# Far beyond any real configuration, far below the interpreter's recursion limit.
MAX_DEPTH = 64
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration file; ``str()`` is the ``file:line: path: message`` form."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; the message lists every problem, one per line."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigProblem]]]:
        # Rebuild from the problems, not the message, so the error survives pickling (worker pools).
        return (type(self), (self.problems,))


@dataclass(frozen=True)
class _Position:
    """Where a value sits in the file: the line of its key (or list item) and its scalar text."""

    line: int
    text: str | None = None


class _TooManyNodesError(Exception):
    pass


def format_path(path: FieldPath) -> str:
    """``("targets", 0, "branches")`` → ``targets[0].branches`` (odd keys quoted: ``build_args['A B']``)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def config_path(settings: Mapping[str, str], app_root: Path) -> Path:
    """The configuration file the app uses: setting ``SLIPWAY_CONFIG``, relative to the app root.

    Relative paths are resolved against the app root, not the working directory, because the
    Functions host does not promise one.
    """
    value = (settings.get(CONFIG_SETTING) or "").strip() or DEFAULT_CONFIG_FILE
    path = Path(value)
    return path if path.is_absolute() else app_root / path


def load_config(path: str | Path) -> SlipwayConfig:
    """Read and validate a ``slipway.yaml``; raises ``ConfigError`` (also for a missing file)."""
    return parse_config(_read_config_text(path), source=str(path))


@dataclass(frozen=True)
class CheckedConfig:
    """A configuration every target of which renders, and the warnings about it."""

    config: SlipwayConfig
    warnings: tuple[ConfigProblem, ...] = ()


def check_config_file(path: str | Path) -> CheckedConfig:
    """``load_config`` plus the renderer's verdict on each target (``config validate``, ``doctor``)."""
    return check_config_text(_read_config_text(path), source=str(path))


def check_config_text(text: str, *, source: str) -> CheckedConfig:
    """``parse_config``, then render a representative build of each target as the dispatcher would
    (``shared.app.config_check``): a refusal there is a problem here, at the field it comes from, so a
    configuration that checks renders for every target. Also warns where ``default_branch`` is
    needed and unset. Raises ``ConfigError``."""
    from shared.app.config_check import default_branch_warnings, render_problems

    config, positions = _parse_located(text, source=source)
    problems = [
        ConfigProblem(source, _line_of(path, positions), format_path(path), message)
        for path, message in render_problems(config)
    ]
    if problems:
        problems.sort(key=lambda problem: problem.line or 0)
        raise ConfigError(problems)
    warnings = tuple(
        ConfigProblem(source, _line_of(path, positions), format_path(path), message)
        for path, message in default_branch_warnings(config)
    )
    return CheckedConfig(config, warnings)


def _read_config_text(path: str | Path) -> str:
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([ConfigProblem(source, None, "", f"cannot read the file: {reason}")]) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(source, None, "", f"the file is not UTF-8 text: {exc}")]) from exc
    return text


def parse_config(text: str, *, source: str) -> SlipwayConfig:
    """Validate the YAML ``text`` of a configuration; ``source`` names it in problems."""
    return _parse_located(text, source=source)[0]


def _parse_located(text: str, *, source: str) -> tuple[SlipwayConfig, Mapping[FieldPath, _Position]]:
    """The configuration and the line of each of its values.

    The node tree is composed first (``yaml.safe_load`` would lose the line numbers and keep the
    last of two duplicate keys without a word); then plain data is constructed from it and
    validated by the models, and each pydantic error is mapped back to the line of its node.
    """
    import yaml

    try:
        loader = _depth_limited_loader()(text)  # the reader checks every character here
    except yaml.reader.ReaderError as exc:
        raise ConfigError([_reader_problem(source, text, exc)]) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([_yaml_problem(source, exc)]) from None
        if root is None:
            raise ConfigError(
                [ConfigProblem(source, 1, "", "the file is empty; at least 'registry' is required")]
            )
        if not isinstance(root, yaml.MappingNode):
            raise ConfigError(
                [
                    ConfigProblem(
                        source,
                        root.start_mark.line + 1,
                        "",
                        f"the top level must be a mapping of keys (version, registry, targets, ...), "
                        f"not {_node_kind(root)}",
                    )
                ]
            )
        tree = _TreeWalk(root.start_mark.line + 1)
        try:
            tree.walk(root)
        except _TooManyNodesError:
            raise ConfigError(
                [ConfigProblem(source, 1, "", f"the document expands to more than {MAX_NODES} nodes")]
            ) from None
        problems = [
            ConfigProblem(source, line, format_path(path), message) for path, line, message in tree.problems
        ]
        try:
            data = loader.construct_document(root)
        except yaml.MarkedYAMLError as exc:
            # Usually an unhashable key, which the walk has already reported more clearly.
            problem = _yaml_problem(source, exc)
            if problem.line not in {known.line for known in problems}:
                problems.append(problem)
            raise ConfigError(sorted(problems, key=lambda known: known.line or 0)) from None
    finally:
        loader.dispose()

    try:
        config = SlipwayConfig.model_validate(data)
    except ValidationError as exc:
        for path, message in _validation_messages(exc, data, tree.positions, tree.odd_key_parents):
            problems.append(ConfigProblem(source, _line_of(path, tree.positions), format_path(path), message))
    if problems:
        problems.sort(key=lambda problem: problem.line or 0)  # stable: same-line problems keep their order
        raise ConfigError(problems)
    return config, tree.positions


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``slipway.yaml``, generated from ``SlipwayConfig``."""
    schema = SlipwayConfig.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": CONFIG_SCHEMA_ID,
        "title": "Slipway configuration (slipway.yaml)",
        **{key: value for key, value in schema.items() if key != "title"},
    }


# --- YAML helpers ---------------------------------------------------------------------------


def _yaml_problem(source: str, exc: yaml.MarkedYAMLError) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    if exc.context == "expected a single document in the stream":
        return ConfigProblem(
            source,
            None if mark is None else mark.line + 1,
            "",
            "a second YAML document ('---'); use only one",
        )
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        context_line = f" at line {exc.context_mark.line + 1}" if exc.context_mark is not None else ""
        message = f"{exc.problem} ({exc.context}{context_line})"
    return ConfigProblem(source, None if mark is None else mark.line + 1, "", f"invalid YAML: {message}")


def _reader_problem(source: str, text: str, exc: yaml.reader.ReaderError) -> ConfigProblem:
    """A character YAML does not allow in a document (a NUL byte, most control characters)."""
    line = text.count("\n", 0, exc.position) + 1
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return ConfigProblem(source, line, "", f"character U+{code:04X} is not allowed in YAML text")


def _depth_limited_loader() -> type[yaml.SafeLoader]:
    """``SafeLoader`` that refuses collections nested deeper than ``MAX_DEPTH``, with the line.

    PyYAML composes nodes recursively, so a deep enough document would raise ``RecursionError``
    (a traceback, not a problem report); no configuration is nested anywhere near this deep.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        _depth = 0

        def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
            if self._depth >= MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return Loader


def _node_kind(node: yaml.Node) -> str:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the scalar {node.value!r}"


class _TreeWalk:
    """Records the line of every key and list item, and the YAML-level problems models cannot see.

    Duplicate keys and non-string keys vanish or change shape once the tree is turned into a
    dict, so they are found here, on the nodes. ``odd_key_parents`` are the mappings holding a
    non-string key: pydantic's own complaint about them would only repeat the walk's.
    """

    def __init__(self, root_line: int) -> None:
        self.positions: dict[FieldPath, _Position] = {(): _Position(root_line)}
        self.problems: list[tuple[FieldPath, int, str]] = []
        self.odd_key_parents: set[FieldPath] = set()
        self._active: set[int] = set()  # nodes on the current branch: an alias may name an ancestor
        self._count = 0  # bounds the walk against alias expansion

    def walk(self, node: yaml.Node, path: FieldPath = ()) -> None:
        import yaml

        self._count += 1
        if self._count > MAX_NODES:
            raise _TooManyNodesError
        if id(node) in self._active:
            return
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self._mapping(node, path)
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    self._record((*path, index), item.start_mark.line + 1, item)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> None:
        import yaml

        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else _node_kind(key_node)
                self.problems.append((path, line, f'key {shown!r} is not a string (quote it: "{shown}")'))
                self.odd_key_parents.add(path)
                continue
            key = key_node.value
            if key in seen:
                message = f"duplicate key (first at line {seen[key]}); YAML would keep only the last"
                self.problems.append(((*path, key), line, message))
            seen[key] = line
            # The last occurrence is the one in the data, so its lines win.
            self._record((*path, key), line, value_node)

    def _record(self, path: FieldPath, line: int, value: yaml.Node) -> None:
        import yaml

        text = value.value if isinstance(value, yaml.ScalarNode) else None
        self.positions[path] = _Position(line, text)
        self.walk(value, path)


def _line_of(path: FieldPath, positions: Mapping[FieldPath, _Position]) -> int | None:
    """The line of ``path``, else of its nearest recorded ancestor (a missing key: its mapping)."""
    for end in range(len(path), -1, -1):
        position = positions.get(path[:end])
        if position is not None:
            return position.line
    return None


# --- pydantic errors → located messages ------------------------------------------------------


@dataclass
class _Located:
    path: FieldPath
    container: Any  # the annotation the last path part was looked up in
    wrong_union_branch: bool = False
    dict_key: bool = False


def _unwrap_optional(annotation: Any) -> Any:
    if _is_union(annotation):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_tag(member: Any) -> str:
    """The name pydantic puts in an error location for a union member (``str``, ``TagRule``)."""
    return str(member.__name__) if isinstance(member, type) else repr(member)


def _lookup(data: Any, path: FieldPath) -> Any:
    for part in path:
        in_mapping = isinstance(data, Mapping) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_mapping or in_list):
            return None
        data = data[part]
    return data


def _locate(loc: tuple[PathPart, ...], data: Any) -> _Located:
    """Turn a pydantic error location into a document path, following the model's annotations.

    pydantic inserts the member name of a union (``image_tags[0].TagRule.when``) and ``[key]`` for
    a mapping key; neither is part of the document. An error from the union member that does not
    fit the value's kind (the ``str`` branch for a mapping) is flagged so it can be dropped.
    """
    annotation: Any = SlipwayConfig
    container: Any = None
    path: list[PathPart] = []
    located = _Located(path=(), container=None)
    index = 0
    while index < len(loc):
        part = loc[index]
        annotation = _unwrap_optional(annotation)
        origin = typing.get_origin(annotation)
        if _is_union(annotation):
            member = next((m for m in typing.get_args(annotation) if _union_tag(m) == part), None)
            if member is not None:
                value = _lookup(data, tuple(path))
                if _is_model(member) != isinstance(value, Mapping):
                    located.wrong_union_branch = True
                annotation = member
                index += 1
                continue
            annotation = None
            continue
        container = annotation
        path.append(part)
        if _is_model(annotation) and isinstance(part, str) and part in annotation.model_fields:
            annotation = annotation.model_fields[part].annotation
        elif origin is list and isinstance(part, int):
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            if index + 1 < len(loc) and loc[index + 1] == "[key]":
                located.dict_key = True
                index += 1
                annotation = typing.get_args(annotation)[0]
            else:
                annotation = typing.get_args(annotation)[1]
        else:
            annotation = None
        index += 1
    located.path = tuple(path)
    located.container = container
    return located


def _describe(value: Any, text: str | None) -> str:
    shown = text if text is not None else repr(value)
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {shown}"
    if isinstance(value, int | float):
        return f"the number {shown}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {shown}"


# (model, old key) -> new key: the close-match hint would name the wrong section for these.
_RENAMED_KEYS = {("SlipwayConfig", "tool_images"): "tools"}


def _unknown_key_message(key: PathPart, container: Any) -> str:
    import difflib

    if not _is_model(container):
        return "unknown key"
    renamed = _RENAMED_KEYS.get((container.__name__, str(key)))
    if renamed is not None:
        return f"unknown key: it is now {renamed!r}"
    fields = list(container.model_fields)
    close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (known keys: {', '.join(fields)})"


def _message(error: Mapping[str, Any], located: _Located, position: _Position | None) -> str:
    kind = error["type"]
    value = error.get("input")
    text = position.text if position is not None and not located.dict_key else None
    got = _describe(value, text)
    quote_hint = (
        f'; quote it ("{text if text is not None else value}") to keep it as text'
        if isinstance(value, bool | int | float)
        else ""
    )
    what = "a string key" if located.dict_key else "a string"
    if kind == "extra_forbidden":
        return _unknown_key_message(located.path[-1] if located.path else "", located.container)
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        cause = error.get("ctx", {}).get("error")
        return str(cause) if cause is not None else str(error["msg"]).removeprefix("Value error, ")
    if kind == "string_type":
        return f"expected {what}, got {got}{quote_hint}"
    if kind == "list_type":
        hint = f"; write [{value}] for a list of one" if isinstance(value, str) else ""
        return f"expected a list, got {got}{hint}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping of keys, got {got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {got}"
    if kind == "literal_error":
        allowed = error.get("ctx", {}).get("expected", "")
        return f"must be one of {allowed}, got {got}"
    message = str(error["msg"]).replace("Input should be", "must be")
    return f"{message}, got {got}" if value is not None and not isinstance(value, Mapping | list) else message


def _validation_messages(
    exc: ValidationError,
    data: Any,
    positions: Mapping[FieldPath, _Position],
    odd_key_parents: set[FieldPath],
) -> Iterator[tuple[FieldPath, str]]:
    """(path, message) for each pydantic error, minus those the tree walk has already explained."""
    seen: set[tuple[FieldPath, str]] = set()
    for error in exc.errors(include_url=False):
        loc: tuple[PathPart, ...] = tuple(error["loc"])
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, LocatedValueError):
            loc = (*loc, *cause.at)
        located = _locate(loc, data)
        if located.wrong_union_branch:
            continue
        if error["type"] == "invalid_key" and located.path[:-1] in odd_key_parents:
            continue
        message = _message(error, located, positions.get(located.path))
        if (located.path, message) not in seen:
            seen.add((located.path, message))
            yield located.path, message

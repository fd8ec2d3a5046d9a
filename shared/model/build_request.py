"""BuildRequest v1: the queue message, one JSON document per build.

Everything needed to build is in the body, so that an operator can read, repair and re-send a
message from the portal's Service Bus Explorer. Application properties only mirror a few fields
for filtering. Secrets are never part of the message: the dispatcher takes them from its own
settings for the target named here.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_V1 = "slipway.build-request/v1"

TriggerKind = Literal["push", "tag", "base-image", "schedule", "manual", "replay", "rerun", "pull-request"]
# Triggers that may build the head of a ref rather than a known commit: a base-image update or a
# schedule can fire before any push of the target was seen.
HEAD_BUILD_TRIGGERS: frozenset[str] = frozenset({"base-image", "schedule"})

# Grammars shared with the task renderer: anything outside them is refused before it can reach
# a task file or a shell.
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
TARGET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
REQUEST_ID_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,100}$")
OCI_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
# distribution's repository grammar: lowercase path components separated by "/".
OCI_REPOSITORY_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
PLATFORM_RE = re.compile(r"^(linux|windows)/(amd64|arm64|arm|386|ppc64le|s390x|riscv64)(/v[5-8])?$")
REGISTRY_RE = re.compile(
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+(:[0-9]{1,5})?$"
)
BUILD_ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
CACHE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The only tags a pull-request build has: pr-<number>[-<hex of its head commit>] (issue #20).
PR_TAG_RE = re.compile(r"^pr-([1-9][0-9]{0,18})(?:-[0-9a-f]{7,64})?$")


def _commit_id(value: str) -> str:
    if not COMMIT_RE.match(value):
        raise ValueError("not a commit id (40 or 64 lowercase hex characters)")
    return value


# A full commit id as a pydantic field type, for payload models that must carry one.
CommitId = Annotated[str, AfterValidator(_commit_id)]


class _Strict(BaseModel):
    # Frozen: a request is a value (``request_prototypes`` shares the parts two requests have in common).
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def check_head_build(commit: str | None, kind: str) -> None:
    # A push or tag build names the commit the sender reported; building whatever the ref
    # points at later would build something nobody pushed.
    if commit is None and kind not in HEAD_BUILD_TRIGGERS:
        raise ValueError(
            f"source.commit is required for a {kind} build; only "
            f"{' and '.join(sorted(HEAD_BUILD_TRIGGERS))} builds may build a ref's head"
        )


class Trigger(_Strict):
    """Why this build exists, and where the event came from."""

    kind: TriggerKind
    provider: str = Field(description="Event sender: github, gitlab, acr, timer, operator, ...")
    delivery_id: str | None = Field(default=None, description="The sender's delivery id, if any.")
    received_at: datetime
    correlation_id: str = Field(description="Follows the request from the webhook to the ACR run.")
    # Set by an operator's trigger (``slipway rerun``) and left out of the JSON when unset, so the
    # body of every other request is unchanged.
    actor: str | None = Field(
        default=None, exclude_if=lambda v: v is None, description="Who asked for a rerun (OS user@host)."
    )
    reason: str | None = Field(
        default=None, exclude_if=lambda v: v is None, description="Why, as the operator said (--reason)."
    )
    rerun_of: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="The request a rerun builds again (same commit, tags and target).",
    )


class Source(_Strict):
    """The exact commit to build (or, for base-image and schedule triggers only, a ref's head)."""

    repo_url: str = Field(description="https clone URL of the repository, without credentials.")
    ref: str = Field(description="Full ref name, e.g. refs/heads/main or refs/tags/v1.2.3.")
    commit: str | None = Field(
        description="Full commit id (40 or 64 hex characters). null builds the head of `ref`, "
        "which only base-image and schedule triggers may ask for."
    )
    context: str = "."
    dockerfile: str = "Dockerfile"
    default_branch: str | None = Field(
        default=None,
        description="The repository's default branch the request was routed with. A push to it is "
        "recorded as the target's last build, which base-image updates rebuild.",
    )

    @field_validator("commit")
    @classmethod
    def _commit(cls, value: str | None) -> str | None:
        if value is not None and not COMMIT_RE.match(value):
            raise ValueError("commit must be a full lowercase hex commit id")
        return value


class Image(_Strict):
    registry: str = Field(description="Registry login server, e.g. myregistry.azurecr.io.")
    repository: str
    tags: list[str] = Field(min_length=1)

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not OCI_REPOSITORY_RE.match(value):
            raise ValueError("repository does not match the OCI repository grammar")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not OCI_TAG_RE.match(tag):
                raise ValueError(f"tag {tag!r} does not match the OCI tag grammar")
        return value


class Cache(_Strict):
    """BuildKit azblob cache names: exported to ``name``, imported from ``name`` and ``from_names``."""

    name: str
    from_names: list[str] = Field(default_factory=list)
    mode: Literal["min", "max"] = "max"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not CACHE_NAME_RE.match(value):
            raise ValueError("cache name must match [A-Za-z0-9][A-Za-z0-9._-]*")
        return value

    @field_validator("from_names")
    @classmethod
    def _from_names(cls, value: list[str]) -> list[str]:
        for name in value:
            cls._name(name)
        return value


class PullRequest(_Strict):
    """The pull (merge) request a ``pull-request`` build builds (issue #20).

    ``push`` says where the result goes: ``none`` builds every platform and writes only the
    request's own cache (the renderer exports with ``type=cacheonly`` and ignores ``image``, which
    only names what is built); ``scratch`` pushes to ``scratch_repository`` under ``pr-<number>``
    tags only, never to the target's repository.
    """

    number: int = Field(ge=1, le=10**18, description="The request's number on its host.")
    head_commit: str = Field(description="The head commit built (full hex id).")
    head_ref: str = Field(description="The head branch, as a full ref (in the head repository).")
    base_ref: str = Field(description="The base (target) branch, as a full ref.")
    fork: bool = Field(description="The head is in another repository than the target's.")
    push: Literal["none", "scratch"]
    scratch_repository: str | None = Field(
        default=None, description="Where push: scratch pushes (never the target's repository)."
    )

    @field_validator("head_commit")
    @classmethod
    def _head_commit(cls, value: str) -> str:
        return _commit_id(value)

    @field_validator("scratch_repository")
    @classmethod
    def _scratch(cls, value: str | None) -> str | None:
        if value is not None and not OCI_REPOSITORY_RE.match(value):
            raise ValueError("scratch_repository does not match the OCI repository grammar")
        return value

    @model_validator(mode="after")
    def _push(self) -> PullRequest:
        if (self.push == "scratch") != (self.scratch_repository is not None):
            raise ValueError("scratch_repository is set exactly when push is scratch")
        return self


def check_pull_request(request: BuildRequest) -> None:
    """A ``pull-request`` trigger goes with a ``pull_request`` section, its head commit and its push."""
    pr = request.pull_request
    if (request.trigger.kind == "pull-request") != (pr is not None):
        raise ValueError("a pull_request section goes with trigger.kind pull-request, and only with it")
    if pr is None:
        return
    if request.source.commit != pr.head_commit:
        raise ValueError("source.commit must be the pull request's head commit")
    if pr.push == "scratch" and request.image.repository != pr.scratch_repository:
        raise ValueError("a pull-request build with push: scratch pushes to its scratch_repository only")
    if any((m := PR_TAG_RE.match(tag)) is None or int(m.group(1)) != pr.number for tag in request.image.tags):
        raise ValueError(f"a pull-request build has pr-{pr.number} tags only")


class BuildRequest(_Strict):
    """One build. ``id`` is deterministic so Service Bus duplicate detection absorbs retries."""

    schema_: Literal["slipway.build-request/v1"] = Field(default="slipway.build-request/v1", alias="schema")
    id: str
    target: str
    trigger: Trigger
    source: Source
    # For a pull-request build: pr-<number> tags only; with push: scratch in the scratch
    # repository, with push: none the target's name of what is built, never pushed
    # (``check_pull_request``; the renderer exports such a build to the cache only).
    image: Image
    platforms: list[str] = Field(min_length=1)
    build_args: dict[str, str] = Field(default_factory=dict)
    cache: Cache
    coalesce_key: str = Field(description="Requests sharing it supersede each other (target + ref).")
    attempt: int = Field(default=0, ge=0)
    replay_of: str | None = None
    pull_request: PullRequest | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Set for trigger.kind pull-request only: the request built and where it goes.",
    )

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not REQUEST_ID_RE.match(value):
            raise ValueError("id must match [a-z0-9][a-z0-9.-]*")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not TARGET_NAME_RE.match(value):
            raise ValueError("target must match [a-z0-9][a-z0-9-]*")
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str]) -> list[str]:
        for platform in value:
            if not PLATFORM_RE.match(platform):
                raise ValueError(f"platform {platform!r} is not os/arch[/variant]")
        return value

    @field_validator("build_args")
    @classmethod
    def _build_args(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not BUILD_ARG_NAME_RE.match(name):
                raise ValueError(f"build arg name {name!r} is not a valid identifier")
        return value

    @model_validator(mode="after")
    def _head_builds(self) -> BuildRequest:
        check_head_build(self.source.commit, self.trigger.kind)
        check_pull_request(self)
        return self

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=False)

    def to_json_bytes(self) -> bytes:
        """``to_json`` as the UTF-8 the serializer makes (a message body), without a str round trip."""
        return self.__pydantic_serializer__.to_json(self, by_alias=True, exclude_none=False)

    @classmethod
    def from_json(cls, data: str | bytes) -> BuildRequest:
        return cls.model_validate_json(data)

    def application_properties(self) -> dict[str, str | int]:
        """Small copies of body fields for filtering in the portal; never read back."""
        properties: dict[str, str | int] = {
            "schema": SCHEMA_V1,
            "target": self.target,
            "trigger": self.trigger.kind,
            "ref": self.source.ref,
            "attempt": self.attempt,
        }
        if self.source.commit is not None:  # a property cannot be null
            properties["commit"] = self.source.commit
        return properties


def _json_string_array(values: tuple[str, ...]) -> str:
    """``json.dumps(values, separators=(",", ":"))`` for strings, byte for byte (ids depend on it),
    without building an encoder on every call."""
    return "[" + ",".join(map(encode_basestring_ascii, values)) + "]"


def request_id(target: str, *parts: str) -> str:
    """Deterministic id: the target (readable in the portal) and a hash of what makes the build unique.

    For a push the parts are ref, commit and platforms: the same commit pushed to two branches
    builds twice (their tags differ), the same delivery retried builds once.
    """
    digest = hashlib.sha256(_json_string_array((target, *parts)).encode()).hexdigest()
    return f"{target}.{digest[:32]}"


def build_request_json_schema() -> dict[str, object]:
    schema = BuildRequest.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://slipway.dev/schemas/build-request.v1.json"
    schema["title"] = "Slipway BuildRequest v1"
    return schema

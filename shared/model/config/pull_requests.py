"""A target's ``pull_requests:`` policy (issue #20): which pull/merge requests may be built, and how.

Off unless enabled; fork requests off unless ``forks`` says otherwise. With ``forks: label`` a
fork request is built only when a maintainer adds ``label``, and a new push to it removes the
trust: the label must be added again. What is checked against the target itself (the scratch
repository differs from ``image``, ``platforms`` a subset of the target's, no fork builds of a
target with a Git token) is in ``Target``.

A fork request's run is never logged in to the registry with the run's own rights (item 5 of
issue #20, ``shared.acr.task.pr_isolation``): what it may read and write there comes only from the
ACR token named by ``fork_registry_token_setting``. Like ``git_token_setting``, that names an app
setting whose value Slipway hands to a build, so it must carry a prefix under which Slipway reads
none of its own settings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.model.build_request import BUILD_ARG_NAME_RE, OCI_REPOSITORY_RE, PLATFORM_RE
from shared.model.config.base import LocatedValueError, StrictModel

# Longest label accepted; GitLab allows 255 characters in a label title, GitHub fewer.
MAX_LABEL_CHARS = 255
# Settings a policy may name as a fork's registry token. Slipway reads none of its own under this
# prefix (tests/test_pr_secrets.py checks it against every setting the code reads).
REGISTRY_TOKEN_SETTING_PREFIX = "REGISTRY_TOKEN_"


class PullRequestPolicy(StrictModel):
    """Whether and how this target builds pull (merge) requests."""

    enabled: bool = Field(default=False, description="Build pull requests at all (default false).")
    branches: list[str] | None = Field(
        default=None,
        description="Globs on the base (target) branch a request is opened against; default: the "
        "target's branches.",
    )
    paths: list[str] = Field(
        default_factory=list,
        description="Build only when a changed file matches; applied only when the changed files are "
        "known (Git hosts' PR events do not list them).",
    )
    forks: Literal["off", "label", "on"] = Field(
        default="off",
        description="Requests whose head is in another repository: off (never built), label (built when "
        "a maintainer adds `label`; a new push needs the label added again), on (always built).",
    )
    label: str | None = Field(
        default=None, description="The maintainer's label that lets a fork request build (forks: label)."
    )
    push: Literal["none", "scratch"] = Field(
        default="none",
        description="none: build and check the platforms, push nothing; scratch: push by digest to "
        "`scratch_repository` under pr-<number> tags only.",
    )
    scratch_repository: str | None = Field(
        default=None,
        description="Repository for push: scratch; must differ from the target's image.",
        json_schema_extra={"pattern": OCI_REPOSITORY_RE.pattern},
    )
    platforms: list[str] | None = Field(
        default=None,
        min_length=1,
        description="A subset of the target's platforms; default: all of them.",
        json_schema_extra={"items": {"type": "string", "pattern": PLATFORM_RE.pattern}},
    )
    fork_registry_token_setting: str | None = Field(
        default=None,
        description="App setting holding `<token name>:<password>` of an ACR token (a scope map: read "
        "on the tool mirror and base images, write on scratch_repository only). A fork request's "
        "run is never logged in to the registry with the run's own rights; it gets this token, "
        f"or nothing. Its name must start with {REGISTRY_TOKEN_SETTING_PREFIX}.",
        json_schema_extra={"pattern": f"^{REGISTRY_TOKEN_SETTING_PREFIX}[A-Z0-9_]+$"},
    )

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip() or len(value) > MAX_LABEL_CHARS or not value.isprintable():
            raise ValueError(f"label must be a label name: printable, not blank, at most {MAX_LABEL_CHARS}")
        return value

    @field_validator("scratch_repository")
    @classmethod
    def _scratch(cls, value: str | None) -> str | None:
        if value is not None and not OCI_REPOSITORY_RE.match(value):
            raise ValueError("scratch_repository must be a repository name such as team/app-pr (lowercase)")
        return value

    @field_validator("fork_registry_token_setting")
    @classmethod
    def _registry_token_setting(cls, value: str | None) -> str | None:
        # The value is handed to the run as registry credentials (the agent logs in with it): a
        # config author must not be able to send any other setting there (a webhook secret, the
        # cache key, a status token).
        if value is None:
            return None
        if not BUILD_ARG_NAME_RE.match(value):  # an app setting name, as git_token_setting's
            raise ValueError("fork_registry_token_setting must be an app setting name")
        if not value.startswith(REGISTRY_TOKEN_SETTING_PREFIX) or value == REGISTRY_TOKEN_SETTING_PREFIX:
            raise ValueError(
                f"fork_registry_token_setting must name a setting starting with "
                f"{REGISTRY_TOKEN_SETTING_PREFIX} (e.g. {REGISTRY_TOKEN_SETTING_PREFIX}PR): its value is "
                "handed to a fork's run as registry credentials, so only settings that hold such a "
                "token may be named"
            )
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str] | None) -> list[str] | None:
        for index, platform in enumerate(value or ()):
            if not PLATFORM_RE.match(platform):
                raise LocatedValueError(
                    f"platform {platform!r} is not os/arch[/variant] (e.g. linux/amd64)", at=(index,)
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PullRequestPolicy:
        if self.forks == "label" and self.label is None:
            raise LocatedValueError("forks: label needs the label a maintainer adds", at=("label",))
        if self.label is not None and self.forks != "label":
            raise LocatedValueError("label is used only with forks: label", at=("label",))
        if self.push == "scratch" and self.scratch_repository is None:
            raise LocatedValueError("push: scratch needs a scratch_repository", at=("scratch_repository",))
        if self.scratch_repository is not None and self.push != "scratch":
            raise LocatedValueError(
                "scratch_repository is used only with push: scratch", at=("scratch_repository",)
            )
        if self.fork_registry_token_setting is not None and self.forks == "off":
            raise LocatedValueError(
                "fork_registry_token_setting is used only with forks: label or on",
                at=("fork_registry_token_setting",),
            )
        return self

"""What ``config validate`` and ``doctor`` add to the models: the renderer's own verdict, and warnings.

The models check each field alone; the renderer (``shared.acr.task``) checks what a run is made
of: the https clone URL of ``repo``, the Dockerfile path inside the repository, the platforms an
ACR Linux agent can build, build argument values, the cache's attribute values, the agent pool.
A configuration the models accept could still have every build refused at dispatch. So a check
renders a representative request of each target exactly as the dispatcher would
(``run_prepare.prepare_run`` with placeholder secrets): a push of its default branch, a push of a
tag when it builds tags, a head build when base images or a schedule rebuild it, and a pull
request when its ``pull_requests:`` policy builds them (a fork's too, when it builds forks: what
its run may hold is decided by the renderer, ``shared.acr.task.pr_isolation``). Each refusal is
reported at the configuration field it comes from.

``check_config_file``/``check_config_text`` hand these checks to the model's loader
(``shared.model.config.parse_checked``), which locates each finding at its line. Imported lazily
(by ``config validate`` and ``doctor``): it pulls in routing and the renderer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from shared.acr.run_prepare import prepare_run
from shared.acr.task import RenderError
from shared.acr.task.secrets import fork_cache_allowed
from shared.intake.base_images import rebuild_request
from shared.intake.pr_policy import PullRequestDecision, host_without_label_events
from shared.intake.pr_routing import request_for_pull_request
from shared.intake.routing import NoImageTags, RouteResult, request_for_commit
from shared.model.build_request import BuildRequest, Trigger, TriggerKind
from shared.model.config import (
    CheckedConfig,
    FieldPath,
    RunSettings,
    SlipwayConfig,
    Target,
    TargetCache,
    ToolImages,
    parse_checked,
    read_config_text,
)
from shared.model.config.pull_requests import PullRequestPolicy
from shared.model.default_branch import (
    default_branch_for,
    host_reports_default_branch,
    is_plain_branch,
    single_plain_branch,
)
from shared.model.events import PullRequestEvent
from shared.model.repo_urls import https_clone_url, normalize_repo
from shared.model.supply_chain import Attestations

# Any full commit id: the renderer checks its form only.
REPRESENTATIVE_COMMIT = hashlib.sha1(b"slipway config check", usedforsecurity=False).hexdigest()
REPRESENTATIVE_TAG = "v1.2.3"
_CHECKED_AT = datetime(2024, 1, 1, tzinfo=UTC)

# Renderer field -> the target's field it comes from.
_TARGET_FIELDS: dict[str, FieldPath] = {
    "source.repo_url": ("repo",),
    "source.context": ("context",),
    "source.dockerfile": ("dockerfile",),
    "image.repository": ("image",),
    "image.tags": ("image_tags",),
    "platforms": ("platforms",),
    "build_args": ("build_args",),
    "git_token_user": ("git_token_user",),
    "cache.name": ("cache", "name"),
    "cache.from_names": ("cache", "name"),
    "cache.mode": ("cache", "mode"),
    "attestations.provenance": ("attestations", "provenance"),
    "git_token_setting": ("git_token_setting",),
    "pull_requests.fork_registry_token_setting": ("pull_requests", "fork_registry_token_setting"),
}
# Renderer field prefixes that name a top-level section of the configuration as they are.
_TOP_LEVEL = ("cache.", "tools.", "run.", "scanner.")


@dataclass(frozen=True)
class _Sample:
    """One representative build of a target, and where its ref came from in the configuration."""

    kind: TriggerKind
    ref: str
    ref_path: FieldPath
    commit: str | None


def _sample_branch(target: Target) -> tuple[str, FieldPath]:
    configured = default_branch_for(target, None)
    if configured is not None:
        return configured, ("default_branch",) if target.default_branch else ("branches", 0)
    for index, branch in enumerate(target.branches):
        if is_plain_branch(branch):
            return branch, ("branches", index)
    return "main", ("branches",)


def _samples(target: Target) -> Iterator[_Sample]:
    branch, branch_path = _sample_branch(target)
    yield _Sample("push", f"refs/heads/{branch}", branch_path, REPRESENTATIVE_COMMIT)
    if target.tags:
        index, tag = next(
            ((i, t) for i, t in enumerate(target.tags) if is_plain_branch(t)), (None, REPRESENTATIVE_TAG)
        )
        yield _Sample(
            "tag", f"refs/tags/{tag}", ("tags",) if index is None else ("tags", index), REPRESENTATIVE_COMMIT
        )


def _field_path(field: str, index: int, sample: _Sample) -> FieldPath:
    target: FieldPath = ("targets", index)
    if sample.kind == "pull-request" and field.startswith("image."):
        return (*target, "pull_requests", "scratch_repository")
    if field == "source.ref":
        return (*target, *sample.ref_path)
    if field in _TARGET_FIELDS:
        return (*target, *_TARGET_FIELDS[field])
    if field.startswith("build_args."):
        return (*target, "build_args", field.removeprefix("build_args."))
    if field == "image.registry":
        return ("registry",)
    if field.startswith(_TOP_LEVEL):
        return tuple(field.split("."))
    return target


def _request_problems(
    config: SlipwayConfig, index: int, sample: _Sample, build: BuildRequest | None
) -> Iterator[tuple[FieldPath, str]]:
    if build is None:
        return
    target = config.targets[index]
    try:
        prepare_run(build, config, target, {})
    except RenderError as exc:
        yield _field_path(exc.field, index, sample), f"every {sample.kind} build would be refused: {exc}"
    except (ValueError, KeyError, AssertionError) as exc:  # a renderer bug must not pass as OK
        yield ("targets", index), f"a {sample.kind} build cannot be rendered: {type(exc).__name__}: {exc}"


def _validation_problems(
    exc: ValidationError, index: int, sample: _Sample
) -> Iterator[tuple[FieldPath, str]]:
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
        field = ".".join(loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        yield (
            _field_path(field, index, sample),
            f"every {sample.kind} build would be refused: {field}: {message}",
        )


def _target_problems(config: SlipwayConfig, index: int) -> Iterator[tuple[FieldPath, str]]:
    """The renderer's refusals of the target's representative builds (each stops at its first)."""
    target = config.targets[index]
    repo_url = https_clone_url(target.repo)
    for sample in _samples(target):
        trigger = Trigger(
            kind=sample.kind, provider="config-check", received_at=_CHECKED_AT, correlation_id="check"
        )
        try:
            build: BuildRequest | None = request_for_commit(
                config, target, ref=sample.ref, commit=sample.commit, repo_url=repo_url, trigger=trigger
            )
        except NoImageTags:
            build = None
        except ValidationError as exc:
            yield from _validation_problems(exc, index, sample)
            continue
        yield from _request_problems(config, index, sample, build)
    if target.base_images or target.schedule:
        kind: TriggerKind = "base-image" if target.base_images else "schedule"
        trigger = Trigger(kind=kind, provider="config-check", received_at=_CHECKED_AT, correlation_id="check")
        branch, branch_path = _sample_branch(target)
        sample = _Sample(kind, f"refs/heads/{branch}", branch_path, None)
        try:
            head = rebuild_request(
                config, target, last=None, trigger=trigger, id_parts=("check",), result=RouteResult()
            )
        except ValidationError as exc:
            yield from _validation_problems(exc, index, sample)
            return
        yield from _request_problems(config, index, sample, head)


def _pull_request_problems(config: SlipwayConfig, index: int) -> Iterator[tuple[FieldPath, str]]:
    """The renderer's verdict on a pull request of the target (issue #20), when it builds them: one
    from the repository itself, and one from a fork when ``forks`` lets forks build."""
    target = config.targets[index]
    if not target.pull_requests.enabled:
        return
    branch, branch_path = _sample_branch(target)
    sample = _Sample("pull-request", f"refs/heads/{branch}", branch_path, REPRESENTATIVE_COMMIT)
    forks = (False, True) if target.pull_requests.forks != "off" else (False,)
    for fork in forks:
        event = PullRequestEvent(
            provider="config-check",
            delivery_id=None,
            received_at=_CHECKED_AT,
            repo_urls=(target.repo,),
            number=1,
            action="opened",
            head_commit=REPRESENTATIVE_COMMIT,
            head_ref="refs/heads/slipway-check",
            head_repo_urls=("https://example.invalid/fork/check.git",) if fork else (target.repo,),
            base_ref=sample.ref,
            fork=fork,
        )
        verdict = PullRequestDecision(
            build=True, reason="check", platforms=tuple(target.pull_requests.platforms or target.platforms)
        )
        try:
            build = request_for_pull_request(event, config, target, verdict, correlation_id="check")
        except ValidationError as exc:
            yield from _validation_problems(exc, index, sample)
            return
        for path, message in _request_problems(config, index, sample, build):
            yield path, message.replace("every pull-request", "every fork pull-request") if fork else message


# What stands in for a refused value so that rendering goes on to the next field (the renderer
# stops at the first refusal; an operator wants every problem at once).
_TARGET_STAND_INS: dict[str, object] = {
    "repo": "https://example.invalid/slipway/check.git",
    "context": ".",
    "dockerfile": "Dockerfile",
    "image": "slipway/check",
    "platforms": ["linux/amd64"],
    "build_args": {},
    "git_token_user": None,
    "image_tags": ["sha-{short_sha}"],
    "cache": TargetCache(),
    "attestations": Attestations(),
    "default_branch": "main",
    "branches": ["main"],
    "tags": [],
    "pull_requests": PullRequestPolicy(),
}
_MAX_ROUNDS = 24


def _stand_in(config: SlipwayConfig, index: int, path: FieldPath) -> SlipwayConfig | None:
    """``config`` with the refused value at ``path`` replaced by one the renderer accepts."""
    target = config.targets[index]
    if path[:2] == ("targets", index) and len(path) > 2:
        name = str(path[2])
        if name == "build_args" and len(path) > 3:
            args = {key: value for key, value in target.build_args.items() if key != path[3]}
            changed = target.model_copy(update={"build_args": args})
        elif name in _TARGET_STAND_INS:
            update = {name: _TARGET_STAND_INS[name]}
            if name in ("default_branch", "branches"):
                update = {"default_branch": "main", "branches": ["main"]}
            changed = target.model_copy(update=update)
        else:
            return None
        targets = [*config.targets[:index], changed, *config.targets[index + 1 :]]
        return config.model_copy(update={"targets": targets})
    section = path[0] if path else None
    if section == "cache":
        return config.model_copy(update={"cache": None})
    if section == "tools":
        return config.model_copy(update={"tools": ToolImages()})
    if section == "run":
        return config.model_copy(update={"run": RunSettings()})
    if section == "scanner":
        targets = [t.model_copy(update={"scan": None}) for t in config.targets]
        return config.model_copy(update={"targets": targets})
    return None


def render_problems(config: SlipwayConfig) -> list[tuple[FieldPath, str]]:
    """(configuration path, message) for each refusal the renderer gives a representative build."""
    problems: dict[tuple[FieldPath, str], None] = {}
    for index in range(len(config.targets)):
        current: SlipwayConfig | None = config
        for _round in range(_MAX_ROUNDS):
            if current is None:
                break
            first = next(_target_problems(current, index), None) or next(
                _pull_request_problems(current, index), None
            )
            if first is None:
                break
            problems[first] = None
            current = _stand_in(current, index, first[0])
    return list(problems)


def default_branch_warnings(config: SlipwayConfig) -> list[tuple[FieldPath, str]]:
    """Targets that need ``default_branch`` and do not set it (see ``shared.model.default_branch``)."""
    warnings: list[tuple[FieldPath, str]] = []
    for index, target in enumerate(config.targets):
        if target.default_branch is not None:
            continue
        host = normalize_repo(target.repo).partition("/")[0]
        only = single_plain_branch(target)
        if not host_reports_default_branch(host):
            guess = (
                f"its one plain branch filter {only!r} is taken as the default"
                if only
                else "no branch is the default (no `latest`, no cache import from it, no last build)"
            )
            warnings.append(
                (
                    ("targets", index),
                    f"{host} does not report the default branch with a push; {guess}: set default_branch",
                )
            )
        elif (target.base_images or target.schedule) and only is None:
            warnings.append(
                (
                    ("targets", index, "branches"),
                    "its rebuilds cannot tell the default branch from these filters until a push of it is "
                    "recorded, and are refused until then: set default_branch",
                )
            )
    return warnings


def fork_cache_warnings(config: SlipwayConfig) -> list[tuple[FieldPath, str]]:
    """Targets whose fork pull requests build without the cache (``cache.auth: account-key``)."""
    if config.cache is None or fork_cache_allowed(config):
        return []
    return [
        (
            ("targets", index, "pull_requests", "forks"),
            "fork pull requests build without the cache: with cache.auth account-key the key would "
            "reach a frontend the fork's Dockerfile names; use cache.auth service-principal",
        )
        for index, target in enumerate(config.targets)
        if target.pull_requests.enabled and target.pull_requests.forks != "off"
    ]


def fork_label_warnings(config: SlipwayConfig) -> list[tuple[FieldPath, str]]:
    """Targets under ``forks: label`` on a host that sends no label events: no fork ever builds.

    A warning, not an error: the configuration is valid (its other requests build), only useless
    for forks; ``forks: on`` or ``off`` says what is meant."""
    warnings: list[tuple[FieldPath, str]] = []
    for index, target in enumerate(config.targets):
        policy = target.pull_requests
        if not (policy.enabled and policy.forks == "label"):
            continue
        if (host := host_without_label_events(target.repo)) is not None:
            warnings.append(
                (
                    ("targets", index, "pull_requests", "forks"),
                    f"forks: label never builds a fork's request here: {host} sends no event when a "
                    "label is added; use forks: on (every fork request builds) or off",
                )
            )
    return warnings


def config_warnings(config: SlipwayConfig) -> list[tuple[FieldPath, str]]:
    """Every warning of ``config validate``: the default branch's, the forks' cache, and the label
    a host never reports."""
    return [*default_branch_warnings(config), *fork_cache_warnings(config), *fork_label_warnings(config)]


def check_config_file(path: str | Path) -> CheckedConfig:
    """``load_config`` plus the renderer's verdict on each target (``config validate``, ``doctor``)."""
    return check_config_text(read_config_text(path), source=str(path))


def check_config_text(text: str, *, source: str) -> CheckedConfig:
    """``parse_config``, then render a representative build of each target as the dispatcher would
    (``render_problems``): a refusal there is a problem here, at the field it comes from, so a
    configuration that checks renders for every target. Also warns where ``default_branch`` is
    needed and unset, where forks build without the cache, and where ``forks: label`` can never
    build a fork (a host without label events). Raises ``ConfigError``."""
    return parse_checked(text, source=source, refusals=render_problems, warnings=config_warnings)

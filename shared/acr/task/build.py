"""The build step's values, validated: what the request and its target make of the build.

The Dockerfile path is relative to the build context directory: with a Git context, BuildKit
reads ``--file`` inside the ``:<subdir>`` it checked out.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.acr.task.pr_isolation import (
    check_branch_caches,
    check_fork_secrets,
    check_pull_request_task,
    is_fork_run,
)
from shared.acr.task.secrets import RunSecrets, fork_cache_allowed
from shared.acr.task.spec import RESULT_MARKER, RenderError
from shared.acr.task.validate import (
    FRAGMENT_REF_RE,
    cache_storage,
    check,
    csv_value,
    git_ref,
    platform_list,
    printable,
    relative_path,
    repo_url,
)
from shared.model.build_request import (
    BUILD_ARG_NAME_RE,
    CACHE_NAME_RE,
    COMMIT_RE,
    HEAD_BUILD_TRIGGERS,
    OCI_REPOSITORY_RE,
    OCI_TAG_RE,
    REGISTRY_RE,
    REQUEST_ID_RE,
    BuildRequest,
)
from shared.model.config import SlipwayConfig, Target
from shared.model.git_auth import GIT_TOKEN_USER_RE, GitAuth, git_auth
from shared.model.supply_chain import ScanGate, is_secret_build_arg


@dataclass(frozen=True)
class BuildValues:
    """The validated values of the build step."""

    request_id: str
    correlation_id: str
    ref: str
    commit: str | None  # None: the head of ``ref`` (base-image and schedule builds)
    source_label: str
    context: str
    dockerfile: str
    platforms: tuple[str, ...]
    images: tuple[str, ...]
    build_args: tuple[tuple[str, str], ...]
    cache_from: str | None
    cache_to: str | None
    cache_key: bool
    git_auth: GitAuth | None  # how the Git token reaches BuildKit; None: no token
    repository: str  # registry/repository, the name every digest is pushed under
    sbom: bool
    provenance: str  # off | min | max
    platform_check: bool
    scan: ScanGate | None
    marker: str = RESULT_MARKER  # printed before every report line (RESULT_MARKER_RE)
    sbom_generator: str = ""  # the generator image as the run pulls it (set with sbom)
    # A pull-request build with push: none: ``--output type=cacheonly``, no image, no digest.
    cache_only: bool = False

    @property
    def gated(self) -> bool:
        """Push by digest and write the release tags only after the gate steps."""
        return self.platform_check or self.scan is not None


def _commit(request: BuildRequest) -> str | None:
    """The commit to build, or None for the ref's head, which only some triggers may ask for."""
    if request.source.commit is None:
        if request.trigger.kind not in HEAD_BUILD_TRIGGERS:
            raise RenderError(
                "source.commit",
                f"is required for a {request.trigger.kind} build (only base-image and "
                "schedule builds may build a ref's head)",
            )
        return None
    return check("source.commit", request.source.commit, COMMIT_RE, "must be a full lowercase hex commit id")


def validate_build(
    request: BuildRequest, config: SlipwayConfig, secrets: RunSecrets, target: Target
) -> BuildValues:
    """Every value of the build step, checked; the Git token's presence decides the Git auth."""
    check("id", request.id, REQUEST_ID_RE, "must match [a-z0-9][a-z0-9.-]*")
    correlation_id = printable("trigger.correlation_id", request.trigger.correlation_id, limit=256)
    ref = git_ref("source.ref", request.source.ref)
    commit = _commit(request)
    source_label, git_url = repo_url("source.repo_url", request.source.repo_url)
    context_dir = relative_path("source.context", request.source.context, allow_root=True)
    dockerfile = relative_path("source.dockerfile", request.source.dockerfile, allow_root=False)
    if commit is None and not FRAGMENT_REF_RE.match(ref):
        raise RenderError(
            "source.ref",
            "a head build needs a branch or tag name of letters, digits and . _ @ + - / "
            "(it is the Git context's fragment); build a commit instead",
        )
    context = f"{git_url}#{commit or ref}" + ("" if context_dir == "." else f":{context_dir}")

    pr = request.pull_request
    fork = is_fork_run(request)
    if pr is not None:  # the isolation rules of a pull-request build (its module says them)
        check_pull_request_task(request, config, target)
        if fork:
            check_fork_secrets(request, target)
    else:
        check_branch_caches(request)
    images: list[str] = []
    pushed_to = _image_names(request.image.registry, request.image.repository, request.image.tags, images)
    if pr is not None and pr.push == "none":  # built and cached, pushed nowhere: no image names
        images, pushed_to = [], ""

    build_args: list[tuple[str, str]] = []
    for name, value in request.build_args.items():
        check("build_args", name, BUILD_ARG_NAME_RE, f"{name!r} is not a valid build arg name")
        build_args.append((name, printable(f"build_args.{name}", value, limit=8192)))

    if target.git_token_user is not None:
        check("git_token_user", target.git_token_user, GIT_TOKEN_USER_RE, "must be a user name without ':'")
    cache_from = cache_to = None
    use_key = False
    # A fork builds without the cache when its credentials would reach the fork (pr_isolation).
    if config.cache is not None and (not fork or fork_cache_allowed(config)):
        account_url, account_name, container, prefix = cache_storage(config.cache)
        names = [request.cache.name, *request.cache.from_names]
        for index, name in enumerate(names):
            where = "cache.name" if index == 0 else "cache.from_names"
            csv_value(where, name)
            check(where, name, CACHE_NAME_RE, "must match [A-Za-z0-9][A-Za-z0-9._-]*")
        if request.cache.mode not in ("min", "max"):
            raise RenderError("cache.mode", "must be min or max")
        unique_names = list(dict.fromkeys(names))
        common = [
            "type=azblob",
            f"account_url={account_url}",
            # Always given: BuildKit would otherwise sign as the host's first label (see config.py).
            f"account_name={account_name}",
            f"container={container}",
            *([f"prefix={prefix}"] if prefix else []),
        ]
        cache_from = ",".join([*common, f"name={';'.join(unique_names)}"])
        cache_to = ",".join(
            [*common, f"name={request.cache.name}", f"mode={request.cache.mode}", "ignore-error=true"]
        )
        use_key = config.cache.auth == "account-key"

    return BuildValues(
        request_id=request.id,
        correlation_id=correlation_id,
        ref=ref,
        commit=commit,
        source_label=source_label,
        context=context,
        dockerfile=dockerfile,
        platforms=platform_list(request.platforms),
        images=tuple(images),
        build_args=tuple(build_args),
        cache_from=cache_from,
        cache_to=cache_to,
        cache_key=use_key,
        git_auth=git_auth(git_url, target.git_token_user) if secrets.git_token and not fork else None,
        repository=pushed_to,
        # push: none exports to the cache only: nothing to attest, inspect or scan; every platform
        # is still built, which is the check a build that pushes nothing can have.
        sbom=target.attestations.sbom and bool(pushed_to),
        provenance=_provenance(target, build_args) if pushed_to else "off",
        platform_check=target.platform_check and bool(pushed_to),
        scan=target.scan if pushed_to else None,
        cache_only=not pushed_to,
    )


def _image_names(registry: str, repository: str, tags: list[str], images: list[str]) -> str:
    """Append each ``registry/repository:tag`` to ``images``, all checked; ``registry/repository``."""
    check("image.registry", registry, REGISTRY_RE, "must be a registry login server")
    check("image.repository", repository, OCI_REPOSITORY_RE, "must match the OCI repository grammar")
    if not tags:
        raise RenderError("image.tags", "at least one tag is required")
    for tag in tags:
        check("image.tags", tag, OCI_TAG_RE, f"{tag!r} does not match the OCI tag grammar")
        image = f"{registry}/{repository}:{tag}"
        if image not in images:
            images.append(image)
    return f"{registry}/{repository}"


def _provenance(target: Target, build_args: list[tuple[str, str]]) -> str:
    """The config refuses max next to a secret-looking build arg; a request's own args are checked too."""
    mode = target.attestations.provenance
    if mode not in ("off", "min", "max"):
        raise RenderError("attestations.provenance", "must be off, min or max")
    secret = [name for name, _value in build_args if is_secret_build_arg(name)]
    if mode == "max" and secret:
        raise RenderError(
            "attestations.provenance",
            f"max would record the values of build_args {', '.join(secret)} in the image; use min",
        )
    return mode


def run_target(request: BuildRequest, config: SlipwayConfig) -> Target:
    """The request's target; one no longer configured builds with the defaults (gates on)."""
    found = config.target(request.target)
    if found is not None:
        return found
    # A pull-request build of a target no longer configured: its release repository is unknown.
    if request.pull_request is not None:
        raise RenderError("target", f"{request.target!r} is not configured; its pull requests are not built")
    return Target.model_construct(
        name=request.target, repo=request.source.repo_url, image=request.image.repository
    )

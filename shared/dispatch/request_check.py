"""Is this queued request one its target could have asked for?

A BuildRequest is plain JSON on a queue that more principals can write than the configuration:
the app's own webhooks, the operator's ``slipway queue send`` and replays, anyone holding the
Service Bus Data Sender role, anyone editing a message in the portal. The dispatcher applies the
*target's* credentials (its Git token, the cache key) to whatever the request names, so a
request must not be able to choose what those credentials are used on. Before anything is
rendered, the dispatcher holds the request against its target: the repository, the ref filters,
the image, the tags the target's rules give that ref, the cache names, the coalesce key
(``<target>:<ref>``), the platforms and the build arguments. A request that asks for more is
refused with a reason an operator can read (and dead-lettered: repairing the message or the
configuration, then replaying, is the way back).

What is checked is "no more than the target allows", not equality: a repaired message may drop
a tag, a platform or a build argument, and a request queued before a configuration change may
still build what it named if the new configuration allows it.

A pull-request request (issue #20) is held against the target's ``pull_requests`` policy instead
(``pull_request_mismatch``): what routing could have made of *some* event of that request. The
head commit and branch are the sender's to name (as a push's commit is), everything the target's
credentials or trust reach is not: the repository, the base branch, the fork policy, the push
mode and the repository it pushes to, ``pr-<n>`` tags of that commit only, its own cache
``<target>-pr-<n>`` (reading only that and the base branch's), and its coalesce key
``<target>:pr-<n>`` (a request on another key could supersede, and so cancel, another build).
"""

from __future__ import annotations

from shared.intake.routing import cache_names, is_valid_ref, ref_refusal
from shared.model.build_request import BuildRequest
from shared.model.cache_names import branch_cache_name, pr_cache_name, pr_tags
from shared.model.config import SlipwayConfig, Target
from shared.model.default_branch import default_branch_for
from shared.model.globs import any_match
from shared.model.repo_urls import normalize_repo
from shared.model.tags import compute_tags


def request_mismatch(request: BuildRequest, config: SlipwayConfig, target: Target) -> str | None:
    """Why ``request`` asks for more than ``target`` allows, or None when it does not."""
    if request.pull_request is not None or request.trigger.kind == "pull-request":
        return pull_request_mismatch(request, config, target)
    source, image = request.source, request.image
    if normalize_repo(source.repo_url) != normalize_repo(target.repo):
        return f"source.repo_url {source.repo_url!r} is not the target's repository {target.repo!r}"
    ref_problem = ref_refusal(target, source.ref)
    if ref_problem is not None:
        return f"source.ref {source.ref!r} is not built by this target: {ref_problem}"
    if (source.context, source.dockerfile) != (target.context, target.dockerfile):
        return (
            f"source.context/dockerfile {source.context!r}/{source.dockerfile!r} are not the target's "
            f"{target.context!r}/{target.dockerfile!r}"
        )
    if target.default_branch is not None and source.default_branch not in {None, target.default_branch}:
        return (
            f"source.default_branch {source.default_branch!r} is not the target's {target.default_branch!r}"
        )
    if (image.registry, image.repository) != (config.registry, target.image):
        return (
            f"image {image.registry}/{image.repository} is not the target's {config.registry}/{target.image}"
        )
    if request.coalesce_key != f"{target.name}:{source.ref}":
        # Requests on one key supersede (and, with cancel_superseded, cancel) each other: a key
        # of the sender's choosing could stop another ref's build.
        return f"coalesce_key {request.coalesce_key!r} is not the target's '{target.name}:{source.ref}'"
    default_branch = default_branch_for(target, source.default_branch)
    allowed_tags = compute_tags(
        target.image_tags, ref=source.ref, commit=source.commit, default_branch=default_branch
    )
    extra_tags = [tag for tag in image.tags if tag not in allowed_tags]
    if extra_tags:
        return (
            f"image.tags {extra_tags} are not given to {source.ref} by the target's tag rules {allowed_tags}"
        )
    if request.cache is not None:
        expected = cache_names(target, ref=source.ref, default_branch=default_branch)
        allowed_from = {expected.name, *expected.from_names}
        if request.cache.name != expected.name or not set(request.cache.from_names) <= allowed_from:
            return (
                f"cache {request.cache.name!r} (from {request.cache.from_names}) is not the target's "
                f"{expected.name!r} (from {expected.from_names})"
            )
    return _platforms_and_args(request, target, list(target.platforms))


def _platforms_and_args(request: BuildRequest, target: Target, platforms: list[str]) -> str | None:
    extra_platforms = sorted(set(request.platforms) - set(platforms))
    if extra_platforms:
        return f"platforms {extra_platforms} are not among the target's {platforms}"
    foreign_args = sorted(k for k, v in request.build_args.items() if target.build_args.get(k) != v)
    if foreign_args:
        return (
            f"build_args {foreign_args} are not the target's (names and values must match the configuration)"
        )
    return None


def pull_request_mismatch(request: BuildRequest, config: SlipwayConfig, target: Target) -> str | None:
    """Why a pull-request ``request`` asks for more than ``target``'s policy allows, or None."""
    pr, policy, source, image = request.pull_request, target.pull_requests, request.source, request.image
    if pr is None or request.trigger.kind != "pull-request":
        return "a pull-request build needs trigger.kind pull-request and its pull_request section"
    if not policy.enabled:
        return "pull-request builds are off for this target (pull_requests.enabled)"
    if normalize_repo(source.repo_url) != normalize_repo(target.repo):
        return f"source.repo_url {source.repo_url!r} is not the target's repository {target.repo!r}"
    for where, ref in (("source.ref", source.ref), ("pull_request.head_ref", pr.head_ref)):
        if not ref.startswith("refs/heads/") or not is_valid_ref(ref):
            return f"{where} {ref!r} is not a branch"
    if source.ref != pr.head_ref:
        return "source.ref must be the pull request's head_ref"
    base = pr.base_ref.removeprefix("refs/heads/")
    branches = policy.branches if policy.branches is not None else target.branches
    if not pr.base_ref.startswith("refs/heads/") or not is_valid_ref(pr.base_ref):
        return f"pull_request.base_ref {pr.base_ref!r} is not a branch"
    if not any_match(branches, base):
        return f"pull_request.base_ref: base branch {base!r} does not match the pull request branch filters"
    if pr.fork and policy.forks == "off":
        return "pull_request.fork: fork pull requests are off for this target"
    if (source.context, source.dockerfile) != (target.context, target.dockerfile):
        return (
            f"source.context/dockerfile {source.context!r}/{source.dockerfile!r} are not the target's "
            f"{target.context!r}/{target.dockerfile!r}"
        )
    if source.default_branch is not None:
        return "source.default_branch is set: a pull-request build is never a target's last build"
    if (pr.push, pr.scratch_repository) != (policy.push, policy.scratch_repository):
        return (
            f"pull_request.push {pr.push!r} (to {pr.scratch_repository!r}) is not the policy's "
            f"{policy.push!r} (to {policy.scratch_repository!r})"
        )
    repository = policy.scratch_repository if policy.push == "scratch" else target.image
    if (image.registry, image.repository) != (config.registry, repository):
        return f"image {image.registry}/{image.repository} is not {config.registry}/{repository}"
    allowed_tags = pr_tags(pr.number, pr.head_commit)
    extra_tags = [tag for tag in image.tags if tag not in allowed_tags]
    if extra_tags:
        return f"image.tags {extra_tags} are not this pull request's {allowed_tags}"
    own = pr_cache_name(target.name, pr.number)
    base_cache = branch_cache_name(target.cache.name, target.name, pr.base_ref)
    if request.cache.name != own or not set(request.cache.from_names) <= {own, base_cache}:
        return (
            f"cache {request.cache.name!r} (from {request.cache.from_names}) is not the pull request's "
            f"{own!r} (from {[base_cache]})"
        )
    if request.coalesce_key != f"{target.name}:pr-{pr.number}":
        return (
            f"coalesce_key {request.coalesce_key!r} is not the pull request's '{target.name}:pr-{pr.number}'"
        )
    return _platforms_and_args(request, target, list(policy.platforms or target.platforms))

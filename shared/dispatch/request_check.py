"""Is this queued request one its target could have asked for?

A BuildRequest is plain JSON on a queue that more principals can write than the configuration:
the app's own webhooks, the operator's ``slipway queue send`` and replays, anyone holding the
Service Bus Data Sender role, anyone editing a message in the portal. The dispatcher applies the
*target's* credentials (its Git token, the cache key) to whatever the request names, so a
request must not be able to choose what those credentials are used on. Before anything is
rendered, the dispatcher holds the request against its target: the repository, the ref filters,
the image, the tags the target's rules give that ref, the cache names, the platforms and the
build arguments. A request that asks for more is refused with a reason an operator can read
(and dead-lettered: repairing the message or the configuration, then replaying, is the way back).

What is checked is "no more than the target allows", not equality: a repaired message may drop
a tag, a platform or a build argument, and a request queued before a configuration change may
still build what it named if the new configuration allows it.
"""

from __future__ import annotations

from shared.intake.routing import cache_names, ref_refusal
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig, Target
from shared.model.default_branch import default_branch_for
from shared.model.repo_urls import normalize_repo
from shared.model.tags import compute_tags


def request_mismatch(request: BuildRequest, config: SlipwayConfig, target: Target) -> str | None:
    """Why ``request`` asks for more than ``target`` allows, or None when it does not."""
    if request.pull_request is not None or request.trigger.kind == "pull-request":
        # Rendered and isolated (shared.acr.task.pr_isolation), but not run until a fork's run
        # gets no secrets and a new head or a close cancels the older build (issue #20, 5 and 6).
        return (
            "pull-request builds are not enabled yet: they run once secrets are withheld from "
            "them and a new head or a close cancels the older build (issue #20)"
        )
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
    extra_platforms = sorted(set(request.platforms) - set(target.platforms))
    if extra_platforms:
        return f"platforms {extra_platforms} are not among the target's {list(target.platforms)}"
    foreign_args = sorted(k for k, v in request.build_args.items() if target.build_args.get(k) != v)
    if foreign_args:
        return (
            f"build_args {foreign_args} are not the target's (names and values must match the configuration)"
        )
    return None

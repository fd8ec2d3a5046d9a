"""The renderer's isolation check of pull-request builds (issue #20, item 4): the last gate.

A pull-request build runs code nobody reviewed, so the task it renders must not be able to reach
anything a branch or tag build trusts. The request is checked against the configuration again,
whoever wrote it (routing, an operator, an edited message):

* **cache**: it writes only ``<target>-pr-<number>`` (``cache.name``), a name in the reserved
  pull-request namespace (``shared.model.cache_names``: no branch or tag cache name can be in it),
  and reads only that and the base branch's cache, never another request's;
* **push**: ``pr-<number>[-<sha>]`` tags only; with ``push: none`` nothing is pushed (the build
  exports to the cache only; ``image`` names the target's image as what is built); with
  ``push: scratch`` it pushes to the target's ``scratch_repository`` only, which must not be any
  target's release repository.

And the other side: a branch or tag build never reads or writes a name of the pull-request
namespace, so even an edited message cannot make a release build import a request's cache.
"""

from __future__ import annotations

from shared.acr.task.spec import RenderError
from shared.model.build_request import BuildRequest
from shared.model.cache_names import PR_TAG_RE, branch_cache_name, is_pr_cache_name, pr_cache_name
from shared.model.config import SlipwayConfig, Target

_GLOB_CHARS = frozenset("*?[")


def check_branch_caches(request: BuildRequest) -> None:
    """A branch, tag or other non-PR build uses no name of the pull-request cache namespace."""
    for where, name in (
        ("cache.name", request.cache.name),
        *(("cache.from_names", n) for n in request.cache.from_names),
    ):
        if is_pr_cache_name(name):
            raise RenderError(
                where,
                f"{name!r} is a pull-request cache name (ends in -pr-<number>); "
                "only that pull request's own build may use it",
            )


def _trusted_cache_names(config: SlipwayConfig, base_ref: str) -> set[str]:
    """Names branch and tag builds of the configuration read: each target's default branch, its
    plain (glob-free) branch filters and the request's base branch. Belt and braces: the naming
    rule already keeps every such name out of the pull-request namespace."""
    names: set[str] = set()
    for t in config.targets:
        refs = {base_ref, *(f"refs/heads/{b}" for b in t.branches if not set(b) & _GLOB_CHARS)}
        if t.default_branch is not None:
            refs.add(f"refs/heads/{t.default_branch}")
        names.update(branch_cache_name(t.cache.name, t.name, ref) for ref in refs)
    return names


def check_pull_request_task(request: BuildRequest, config: SlipwayConfig, target: Target) -> None:
    """Raise ``RenderError`` unless the pull-request build is isolated as the module says."""
    pr = request.pull_request
    if pr is None or request.trigger.kind != "pull-request":
        raise RenderError(
            "pull_request", "a pull-request build needs trigger.kind pull-request and its section"
        )
    if request.source.commit != pr.head_commit:
        raise RenderError("source.commit", "must be the pull request's head commit")

    own = pr_cache_name(request.target, pr.number)
    if request.cache.name != own:
        raise RenderError("cache.name", f"a pull-request build writes only its own cache {own!r}")
    if not is_pr_cache_name(own) or own in _trusted_cache_names(config, pr.base_ref):
        raise RenderError("cache.name", f"{own!r} is a name branch or tag builds read")
    base = branch_cache_name(target.cache.name, target.name, pr.base_ref)
    for name in request.cache.from_names:
        if name not in (own, base):
            raise RenderError(
                "cache.from_names",
                f"a pull-request build reads only its own cache and its base branch's {base!r}, not {name!r}",
            )

    image = request.image
    if image.registry != config.registry:
        raise RenderError("image.registry", f"a pull-request build names only {config.registry!r}")
    for tag in image.tags:
        match = PR_TAG_RE.match(tag)
        if match is None or int(match.group(1)) != pr.number:
            raise RenderError("image.tags", f"{tag!r} is not a pr-{pr.number}[-<sha>] tag")
    if pr.push == "none":  # exported to the cache only: the image only names what is built
        if image.repository != target.image:
            raise RenderError("image.repository", f"push: none names the target's image {target.image!r}")
        return
    allowed = target.pull_requests.scratch_repository
    if image.repository != pr.scratch_repository or image.repository != allowed:
        raise RenderError(
            "image.repository",
            f"a pull-request build pushes only to the target's scratch repository {allowed!r}",
        )
    if image.repository in {t.image for t in config.targets} | {target.image}:
        raise RenderError("image.repository", f"{image.repository!r} is a release repository")

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

A **fork** request's run (``pull_request.fork``: its head is in a repository the target does not
trust) carries nothing a hostile Dockerfile could use beyond its own build (item 5). Whatever the
run holds, the Dockerfile can reach through a build secret (``RUN --mount=type=secret``), a build
argument, or a frontend image it names itself with ``# syntax=``, which BuildKit runs with the
frontend options of the build: the dockerfile frontend forwards them all to that image
(moby/buildkit ``frontend/dockerfile/builder/build.go``, ``forwardGateway``), and they include
``cache-imports``, the JSON of every ``--cache-from`` with its attributes (``client/solve.go``,
``parseCacheOptions``). So a fork's run gets:

* **no Git token**: a target with ``git_token_setting`` is refused (the model refuses ``forks``
  there already; the renderer refuses whatever message reaches it);
* **no build secret**: a build argument whose name looks secret (``is_secret_build_arg``) is
  refused (routing drops them from a fork's request);
* **no cache account key**: with ``cache.auth: account-key`` a fork builds without the cache (the
  key would be in ``cache-imports``); with ``service-principal`` the credentials live in the
  builder's environment, which no build step and no frontend sees;
* **no registry login of the run's own**: ``credentials.sourceRegistry.loginMode`` is ``None``,
  and the only login is the ACR token the target's ``fork_registry_token_setting`` names (read on
  what the run pulls, write on the scratch repository). A run that pulls its tools from the
  registry or pushes there without such a token is refused: it could not run.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.acr.task.spec import RenderError
from shared.model.build_request import BuildRequest
from shared.model.cache_names import PR_TAG_RE, branch_cache_name, is_pr_cache_name, pr_cache_name
from shared.model.config import SlipwayConfig, Target
from shared.model.supply_chain import is_secret_build_arg

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


def is_fork_run(request: BuildRequest) -> bool:
    """A pull request whose head is in another repository: its run gets no secret of the target's."""
    return request.pull_request is not None and request.pull_request.fork


def check_fork_secrets(request: BuildRequest, target: Target) -> None:
    """Raise ``RenderError`` when a fork's run would carry the Git token or a secret build argument."""
    if target.git_token_setting is not None:
        raise RenderError(
            "git_token_setting",
            "a fork pull request's run never gets the Git token (its Dockerfile could read it as a "
            "build secret), and this repository needs one: forks of it are not built",
        )
    secret = sorted(name for name in request.build_args if is_secret_build_arg(name))
    if secret:
        raise RenderError(
            "build_args",
            f"{', '.join(secret)} look secret, and a fork pull request's run gets no build secret "
            "(its Dockerfile reads every build argument)",
        )


def fork_registry_needs(registry: str, pulled: Iterable[str], *, pushes: bool) -> str | None:
    """What a fork's run needs from ``registry`` (the images it pulls from there, a push), or None."""
    prefix = registry.lower() + "/"
    images = [image for image in dict.fromkeys(pulled) if image.lower().startswith(prefix)]
    needs = [f"pulls {', '.join(images)}"] if images else []
    needs += ["pushes to the scratch repository"] if pushes else []
    return " and ".join(needs) or None

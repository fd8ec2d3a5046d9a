"""The images an ACR run pulls besides the build's own (``tools:``), and where it pulls them from.

Every run pulls the Docker CLI (each step's image), BuildKit, binfmt, the SBOM generator and,
with a scan gate, the scanner and ORAS. Most live on Docker Hub, which limits anonymous pulls per
IPv4 address or IPv6 /64 subnet (100 per 6 hours; a multi-platform pull counts once per
architecture: docs.docker.com/docker-hub/usage/pulls/, docker/docs
content/manuals/docker-hub/usage/pulls.md). ACR agents pull anonymously from shared addresses, so
a build can fail on a limit its owner never came near.

So each tool image is pinned in ``slipway.yaml`` and, with ``tools.mirror`` (by default
``{registry}/slipway-tools``), pulled from a copy in the registry the run already logs into:
``docker.io/moby/buildkit:v0.32.2`` is pulled as
``<registry>/slipway-tools/docker.io/moby/buildkit:v0.32.2``. The upstream registry stays in the
path, so two upstreams with the same repository name cannot meet in the mirror. An image already
on the mirror's registry is used as written.

The copies are made by ``az acr import`` (infra/hooks/import-tools.sh, run by ``azd`` after
provisioning), from the list ``slipway tools list --import-plan`` prints from the configuration
itself: one source of truth for what runs pull and what is imported. An image pinned by digest is
imported by that digest (``--source <repo>@sha256:...``, the form ``az acr import`` takes:
Azure/azure-cli ``acr/_params.py``, ``--source``, ``--image``/``-t``, ``--repository``,
``--force``), with every platform of its manifest list (learn.microsoft.com/azure/
container-registry/container-registry-import-images). That the copy keeps the digest is an
INFERENCE from content addressing; if it did not, the pull by digest would fail loudly.

Pulling from the run's own registry needs no new credentials: the step images are pulled by the
agent, which is logged in to it; ``docker buildx create`` pulls the BuildKit image with the CLI's
credentials (docker/buildx driver/docker-container/driver.go: ``RegistryAuthForRef``); that BuildKit
resolves the SBOM generator with the credentials the buildx session carries is an INFERENCE (its
image sources authenticate through the session).

This module imports nothing from Slipway but ``image_refs``: ``shared.model.config`` uses it while its
models are built.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.model.image_refs import DEFAULT_TAG, DOMAIN_RE, PATH_RE, parse_image_reference

if TYPE_CHECKING:
    from shared.model.config import SlipwayConfig

# The ``tools:`` fields that name an image, in the order a run uses them.
TOOL_ROLES = ("docker_cli", "buildkit", "binfmt", "sbom_generator", "oras")
SCANNER_ROLE = "scanner"
MIRROR_PLACEHOLDER = "registry"
DEFAULT_TOOLS_MIRROR = "{registry}/slipway-tools"
# BuildKit's own default generator is docker/buildkit-syft-scanner:stable-1 (moby/buildkit
# frontend/attestations/parse.go, defaultSBOMGenerator): a tag that moves with every 1.x release,
# pulled from Docker Hub on every SBOM build. Pinned here to the newest release, v1.12.0 (the git
# tag in docker/buildkit-syft-scanner; its CI publishes the semver tag without the "v":
# .github/workflows/ci.yaml, type=semver,pattern={{version}}). Tag only: no digest could be read
# from the registry itself; add one in slipway.yaml (tag@sha256:...) to pin the content too.
DEFAULT_SBOM_GENERATOR = "docker.io/docker/buildkit-syft-scanner:1.12.0"


@dataclass(frozen=True)
class ToolImage:
    """One tool image: as configured (normalised), as a run pulls it, and how it is imported."""

    role: str
    upstream: str
    pulled: str
    # ``az acr import --source`` / ``--image`` (``repo:tag``) or ``--repository`` (no tag): set
    # when the image is mirrored into the configuration's own registry.
    import_source: str | None = None
    import_target: str | None = None


def pinned_image_problem(value: str) -> tuple[str | None, str]:
    """(problem, normalised reference): a tool image needs a version tag, optionally with a digest."""
    try:
        reference = parse_image_reference(value)
    except ValueError as exc:
        return str(exc), value
    # parse_image_reference reads "no tag, no digest" as latest; a digest alone names no version.
    if reference.tag is None or reference.tag == DEFAULT_TAG:
        return (
            f"{value!r} is not pinned: name a version tag, ideally with its digest "
            f"({reference.name}:<version>@sha256:<digest>); a moving tag changes what every run executes",
            value,
        )
    return None, str(reference)


# The oldest BuildKit whose azblob cache takes the ``account_name`` attribute, which every run
# passes (Storage refuses a signature made with a name guessed from a custom host): moby/buildkit
# commit ef0a352, first released in v0.12.0 (cache/remotecache/azblob/utils.go).
MIN_BUILDKIT_VERSION = (0, 12, 0)
_VERSION_TAG_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


def buildkit_version_problem(value: str) -> str | None:
    """Why the pinned BuildKit image is too old for the cache attributes a run passes, else None.

    A tag that is no version (a mirror's own naming) cannot be judged and passes.
    """
    tag = value.split("@", 1)[0].rpartition(":")[2]
    match = _VERSION_TAG_RE.match(tag)
    if match is None:
        return None
    version = tuple(int(part) for part in match.groups())
    if version < MIN_BUILDKIT_VERSION:
        oldest = ".".join(map(str, MIN_BUILDKIT_VERSION))
        return (
            f"BuildKit {tag} is too old: the azblob cache's account_name attribute needs v{oldest} or later"
        )
    return None


def mirror_problem(value: str) -> str | None:
    """Why ``value`` is not a registry prefix (``host[/path]``, or ``{registry}[/path]``), else None."""
    text = value.rstrip("/")
    try:
        fields = [part[1] for part in string.Formatter().parse(text) if part[1] is not None]
    except ValueError as exc:
        return f"mirror {value!r} is malformed: {exc}"
    placeholder = "{" + MIRROR_PLACEHOLDER + "}"
    if any(field != MIRROR_PLACEHOLDER for field in fields) or (fields and not text.startswith(placeholder)):
        return (
            f"mirror {value!r}: only {placeholder} is known, and only as the registry "
            f"(e.g. {DEFAULT_TOOLS_MIRROR})"
        )
    host, _slash, path = text.partition("/")
    if host != placeholder and (
        not DOMAIN_RE.match(host) or not ("." in host or ":" in host or host == "localhost")
    ):
        return f"mirror {value!r}: {host!r} is not a registry host (e.g. myregistry.azurecr.io/slipway-tools)"
    if path and (placeholder in path or not PATH_RE.match(path)):
        return f"mirror {value!r}: {path!r} is not a repository path (lowercase, '/'-separated)"
    return None


def mirror_prefix(config: SlipwayConfig) -> str | None:
    """The configured mirror with ``{registry}`` filled in; None when tools are pulled upstream."""
    mirror = config.tools.mirror
    if mirror is None:
        return None
    return mirror.replace("{" + MIRROR_PLACEHOLDER + "}", config.registry, 1)


def resolve_tools(config: SlipwayConfig) -> dict[str, ToolImage]:
    """Every tool image a run of ``config`` may pull, by role (``scanner`` only when configured).

    The renderer validates each ``pulled`` reference again before it writes one into a step.
    """
    configured = {role: getattr(config.tools, role) for role in TOOL_ROLES}
    if config.scanner.image is not None:
        configured[SCANNER_ROLE] = config.scanner.image
    prefix = mirror_prefix(config)
    mirror_host, _slash, mirror_path = (prefix or "").partition("/")
    resolved: dict[str, ToolImage] = {}
    for role, text in configured.items():
        try:
            reference = parse_image_reference(text)
        except ValueError:
            # Only a model built without validation gets here: the renderer refuses it by name.
            resolved[role] = ToolImage(role, text, text)
            continue
        upstream = str(reference)
        if prefix is None or reference.registry == mirror_host.lower():
            resolved[role] = ToolImage(role, upstream, upstream)
            continue
        repository = f"{reference.registry}/{reference.repository}"
        tag = f":{reference.tag}" if reference.tag else ""
        digest = f"@{reference.digest}" if reference.digest else ""
        source = target = None
        if mirror_host.lower() == config.registry.lower():  # a copy the import hook can make
            source = f"{reference.name}{digest}" if digest else upstream
            target = "/".join(part for part in (mirror_path, repository) if part) + tag
        resolved[role] = ToolImage(role, upstream, f"{prefix}/{repository}{tag}{digest}", source, target)
    return resolved


def import_plan(config: SlipwayConfig) -> list[ToolImage]:
    """The mirrored images to import into the configuration's registry, each once."""
    seen: dict[tuple[str | None, str | None], ToolImage] = {}
    for image in resolve_tools(config).values():
        if image.import_source is not None:
            seen.setdefault((image.import_source, image.import_target), image)
    return list(seen.values())

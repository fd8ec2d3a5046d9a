"""What ACR's manifest listing says before any manifest is read, and which manifests need reading.

ACR's listing (``GET /acr/v1/{name}/_manifests``) gives every manifest's ``mediaType`` and
``configMediaType`` beside its digest, times, tags and ``changeableAttributes``
(Azure/acr-cli ``acr/models.go``, ``ManifestAttributesBase``, generated from ACR's API; acr-cli's
own untagged purge, ``cmd/common/image_functions.go`` ``GetUntaggedManifests``, skips fetching
manifests whose listed ``mediaType`` is not a list type). So the graph needs the JSON of:

* indexes and manifest lists, for their children (the listing's ``references`` is not relied on);
* manifests that may be OCI 1.1 referrers (a ``subject``): OCI manifests whose config is not an
  image config (``oras attach``, Notation and cosign referrers use an empty or their own config),
  artifact manifests, anything of unknown type; and an in-toto attestation no index lists.

Never a plain image (Docker schema 2, or OCI with an image config): its age and locks are in the
listing. The one assumption: such an image carries no ``subject``, and an in-toto manifest an
index lists (BuildKit's attestation manifests) carries none either. Pure: the reads are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.platform.oci import (
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_MANIFEST,
    Manifest,
)
from shared.pruning.retention.graph import (
    ManifestNode,
    RepositoryGraph,
    TagNode,
    mark_attestations,
    node_from_manifest,
)

# Image configs (OCI image-spec config.md; Docker's image manifest v2 schema 2 names
# application/vnd.docker.container.image.v1+json for the config).
IMAGE_CONFIG_TYPES = frozenset({MEDIA_TYPE_OCI_CONFIG, "application/vnd.docker.container.image.v1+json"})
# Docker's schema 2 manifest has no ``subject`` field (its spec lists schemaVersion, mediaType,
# config, layers), so it is never a referrer.
PLAIN_MANIFEST_TYPES = frozenset({MEDIA_TYPE_DOCKER_MANIFEST})
# BuildKit's attestation manifests: config ``application/vnd.in-toto+json`` (matched as
# ``node_from_manifest`` does).
IN_TOTO_SUFFIX = "in-toto+json"

# Reads the JSON of the given digests (in parallel, in the backend): digest -> parsed manifest.
ReadMany = Callable[[Sequence[str]], Mapping[str, Manifest]]


@dataclass(frozen=True)
class ListedManifest:
    """One entry of the listing; the media types are None when the listing did not give them."""

    digest: str
    created: datetime | None = None
    locked: bool = False
    media_type: str | None = None
    config_media_type: str | None = None
    references: tuple[str, ...] = ()  # the listing's children of a manifest list, if any


def raw_fields(entry: Mapping[str, Any]) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(mediaType, configMediaType, references' digests) of one raw listing entry."""
    media_type = entry.get("mediaType")
    config = entry.get("configMediaType")
    references = entry.get("references")
    digests = tuple(
        r["digest"]
        for r in (references if isinstance(references, list) else ())
        if isinstance(r, dict) and isinstance(r.get("digest"), str)
    )
    return (
        media_type if isinstance(media_type, str) and media_type else None,
        config if isinstance(config, str) and config else None,
        digests,
    )


def may_be_index(entry: ListedManifest) -> bool:
    """Read first: a list type, a listing that shows references, or a type the listing omitted."""
    return entry.media_type is None or entry.media_type in INDEX_MEDIA_TYPES or bool(entry.references)


def needs_read(entry: ListedManifest, listed_children: frozenset[str] | set[str]) -> bool:
    """Whether anything the planner uses (children, subject) is only in this manifest's JSON."""
    if may_be_index(entry):
        return True
    if entry.media_type in PLAIN_MANIFEST_TYPES:
        return False
    if entry.media_type != MEDIA_TYPE_OCI_MANIFEST or entry.config_media_type is None:
        return True  # an artifact manifest, or an OCI manifest whose config the listing omitted
    if entry.config_media_type in IMAGE_CONFIG_TYPES:
        return False
    # An in-toto manifest an index lists is BuildKit's attestation; any other may be a referrer.
    return not (entry.config_media_type.endswith(IN_TOTO_SUFFIX) and entry.digest in listed_children)


def graph_from_listing(
    repository: str,
    listed: Sequence[ListedManifest],
    read: ReadMany,
    tags: Mapping[str, TagNode],
    *,
    read_everything: bool = False,
) -> RepositoryGraph:
    """The repository graph, reading only what ``needs_read`` names (every manifest if asked).

    Indexes first (their children tell which in-toto manifests are BuildKit attestations), then
    the possible referrers. A manifest not read gets its node from the listing alone.
    """
    first = [e.digest for e in listed if read_everything or may_be_index(e)]
    parsed: dict[str, Manifest] = dict(read(first)) if first else {}
    children = {c.digest for m in parsed.values() if m.is_index for c in m.manifests}
    second = [
        e.digest for e in listed if e.digest not in parsed and (read_everything or needs_read(e, children))
    ]
    if second:
        parsed.update(read(second))
    manifests: dict[str, ManifestNode] = {}
    for entry in listed:
        manifest = parsed.get(entry.digest)
        if manifest is not None:
            manifests[entry.digest] = node_from_manifest(manifest, created=entry.created, locked=entry.locked)
            continue
        config = entry.config_media_type or ""
        manifests[entry.digest] = ManifestNode(
            entry.digest,
            media_type=entry.media_type or "",
            created=entry.created,
            locked=entry.locked,
            kind="attestation" if config.endswith(IN_TOTO_SUFFIX) else "image",
        )
    for manifest in parsed.values():
        if manifest.is_index:
            mark_attestations(manifests, manifest)
    return RepositoryGraph(repository, manifests, dict(tags))

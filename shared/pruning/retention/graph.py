"""One repository as the planner sees it: manifests, what each references, and the tags.

Backends build it by reading manifest JSON (the ACR SDK does not expose references): an index
references its children (platform images and BuildKit's ``unknown/unknown`` attestation
manifests), an OCI 1.1 referrer (signature, SBOM) references its ``subject``. Nothing here talks
to a registry, so property tests can generate graphs freely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from shared.platform.oci import Manifest


@dataclass(frozen=True, slots=True)  # slots: 100k of them stay small (issue 22.5)
class ManifestNode:
    """A manifest in the repository. ``created`` is None when no timestamp could be found."""

    digest: str
    media_type: str = ""
    created: datetime | None = None
    children: tuple[str, ...] = ()  # an index's manifests, in order
    subject: str | None = None  # the manifest this one is about (OCI referrers)
    locked: bool = False  # ACR deleteEnabled: false
    kind: str = "image"  # index, image, attestation or referrer: for the report only


@dataclass(frozen=True, slots=True)
class TagNode:
    """A tag and the manifest it points at; ``updated`` is the registry's time, if it has one."""

    name: str
    digest: str
    updated: datetime | None = None
    locked: bool = False


@dataclass(frozen=True)
class RepositoryGraph:
    repository: str
    manifests: Mapping[str, ManifestNode]
    tags: Mapping[str, TagNode] = field(default_factory=dict)

    def tags_of(self, digest: str) -> list[str]:
        return sorted(t.name for t in self.tags.values() if t.digest == digest)

    def references(self, digest: str) -> tuple[str, ...]:
        """What ``digest`` points at (children, subject) that is in this repository."""
        node = self.manifests.get(digest)
        if node is None:
            return ()
        out = [c for c in node.children if c in self.manifests]
        if node.subject is not None and node.subject in self.manifests:
            out.append(node.subject)
        return tuple(dict.fromkeys(out))

    def referrers(self) -> dict[str, list[str]]:
        """digest → the manifests that point at it (its indexes and its referrers)."""
        incoming: dict[str, list[str]] = {d: [] for d in self.manifests}
        for digest in self.manifests:
            for target in self.references(digest):
                incoming[target].append(digest)
        return incoming

    def owners(self) -> dict[str, list[str]]:
        """digest → what it belongs to: the indexes listing it, and (a referrer) its subject.

        A manifest without owners is top-level: its own tags and age decide its fate; the others
        follow their owners unless something keeps them on their own.
        """
        owned: dict[str, list[str]] = {d: [] for d in self.manifests}
        for digest, node in self.manifests.items():
            for child in dict.fromkeys(node.children):
                if child in self.manifests and child != digest:
                    owned[child].append(digest)
            if node.subject is not None and node.subject in self.manifests and node.subject != digest:
                owned[digest].append(node.subject)
        return owned

    def with_tags(self, tags: Iterable[TagNode]) -> RepositoryGraph:
        """The same manifests under another tag listing (tags re-read just before deleting)."""
        return replace(self, tags={t.name: t for t in tags})


def node_from_manifest(
    manifest: Manifest, *, created: datetime | None = None, locked: bool = False
) -> ManifestNode:
    """The graph node of a parsed manifest: children, subject, and a kind for the report."""
    if manifest.is_index:
        kind = "index"
    elif manifest.subject is not None:
        kind = "referrer"
    elif manifest.config is not None and manifest.config.media_type.endswith("in-toto+json"):
        kind = "attestation"
    else:
        kind = "image"
    return ManifestNode(
        digest=manifest.digest,
        media_type=manifest.media_type,
        created=created,
        children=tuple(d.digest for d in manifest.manifests),
        subject=manifest.subject.digest if manifest.subject is not None else None,
        locked=locked,
        kind=kind,
    )


def mark_attestations(manifests: dict[str, ManifestNode], index: Manifest) -> None:
    """Children an index lists as ``attestation-manifest`` are attestations (for the report)."""
    for descriptor in index.manifests:
        node = manifests.get(descriptor.digest)
        if descriptor.is_attestation and node is not None and node.kind == "image":
            manifests[descriptor.digest] = replace(node, kind="attestation")

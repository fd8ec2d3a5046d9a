"""Retention on any OCI distribution registry, through ``/v2/`` and ``shared.platform.oci.RegistryClient``.

The API has no "list manifests": the graph is what the tags reach (each tagged manifest, an
index's children, recursively) plus any digests the caller already knows (``extra_digests``).
Untagged manifests nothing tagged reaches are therefore invisible here, and stay. Age comes from
the image config's ``created``; an index uses its ``org.opencontainers.image.created``
annotation, else its newest child (the planner does that).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime

from shared.platform.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    Manifest,
    NotFound,
    RegistryClient,
    RegistryError,
)
from shared.pruning.retention.backend import (
    CREATED_ANNOTATION,
    TagDeleteUnsupported,
    config_created,
    parse_timestamp,
)
from shared.pruning.retention.graph import (
    ManifestNode,
    RepositoryGraph,
    TagNode,
    mark_attestations,
    node_from_manifest,
)

_IMAGE_CONFIG_TYPES = frozenset({MEDIA_TYPE_OCI_CONFIG, "application/vnd.docker.container.image.v1+json"})
_MAX_CONFIG_BYTES = 4 * 1024 * 1024
# What registries answer when they cannot delete a tag alone (distribution 2.8: 400 UNSUPPORTED).
_TAG_DELETE_REFUSALS = frozenset({400, 405})


class OciRetentionBackend:
    api = "oci"
    delete_concurrency = 1  # shared.platform.oci.RegistryClient is not made for calls from several threads

    def __init__(self, client: RegistryClient, *, extra_digests: Iterable[str] = ()) -> None:
        self.client = client
        self.registry = client.registry
        self._extra = tuple(extra_digests)

    def list_repositories(self) -> list[str]:
        return sorted(set(self.client.list_repositories()))

    def read_tags(self, repository: str) -> list[TagNode]:
        """Called before every deletion: a tag deleted between listing and resolving is gone."""
        tags: list[TagNode] = []
        for tag in self.client.list_tags(repository):
            try:
                tags.append(TagNode(tag, self.client.resolve_digest(f"{self.registry}/{repository}:{tag}")))
            except NotFound:
                continue
        return tags

    def read_graph(self, repository: str) -> RepositoryGraph:
        tags: dict[str, TagNode] = {}
        manifests: dict[str, ManifestNode] = {}
        parsed: dict[str, Manifest] = {}
        configs: dict[str, datetime | None] = {}
        queue: deque[str] = deque()
        for tag in self.client.list_tags(repository):
            try:
                manifest = self.client.get_manifest(repository, tag)
            except NotFound:
                continue  # deleted between listing and reading
            tags[tag] = TagNode(tag, manifest.digest)
            if manifest.digest not in parsed:
                parsed[manifest.digest] = manifest
                queue.append(manifest.digest)
        for digest in self._extra:
            if digest not in parsed:
                try:
                    parsed[digest] = self.client.get_manifest(repository, digest)
                except NotFound:
                    continue
                queue.append(digest)
        while queue:
            digest = queue.popleft()
            manifest = parsed[digest]
            manifests[digest] = node_from_manifest(
                manifest, created=self._created(repository, manifest, configs)
            )
            for child in manifest.manifests:
                if child.digest in parsed:
                    continue
                try:
                    parsed[child.digest] = self.client.get_manifest(repository, child.digest)
                except NotFound:
                    continue  # an index whose child is already gone: nothing to keep or delete
                queue.append(child.digest)
        for manifest in parsed.values():
            if manifest.is_index:
                mark_attestations(manifests, manifest)
        return RepositoryGraph(repository, manifests, tags)

    def _created(
        self, repository: str, manifest: Manifest, configs: dict[str, datetime | None]
    ) -> datetime | None:
        annotated = parse_timestamp(manifest.annotations.get(CREATED_ANNOTATION))
        if annotated is not None or manifest.is_index:
            return annotated
        config = manifest.config
        if config is None or config.media_type not in _IMAGE_CONFIG_TYPES or config.size > _MAX_CONFIG_BYTES:
            return None
        if config.digest not in configs:
            try:
                blob = self.client.get_blob(repository, config.digest, max_bytes=_MAX_CONFIG_BYTES)
            except NotFound:
                blob = b""
            configs[config.digest] = config_created(blob)
        return configs[config.digest]

    def delete_manifest(self, repository: str, digest: str) -> None:
        try:
            self.client.delete_manifest(repository, digest)
        except NotFound:
            return

    def delete_tag(self, repository: str, tag: str) -> None:
        try:
            self.client.delete_tag(repository, tag)
        except NotFound:
            return
        except RegistryError as exc:
            if exc.status in _TAG_DELETE_REFUSALS:
                raise TagDeleteUnsupported(
                    f"{self.registry} cannot delete tag {repository}:{tag} alone ({exc})"
                ) from exc
            raise

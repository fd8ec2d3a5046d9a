"""What the prune pass needs from a registry, whichever API serves it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Protocol

from shared.pruning.retention.graph import RepositoryGraph, TagNode

CREATED_ANNOTATION = "org.opencontainers.image.created"


class TagDeleteUnsupported(Exception):
    """The registry cannot delete a tag on its own (distribution 2.8): the tag stays."""


class RetentionBackend(Protocol):
    """Reads repositories as graphs and deletes manifests (by digest) and tags."""

    api: str  # "acr" or "oci", for the report
    registry: str
    delete_concurrency: int  # manifest DELETEs in flight at once (capped by the prune pass)

    def list_repositories(self) -> list[str]: ...

    def read_graph(self, repository: str) -> RepositoryGraph: ...

    def read_tags(self, repository: str) -> list[TagNode]:
        """The tags as they are now (re-read just before deleting)."""
        ...

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete by digest (every tag pointing at it goes too); a manifest already gone is fine."""
        ...

    def delete_tag(self, repository: str, tag: str) -> None:
        """Delete one tag, keeping its manifest; raises ``TagDeleteUnsupported`` where impossible."""
        ...


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 time as found in image configs and annotations; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Go writes nanoseconds; Python takes at most microseconds.
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def config_created(config: bytes) -> datetime | None:
    """The ``created`` time of an image config blob."""
    try:
        data = json.loads(config)
    except (ValueError, UnicodeDecodeError):
        return None
    return parse_timestamp(data.get("created")) if isinstance(data, dict) else None

"""BuildKit's azblob cache layout: where manifests and blobs live, and what a manifest references.

BuildKit names its blobs ``filepath.Join(prefix, "manifests", name)`` and
``filepath.Join(prefix, "blobs", digest)`` (so ``ci/blobs/sha256:<hex>``, colon included). A
manifest is BuildKit's cache config JSON; every blob it needs is a ``layers[].blob`` digest, with
its compressed size in ``layers[].annotations.size``. Parsing is hand-written rather than a
pydantic model: the collector parses thousands of manifests per run and the benchmark holds it to
twice the cost of a bare ``json.loads``.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

MANIFESTS_DIR = "manifests"
BLOBS_DIR = "blobs"
STATE_DIR = "slipway-gc"  # the collector's own documents (shared.pruning.cache_gc.candidates); BuildKit's
# importer and exporter only touch manifests/<name> and blobs/<digest>.
# OCI image-spec digest grammar: algorithm ":" encoded.
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


class CorruptManifestError(ValueError):
    """A manifest that cannot be read as a BuildKit cache config: the collector must not sweep."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"manifest {name!r}: {reason}")
        self.name = name
        self.reason = reason


class BlobEntry(NamedTuple):
    """One listed blob: the fields a decision needs (a NamedTuple: a million of them stream by)."""

    name: str
    size: int
    last_modified: datetime
    etag: str


@dataclass(frozen=True)
class CacheLayout:
    """The blob name prefixes of one cache (container + BuildKit ``prefix``)."""

    prefix: str = ""
    manifests_prefix: str = field(init=False)
    blobs_prefix: str = field(init=False)
    candidates_key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifests_prefix", _joined(self.prefix, MANIFESTS_DIR))
        object.__setattr__(self, "blobs_prefix", _joined(self.prefix, BLOBS_DIR))
        object.__setattr__(self, "candidates_key", _joined(self.prefix, STATE_DIR) + "candidates")

    def manifest_key(self, name: str) -> str:
        return self.manifests_prefix + name

    def blob_key(self, digest: str) -> str:
        return self.blobs_prefix + digest

    def manifest_name(self, key: str) -> str:
        return key[len(self.manifests_prefix) :]

    def digest_of(self, key: str) -> str | None:
        """The digest a blob name stands for; None for anything not under ``blobs/``."""
        return key[len(self.blobs_prefix) :] if key.startswith(self.blobs_prefix) else None


def _joined(prefix: str, directory: str) -> str:
    # filepath.Join semantics (cleaned, no leading/trailing slash), plus the "/" a listing needs.
    cleaned = posixpath.normpath(posixpath.join(prefix.strip("/"), directory)).lstrip("/")
    return cleaned + "/"


@dataclass(frozen=True)
class Manifest:
    """One cache name's manifest as read: its version (ETag, last export) and the blobs it needs.

    ``blobs`` maps each referenced digest to its annotated size (0 when BuildKit left it out).
    """

    name: str
    etag: str
    last_modified: datetime
    blobs: Mapping[str, int]

    @property
    def size(self) -> int:
        return sum(self.blobs.values())


def parse_manifest(
    name: str,
    data: bytes,
    *,
    etag: str,
    last_modified: datetime,
    intern: dict[str, str] | None = None,
) -> Manifest:
    """Parse a cache config; raises CorruptManifestError for anything that is not one.

    An object without ``layers`` and ``records`` is refused rather than read as an empty cache:
    treating an unknown document as empty would free every blob it might reference. ``intern``
    shares one string per digest between manifests (thousands of them reference the same layers).
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CorruptManifestError(name, f"not JSON ({exc})") from None
    if not isinstance(document, dict) or not ({"layers", "records"} & document.keys()):
        raise CorruptManifestError(name, "not a BuildKit cache config (no layers or records)")
    layers = document.get("layers")
    if layers is None:
        layers = []
    if not isinstance(layers, list):
        raise CorruptManifestError(name, "layers is not a list")
    blobs: dict[str, int] = {}
    for index, layer in enumerate(layers):
        digest = layer.get("blob") if isinstance(layer, dict) else None
        if not isinstance(digest, str) or not (_is_sha256(digest) or _DIGEST_RE.fullmatch(digest)):
            raise CorruptManifestError(name, f"layers[{index}].blob is not a digest")
        if intern is not None:
            digest = intern.setdefault(digest, digest)
        blobs[digest] = _annotated_size(layer)
    return Manifest(name=name, etag=etag, last_modified=last_modified, blobs=blobs)


def _is_sha256(digest: str) -> bool:
    # The fast path for what BuildKit writes; the regex decides everything else.
    return len(digest) == 71 and digest.startswith("sha256:") and digest[7:].isalnum() and digest.islower()


def _annotated_size(layer: dict[str, Any]) -> int:
    annotations = layer.get("annotations")
    size = annotations.get("size") if isinstance(annotations, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0

"""Generated data of ``bench.cache_gc``: 5,000 BuildKit cache manifests with realistic sharing (a
global pool of base layers, a pool per target shared by its branches, a few layers of its own per
name), a streamed listing of their blobs among unreferenced ones, and a List Blobs XML page."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from shared.pruning.cache_gc.layout import BlobEntry, CacheLayout
from shared.pruning.cache_gc.planner import Policy
from shared.pruning.cache_gc.store import LIST_PAGE_SIZE

NOW = datetime(2026, 11, 30, tzinfo=UTC)
TARGETS, NAMES_PER_TARGET = 500, 10
BASE_POOL, TARGET_POOL = 30, 40
BASE_PER_NAME, TARGET_PER_NAME, OWN_PER_NAME = 4, 12, 6
POLICY = Policy(grace=timedelta(hours=24), max_age=timedelta(days=14), keep_names=("*-main",))


def digest(rng: random.Random) -> str:
    return f"sha256:{rng.getrandbits(256):064x}"


def manifest_bytes(rng: random.Random, digests: list[str]) -> bytes:
    """A BuildKit cache config (layers with annotations, one record per layer), as exported."""
    layers = [
        {
            "blob": d,
            "parent": i - 1,
            "annotations": {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "diffID": digest(rng),
                "size": rng.randrange(100, 50_000_000),
                "createdAt": "2026-11-22T20:20:38.875151572Z",
            },
        }
        for i, d in enumerate(digests)
    ]
    records = [
        {
            "digest": digest(rng),
            "inputs": [[{"selector": "", "link": max(i - 1, 0)}]],
            "layers": [{"layer": i, "createdAt": "2026-11-22T20:20:38.876105686Z"}],
        }
        for i in range(len(digests))
    ]
    return json.dumps({"layers": layers, "records": records}, separators=(",", ":")).encode()


def generate_manifests(seed: int = 8) -> tuple[list[tuple[str, bytes, datetime]], list[str]]:
    """(name, bytes, last export) for every name, and every referenced digest (unique)."""
    rng = random.Random(seed)
    base = [digest(rng) for _ in range(BASE_POOL)]
    referenced = list(base)
    manifests = []
    for target in range(TARGETS):
        pool = [digest(rng) for _ in range(TARGET_POOL)]
        referenced += pool
        for branch in range(NAMES_PER_TARGET):
            own = [digest(rng) for _ in range(OWN_PER_NAME)]
            referenced += own
            digests = rng.sample(base, BASE_PER_NAME) + rng.sample(pool, TARGET_PER_NAME) + own
            name = f"t{target}-main" if branch == 0 else f"t{target}-feature-{branch}"
            exported = NOW - timedelta(hours=rng.randrange(0, 30 * 24))
            manifests.append((name, manifest_bytes(rng, digests), exported))
    return manifests, referenced


def listing_pages(total: int, referenced: list[str], layout: CacheLayout) -> Iterator[list[BlobEntry]]:
    """``total`` blobs in pages of 5,000 (as the service lists them): every referenced digest,
    the rest unreferenced. Streamed: one page exists at a time."""
    times = [NOW - timedelta(hours=h) for h in range(0, 60 * 24, 7)]
    prefix = layout.blobs_prefix
    every = max(1, total // max(1, len(referenced)))
    ref = iter(referenced)
    page: list[BlobEntry] = []
    for i in range(total):
        digest = next(ref, None) if i % every == 0 else None
        name = prefix + (digest or f"sha256:{i:064x}")
        page.append(BlobEntry(name, 1000 + (i & 1023), times[i % len(times)], '"0x1"'))
        if len(page) == LIST_PAGE_SIZE:
            yield page
            page = []
    if page:
        yield page


def listing_xml(entries: list[tuple[str, str]]) -> bytes:
    """One List Blobs response page as the service writes it (Name, Properties/Etag and the rest)."""
    blobs = "".join(
        f"<Blob><Name>{name}</Name><Properties><Creation-Time>Mon, 30 Nov 2026 00:00:00 GMT"
        f"</Creation-Time><Last-Modified>Mon, 30 Nov 2026 00:00:00 GMT</Last-Modified>"
        f"<Etag>{etag}</Etag><Content-Length>4096</Content-Length><Content-Type>"
        "application/octet-stream</Content-Type><BlobType>BlockBlob</BlobType><AccessTier>Hot"
        "</AccessTier><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState>"
        "<ServerEncrypted>true</ServerEncrypted></Properties><OrMetadata /></Blob>"
        for name, etag in entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://a.blob.'
        'core.windows.net/" ContainerName="cache"><Prefix>manifests/</Prefix><MaxResults>5000'
        f"</MaxResults><Blobs>{blobs}</Blobs><NextMarker /></EnumerationResults>"
    ).encode()

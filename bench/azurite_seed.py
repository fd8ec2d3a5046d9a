"""Seeding Azurite with tens of thousands of blobs in seconds, by writing its files while it is stopped.

Through the REST API each write costs Azurite time proportional to every blob it holds: its
metadata store (LokiJS) answers each blob lookup by scanning the whole blob collection
(``Resultset.find`` is most of its CPU time in a ``node --cpu-prof`` profile of uploads), so
seeding is quadratic: 4,000 ledger records took 792 s. The benchmarks that need a big container
therefore let Azurite write a few blobs itself (``--location``, not in memory), stop it (it saves
its database on SIGTERM), append the seeded blobs to its files here, and start it again on the
same folder, where it loads them like any it wrote.

What is written, modelled on a blob Azurite wrote itself in the same container (its template):
one document per blob in the blob collection of ``__azurite_db_blob__.json`` (name, metadata,
properties with a fresh ETag, length, Content-MD5 and content type; ``persistency`` pointing into
one new extent file), that extent's document in ``__azurite_db_blob_extent__.json``, and the
collections' binary indexes rebuilt (LokiJS keeps each as the document positions sorted by the
property, and uses them as loaded). Azurite 3.35.0 (pinned in package-lock.json); ``check`` reads
a seeded blob back through the API, so a change of format fails loudly instead of measuring an
empty container.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BLOB_DB = "__azurite_db_blob__.json"
EXTENT_DB = "__azurite_db_blob_extent__.json"
EXTENT_FOLDER = "__blobstorage__"
_BLOBS = "$BLOBS_COLLECTION$"
_EXTENTS = "$EXTENTS_COLLECTION$"
# The properties set per blob; the rest (blob type, lease state, tier...) are the template's.
_OWN_PROPERTIES = ("creationTime", "lastModified", "etag", "contentLength", "contentType", "contentMD5")


@dataclass(frozen=True)
class SeedBlob:
    container: str
    name: str
    content: bytes = b""
    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"


def _collection(db: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in db["collections"] if c["name"] == name)


def _sort_key(value: object) -> str:
    """LokiJS compares index values as numbers when both parse as numbers: refuse those (every
    value seeded here is a name), so Python's string order is LokiJS's."""
    if not isinstance(value, str):
        raise ValueError(f"unexpected index value {value!r}")
    try:
        number = float(value)
    except ValueError:
        return value
    if value and not math.isnan(number):
        raise ValueError(f"numeric index value {value!r}: LokiJS would order it as a number")
    return value


def _reindex(collection: dict[str, Any]) -> None:
    data = collection["data"]
    for name, index in collection["binaryIndices"].items():
        keys = [_sort_key(doc.get(name, "")) for doc in data]
        index["values"] = sorted(range(len(data)), key=keys.__getitem__)
        index["dirty"] = False


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def seed(location: Path, blobs: Iterable[SeedBlob]) -> int:
    """Append ``blobs`` to the files of the stopped Azurite in ``location``; returns how many.
    Each container must already hold a committed blob Azurite wrote (the template)."""
    db = json.loads((location / BLOB_DB).read_text())
    extent_db = json.loads((location / EXTENT_DB).read_text())
    collection, extents = _collection(db, _BLOBS), _collection(extent_db, _EXTENTS)
    templates = {
        doc["containerName"]: doc for doc in collection["data"] if doc["isCommitted"] and not doc["snapshot"]
    }
    now = datetime.now(UTC)
    stamp, millis = _stamp(now), int(now.timestamp() * 1000)
    extent_id = str(uuid.uuid4())
    next_id, offset, count = collection["maxId"], 0, 0
    with (location / EXTENT_FOLDER / extent_id).open("wb") as out:
        for blob in blobs:
            template = templates[blob.container]
            out.write(blob.content)
            next_id += 1
            properties = {
                **{k: v for k, v in template["properties"].items() if k not in _OWN_PROPERTIES},
                "creationTime": stamp,
                "lastModified": stamp,
                "etag": f'"0x{secrets.randbits(60):015X}"',
                "contentLength": len(blob.content),
                "contentType": blob.content_type,
                "contentMD5": {
                    "type": "Buffer",
                    "data": list(hashlib.md5(blob.content, usedforsecurity=False).digest()),
                },
            }
            if "accessTierChangeTime" in properties:
                properties["accessTierChangeTime"] = stamp
            doc = {
                **{k: v for k, v in template.items() if k != "metadata"},
                "containerName": blob.container,
                "name": blob.name,
                "properties": properties,
                "persistency": {"id": extent_id, "offset": offset, "count": len(blob.content)},
                "meta": {"revision": 0, "created": millis, "version": 0},
                "$loki": next_id,
            }
            if blob.metadata:
                doc["metadata"] = dict(blob.metadata)
            collection["data"].append(doc)
            if isinstance(collection.get("idIndex"), list):
                collection["idIndex"].append(next_id)
            offset += len(blob.content)
            count += 1
    collection["maxId"] = next_id
    _reindex(collection)
    extent_template = extents["data"][0]
    extents["maxId"] += 1
    extents["data"].append(
        {
            **extent_template,
            "id": extent_id,
            "path": extent_id,
            "size": offset,
            "lastModifiedInMS": millis,
            "LastModifyInMS": millis,
            "meta": {"revision": 0, "created": millis, "version": 0},
            "$loki": extents["maxId"],
        }
    )
    if isinstance(extents.get("idIndex"), list):
        extents["idIndex"].append(extents["maxId"])
    _reindex(extents)
    (location / BLOB_DB).write_text(json.dumps(db, separators=(",", ":")))
    (location / EXTENT_DB).write_text(json.dumps(extent_db, separators=(",", ":")))
    return count


def check(container: Any, blob: SeedBlob) -> None:
    """Read ``blob`` back through the API (a ``ContainerClient`` of the restarted Azurite): its
    content and metadata, or AssertionError."""
    found = container.download_blob(blob.name)
    assert found.readall() == blob.content, f"{blob.name}: content differs"
    assert dict(found.properties.metadata or {}) == dict(blob.metadata), f"{blob.name}: metadata differs"

"""A loopback HTTPS ACR data plane for the ``azure-containerregistry`` SDK (pytest plugin).

It answers the calls the SDK makes, with the shapes of ACR's REST API (api-version 2021-07-01):

* ``POST /oauth2/exchange`` (Entra ID token → ACR refresh token) and ``POST /oauth2/token``
  (refresh token + scope → access token); every other call without a token covering its scope
  gets ACR's ``401`` challenge, as the SDK's challenge policy expects.
* ``GET /acr/v1/_catalog``, ``GET /acr/v1/{repo}/_tags``, ``GET /acr/v1/{repo}/_manifests``
  (paginated with ``n``/``last`` and ``Link: <...>; rel="next"``), with timestamps and
  ``changeableAttributes`` (``deleteEnabled: false`` is a lock).
* ``GET``/``DELETE /v2/{repo}/manifests/{ref}`` (a delete removes the manifest's tags; a locked
  manifest or tag answers 405) and ``DELETE /acr/v1/{repo}/_tags/{tag}``.
* ``GET /v2/{repo}/referrers/{digest}[?artifactType=]`` (OCI distribution-spec "Listing
  Referrers"): an image index of the manifests whose ``subject`` is the digest, each descriptor
  with the referrer's ``artifactType`` and annotations, ``OCI-Filters-Applied`` when filtered.
* Quarantine (``quarantine_policy = True``), as Azure/acr docs/preview/quarantine/readme.md
  describes it: every manifest added is quarantined; ``GET /v2/{repo}/manifests/{ref}`` of a
  manifest not ``Passed`` answers "manifest not found" by tag and "The operation is disallowed"
  by digest unless the caller may read quarantined images (``quarantine_reader``);
  ``GET /acr/v1/{repo}/_manifests/{digest}`` (scope ``pull``) shows ``quarantineState`` and
  ``PATCH`` (scope ``pull,push``) sets it, refusing any body but the readme's two keys and any
  ``quarantineDetails`` outside the published schema (``quarantine_details_problems``).

Tests seed it with ``add_manifest``/``add_index``/``tag`` and read back ``requests`` and the state.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlencode

import pytest
import trustme

from shared.platform.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    compute_digest,
)
from shared.pruning.retention.acr_backend import AcrRetentionBackend
from tests.support.fake_acr import FakeAcr
from tests.support.loopback_server import Answer, RecordedRequest, loopback_tls, serve_loopback
from tests.support.token_realm import covers

API_VERSION = "2021-07-01"
_DELETE_DENIED = "The operation is disallowed on this registry, repository or image."
# What the readme shows a by-digest pull of a quarantined image answer; the HTTP status is not
# documented (403 here: any non-2xx must stop a client).
_QUARANTINE_DENIED = "The operation is disallowed."
# The state a fresh push reports before anyone marks it is not documented; clients only compare
# it with the state they set.
QUARANTINED = "Quarantined"

# -- the quarantineDetails schema, as Azure/acr publishes it ----------------------------------------
# https://github.com/Azure/acr/blob/main/docs/preview/quarantine/quarantine-details/schema.json
# (commit 81b818eba36f77132a40ff3027897d2a830792f9, draft-04): "additionalProperties": false;
# properties scanner, state, link ("type": "string") and result ($ref summary). summary: version
# (string) and summary (array, "minItems": 0, "maxItems": 5) are required, description is a
# string of "maxLength": 1024; each summary item has severity (enum below) and count (integer).
# The readme's PATCH sends it as "[json string of detailed results]".
SCHEMA_TOP_LEVEL = {"scanner": str, "state": str, "link": str, "result": dict}
SCHEMA_RESULT = {"version": str, "summary": list, "description": str}
SCHEMA_RESULT_REQUIRED = {"version", "summary"}
SCHEMA_SEVERITIES = {"Critical", "High", "Medium", "Low", "None"}
SCHEMA_MAX_SUMMARY_ITEMS = 5
SCHEMA_MAX_DESCRIPTION = 1024


def _typed(value: Any, kind: type) -> bool:
    # JSON null is never one of the schema's types; a JSON boolean is not an integer.
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def quarantine_details_problems(text: Any) -> list[str]:
    """Why ``text`` is not a JSON string of a schema-valid quarantineDetails object (empty: it is)."""
    if not isinstance(text, str):
        return ["quarantineDetails must be a string holding JSON"]
    try:
        details = json.loads(text)
    except ValueError:
        return ["quarantineDetails is not JSON"]
    if not isinstance(details, dict):
        return ["quarantineDetails must be a JSON object"]
    problems = [f"unknown key {key!r}" for key in details if key not in SCHEMA_TOP_LEVEL]
    problems += [
        f"{key} must be {kind.__name__}, not {details[key]!r}"
        for key, kind in SCHEMA_TOP_LEVEL.items()
        if key in details and not _typed(details[key], kind)
    ]
    result = details.get("result")
    if not isinstance(result, dict):
        return problems
    problems += [f"result has no {key}" for key in sorted(SCHEMA_RESULT_REQUIRED - set(result))]
    problems += [
        f"result.{key} must be {kind.__name__}, not {result[key]!r}"
        for key, kind in SCHEMA_RESULT.items()
        if key in result and not _typed(result[key], kind)
    ]
    description = result.get("description")
    if isinstance(description, str) and len(description) > SCHEMA_MAX_DESCRIPTION:
        problems.append(f"result.description is longer than {SCHEMA_MAX_DESCRIPTION}")
    items = result.get("summary")
    if isinstance(items, list):
        if len(items) > SCHEMA_MAX_SUMMARY_ITEMS:
            problems.append(f"result.summary has more than {SCHEMA_MAX_SUMMARY_ITEMS} items")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                problems.append(f"result.summary[{i}] must be an object")
                continue
            if "severity" in item and item["severity"] not in SCHEMA_SEVERITIES:
                problems.append(f"result.summary[{i}].severity {item['severity']!r} is not in the enum")
            if "count" in item and not _typed(item["count"], int):
                problems.append(f"result.summary[{i}].count must be an integer")
    return problems


def acr_time(value: datetime) -> str:
    """ACR's timestamp format: seven fractional digits and ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


@dataclass
class StoredManifest:
    body: bytes
    media_type: str
    created: datetime
    delete_enabled: bool = True
    write_enabled: bool = True
    quarantine_state: str | None = None
    quarantine_details: str | None = None

    def attributes(self, digest: str, tags: list[str]) -> dict[str, Any]:
        content = json.loads(self.body)
        entry: dict[str, Any] = {
            "digest": digest,
            "imageSize": len(self.body),
            "createdTime": acr_time(self.created),
            "lastUpdateTime": acr_time(self.created),
            "mediaType": self.media_type,
            "tags": tags,
            "changeableAttributes": _changeable(self.delete_enabled, self.write_enabled),
        }
        if self.quarantine_state is not None:
            entry["quarantineState"] = self.quarantine_state
        if self.quarantine_details is not None:
            entry["quarantineDetails"] = self.quarantine_details
        if "config" in content:
            entry["configMediaType"] = content["config"]["mediaType"]
        if "manifests" in content:
            entry["references"] = [
                {
                    "digest": child["digest"],
                    "architecture": child.get("platform", {}).get("architecture"),
                    "os": child.get("platform", {}).get("os"),
                }
                for child in content["manifests"]
            ]
        return entry


@dataclass
class StoredTag:
    digest: str
    updated: datetime
    delete_enabled: bool = True


@dataclass
class StoredRepository:
    manifests: dict[str, StoredManifest] = field(default_factory=dict)
    tags: dict[str, StoredTag] = field(default_factory=dict)


def _changeable(delete_enabled: bool, write_enabled: bool = True) -> dict[str, bool]:
    return {
        "deleteEnabled": delete_enabled,
        "writeEnabled": write_enabled,
        "readEnabled": True,
        "listEnabled": True,
    }


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> Answer:
    body = json.dumps(data).encode()
    return Answer(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    return _json(status, {"errors": [{"code": code, "message": message}]}, headers)


class AcrDataPlane(FakeAcr):
    """State and request handling of one fake registry; the token endpoints are ``FakeAcr``'s."""

    require_tenant = False  # the SDK's exchange sends none

    def __init__(self, ca_path: str) -> None:
        super().__init__(ca_path)
        self.repositories: dict[str, StoredRepository] = {}
        self.page_size = 2  # small pages, so the SDK's Link pagination is exercised
        self.quarantine_policy = False  # the registry policy: new manifests start quarantined
        self.quarantine_reader = True  # the caller holds AcrQuarantineReader/Writer
        self.patches: list[RecordedRequest] = []  # accepted quarantine PATCHes, in order
        self.referrers_api = True  # False: /v2/<repo>/referrers/<digest> answers 404, as before OCI 1.1

    # -- seeding ---------------------------------------------------------------------------------

    def add_manifest(
        self,
        repo: str,
        content: dict[str, Any],
        *,
        created: datetime,
        locked: bool = False,
        media_type: str = MEDIA_TYPE_OCI_MANIFEST,
    ) -> str:
        body = json.dumps({"schemaVersion": 2, "mediaType": media_type, **content}).encode()
        digest = compute_digest(body)
        repository = self.repositories.setdefault(repo, StoredRepository())
        stored = StoredManifest(body, media_type, created, not locked)
        if self.quarantine_policy:
            stored.quarantine_state = QUARANTINED
        repository.manifests[digest] = stored
        return digest

    def quarantine_state(self, repo: str, digest: str) -> str | None:
        return self.repositories[repo].manifests[digest].quarantine_state

    def quarantine_details(self, repo: str, digest: str) -> dict[str, Any]:
        text = self.repositories[repo].manifests[digest].quarantine_details
        assert text is not None, f"{repo}@{digest} has no quarantineDetails"
        data = json.loads(text)
        assert isinstance(data, dict)
        return data

    def add_platform_image(self, repo: str, *, created: datetime, locked: bool = False, **extra: Any) -> str:
        """A content-free image manifest (the SDK never reads blobs for retention)."""
        nonce = uuid.uuid4().hex
        config = {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": compute_digest(nonce.encode()), "size": 32}
        return self.add_manifest(
            repo, {"config": config, "layers": [], **extra}, created=created, locked=locked
        )

    def add_index(self, repo: str, *, created: datetime) -> tuple[str, list[str]]:
        """A buildx-style index: two platform images and an attestation for each; (index, children)."""
        descriptors = []
        images = []
        for arch in ("amd64", "arm64"):
            digest = self.add_platform_image(repo, created=created)
            images.append(digest)
            descriptors.append(
                self._descriptor(repo, digest, {"platform": {"os": "linux", "architecture": arch}})
            )
        for image in images:
            att = self.add_platform_image(repo, created=created)
            annotations = {
                "vnd.docker.reference.digest": image,
                "vnd.docker.reference.type": "attestation-manifest",
            }
            descriptors.append(
                self._descriptor(
                    repo,
                    att,
                    {"platform": {"os": "unknown", "architecture": "unknown"}, "annotations": annotations},
                )
            )
        index = self.add_manifest(
            repo, {"manifests": descriptors}, created=created, media_type=MEDIA_TYPE_OCI_INDEX
        )
        return index, [d["digest"] for d in descriptors]

    def add_referrer(
        self,
        repo: str,
        subject: str,
        *,
        artifact_type: str,
        annotations: dict[str, str],
        created: datetime,
    ) -> str:
        """An artifact about ``subject``, as ``oras attach`` pushes it: a manifest with ``subject``."""
        empty = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": compute_digest(b"{}"), "size": 2}
        return self.add_manifest(
            repo,
            {
                "artifactType": artifact_type,
                "config": empty,
                "layers": [],
                "subject": self._descriptor(repo, subject, {}),
                "annotations": annotations,
            },
            created=created,
        )

    def _descriptor(self, repo: str, digest: str, extra: dict[str, Any]) -> dict[str, Any]:
        stored = self.repositories[repo].manifests[digest]
        return {"mediaType": stored.media_type, "digest": digest, "size": len(stored.body), **extra}

    def tag(self, repo: str, name: str, digest: str, *, updated: datetime, locked: bool = False) -> None:
        self.repositories[repo].tags[name] = StoredTag(digest, updated, not locked)

    def deletes(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "DELETE"]

    # -- request handling ------------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> Answer:
        with self._lock:
            self.requests.append(request)
        path = unquote(request.path)
        if path == "/oauth2/exchange":
            return self._exchange(request)
        if path == "/oauth2/token":
            return self._token(request)
        if path.startswith("/acr/") and request.params.get("api-version", [API_VERSION]) != [API_VERSION]:
            return _error(400, "UNSUPPORTED", f"api-version must be {API_VERSION}")
        route = self._route(request.method, path)
        if route is None:
            return _error(404, "NAME_UNKNOWN", f"no route for {request.method} {path}")
        scope, action = route
        auth = request.headers.get("authorization", "")
        with self._lock:
            granted = (
                self._access_tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
            )
        if granted is None or not covers(granted, scope):
            challenge = (
                f'Bearer realm="{self.url}/oauth2/token",service="{self.login_server}",scope="{scope}"'
            )
            return _error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge})
        with self._lock:
            return action(request)

    def _route(self, method: str, path: str) -> tuple[str, Callable[[RecordedRequest], Answer]] | None:
        if method == "GET" and path == "/acr/v1/_catalog":
            return "registry:catalog:*", self._catalog
        if match := re.fullmatch(r"/acr/v1/(?P<repo>.+)/_manifests/(?P<digest>sha256:[0-9a-f]{64})", path):
            if method == "GET":
                return f"repository:{match['repo']}:pull", lambda r: self._manifest_attributes(
                    match["repo"], match["digest"]
                )
            if method == "PATCH":
                return f"repository:{match['repo']}:pull,push", lambda r: self._patch_quarantine(
                    r, match["repo"], match["digest"]
                )
            return None
        if match := re.fullmatch(r"/acr/v1/(?P<repo>.+)/_tags/(?P<tag>[^/]+)", path):
            if method == "DELETE":
                return f"repository:{match['repo']}:delete", lambda r: self._delete_tag(
                    match["repo"], match["tag"]
                )
            return None
        if method == "GET" and (
            match := re.fullmatch(r"/acr/v1/(?P<repo>.+)/_(?P<kind>tags|manifests)", path)
        ):
            listing = self._tags if match["kind"] == "tags" else self._manifests
            return f"repository:{match['repo']}:metadata_read", lambda r: listing(r, match["repo"])
        referrers = re.fullmatch(r"/v2/(?P<repo>.+)/referrers/(?P<digest>[^/]+)", path)
        if method == "GET" and self.referrers_api and (match := referrers):
            return f"repository:{match['repo']}:pull", lambda r: self._referrers(
                r, match["repo"], match["digest"]
            )
        if match := re.fullmatch(r"/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)", path):
            if method in {"GET", "HEAD"}:
                return f"repository:{match['repo']}:pull", lambda r: self._get(match["repo"], match["ref"])
            if method == "DELETE":
                return f"repository:{match['repo']}:delete", lambda r: self._delete(
                    match["repo"], match["ref"]
                )
        return None

    def _page(
        self, request: RecordedRequest, path: str, items: list[Any], key: Any
    ) -> tuple[list[Any], dict[str, str]]:
        """ACR's ``n``/``last`` paging, with the next page in a ``Link`` header."""
        size = int(request.params.get("n", [str(self.page_size)])[0])
        last = request.params.get("last", [None])[0]
        ordered = sorted(items, key=key)
        if last is not None:
            ordered = [item for item in ordered if key(item) > last]
        page = ordered[:size]
        headers = {}
        if len(ordered) > size:
            query = urlencode({"last": key(page[-1]), "n": size})
            headers["Link"] = f'<{path}?{query}>; rel="next"'
        return page, headers

    def _catalog(self, request: RecordedRequest) -> Answer:
        page, headers = self._page(request, "/acr/v1/_catalog", list(self.repositories), lambda name: name)
        return _json(200, {"repositories": page}, headers)

    def _repository(self, repo: str) -> StoredRepository | None:
        return self.repositories.get(repo)

    def _tags(self, request: RecordedRequest, repo: str) -> Answer:
        repository = self._repository(repo)
        if repository is None:
            return _error(404, "NAME_UNKNOWN", "repository name not known to registry")
        entries = [
            {
                "name": name,
                "digest": tag.digest,
                "createdTime": acr_time(tag.updated),
                "lastUpdateTime": acr_time(tag.updated),
                "signed": False,
                "changeableAttributes": _changeable(tag.delete_enabled),
            }
            for name, tag in repository.tags.items()
        ]
        page, headers = self._page(request, f"/acr/v1/{repo}/_tags", entries, lambda e: e["name"])
        return _json(200, {"registry": self.login_server, "imageName": repo, "tags": page}, headers)

    def _manifests(self, request: RecordedRequest, repo: str) -> Answer:
        repository = self._repository(repo)
        if repository is None:
            return _error(404, "NAME_UNKNOWN", "repository name not known to registry")
        entries = [
            stored.attributes(digest, sorted(n for n, t in repository.tags.items() if t.digest == digest))
            for digest, stored in repository.manifests.items()
        ]
        page, headers = self._page(request, f"/acr/v1/{repo}/_manifests", entries, lambda e: e["digest"])
        return _json(200, {"registry": self.login_server, "imageName": repo, "manifests": page}, headers)

    def _resolve(self, repo: str, ref: str) -> tuple[str, StoredManifest] | None:
        repository = self._repository(repo)
        if repository is None:
            return None
        digest = repository.tags[ref].digest if ref in repository.tags else ref
        stored = repository.manifests.get(digest)
        return None if stored is None else (digest, stored)

    def _get(self, repo: str, ref: str) -> Answer:
        found = self._resolve(repo, ref)
        if found is None:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        digest, stored = found
        if self.quarantine_policy and stored.quarantine_state != "Passed" and not self.quarantine_reader:
            if ref != digest:
                return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            return _error(403, "DENIED", _QUARANTINE_DENIED)
        return Answer(200, {"Content-Type": stored.media_type, "Docker-Content-Digest": digest}, stored.body)

    def _referrers(self, request: RecordedRequest, repo: str, digest: str) -> Answer:
        wanted = request.params.get("artifactType", [None])[0]
        repository = self._repository(repo)
        found = []
        for referrer, stored in repository.manifests.items() if repository is not None else ():
            content = json.loads(stored.body)
            if content.get("subject", {}).get("digest") != digest:
                continue
            if wanted is not None and content.get("artifactType") != wanted:
                continue
            descriptor = {"mediaType": stored.media_type, "digest": referrer, "size": len(stored.body)}
            descriptor["artifactType"] = content.get("artifactType")
            descriptor["annotations"] = content.get("annotations", {})
            found.append(descriptor)
        body = json.dumps(
            {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": found}
        ).encode()
        headers = {"Content-Type": MEDIA_TYPE_OCI_INDEX}
        if wanted is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        return Answer(200, headers, body)

    def _manifest_attributes(self, repo: str, digest: str) -> Answer:
        repository = self._repository(repo)
        stored = repository.manifests.get(digest) if repository is not None else None
        if repository is None or stored is None:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        tags = sorted(n for n, t in repository.tags.items() if t.digest == digest)
        body = {"registry": self.login_server, "imageName": repo, "manifest": stored.attributes(digest, tags)}
        return _json(200, body)

    def _patch_quarantine(self, request: RecordedRequest, repo: str, digest: str) -> Answer:
        repository = self._repository(repo)
        stored = repository.manifests.get(digest) if repository is not None else None
        if repository is None or stored is None:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return _error(400, "BAD_REQUEST", "JSON body required")
        try:
            patch = json.loads(request.body)
        except ValueError:
            return _error(400, "BAD_REQUEST", "the body is not JSON")
        # The readme's payload: {"quarantineState": "[Passed|Failed]", "quarantineDetails": "<json>"}.
        if not isinstance(patch, dict) or set(patch) != {"quarantineState", "quarantineDetails"}:
            return _error(400, "BAD_REQUEST", "quarantineState and quarantineDetails, nothing else")
        if patch["quarantineState"] not in ("Passed", "Failed"):
            return _error(400, "BAD_REQUEST", "quarantineState must be Passed or Failed")
        problems = quarantine_details_problems(patch["quarantineDetails"])
        if problems:
            return _error(400, "BAD_REQUEST", "; ".join(problems))
        self.patches.append(request)
        stored.quarantine_state = patch["quarantineState"]
        stored.quarantine_details = patch["quarantineDetails"]
        return self._manifest_attributes(repo, digest)

    def _delete(self, repo: str, digest: str) -> Answer:
        repository = self._repository(repo)
        found = self._resolve(repo, digest) if ":" in digest else None
        if repository is None or found is None:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        tags = [n for n, t in repository.tags.items() if t.digest == digest]
        stored = found[1]
        if not (stored.delete_enabled and stored.write_enabled) or any(
            not repository.tags[n].delete_enabled for n in tags
        ):  # ACR: writeEnabled=false blocks deletion as deleteEnabled=false does
            return _error(405, "UNSUPPORTED", _DELETE_DENIED)
        del repository.manifests[digest]
        for name in tags:
            del repository.tags[name]
        return Answer(202, {"Docker-Content-Digest": digest})

    def _delete_tag(self, repo: str, tag: str) -> Answer:
        repository = self._repository(repo)
        if repository is None or tag not in repository.tags:
            return _error(404, "TAG_UNKNOWN", "tag unknown")
        if not repository.tags[tag].delete_enabled:
            return _error(405, "UNSUPPORTED", _DELETE_DENIED)
        del repository.tags[tag]
        return Answer(202, {})


@pytest.fixture
def acr_dataplane(oci_test_ca: tuple[trustme.CA, str]) -> Iterator[AcrDataPlane]:
    """A fresh fake ACR data plane over HTTPS (certificate for 127.0.0.1 from ``oci_test_ca``)."""
    ca, ca_path = oci_test_ca
    plane = AcrDataPlane(ca_path)
    with serve_loopback(plane.handle, tls=loopback_tls(ca)) as port:
        plane.port = port
        yield plane


__all__ = [
    "API_VERSION",
    "QUARANTINED",
    "AcrDataPlane",
    "acr_dataplane",
    "acr_time",
    "quarantine_details_problems",
]


class MovesLatestAtFirstDelete(AcrRetentionBackend):
    """The SDK backend; as its first manifest deletion goes out, ``latest`` is moved to ``target``
    (a rollback, or a push, racing a retention pass)."""

    plane: AcrDataPlane
    target: str
    moved = False

    def delete_manifest(self, repository: str, digest: str) -> None:
        if not self.moved:
            self.moved = True
            self.plane.tag(repository, "latest", self.target, updated=datetime.now(UTC))
        super().delete_manifest(repository, digest)

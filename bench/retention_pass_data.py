"""The registry ``bench.retention_pass`` prunes: buildx-shaped repositories on the loopback ACR.

Each repository holds ``builds`` builds of one pipeline, an hour apart, the newest an hour old:
an OCI index with two platform images and their two in-toto attestations (what ``docker buildx
build --platform linux/amd64,linux/arm64`` pushes with provenance), a signature (a referrer with
``subject``) on every tenth index, a ``build-N`` tag on every fourth, a ``release-N`` tag on every
25th, ``latest`` on the newest, and an untagged leftover image after every seventh untagged build.
About 5.3 manifests a build. ``RULE`` keeps ``latest``, ``release-*``, the five newest other tags
and anything younger than half the builds: about half of every repository is deleted.

The content is a pure function of (repository, build, part), so a reset registry has the same
digests (the floor replays the pass's requests on it); only the times follow the clock.

``FastListing`` is ``tests.support.acr_dataplane.AcrDataPlane`` with its listing made cheap
(sorted digests and prebuilt entries instead of re-reading every manifest's JSON on each page),
so that at 100k manifests the server is not what the benchmark measures.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trustme

from shared.model.retention_rules import ImageRule
from shared.platform.oci import MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST
from tests.support.acr_dataplane import AcrDataPlane, StoredRepository, _json
from tests.support.loopback_server import (
    Answer,
    RecordedRequest,
    _FunctionHandler,
    _FunctionServer,
    bind_loopback,
    loopback_tls,
    port_of,
    serving,
)

PER_BUILD = 5.3  # manifests a build, on average (index, 4 children, a tenth signature, leftovers)
IN_TOTO_CONFIG = "application/vnd.in-toto+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"


def rule_for(builds: int) -> ImageRule:
    """Keep latest, release-*, the five newest other tags, and the younger half of the builds."""
    return ImageRule(
        repositories=["app-*"],
        keep_tags=["latest", "release-*"],
        keep_newest=5,
        min_age=f"{max(1, builds // 2)}h",
    )


def repository_names(count: int) -> list[str]:
    return [f"app-{n:04d}" for n in range(count)]


def builds_for(manifests_per_repository: int) -> int:
    return max(1, round(manifests_per_repository / PER_BUILD))


def _blob(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def seed(plane: AcrDataPlane, repositories: list[str], builds: int, now: datetime | None = None) -> int:
    """Fill ``plane`` with ``builds`` builds in each repository; the number of manifests added."""
    when = now or datetime.now(UTC)
    added = 0
    for repo in repositories:
        for build in range(builds):
            created = when - timedelta(hours=builds - build)
            added += _add_build(plane, repo, build, created, newest=build == builds - 1)
    return added


def _add_build(plane: AcrDataPlane, repo: str, build: int, created: datetime, *, newest: bool) -> int:
    descriptors: list[dict[str, Any]] = []
    images = []
    for arch in ("amd64", "arm64"):
        config = {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": _blob(f"{repo}/{build}/{arch}"), "size": 900}
        layer = {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": _blob(f"{repo}/{build}/{arch}/layer"),
            "size": 31_000_000,
        }
        digest = plane.add_manifest(repo, {"config": config, "layers": [layer]}, created=created)
        images.append(digest)
        descriptors.append(
            plane._descriptor(repo, digest, {"platform": {"os": "linux", "architecture": arch}})
        )
    for arch, image in zip(("amd64", "arm64"), images, strict=True):
        config = {"mediaType": IN_TOTO_CONFIG, "digest": _blob(f"{repo}/{build}/{arch}/att"), "size": 240}
        statement = {
            "mediaType": "application/vnd.in-toto+json",
            "digest": _blob(f"{repo}/{build}/{arch}/provenance"),
            "size": 4_000,
            "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
        }
        digest = plane.add_manifest(repo, {"config": config, "layers": [statement]}, created=created)
        annotations = {
            "vnd.docker.reference.digest": image,
            "vnd.docker.reference.type": "attestation-manifest",
        }
        platform = {"os": "unknown", "architecture": "unknown"}
        descriptors.append(
            plane._descriptor(repo, digest, {"platform": platform, "annotations": annotations})
        )
    index = plane.add_manifest(
        repo, {"manifests": descriptors}, created=created, media_type=MEDIA_TYPE_OCI_INDEX
    )
    added = 5
    if build % 10 == 0:
        empty = {"mediaType": EMPTY_CONFIG, "digest": _blob("{}"), "size": 2}
        signature = {
            "artifactType": SIGNATURE_TYPE,
            "config": empty,
            "layers": [{"mediaType": SIGNATURE_TYPE, "digest": _blob(f"{repo}/{build}/sig"), "size": 300}],
            "subject": plane._descriptor(repo, index, {}),
        }
        plane.add_manifest(repo, signature, created=created)
        added += 1
    if newest:
        plane.tag(repo, "latest", index, updated=created)
    if build % 25 == 0:
        plane.tag(repo, f"release-{build}", index, updated=created)
    if build % 4 == 0:
        plane.tag(repo, f"build-{build}", index, updated=created)
    elif build % 7 == 0:
        config = {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": _blob(f"{repo}/{build}/left"), "size": 900}
        plane.add_manifest(
            repo, {"config": config, "layers": []}, created=created, media_type=MEDIA_TYPE_OCI_MANIFEST
        )
        added += 1
    return added


class FastListing(AcrDataPlane):
    """The loopback ACR with a listing whose page costs the page, not the repository."""

    def __init__(self, ca_path: str) -> None:
        super().__init__(ca_path)
        self.page_size = 100
        self._sorted: dict[str, list[str]] = {}
        self._entries: dict[tuple[str, str], dict[str, Any]] = {}

    def index_listings(self) -> None:
        """Build the sorted digests and listing entries (after seeding)."""
        self._sorted = {repo: sorted(r.manifests) for repo, r in self.repositories.items()}
        self._entries = {
            (repo, digest): stored.attributes(digest, [])
            for repo, r in self.repositories.items()
            for digest, stored in r.manifests.items()
        }

    def _manifests(self, request: RecordedRequest, repo: str) -> Answer:
        repository: StoredRepository | None = self._repository(repo)
        if repository is None:
            return super()._manifests(request, repo)
        digests = self._sorted[repo]
        size = int(request.params.get("n", [str(self.page_size)])[0])
        last = request.params.get("last", [None])[0]
        start = bisect.bisect_right(digests, last) if last is not None else 0
        page = digests[start : start + size]
        tags: dict[str, list[str]] = {}
        for name, tag in repository.tags.items():
            tags.setdefault(tag.digest, []).append(name)
        entries = [{**self._entries[(repo, d)], "tags": sorted(tags.get(d, []))} for d in page]
        headers = {}
        if start + size < len(digests):
            headers["Link"] = f'</acr/v1/{repo}/_manifests?last={page[-1]}&n={size}>; rel="next"'
        return _json(200, {"registry": self.login_server, "imageName": repo, "manifests": entries}, headers)

    def _delete(self, repo: str, digest: str) -> Answer:
        answer = super()._delete(repo, digest)
        digests = self._sorted.get(repo)
        if answer.status == 202 and digests is not None:
            position = bisect.bisect_left(digests, digest)
            if position < len(digests) and digests[position] == digest:
                digests.pop(position)
        return answer


# -- the server process ---------------------------------------------------------------------------


def request_kind(method: str, path: str) -> str:
    """What a request is, for the counts: exchange, token, catalog, list, tags, read, delete, untag."""
    if path == "/oauth2/exchange":
        return "exchange"
    if path == "/oauth2/token":
        return "token"
    if path == "/acr/v1/_catalog":
        return "catalog"
    if path.startswith("/acr/v1/"):
        if path.endswith("/_manifests"):
            return "list"
        if path.endswith("/_tags"):
            return "tags"
        return "untag" if method == "DELETE" and "/_tags/" in path else "other"
    if path.startswith("/v2/") and "/manifests/" in path:
        return {"GET": "read", "DELETE": "delete"}.get(method, "other")
    return "other"


class BenchRegistry(FastListing):
    """``FastListing`` that counts requests by kind, logs the calls a floor replays, and serves
    ``GET /_bench/stats`` (its CPU time, the counts, the log) and ``POST /_bench/reset``."""

    def __init__(self, ca_path: str, repositories: list[str], builds: int) -> None:
        super().__init__(ca_path)
        self.names, self.builds = repositories, builds
        self.counts: dict[str, int] = {}
        self.log: list[tuple[str, str, str]] = []  # (kind, path, query) of each answered call
        self.reset()

    def reset(self) -> None:
        self.repositories = {}
        self.manifests = seed(self, self.names, self.builds)
        self.index_listings()
        self.counts, self.log = {}, []

    def handle(self, request: RecordedRequest) -> Answer:
        if request.path == "/_bench/stats":
            with self._lock:
                body = {"cpu": time.process_time(), "counts": dict(self.counts), "manifests": self.manifests}
                if request.params.get("log"):
                    body["log"] = list(self.log)
            return _json(200, body)
        if request.path == "/_bench/reset" and request.method == "POST":
            with self._lock:
                self.reset()
            return _json(200, {"manifests": self.manifests})
        answer = super().handle(request)
        kind = request_kind(request.method, request.path)
        with self._lock:
            self.requests.clear()  # the base class keeps every request; the counts are enough here
            name = "challenge" if answer.status == 401 else kind
            self.counts[name] = self.counts.get(name, 0) + 1
            if answer.status != 401 and kind not in {"exchange", "token"}:
                self.log.append((kind, request.path, request.query))
        return answer

    def remaining(self) -> dict[str, set[str]]:
        return {repo: set(r.manifests) for repo, r in self.repositories.items()}


class _NoDelayHandler(_FunctionHandler):
    """TCP_NODELAY: the handler writes the status and headers, then the body; with Nagle's
    algorithm the body waits for the client's delayed ACK of the headers (40 ms on Linux), which
    made every sequential request take 40 ms and the server, not the client, the bottleneck."""

    disable_nagle_algorithm = True


def serve(work_dir: Path, repositories: int, builds: int) -> None:
    """Seed, serve over HTTPS on a free loopback port, write ``ca.pem`` and ``port`` in
    ``work_dir`` (the port last: its file appearing means the server answers), serve until killed."""
    ca = trustme.CA()
    ca_path = work_dir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    plane = BenchRegistry(str(ca_path), repository_names(repositories), builds)
    httpd = bind_loopback(_FunctionServer, _NoDelayHandler, tls=loopback_tls(ca))
    httpd.handler = plane.handle
    with serving(httpd, name="retention-pass-acr"):
        port = plane.port = port_of(httpd)
        (work_dir / "port.tmp").write_text(str(port))
        (work_dir / "port.tmp").rename(work_dir / "port")
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the loopback ACR of bench.retention_pass")
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--repositories", type=int, required=True)
    parser.add_argument("--builds", type=int, required=True)
    arguments = parser.parse_args()
    serve(arguments.work_dir, arguments.repositories, arguments.builds)

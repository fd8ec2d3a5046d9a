"""The image-retention planner as a repository grows: planning cost at 1k, 10k and 100k manifests.

Planning only, no I/O: each size is a generated repository shaped like a busy buildx pipeline
(an index per build with two platform images and two attestations, a signature on every tenth
index, a tag on every fourth, untagged leftovers), mostly older than ``min_age``, so nearly all of
it is deleted and the deletion order covers almost every manifest. The figure is microseconds per
manifest (median of ``--repeats`` plans); the ratio is each size's figure against the smallest
size's, measured in the same run; flat is 1.0. Never a pass/fail.

    .venv/bin/python -m bench.retention_scale [--sizes 1000 10000 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from datetime import UTC, datetime, timedelta

from shared.retention.graph import ManifestNode, RepositoryGraph, TagNode
from shared.retention.planner import plan_repository
from shared.retention.rules import ImageRule

NOW = datetime(2026, 6, 1, tzinfo=UTC)
RULE = ImageRule(repositories=["app"], keep_tags=["latest"], keep_newest=10, min_age="7d")


def _digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def generate(size: int) -> RepositoryGraph:
    """About ``size`` manifests: builds of five (index, 2 images, 2 attestations), some extras."""
    manifests: dict[str, ManifestNode] = {}
    tags: dict[str, TagNode] = {}
    build = 0
    while len(manifests) < size:
        created = NOW - timedelta(days=400) + timedelta(minutes=build)
        children = []
        for part in ("amd64", "arm64", "att-amd64", "att-arm64"):
            digest = _digest(f"{build}-{part}")
            kind = "attestation" if part.startswith("att") else "image"
            manifests[digest] = ManifestNode(digest, created=created, kind=kind)
            children.append(digest)
        index = _digest(f"{build}-index")
        manifests[index] = ManifestNode(index, children=tuple(children), kind="index")
        if build % 10 == 0:
            signature = _digest(f"{build}-sig")
            manifests[signature] = ManifestNode(signature, created=created, subject=index, kind="referrer")
        if build % 4 == 0:
            tags[f"build-{build}"] = TagNode(f"build-{build}", index, created)
        elif build % 7 == 0:
            leftover = _digest(f"{build}-leftover")
            manifests[leftover] = ManifestNode(leftover, created=created)
        build += 1
    latest = _digest(f"{build - 1}-index")
    tags["latest"] = TagNode("latest", latest, NOW)
    return RepositoryGraph("app", manifests, tags)


def measure(sizes: list[int], repeats: int) -> list[tuple[int, float, int]]:
    """(manifests, µs per manifest, deletions) per size."""
    rows = []
    for size in sizes:
        graph = generate(size)
        samples = []
        deletions = 0
        for _ in range(repeats):
            started = time.perf_counter()
            plan = plan_repository(graph, RULE, now=NOW)
            samples.append(time.perf_counter() - started)
            deletions = len(plan.deletions)
        count = len(graph.manifests)
        rows.append((count, statistics.median(samples) / count * 1e6, deletions))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = measure(args.sizes, args.repeats)
    base = rows[0][1]
    for count, per_manifest, deletions in rows:
        print(
            f"{count:>7} manifests: plan {per_manifest:6.2f} us/manifest "
            f"({per_manifest * count / 1e6:7.3f} s, {deletions} deletions) x{per_manifest / base:.2f}"
        )
    last = rows[-1]
    print(f"ratio per manifest at {last[0]} vs {rows[0][0]} manifests: {last[1] / base:.2f}")


if __name__ == "__main__":
    main()

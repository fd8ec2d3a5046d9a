"""The image-retention planner as a repository grows: planning cost at 1k, 10k and 100k manifests.

Planning only, no I/O: each size is a generated repository shaped like a busy buildx pipeline
(an index per build with two platform images and two attestations, a signature on every tenth
index, a tag on every fourth, untagged leftovers), mostly older than ``min_age``, so nearly all of
it is deleted and the deletion order covers almost every manifest. The figure is microseconds per
manifest (the fastest of at least ``--repeats`` plans; small sizes get more); the ratio is each
size's figure against the smallest size's, measured in the same run; flat is 1.0. A floor is
timed beside it on the same graph: one linear pass that builds the referrer map (a dict entry per
manifest, a lookup per reference). Python's dicts slow down per entry as they outgrow the CPU
caches, so the floor's own growth is printed too, and ``plan/floor`` shows what the planner adds
on top. Never a pass/fail.

    .venv/bin/python -m bench.retention_scale [--sizes 1000 10000 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

from shared.model.retention_rules import ImageRule
from shared.pruning.retention.graph import ManifestNode, RepositoryGraph, TagNode
from shared.pruning.retention.planner import plan_repository

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


def _best_s(action: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` runs: on a shared machine, the one least disturbed by others."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return min(samples)


def measure(sizes: list[int], repeats: int) -> list[tuple[int, float, float, int]]:
    """(manifests, plan µs per manifest, floor µs per manifest, deletions) per size."""
    rows = []
    for size in sizes:
        graph = generate(size)
        count = len(graph.manifests)
        times = max(repeats, 100_000 // count)  # small sizes get more runs: same total time
        plan = _best_s(partial(plan_repository, graph, RULE, now=NOW), times)
        floor = _best_s(graph.referrers, times)
        deletions = len(plan_repository(graph, RULE, now=NOW).deletions)
        rows.append((count, plan / count * 1e6, floor / count * 1e6, deletions))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = measure(args.sizes, args.repeats)
    base_plan, base_floor = rows[0][1], rows[0][2]
    for count, plan, floor, deletions in rows:
        print(
            f"{count:>7} manifests: plan {plan:6.2f} us/manifest x{plan / base_plan:.2f} "
            f"({plan * count / 1e6:6.3f} s, {deletions} deletions); floor {floor:5.2f} us "
            f"x{floor / base_floor:.2f}; plan/floor {plan / floor:5.1f}"
        )
    count, plan, floor, _ = rows[-1]
    print(
        f"ratio per manifest at {count} vs {rows[0][0]} manifests: plan {plan / base_plan:.2f}, "
        f"floor {floor / base_floor:.2f}, plan/floor {(plan / floor) / (base_plan / base_floor):.2f}"
    )


if __name__ == "__main__":
    main()

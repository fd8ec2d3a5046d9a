"""The image-retention planner as a repository grows: planning cost at 1k, 10k and 100k manifests.

Planning only, no I/O: each size is a generated repository shaped like a busy buildx pipeline
(an index per build with two platform images and two attestations, a signature on every tenth
index, a tag on every fourth, untagged leftovers), mostly older than ``min_age``, so nearly all of
it is deleted and the deletion order covers almost every manifest. Times are CPU time of the
process (on a shared machine a plan of seconds is always preempted, one of milliseconds rarely,
which made wall-clock ratios grow with load), in microseconds per manifest.

The floor, timed in pairs with the plan on the same graph (plan, floor, plan, floor, ...), is the
plan's output made without deciding anything: every reference followed both ways (children and
subjects, and who lists each manifest), each manifest's tags looked up, one ``ManifestDecision``
per manifest, the decisions sorted by digest and the digests taken in that order; with the cyclic
collector paused as the planner pauses it. It touches about as many objects per manifest as the
plan does, so its growth from 1k to 100k is what this machine charges for that many objects
falling out of its caches, and ``plan/floor`` (median of the pairs) what the planner adds on top;
the figure that matters is ``plan/floor`` at the largest size against the smallest (flat is 1.0).
The least of a few pairs would favour the size with the most pairs, so medians are used.
Peak memory per manifest (tracemalloc, one untimed plan) shows the plan's memory stays linear.
``--runs`` repeats the whole measurement and prints min/median/max of each ratio. Never a pass/fail.

    .venv/bin/python -m bench.retention_scale [--sizes 1000 10000 100000] [--repeats 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from operator import attrgetter

from shared.model.retention_rules import ImageRule
from shared.pruning.retention.graph import ManifestNode, RepositoryGraph, TagNode
from shared.pruning.retention.planner import ManifestDecision, paused_gc, plan_repository

NOW = datetime(2026, 6, 1, tzinfo=UTC)
RULE = ImageRule(repositories=["app"], keep_tags=["latest"], keep_newest=10, min_age="7d")
_DIGEST = attrgetter("digest")


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


def floor(graph: RepositoryGraph) -> tuple[tuple[ManifestDecision, ...], tuple[str, ...]]:
    """The plan's output without deciding: references both ways, tags, a decision each, by digest."""
    manifests = graph.manifests
    owners: dict[str, list[str]] = {}
    for digest, node in manifests.items():
        for child in node.children:
            if child in manifests:
                owners.setdefault(child, []).append(digest)
        if node.subject is not None and node.subject in manifests:
            owners.setdefault(digest, []).append(node.subject)
    tags_of: dict[str, list[str]] = {}
    for tag in graph.tags.values():
        tags_of.setdefault(tag.digest, []).append(tag.name)
    decisions = []
    for digest, node in manifests.items():
        tags, by = tags_of.get(digest), owners.get(digest)
        decisions.append(
            ManifestDecision(
                digest,
                "delete",
                "",
                node.kind,
                tuple(tags) if tags else (),
                node.created,
                tuple(by) if by else (),
            )
        )
    decisions.sort(key=_DIGEST)
    return tuple(decisions), tuple(d.digest for d in decisions)


def _paused_floor(graph: RepositoryGraph) -> object:
    with paused_gc():
        return floor(graph)


def _pairs(
    plan: Callable[[], object], base: Callable[[], object], repeats: int
) -> tuple[float, float, float]:
    """Median CPU times of ``repeats`` alternating runs of each, and the median of their ratios."""
    plans: list[float] = []
    bases: list[float] = []
    for _ in range(repeats):
        for action, samples in ((plan, plans), (base, bases)):
            started = time.process_time()
            action()
            samples.append(time.process_time() - started)
    ratio = statistics.median(p / b for p, b in zip(plans, bases, strict=True))
    return statistics.median(plans), statistics.median(bases), ratio


def _peak_bytes(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@dataclass(frozen=True)
class Row:
    manifests: int
    plan_us: float  # per manifest
    floor_us: float
    plan_over_floor: float
    deletions: int
    peak_bytes: int  # per manifest, the plan's


def measure(graphs: list[RepositoryGraph], repeats: int) -> list[Row]:
    """One row per graph: the paired medians (small sizes get more pairs: the same total time)."""
    rows = []
    for graph in graphs:
        count = len(graph.manifests)
        plan_action = partial(plan_repository, graph, RULE, now=NOW)
        plan, base, ratio = _pairs(plan_action, partial(_paused_floor, graph), max(repeats, 100_000 // count))
        deletions = len(plan_repository(graph, RULE, now=NOW).deletions)
        peak = _peak_bytes(plan_action) // count
        rows.append(Row(count, plan / count * 1e6, base / count * 1e6, ratio, deletions, peak))
    return rows


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    graphs = [generate(size) for size in args.sizes]
    ratios: dict[str, list[float]] = {"plan": [], "floor": [], "plan/floor": []}
    for run in range(1, args.runs + 1):
        rows = measure(graphs, args.repeats)
        first, last = rows[0], rows[-1]
        print(f"run {run}:")
        for row in rows:
            print(
                f"  {row.manifests:>7} manifests: plan {row.plan_us:5.2f} us/manifest "
                f"x{row.plan_us / first.plan_us:.2f} ({row.plan_us * row.manifests / 1e6:6.3f} s, "
                f"{row.deletions} deletions, peak {row.peak_bytes} B/manifest); floor {row.floor_us:5.2f} us "
                f"x{row.floor_us / first.floor_us:.2f}; plan/floor {row.plan_over_floor:4.2f} "
                f"x{row.plan_over_floor / first.plan_over_floor:.2f}"
            )
        ratios["plan"].append(last.plan_us / first.plan_us)
        ratios["floor"].append(last.floor_us / first.floor_us)
        ratios["plan/floor"].append(last.plan_over_floor / first.plan_over_floor)
    print(
        f"ratio per manifest at {last.manifests} vs {first.manifests} manifests "
        f"(min/median/max of {args.runs} runs): plan {_spread(ratios['plan'])}, "
        f"floor {_spread(ratios['floor'])}, plan/floor {_spread(ratios['plan/floor'])}"
    )


if __name__ == "__main__":
    main()

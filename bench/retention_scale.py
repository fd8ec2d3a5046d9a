"""The image-retention planner as a repository grows: planning cost at 1k, 10k and 100k manifests.

Planning only, no I/O: each size is a generated repository shaped like a busy buildx pipeline
(an index per build with two platform images and two attestations, a signature on every tenth
index, a tag on every fourth, untagged leftovers), mostly older than ``min_age``, so nearly all of
it is deleted and the deletion order covers almost every manifest. The figure is microseconds per
manifest of CPU time (the process's, not wall time: on a shared machine a plan of seconds is
always preempted, one of milliseconds rarely, which made wall-clock ratios grow with load; the
least of ``--repeats`` plans, small sizes get more), and the ratio is each size's figure against
the smallest size's in the same run; flat is 1.0.

The floor, timed beside the plan on the same graph (alternating with it, with the cyclic
collector paused as the planner pauses it), is the least any plan must do with these data
structures: visit every manifest, look up each reference, make one small record per manifest
and sort the records by digest (a plan lists its decisions by digest). Per manifest, a Python
object graph gets slower as it outgrows the CPU caches; the floor's own growth shows how much of
the plan's growth is that, and ``plan/floor`` what the planner adds on top. ``--runs`` repeats the
whole measurement and prints min/median/max of each ratio. Never a pass/fail.

    .venv/bin/python -m bench.retention_scale [--sizes 1000 10000 100000] [--repeats 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

from shared.model.retention_rules import ImageRule
from shared.pruning.retention.graph import ManifestNode, RepositoryGraph, TagNode
from shared.pruning.retention.planner import paused_gc, plan_repository

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


def floor(graph: RepositoryGraph) -> list[tuple[str, str, int]]:
    """The least a plan does: every manifest visited, each reference looked up, one record each,
    the records sorted by digest."""
    manifests = graph.manifests
    records = []
    for digest, node in manifests.items():
        found = 0
        for child in node.children:
            found += child in manifests
        if node.subject is not None:
            found += node.subject in manifests
        records.append((digest, node.kind, found))
    records.sort()
    return records


def _paused_floor(graph: RepositoryGraph) -> object:
    with paused_gc():
        return floor(graph)


def _best_pair(plan: Callable[[], object], base: Callable[[], object], repeats: int) -> tuple[float, float]:
    """The least CPU time of ``repeats`` runs of each, alternating, so both see the same machine."""
    plans: list[float] = []
    bases: list[float] = []
    for _ in range(repeats):
        for action, samples in ((plan, plans), (base, bases)):
            started = time.process_time()
            action()
            samples.append(time.process_time() - started)
    return min(plans), min(bases)


def measure(graphs: list[RepositoryGraph], repeats: int) -> list[tuple[int, float, float, int]]:
    """(manifests, plan µs per manifest, floor µs per manifest, deletions) per graph."""
    rows = []
    for graph in graphs:
        count = len(graph.manifests)
        times = max(repeats, 100_000 // count)  # small sizes get more runs: same total time
        plan, base = _best_pair(
            partial(plan_repository, graph, RULE, now=NOW), partial(_paused_floor, graph), times
        )
        deletions = len(plan_repository(graph, RULE, now=NOW).deletions)
        rows.append((count, plan / count * 1e6, base / count * 1e6, deletions))
    return rows


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    graphs = [generate(size) for size in args.sizes]
    ratios: dict[str, list[float]] = {"plan": [], "floor": [], "plan/floor": []}
    for run in range(1, args.runs + 1):
        rows = measure(graphs, args.repeats)
        base_plan, base_floor = rows[0][1], rows[0][2]
        print(f"run {run}:")
        for count, plan, base, deletions in rows:
            print(
                f"  {count:>7} manifests: plan {plan:6.2f} us/manifest x{plan / base_plan:.2f} "
                f"({plan * count / 1e6:6.3f} s, {deletions} deletions); floor {base:5.2f} us "
                f"x{base / base_floor:.2f}; plan/floor {plan / base:5.1f}"
            )
        count, plan, base, _ = rows[-1]
        ratios["plan"].append(plan / base_plan)
        ratios["floor"].append(base / base_floor)
        ratios["plan/floor"].append((plan / base) / (base_plan / base_floor))
    print(
        f"ratio per manifest at {rows[-1][0]} vs {rows[0][0]} manifests (min/median/max of {args.runs} "
        f"runs): plan {_spread(ratios['plan'])}, floor {_spread(ratios['floor'])}, "
        f"plan/floor {_spread(ratios['plan/floor'])}"
    )


if __name__ == "__main__":
    main()

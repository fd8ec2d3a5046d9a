"""A full image-retention pass with I/O at 1k, 10k and 100k manifests, against its request floor.

The pass is the ``prune_images`` timer's own function (``run_scheduled_prune``: list, read,
plan, re-check tags, delete in parallel waves, log every deletion) with the backend
``backend_from_settings`` builds for ACR (``AcrRetentionBackend.connect``: the real
``azure-containerregistry`` SDK, one pooled client, ``AcrTokenReuse``), only its credential a
static Entra ID token. It talks HTTPS to the loopback ACR data plane (``tests.support``) running
in a child process (``bench.retention_pass_data``: repositories of ``--per-repository``
buildx-shaped manifests, about half deleted by the rule), so the server's CPU is not the
client's; the server's CPU time is printed beside the client's.

The floor, measured in the same run on the same server (reset to the same manifests), makes the
same requests as the pass, of the same kinds, in the same order and groups, with the same
parallelism (reads and each delete batch ``MAX_DELETE_CONCURRENCY`` in flight), through the same
SDK client built the same way, but decides nothing: it replays the server's log of the pass
(each listing as one iteration of the backend's ``_raw_pages``, the pages' JSON through the SDK's
pipeline as the pass reads them, following the same pages). The SDK rather than a bare
HTTPS client, because the SDK is not optional (Entra ID token exchange, ACR's API): what the
floor leaves out is exactly what Slipway adds (graph, plan, waves, tag re-checks' diffing,
report, log events). ``pass/floor`` per size, its ratio at the largest size against the
smallest, and the client's CPU per request (flat is 1.0) are the figures; wall times show the
5-minute timer's margin. The pass runs as the timer runs it, bounded by the timer's default
240 s unless ``--max-seconds`` says otherwise (a full pass at 100k: ``--max-seconds 3600``).
One pass/floor pair per size from 10k up (a full pass at 100k takes minutes), up to five below
(their ratios' median); ``--runs`` repeats. Never a pass/fail.

    .venv/bin/python -m bench.retention_pass [--sizes 1000 10000 100000] [--per-repository 1000]
        [--max-seconds N] [--runs 1]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, unquote

import requests

from bench.retention_pass_data import builds_for, rule_for
from shared.model.config.slipway_config import SlipwayConfig
from shared.pruning.retention import prune
from shared.pruning.retention.acr_backend import AcrRetentionBackend
from shared.pruning.retention.prune import (
    MAX_DELETE_CONCURRENCY,
    MAX_SECONDS_SETTING,
    PruneReport,
    run_scheduled_prune,
)
from tests.support.child_server import ChildServer, spawn
from tests.support.fake_acr import FakeAadCredential, FakeAcr, fake_jwt

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("list", "tags", "read", "delete", "untag", "catalog", "exchange", "token", "challenge")


@dataclass
class Registry:
    """The child server: its URL, CA, and the bench endpoints."""

    server: ChildServer
    url: str
    ca_path: str

    def stats(self, *, log: bool = False) -> dict[str, Any]:
        params = {"log": "1"} if log else {}
        answer = requests.get(f"{self.url}/_bench/stats", params=params, verify=self.ca_path, timeout=60)
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data

    def reset(self) -> None:
        requests.post(f"{self.url}/_bench/reset", verify=self.ca_path, timeout=600).raise_for_status()

    def backend(self) -> AcrRetentionBackend:
        """What ``backend_from_settings`` builds for ACR, with a static Entra ID token."""
        claims = {"aud": "https://containerregistry.azure.net", "tid": FakeAcr.tenant_id}
        credential = FakeAadCredential(fake_jwt(claims))  # the token the loopback ACR accepts
        return AcrRetentionBackend.connect(self.url, credential, connection_verify=self.ca_path)


@contextmanager
def registry(repositories: int, builds: int, timeout: float = 600.0) -> Iterator[Registry]:
    """The loopback ACR in a child process, seeded with ``repositories`` x ``builds`` builds."""
    work = Path(tempfile.mkdtemp(prefix="retention-pass-"))
    command = [
        sys.executable, "-m", "bench.retention_pass_data", str(work),
        "--repositories", str(repositories), "--builds", str(builds),
    ]  # fmt: skip
    process = spawn(command, work, "server.log", env={**os.environ, "PYTHONPATH": str(ROOT)})
    server = ChildServer(process, 0, work / "server.log", work)
    try:
        deadline = time.monotonic() + timeout
        while not (work / "port").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the loopback ACR did not start:\n{server.output()}")
            time.sleep(0.1)
        server.port = int((work / "port").read_text())
        yield Registry(server, f"https://127.0.0.1:{server.port}", str(work / "ca.pem"))
    finally:
        server.stop()


@contextmanager
def quiet_logs() -> Iterator[None]:
    """The timer's log events are formatted and written (to memory), as the Functions host gets them."""
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def run_pass(reg: Registry, builds: int, settings: dict[str, str] | None = None) -> PruneReport:
    """The timer's ``run_scheduled_prune`` on the loopback registry (its backend, built as
    ``backend_from_settings`` builds it for ACR, with a static Entra ID token)."""
    config = SlipwayConfig(registry=reg.url.removeprefix("https://"), images=[rule_for(builds)])
    with mock.patch.object(prune, "backend_from_settings", lambda *a, **k: reg.backend()), quiet_logs():
        report = run_scheduled_prune(config, settings or {})
    assert report is not None
    return report


def replay(reg: Registry, log: list[list[str]]) -> None:
    """The floor: the pass's calls again, through the same SDK client, deciding nothing."""
    backend = reg.backend()
    client = backend.client
    position = 0
    while position < len(log):
        kind, path, query = log[position]
        repo = _repository(path)
        end = position + 1
        if kind in {"read", "delete"}:
            while end < len(log) and log[end][0] == kind and _repository(log[end][1]) == repo:
                end += 1
            refs = [unquote(p.rsplit("/", 1)[1]) for _, p, _ in log[position:end]]
            call = partial(client.get_manifest if kind == "read" else client.delete_manifest, repo)
            with ThreadPoolExecutor(max_workers=MAX_DELETE_CONCURRENCY) as pool:
                list(pool.map(call, refs))
        elif kind == "untag":  # one at a time, as the pass untags
            client.delete_tag(repo, unquote(path.rsplit("/", 1)[1]))
        elif "last" not in parse_qs(query):  # a listing's first page: the SDK follows the rest
            if kind == "catalog":
                list(client.list_repository_names())
            elif kind == "list":  # pages read as the pass reads them (raw JSON through the pipeline)
                list(backend._raw_pages(repo, "_manifests", "manifests"))
            elif kind == "tags":
                list(backend._raw_pages(repo, "_tags", "tags"))
            else:
                raise ValueError(f"the floor cannot replay {kind} {path}")
        position = end


def _repository(path: str) -> str:
    """The repository of ``/acr/v1/<repo>/_x[/...]`` or ``/v2/<repo>/manifests/<ref>``."""
    path = unquote(path)
    if path.startswith("/v2/"):
        return path[len("/v2/") :].rsplit("/manifests/", 1)[0]
    return path[len("/acr/v1/") :].split("/_", 1)[0]


@dataclass(frozen=True)
class Row:
    manifests: int
    repositories: int
    deleted: int
    pass_wall: float
    pass_cpu: float
    server_cpu: float  # during the pass
    floor_wall: float
    floor_cpu: float
    floor_server_cpu: float
    counts: dict[str, int]
    stopped_early: bool
    ratio: float  # pass CPU / floor CPU, median over the pairs

    @property
    def calls(self) -> int:
        """Requests answered (not counting challenges and token exchanges)."""
        return sum(self.counts.get(k, 0) for k in KINDS[:6])

    @property
    def cpu_per_call_us(self) -> float:
        return self.pass_cpu / self.calls * 1e6


def _timed(action: Callable[[], object], reg: Registry) -> tuple[float, float, float, object]:
    before = reg.stats()["cpu"]
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, reg.stats()["cpu"] - before, result


def measure(size: int, per_repository: int, max_seconds: int | None = None) -> Row:
    """Pass and floor on one registry, in pairs (reset to the same manifests before each);
    below 10k manifests several pairs (up to 5), whose times are averaged and ratios' median kept."""
    repositories = max(1, size // per_repository)
    builds = builds_for(min(size, per_repository))
    settings = {} if max_seconds is None else {MAX_SECONDS_SETTING: str(max_seconds)}
    samples: list[tuple[float, ...]] = []
    with registry(repositories, builds) as reg:
        manifests = reg.stats()["manifests"]
        for _ in range(max(1, min(5, 10_000 // size))):
            wall, cpu, server, report = _timed(lambda: run_pass(reg, builds, settings), reg)
            assert isinstance(report, PruneReport) and report.ok, "the pass failed"
            stats = reg.stats(log=True)
            reg.reset()
            floor_wall, floor_cpu, floor_server, _ = _timed(partial(replay, reg, stats["log"]), reg)
            floor_counts = reg.stats()["counts"]
            reg.reset()
            counts = stats["counts"]
            replayed = {k: v for k, v in counts.items() if k not in {"exchange", "token", "challenge"}}
            if {k: floor_counts.get(k, 0) for k in replayed} != replayed:
                raise AssertionError(f"the floor's requests {floor_counts} differ from the pass's {counts}")
            samples.append((wall, cpu, server, floor_wall, floor_cpu, floor_server))
    assert isinstance(report, PruneReport)
    means = (statistics.fmean(column) for column in zip(*samples, strict=True))
    wall, cpu, server, floor_wall, floor_cpu, floor_server = means
    ratio = statistics.median(sample[1] / sample[4] for sample in samples)
    return Row(
        manifests, repositories, report.summary()["deleted"], wall, cpu, server, floor_wall, floor_cpu,
        floor_server, counts, report.stopped_early, ratio,
    )  # fmt: skip


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--per-repository", type=int, default=1000, help="manifests a repository holds")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--max-seconds",
        type=int,
        help=f"{MAX_SECONDS_SETTING} of the pass (default unset: the timer's 240 s)",
    )
    args = parser.parse_args()
    flat: list[float] = []
    for run in range(1, args.runs + 1):
        rows = []
        print(f"run {run}:", flush=True)
        for size in args.sizes:
            row = measure(size, args.per_repository, args.max_seconds)
            rows.append(row)
            requests_made = " ".join(f"{k} {row.counts.get(k, 0)}" for k in KINDS)
            print(
                f"  {row.manifests:>7} manifests in {row.repositories} repositories, {row.deleted} deleted"
                f"{' (stopped early)' if row.stopped_early else ''}: pass {row.pass_wall:6.1f} s wall, "
                f"{row.pass_cpu:6.1f} s CPU ({row.cpu_per_call_us:4.0f} us/request), "
                f"server {row.server_cpu:6.1f} s CPU; floor {row.floor_wall:6.1f} s wall, "
                f"{row.floor_cpu:6.1f} s CPU, server {row.floor_server_cpu:6.1f} s CPU; "
                f"pass/floor CPU {row.ratio:4.2f}\n    requests: {requests_made}",
                flush=True,
            )
        first, last = rows[0], rows[-1]
        flat.append(last.ratio / first.ratio)
        print(
            f"  at {last.manifests} vs {first.manifests} manifests: pass CPU per request "
            f"x{last.cpu_per_call_us / first.cpu_per_call_us:.2f}, "
            f"pass/floor x{last.ratio / first.ratio:.2f}",
            flush=True,
        )
    print(
        "ratio pass/floor at the largest vs the smallest size "
        f"(min/median/max of {args.runs} runs): {_spread(flat)}"
    )


if __name__ == "__main__":
    main()

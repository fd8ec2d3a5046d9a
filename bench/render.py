"""Rendering: one dispatch's task text with PyYAML's C emitter against its pure-Python emitter.

``render_run`` builds the ACR task for every dispatch; its YAML emitter was about half of a
dispatch's CPU. Both emitters are timed in the same run, interleaved, on the same request (a
gated, multi-platform build), and the ratio printed (pure / C: how much the C path saves), with
the whole render for scale. Never a pass/fail.

    .venv/bin/python -m bench.render [--renders 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import yaml

from shared.acr import task as task_render
from shared.acr.task import RunSecrets, render_run
from shared.model.config import SlipwayConfig
from tests.test_task_render import ACCOUNT_KEY, GIT_TOKEN, _request


def _config() -> SlipwayConfig:
    return SlipwayConfig.model_validate(
        {
            "registry": "slipway.azurecr.io",
            "cache": {"account_url": "https://slipwaycache.blob.core.windows.net"},
            "targets": [{"name": "app", "repo": "https://github.com/o/r", "image": "team/app"}],
        }
    )


def _per_call(action: Callable[[], Any], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        action()
    return (time.perf_counter() - started) / count


def measure(renders: int, rounds: int) -> tuple[float, float, float]:
    """Median seconds per call: pure emitter, C emitter, whole render (C)."""
    request, config = _request(), _config()
    secrets = RunSecrets(cache_account_key=ACCOUNT_KEY, git_token=GIT_TOKEN)
    task = yaml.safe_load(render_run(request, config, secrets).task_yaml)
    pure: list[float] = []
    fast: list[float] = []
    whole: list[float] = []
    for _ in range(rounds):
        pure.append(_per_call(lambda: task_render.dump_task(task, dumper=yaml.SafeDumper), renders))
        fast.append(_per_call(lambda: task_render.dump_task(task, dumper=yaml.CSafeDumper), renders))
        whole.append(_per_call(lambda: render_run(request, config, secrets), renders))
    return statistics.median(pure), statistics.median(fast), statistics.median(whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pure, fast, whole = measure(args.renders, args.rounds)
    print(f"task YAML, pure-Python emitter: {pure * 1e3:.3f} ms")
    print(f"task YAML, C emitter (used):    {fast * 1e3:.3f} ms")
    print(f"whole render_run (C emitter):   {whole * 1e3:.3f} ms")
    slower = (whole - fast + pure) / whole
    print(f"ratio pure / C: {pure / fast:.1f}x; a render with the pure emitter: {slower:.1f}x as long")


if __name__ == "__main__":
    main()

"""``slipway render``: the ACR task a target would run for a commit, without running anything."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "render",
        help="print the ACR task YAML a target would run for a commit",
        description="Render the task exactly as the dispatcher would (secret values stay placeholders).",
    )
    parser.add_argument("--target", required=True, help="target name from the configuration")
    parser.add_argument("--commit", required=True, help="full commit id (40 hex)")
    parser.add_argument("--ref", required=True, help="full ref, e.g. refs/heads/main or refs/tags/v1.2.3")
    parser.add_argument("--config", type=Path, help="slipway.yaml (default: SLIPWAY_CONFIG or slipway.yaml)")
    parser.add_argument("--scripts", action="store_true", help="also print the step scripts, decoded")
    parser.add_argument("--request", action="store_true", help="print the BuildRequest JSON instead")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError

    from shared.build_request import Trigger
    from shared.config import ConfigError, config_path, load_config
    from shared.dispatcher import resolve_secrets
    from shared.routing import NoImageTags, https_clone_url, request_for_commit
    from shared.runtime import APP_ROOT
    from shared.task_render import RenderError, render_run

    path = args.config or config_path(os.environ, APP_ROOT)
    try:
        config = load_config(path)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    target = config.target(args.target)
    if target is None:
        names = ", ".join(t.name for t in config.targets) or "none"
        print(f"error: no target {args.target!r} in {path} (targets: {names})", file=sys.stderr)
        return 1
    trigger = Trigger(
        kind="tag" if args.ref.startswith("refs/tags/") else "manual",
        provider="cli",
        received_at=datetime.now(UTC),
        correlation_id="render",
    )
    try:
        request = request_for_commit(
            config,
            target,
            ref=args.ref,
            commit=args.commit,
            repo_url=https_clone_url(target.repo),
            trigger=trigger,
        )
        spec = render_run(request, config, resolve_secrets(config, target, {}, required=False))
    except (ValidationError, NoImageTags, RenderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.request:
        print(request.model_dump_json(by_alias=True, indent=2))
        return 0
    sys.stdout.write(spec.task_yaml)
    if args.scripts:
        for name, script in spec.scripts.items():
            sys.stdout.write(f"\n# --- {name} ---\n{script}")
    return 0

"""``slipway render``: the ACR task a target would run for a commit, without running anything.

``--request-file`` takes a queued request as the dispatcher gets it: a BuildRequest, or the whole
``slipway runs show --json`` output (its ``request`` field is the request). The dispatcher's own
check comes first (``shared.dispatch.request_check``): a request it would dead-letter
(``RequestNotAllowedForTarget``) is refused here with the same reason, and no task is printed.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.model.build_request import BuildRequest
    from shared.model.config import SlipwayConfig, Target


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "render",
        help="print the ACR task YAML a target would run for a commit",
        description="Render the task exactly as the dispatcher would, with the same function (every "
        "secret is a placeholder; the only difference is the run's random result marker).",
    )
    parser.add_argument("--target", help="target name from the configuration")
    parser.add_argument("--commit", help="full commit id (40 hex)")
    parser.add_argument("--ref", help="full ref, e.g. refs/heads/main or refs/tags/v1.2.3")
    parser.add_argument(
        "--default-branch",
        help="the repository's default branch as the Git host reports it with a push (it decides the "
        "`latest` tag; a target's default_branch overrides it, as it does for pushes)",
    )
    parser.add_argument(
        "--request-file",
        type=Path,
        help="render this BuildRequest JSON (a queue message, or `slipway runs show --json`'s output) "
        "instead of --target/--commit/--ref; refused as the dispatcher refuses it",
    )
    parser.add_argument("--scripts", action="store_true", help="also print the step scripts, decoded")
    parser.add_argument("--request", action="store_true", help="print the BuildRequest JSON instead")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os

    from shared.acr.run_prepare import prepare_run
    from shared.acr.task import RenderError
    from shared.app.runtime import APP_ROOT
    from shared.dispatch.failures import REQUEST_NOT_ALLOWED
    from shared.dispatch.request_check import request_mismatch
    from shared.intake.routing import NoImageTags
    from shared.model.build_request import BuildRequest
    from shared.model.config import ConfigError, config_path, load_config

    path = config_path(os.environ, APP_ROOT)  # the global --config sets SLIPWAY_CONFIG
    try:
        config = load_config(path)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.request_file is not None:
            request = BuildRequest.from_json(_queued_request(args.request_file.read_bytes()))
            name = request.target
        else:
            missing = [f"--{flag}" for flag in ("target", "commit", "ref") if getattr(args, flag) is None]
            if missing:
                print(f"error: {', '.join(missing)} required (or --request-file)", file=sys.stderr)
                return 2
            name = args.target
        target = config.target(name)
        if target is None:
            names = ", ".join(t.name for t in config.targets) or "none"
            print(f"error: no target {name!r} in {path} (targets: {names})", file=sys.stderr)
            return 1
        if args.request_file is None:
            request = _request(args, config, target)
        elif (mismatch := request_mismatch(request, config, target)) is not None:
            # What the dispatcher does with it: dead-lettered before anything is rendered.
            print(
                f"error: the dispatcher refuses this request ({REQUEST_NOT_ALLOWED}): {mismatch}",
                file=sys.stderr,
            )
            return 1
        # The dispatcher's own function; settings are not read, so every secret is a placeholder.
        spec = prepare_run(request, config, target, {}).spec
    except (ValueError, NoImageTags, RenderError, OSError) as exc:  # a ValidationError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.request:
        print(request.model_dump_json(by_alias=True, indent=2))
        return 0
    sys.stdout.write(spec.task_yaml)
    if args.scripts:
        for script_name, script in spec.scripts.items():
            sys.stdout.write(f"\n# --- {script_name} ---\n{script}")
    return 0


def _queued_request(data: bytes) -> bytes:
    """The request in a ``--request-file``, as the queue would carry it: the file itself, or the
    ``request`` of ``slipway runs show --json``'s output (a record with a ``request_id``). Raises
    ValueError when the file is not JSON."""
    import json

    try:
        found = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"--request-file is not JSON ({exc})") from None
    if isinstance(found, dict) and "request_id" in found and isinstance(found.get("request"), dict):
        return json.dumps(found["request"]).encode()
    return data


def _request(args: argparse.Namespace, config: SlipwayConfig, target: Target) -> BuildRequest:
    """The request a push of ``--commit`` to ``--ref`` would queue (``--default-branch`` for tags)."""
    from shared.intake.routing import request_for_commit
    from shared.model.build_request import Trigger
    from shared.model.repo_urls import https_clone_url

    trigger = Trigger(
        kind="tag" if args.ref.startswith("refs/tags/") else "manual",
        provider="cli",
        received_at=datetime.now(UTC),
        correlation_id="render",
    )
    if args.default_branch is None and target.default_branch is None:
        from shared.model.default_branch import single_plain_branch

        only = single_plain_branch(target)
        taken = f"taking {only!r}, its one plain branch filter," if only else "no branch is taken"
        print(
            f"note: {target.name} sets no default_branch; {taken} as the default branch for the "
            "`latest` tag and the cache import (pass --default-branch: the one the Git host reports)",
            file=sys.stderr,
        )
    return request_for_commit(
        config,
        target,
        ref=args.ref,
        commit=args.commit,
        repo_url=https_clone_url(target.repo),
        trigger=trigger,
        default_branch=args.default_branch,
    )

"""``slipway serve``: the function app on this machine, on its embedded defaults."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from shared.runtime import APP_ROOT

LOCAL_SECRET = "slipway-local-secret"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run Slipway locally (HTTP triggers, the queue trigger on the local queue, timers)",
        description="Run the very functions function_app.py registers, on this machine. Dispatch is dry-run "
        "unless ACR_SUBSCRIPTION_ID, ACR_RESOURCE_GROUP and ACR_NAME are set. Stop with Ctrl-C: in-flight "
        "work finishes and queued requests stay in the local queue for the next start.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7071, help="port (default 7071, like the Functions host)")
    parser.add_argument("--config", help="slipway.yaml to use (sets SLIPWAY_CONFIG)")
    parser.add_argument("--state-dir", help="local state folder (sets SLIPWAY_STATE_DIR; default .slipway)")
    parser.add_argument(
        "--settings",
        default="local.settings.json",
        help="local.settings.json whose Values become settings; the environment wins",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shared.local_host import (
        DEFAULT_SCHEDULES,
        HostError,
        LocalHost,
        apply_settings,
        discover,
        load_local_settings,
        main_loop,
    )
    from shared.runtime import Runtime, set_runtime

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    if args.config:
        os.environ["SLIPWAY_CONFIG"] = str(Path(args.config).resolve())
    if args.state_dir:
        os.environ["SLIPWAY_STATE_DIR"] = str(Path(args.state_dir).resolve())
    try:
        apply_settings(load_local_settings(Path(args.settings)))
    except (OSError, ValueError) as exc:
        print(f"error: {args.settings}: {exc}", file=sys.stderr)
        return 1
    if not os.environ.get("GITHUB_WEBHOOK_SECRET"):
        os.environ["GITHUB_WEBHOOK_SECRET"] = LOCAL_SECRET
        print(f"GITHUB_WEBHOOK_SECRET is not set: using the local secret {LOCAL_SECRET!r}", file=sys.stderr)
    os.environ.setdefault("BUILD_QUEUE", "build-requests")
    apply_settings(DEFAULT_SCHEDULES)
    # The local host feeds its queue trigger from the local queue, so webhooks must send there too,
    # whatever Service Bus settings local.settings.json carries.
    rt = Runtime()
    rt = Runtime(queue=rt.local_queue())
    set_runtime(rt)
    try:
        rt.config()
    except Exception as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 1
    sys.path.insert(0, str(APP_ROOT))
    try:
        functions = discover("function_app", os.environ)
        host = LocalHost(
            functions, queue_factory=lambda name: rt.local_queue(), host=args.host, port=args.port
        )
    except (HostError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    address, port = host.address
    backend = rt.backend().name
    print(
        f"Slipway is listening on http://{address}:{port}/api/ (dispatch: {backend}, state: {rt.state_dir})",
        file=sys.stderr,
    )
    for route in functions.http:
        print(
            f"  {'/'.join(sorted(route.methods))} {route.path}  ({route.name})",
            file=sys.stderr,
        )
    for trigger in functions.queues:
        print(f"  queue {trigger.queue_name}  ({trigger.name})", file=sys.stderr)
    for timer in functions.timers:
        print(f"  timer {timer.schedule!r} UTC  ({timer.name})", file=sys.stderr)
    sys.stderr.flush()
    main_loop(host)
    return 0

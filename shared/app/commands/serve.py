"""``slipway serve``: the function app on this machine, on its embedded defaults."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping

from shared.app.runtime import APP_ROOT

LOCAL_SECRET = "slipway-local-secret"  # printed in the README: fit for loopback and dry runs only
ACR_SETTINGS = ("ACR_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME")
POLL_TIMER = "base_image_poll"
# Timers that delete things (registry images, cache blobs) with this machine's credentials: a
# developer trying Slipway against a real registry or cache must ask for them (--prune).
PRUNE_TIMERS = ("prune_images", "prune_cache")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run Slipway locally (HTTP triggers, the queue trigger on the local queue, timers)",
        description="Run the very functions function_app.py registers, on this machine. Dispatch is dry-run "
        "unless ACR_SUBSCRIPTION_ID, ACR_RESOURCE_GROUP and ACR_NAME are set. With any of them set, or "
        "--host not a loopback address, GITHUB_WEBHOOK_SECRET must be your own secret and "
        "POST /api/ops/replay needs SLIPWAY_LOCAL_MASTER_KEY in x-functions-key. Stop with Ctrl-C: "
        "in-flight work finishes and queued requests stay in the local queue for the next start.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7071, help="port (default 7071, like the Functions host)")
    parser.add_argument(
        "--poll-base-images",
        action="store_true",
        help="run the base-image polling timer, which asks the registries in slipway.yaml for digests "
        "with this machine's credentials (off by default locally)",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="run the image and cache pruning timers, which delete registry images and cache blobs "
        "with this machine's credentials (off by default locally; SLIPWAY_IMAGE_PRUNE_DRY_RUN=true "
        "makes the image timer plan only)",
    )
    # --config, --state-dir and --settings are the CLI's global options (shared.app.cli), applied
    # before this handler runs; serve is the command that creates the state folder.
    parser.set_defaults(handler=run, creates_state=True)


def run(args: argparse.Namespace) -> int:
    from shared.app.local_host import (
        DEFAULT_SCHEDULES,
        MASTER_KEY_SETTING,
        HostError,
        LocalHost,
        apply_settings,
        discover,
        main_loop,
    )
    from shared.app.local_host.functions import invalid_schedules
    from shared.app.runtime import Runtime, set_runtime
    from shared.platform.http import max_body_bytes

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    exposed = _exposure(args.host, os.environ)
    secret = os.environ.get("GITHUB_WEBHOOK_SECRET", "")
    if exposed and secret in ("", LOCAL_SECRET):
        print(
            f"error: {exposed}: set GITHUB_WEBHOOK_SECRET to a secret of your own "
            f"(the local default {LOCAL_SECRET!r} is published in the README)",
            file=sys.stderr,
        )
        return 1
    if not secret:
        os.environ["GITHUB_WEBHOOK_SECRET"] = LOCAL_SECRET
        print(f"GITHUB_WEBHOOK_SECRET is not set: using the local secret {LOCAL_SECRET!r}", file=sys.stderr)
    for name, wanted in [(POLL_TIMER, args.poll_base_images), *((t, args.prune) for t in PRUNE_TIMERS)]:
        if wanted:
            os.environ[f"AzureWebJobs.{name}.Disabled"] = "false"
        else:
            # The Functions host's own switch; a setting that says otherwise (environment or
            # local.settings.json) is an explicit choice and wins.
            os.environ.setdefault(f"AzureWebJobs.{name}.Disabled", "true")
    os.environ.setdefault("BUILD_QUEUE", "build-requests")
    apply_settings(DEFAULT_SCHEDULES)
    # A timer schedule the Functions host would refuse: name the setting, not a parser traceback.
    bad_schedules = invalid_schedules(os.environ)
    for problem in bad_schedules:
        print(f"error: timer schedule {problem}", file=sys.stderr)
    if bad_schedules:
        return 1
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
            functions,
            queue_factory=lambda name: rt.local_queue(),
            host=args.host,
            port=args.port,
            max_body_bytes=max_body_bytes(os.environ),
            master_key=os.environ.get(MASTER_KEY_SETTING) or None,
            require_keys=bool(exposed),
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
    keyed = [route.path for route in functions.http if route.auth_level != "anonymous"]
    if keyed and (exposed or os.environ.get(MASTER_KEY_SETTING)):
        state = "set" if os.environ.get(MASTER_KEY_SETTING) else "NOT set: they answer 401"
        print(f"  {', '.join(keyed)} need {MASTER_KEY_SETTING} in x-functions-key ({state})", file=sys.stderr)
    running = {timer.name for timer in functions.timers}
    if POLL_TIMER not in running:
        print(f"  timer {POLL_TIMER} is off (--poll-base-images turns it on)", file=sys.stderr)
    for name in PRUNE_TIMERS:
        if name not in running:
            print(f"  timer {name} is off (--prune turns it on)", file=sys.stderr)
    for trigger in functions.queues:
        print(f"  queue {trigger.queue_name}  ({trigger.name})", file=sys.stderr)
    for timer in functions.timers:
        print(f"  timer {timer.schedule!r} UTC  ({timer.name})", file=sys.stderr)
    sys.stderr.flush()
    main_loop(host)
    return 0


def _exposure(host: str, settings: Mapping[str, str]) -> str:
    """Why this server must not run on public defaults ("" when it may): reachable, or real."""
    from shared.model.loopback import is_loopback

    if not is_loopback(host):
        return f"--host {host} is reachable from other machines"
    named = [name for name in ACR_SETTINGS if settings.get(name)]
    if named:
        return f"{', '.join(named)} set: dispatch starts real ACR runs"
    return ""

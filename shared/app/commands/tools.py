"""``slipway tools list``: the tool images runs pull, where from, and what the azd hook imports.

The import hook (``infra/hooks/import-tools.sh``) reads ``--import-plan`` rather than keeping a
list of its own, so what runs pull and what is imported come from one place: ``slipway.yaml``.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tools = subparsers.add_parser("tools", help="tool images: what runs pull, and from where")
    sub = tools.add_subparsers(dest="tools_command", metavar="COMMAND", required=True)
    listing = sub.add_parser(
        "list",
        help="every tool image, as configured and as runs pull it",
        description="The tool images of slipway.yaml (tools:, scanner.image). With tools.mirror, "
        "runs pull copies under the mirror; --import-plan prints what `az acr import` must copy.",
    )
    output = listing.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="stable JSON for scripts")
    output.add_argument(
        "--import-plan",
        action="store_true",
        help="one line per copy to make: <source>TAB<target in the registry> (infra/hooks/import-tools.sh)",
    )
    listing.add_argument(
        "--acr",
        metavar="NAME",
        help="with --import-plan: fail unless the configuration's registry is this ACR (its name)",
    )
    listing.set_defaults(handler=list_tools)


def list_tools(args: argparse.Namespace) -> int:
    import os

    from shared.app.commands.output import print_json, print_table
    from shared.app.runtime import APP_ROOT
    from shared.model.config import ConfigError, config_path, load_config
    from shared.model.tool_images import import_plan, mirror_prefix, resolve_tools

    path = config_path(os.environ, APP_ROOT)  # the global --config sets SLIPWAY_CONFIG
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.import_plan:
        # ACR names are alphanumeric and the login server starts with the name (any cloud's suffix).
        if args.acr is not None and config.registry.split(".")[0].lower() != args.acr.lower():
            print(
                f"error: {path} pushes to {config.registry}, not to the registry {args.acr}: "
                f"set registry: to {args.acr}'s login server",
                file=sys.stderr,
            )
            return 1
        prefix = mirror_prefix(config)
        if prefix is None:
            print(
                "slipway: tools.mirror is null: runs pull the tools upstream, nothing to import",
                file=sys.stderr,
            )
        elif prefix.split("/")[0].lower() != config.registry.lower():
            print(
                f"slipway: tools.mirror {prefix} is not in {config.registry}: import into it yourself "
                "(slipway tools list shows each copy)",
                file=sys.stderr,
            )
        for image in import_plan(config):
            sys.stdout.write(f"{image.import_source}\t{image.import_target}\n")
        return 0
    rows = [
        {"role": image.role, "configured": image.upstream, "pulled": image.pulled}
        for image in resolve_tools(config).values()
    ]
    if args.json:
        print_json({"mirror": mirror_prefix(config), "images": rows})
    else:
        print_table(
            f"Tool images (mirror: {mirror_prefix(config) or 'none'})", ["role", "configured", "pulled"], rows
        )
    return 0

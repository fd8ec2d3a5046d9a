"""``slipway prune``: the destructive maintenance commands, each with ``--dry-run``.

The group lives here; each subcommand registers itself from its own module
(``_prune_cache`` for the BuildKit azblob cache, ``_prune_images`` for registry images), so the
two collectors stay independent. Modules starting with ``_`` are not discovered as commands.
"""

from __future__ import annotations

import importlib

from shared.cli import Subparsers, add_group

_SUBCOMMANDS = ("shared.commands._prune_cache", "shared.commands._prune_images")


def register(subparsers: Subparsers) -> None:
    _parser, commands = add_group(
        subparsers,
        "prune",
        help="garbage-collect the BuildKit cache or old registry images",
        description="Delete what is no longer needed, safely. Every subcommand has --dry-run.",
    )
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(commands)

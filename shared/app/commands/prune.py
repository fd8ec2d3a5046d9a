"""``slipway prune``: the destructive maintenance commands, each with ``--dry-run``.

The group lives here; each subcommand registers itself from its own module
(``_prune_cache`` for the BuildKit azblob cache, ``_prune_images`` for registry images), so the
two collectors stay independent. Modules starting with ``_`` are not discovered as commands.
"""

from __future__ import annotations

from shared.app.cli import Subparsers, add_group
from shared.app.commands import _prune_cache, _prune_images


def register(subparsers: Subparsers) -> None:
    _parser, commands = add_group(
        subparsers,
        "prune",
        help="garbage-collect the BuildKit cache or old registry images",
        description="Delete what is no longer needed, safely. Every subcommand has --dry-run.",
    )
    _prune_cache.register(commands)
    _prune_images.register(commands)

"""Subcommands of the ``slipway`` CLI beyond ``config``: each module has ``register(subparsers)``."""

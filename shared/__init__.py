"""Slipway's domain: everything that does not need ``azure.functions``.

Handlers in ``handlers/`` translate Azure Functions types into calls on this package; the
local host and the CLI call it directly. Heavy SDKs are imported lazily inside adapters so
that ``import function_app`` stays fast.
"""

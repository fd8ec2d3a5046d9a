"""Which exceptions mean a remote service failed (a registry, Azure Storage, the network): one rule.

The prune commands turn them into one line for the operator (exit 1), and the image prune
records them per repository and goes on with the next. Anything else is a bug in Slipway and
keeps its traceback.
"""

from __future__ import annotations


def is_service_error(exc: BaseException) -> bool:
    from shared.platform.oci import RegistryError
    from shared.pruning.cache_gc.store import CacheStoreError

    if isinstance(exc, RegistryError | CacheStoreError | OSError):
        return True
    try:
        from azure.core.exceptions import AzureError
    except ImportError:  # pragma: no cover - azure-core is a dependency
        return False
    return isinstance(exc, AzureError)


def one_line(exc: BaseException) -> str:
    """The first line of the message (the Azure SDK's run to many), or the type when there is none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

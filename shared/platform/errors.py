"""Which exceptions mean a remote service failed (a registry, Azure Storage, the network): one rule.

Every adapter's failure type derives from ``ServiceError``: a registry's, the cache store's, the
queue's, the ACR run API's, a Git host's status API's. The prune commands turn service errors into
one line for the operator (exit 1), and the image prune records them per repository and goes on
with the next. Anything else is a bug in Slipway and keeps its traceback. ``OSError`` (a refused
connection, a timeout) and the Azure SDK's ``AzureError`` are service failures too: they come from
below every adapter.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A remote service failed or refused: the one base of every adapter's error type."""


def is_service_error(exc: BaseException) -> bool:
    if isinstance(exc, ServiceError | OSError):
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

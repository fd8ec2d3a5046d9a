"""The build queue: the port, the Service Bus adapter and the local SQLite adapter.

The adapters are loaded on first attribute access, so importing the port (which every
webhook receiver does) costs neither ``sqlite3`` nor the adapter modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shared.platform.queue.port import (
    MAX_DELIVERY_COUNT_EXCEEDED,
    NOT_LOCKED,
    DeadLetterAction,
    DeadLetterChoice,
    LockLostError,
    MessageState,
    OutgoingMessage,
    PropertyValue,
    QueueBrowser,
    QueueError,
    QueueReceiver,
    QueueSender,
    ReceivedMessage,
)

if TYPE_CHECKING:
    from shared.platform.queue.local import LocalQueue
    from shared.platform.queue.servicebus import ServiceBusConnection, ServiceBusQueue

_LAZY = {
    "LocalQueue": "shared.platform.queue.local",
    "ServiceBusConnection": "shared.platform.queue.servicebus",
    "ServiceBusQueue": "shared.platform.queue.servicebus",
}

__all__ = [
    "MAX_DELIVERY_COUNT_EXCEEDED",
    "NOT_LOCKED",
    "DeadLetterAction",
    "DeadLetterChoice",
    "LocalQueue",
    "LockLostError",
    "MessageState",
    "OutgoingMessage",
    "PropertyValue",
    "QueueBrowser",
    "QueueError",
    "QueueReceiver",
    "QueueSender",
    "ReceivedMessage",
    "ServiceBusConnection",
    "ServiceBusQueue",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

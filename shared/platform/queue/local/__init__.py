"""The local build queue (SQLite with Service Bus semantics) behind ``slipway serve`` and the tests.

``queue`` holds the operations, ``store`` the connections, transactions and journal fold,
``schema`` the tables, ``journal`` the append-only intake file that makes a send one ``write``.
"""

from shared.platform.queue.local.queue import LocalQueue as LocalQueue

__all__ = ["LocalQueue"]

"""A bounded cache whose key includes objects' identity (a loaded configuration, a target).

Routing derives work from configuration objects that never change once loaded (their models are
frozen), so the object itself is the cheapest key. An id can be reused once its object is gone;
each entry therefore holds the objects it was keyed by, which keeps their ids theirs while it
lives: an entry found by their ids is theirs, with no further check (this runs on every webhook).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class PinnedCache(Generic[V]):
    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: dict[tuple[tuple[int, ...], Hashable], tuple[tuple[object, ...], V]] = {}

    def get(self, owners: tuple[object, ...], key: Hashable) -> V | None:
        entry = self._entries.get((tuple(map(id, owners)), key))
        return None if entry is None else entry[1]

    def put(self, owners: tuple[object, ...], key: Hashable, value: V) -> V:
        """Store and return ``value``; a full cache starts again empty (the few hot keys come back)."""
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[(tuple(map(id, owners)), key)] = (owners, value)
        return value

    def clear(self) -> None:
        self._entries.clear()

"""Bounded memory of ids already seen: at-least-once delivery means repeats will come."""

from __future__ import annotations

import itertools
from collections import OrderedDict


class SeenIds:
    """The last ``capacity`` ids, oldest forgotten first (callers count the repeats)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """Remember key; False when it was already seen (a duplicate to drop)."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return False
        self._ids[key] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)

    def snapshot(self, last: int | None = None) -> list[str]:
        """The ids oldest first; with ``last``, only the newest ``last`` of them (without
        copying the whole memory: a checkpoint asks for this every second)."""
        if last is None or last >= len(self._ids):
            return list(self._ids)
        newest = list(itertools.islice(reversed(self._ids), last))
        newest.reverse()
        return newest

    @classmethod
    def restore(cls, ids: list[str], capacity: int = 100_000) -> SeenIds:
        seen = cls(capacity)
        for key in ids[-capacity:]:
            seen._ids[key] = None
        return seen

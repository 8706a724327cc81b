"""Bounded memory of ids already seen: at-least-once delivery means repeats will come."""

from __future__ import annotations

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

    def snapshot(self) -> list[str]:
        return list(self._ids)

    @classmethod
    def restore(cls, ids: list[str], capacity: int = 100_000) -> SeenIds:
        seen = cls(capacity)
        for key in ids[-capacity:]:
            seen._ids[key] = None
        return seen

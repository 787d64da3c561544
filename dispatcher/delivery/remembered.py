"""Values read from the store and kept a short while, in a bounded memory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from dispatcher.ids import now

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Remembered(Generic[K, V]):
    def __init__(self, seconds: float, most: int) -> None:
        self._seconds = seconds
        self._most = most
        self._known: dict[K, tuple[V, float]] = {}
        # Counts puts and forgets: a read that one overtook is not remembered.
        self._changes = 0

    async def get(self, key: K, load: Callable[[K], Awaitable[V]]) -> V:
        """The value remembered for `key`, or `load(key)` once it is older than allowed."""
        at = now()
        known = self._known.get(key)
        if known is None or known[1] <= at:
            changes = self._changes
            value = await load(key)
            if changes != self._changes:
                # Changed while it was read: this read may be older than the change.
                return value
            if len(self._known) >= self._most:
                self._known.clear()  # past the bound the memory starts over
            known = self._known[key] = (value, at + self._seconds)
        return known[0]

    def put(self, key: K, value: V) -> None:
        """`value` is the newest there is (it was just written)."""
        self._changes += 1
        self._known[key] = (value, now() + self._seconds)

    def forget(self, key: K) -> None:
        self._changes += 1
        self._known.pop(key, None)

"""Who may take a slot now: fair between tenants, bounded per destination.

Pure accounting, no I/O, for the delivery slots and the workers alike. Two
rules keep a hostile tenant from holding up anyone else's work, however many
receivers that hang it points at, or however long its jobs run:

- **Per destination** (deliveries). At most `per_destination` attempts are in flight from
  one tenant to one destination: the address and port actually connected to
  (so spellings and DNS names of one address share it), or the operator's
  relay for email and SMS.
- **Per tenant.** While other tenants have work in flight, each tenant may
  hold at most an equal share of the slots. And the more slots a tenant holds,
  the more it must leave free: a tenant holding `n` of `capacity` slots claims
  only while more than `reserve * n / capacity` are free (`reserve` is an
  eighth of the pool). A tenant alone thus fills all but about a ninth of a
  pool of eight or more, and whoever comes next finds a free slot at once
  instead of waiting for hanging attempts or long jobs to end.
"""

from __future__ import annotations

import math
from collections import Counter

Destination = tuple[str, str]  # (tenant, address or channel)


class SlotShares:
    def __init__(self, capacity: int, per_destination: int) -> None:
        self.capacity = capacity
        self.per_destination = per_destination
        # Below eight slots nothing is held back: a small pool is the operator's
        # choice of how much runs at once, and one slot is a large share of it.
        self.reserve = capacity // 8
        self._tenants: Counter[str] = Counter()
        self._destinations: Counter[Destination] = Counter()

    @property
    def free(self) -> int:
        return self.capacity - self._tenants.total()

    def room(self, tenant: str) -> int:
        """How many more slots `tenant` may take now."""
        held = self._tenants[tenant]
        others = len(self._tenants) - (1 if held else 0)
        cap = self.capacity if others == 0 else max(1, self.capacity // (others + 1))
        keep_free = math.ceil(self.reserve * held / self.capacity)
        return max(0, min(cap - held, self.free - keep_free))

    def most_room(self) -> int:
        """The most any tenant may take now, a newcomer included: a claim's useful size."""
        return max((self.room(t) for t in (*self._tenants, "")), default=0)

    def full_tenants(self) -> list[str]:
        """Tenants that may take no slot now: claims pass over their work."""
        return [tenant for tenant in self._tenants if self.room(tenant) == 0]

    def take(self, tenant: str) -> bool:
        if self.room(tenant) <= 0:
            return False
        self._tenants[tenant] += 1
        return True

    def give_back(self, tenant: str) -> None:
        _decrement(self._tenants, tenant)

    def enter(self, destination: Destination) -> bool:
        """Count an attempt to `destination`, unless its share is in flight already."""
        if self.is_full(destination):
            return False
        self._destinations[destination] += 1
        return True

    def leave(self, destination: Destination) -> None:
        _decrement(self._destinations, destination)

    def is_full(self, destination: Destination) -> bool:
        return self._destinations[destination] >= self.per_destination

    def busy_destinations(self) -> list[tuple[Destination, int]]:
        """Each destination with attempts in flight, and how many more it may take."""
        return [(where, self.per_destination - n) for where, n in self._destinations.items()]


def _decrement(counter: Counter[str] | Counter[Destination], key: object) -> None:
    counter[key] -= 1  # type: ignore[index]
    if counter[key] <= 0:  # type: ignore[index]
        del counter[key]  # type: ignore[arg-type]

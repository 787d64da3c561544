"""Take work and run each piece as its own task, a bounded and fair number at a time.

The worker pool (jobs) and the deliverer (webhook, email and SMS attempts)
are both this loop. Work reaches a slot in one of two ways:

- **Handed over** (the fast path): work made in this process, a job just
  submitted or a delivery just created, is given a slot before it is
  written; the write that creates it also takes its lease, and once that is
  committed the work starts here, with no claim and no round trip more.
- **Claimed**: due work that no slot was free for, retries coming due, work
  of a process that died. The loop takes up to the free slots' worth from the
  store, then sleeps until woken (work made here), until a slot frees, or
  until the poll interval (work made elsewhere) runs out.

A slot is held while the work is done, and freed as soon as it is: the
record of what happened is committed afterwards, while the lease is still
held, so the next piece of work need not wait for the disk.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from dispatcher.shares import SlotShares

log = logging.getLogger(__name__)

T = TypeVar("T")

CANCEL_WAIT = 5.0

# Work whose lease lapsed this often (its process was killed, or its task died,
# while it was in hand) is failed rather than taken up again: whatever it is,
# it keeps killing what runs it, and nothing may be retried forever.
MAX_LAPSES = 3

# Work done but not yet recorded may hold its lease this many times the slots
# over; past that no more is taken until records are written (a slow disk).
RECORDING_FACTOR = 2


class Slot:
    """One slot of a loop, held by one piece of work until `free` is called."""

    __slots__ = ("_loop", "_tenant")

    def __init__(self, loop: ClaimLoop[Any], tenant: str) -> None:
        self._loop = loop
        self._tenant: str | None = tenant

    def free(self) -> None:
        """The work is done (its record may still be on its way to disk). Idempotent."""
        if self._tenant is not None:
            self._loop._free(self._tenant)
            self._tenant = None


class ClaimLoop(ABC, Generic[T]):
    name = "claim"
    # Whether work handed over must wait its turn behind due work in the store
    # (first in, first out), or may take a free slot at once.
    in_turn = True

    def __init__(self, *, capacity: int, per_destination: int, poll_interval: float) -> None:
        self._capacity = capacity
        self._poll_interval = poll_interval
        # Fair between tenants (see shares.py); its count is the slots taken.
        self._shares = SlotShares(capacity, per_destination)
        # Work in hand, by key: being done, or being recorded. Its leases are renewed.
        self._active: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._open = False
        self._stopped = False
        # Whether due work may be waiting in the store (made elsewhere, or here
        # while no slot was free): until a claim comes back short, assume so.
        self._waiting = True
        # Wake-ups so far: one that comes while a claim is on its way (work
        # written after the claim looked) keeps `_waiting` set.
        self._wakes = 0

    @abstractmethod
    async def _claim_due(self, limit: int, skip_tenants: Sequence[str]) -> list[T]:
        """Take up to `limit` pieces of due work, none of `skip_tenants`."""

    @abstractmethod
    def _key(self, item: T) -> str: ...

    @abstractmethod
    def _tenant(self, item: T) -> str: ...

    @abstractmethod
    async def _process(self, item: T, slot: Slot) -> None:
        """Do the work, call `slot.free()` once it is done, then record it."""

    @abstractmethod
    async def _release(self, keys: list[str]) -> None:
        """Hand back work this process will not do (unstarted, or at shutdown)."""

    def _sleep_for(self) -> float:
        return self._poll_interval

    def start(self) -> None:
        self._open = True
        self._loop_task = asyncio.create_task(self._loop(), name=f"{self.name}-claim-loop")

    # The handover: work made here takes a slot before it is written.

    def reserve(self, tenant: str) -> bool:
        """Take a slot for work of `tenant` about to be made here, if one is free now.

        On True the caller writes the work with this process's lease and then
        calls `hand` (it was written) or `unreserve` (it was not). While older
        work waits in the store, none is given: new work queues behind it, in
        its turn, instead of taking the slots that free up first.
        """
        if not self._open or (self.in_turn and self._waiting) or self._free_slots() <= 0:
            return False
        return self._shares.take(tenant)

    def unreserve(self, tenant: str) -> None:
        self._free(tenant)

    def hand(self, item: T) -> None:
        """Start work whose slot was reserved and whose lease is committed.

        Once `stop` has released what it held, work handed over late (its write
        outlived the grace) is not started: its lease lapses, and the next
        start takes it up.
        """
        key = self._key(item)
        if key in self._active or self._stopped:
            self._free(self._tenant(item))
            return
        self._start(key, item)

    def wake(self, tenant: str | None = None) -> None:
        """New work may be due (of `tenant`, if known): claim now instead of at the next poll."""
        if tenant is not None and self._shares.room(tenant) <= 0:
            # Its share is in flight: none of its work could be claimed now, and
            # a claim that passes over a large backlog is not free.
            return
        self._waiting = True
        self._wakes += 1
        self._wakeup.set()

    @property
    def busy(self) -> int:
        """Slots taken now."""
        return self._capacity - self._shares.free

    @property
    def in_hand(self) -> list[str]:
        """Keys of the work this process holds now: the only leases worth renewing."""
        return list(self._active)

    async def stop_claiming(self) -> None:
        self._open = False
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None

    async def stop(self, grace: float) -> None:
        """Stop taking work; give work in hand `grace` seconds, then release the rest.

        Released work is due again at once, so another instance (or this one
        after a restart) takes it without waiting for the lease to run out.
        """
        await self.stop_claiming()
        if self._active:
            await asyncio.wait(list(self._active.values()), timeout=grace)
        unfinished = list(self._active)
        for task in self._active.values():
            task.cancel()
        if self._active:
            # Bounded: work that ignores its cancellation must not hold the exit.
            await asyncio.wait(list(self._active.values()), timeout=CANCEL_WAIT)
        self._stopped = True
        if unfinished:
            await self._release(unfinished)
            log.info(
                f"{self.name}.released",
                extra={"action": f"{self.name}.released", "count": len(unfinished)},
            )

    def _free_slots(self) -> int:
        recording_room = self._capacity * RECORDING_FACTOR - len(self._active)
        return min(self._shares.free, recording_room)

    def _free(self, tenant: str) -> None:
        self._shares.give_back(tenant)
        self._wakeup.set()

    async def _claim(self, limit: int) -> list[T]:
        """Due work, as many as the tenants' fair shares allow.

        A claim may bring a tenant more than its room (the store does not
        count per tenant): those are handed back at once, in their place.
        """
        limit = min(limit, self._shares.most_room())
        if limit <= 0:
            return []
        wakes = self._wakes
        claimed = await self._claim_due(limit, self._shares.full_tenants())
        self._waiting = len(claimed) >= limit or self._wakes != wakes
        start: list[T] = []
        extra: list[str] = []
        for item in claimed:
            key = self._key(item)
            if key in self._active:
                # Its lease lapsed while we still work on it (a missed
                # renewal): we hold it again; do not run it twice.
                continue
            if self._shares.take(self._tenant(item)):
                start.append(item)
            else:
                extra.append(key)
        if extra:
            await self._hand_back(extra)
        return start

    async def _hand_back(self, keys: list[str]) -> None:
        """Release work taken but not started; should that fail, its lease lapses instead.

        The lapse is counted, but a handful of such failures stays far from
        failing the work.
        """
        try:
            await self._release(keys)
        except Exception:
            log.exception(
                f"{self.name}.release_failed", extra={"action": f"{self.name}.release_failed"}
            )

    async def _loop(self) -> None:
        while True:
            self._wakeup.clear()
            free = self._free_slots()
            claimed: list[T] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception:
                    log.exception(
                        f"{self.name}.claim_failed", extra={"action": f"{self.name}.claim_failed"}
                    )
            for item in claimed:
                self._start(self._key(item), item)
            if claimed and len(claimed) == free:
                continue
            try:
                async with asyncio.timeout(self._sleep_for()):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _start(self, key: str, item: T) -> None:
        """Run `item` in a slot already taken for its tenant."""
        slot = Slot(self, self._tenant(item))
        self._active[key] = asyncio.create_task(
            self._run(key, item, slot), name=f"{self.name}:{key}"
        )

    async def _run(self, key: str, item: T, slot: Slot) -> None:
        try:
            await self._process(item, slot)
        except Exception:
            # Its lease is no longer renewed once it leaves our hands, so it
            # lapses and the work is taken up again (here or elsewhere).
            log.exception(
                f"{self.name}.failed", extra={"action": f"{self.name}.failed", "key": key}
            )
        finally:
            slot.free()
            self._active.pop(key, None)
            self._wakeup.set()

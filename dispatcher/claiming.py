"""Claim work and run each piece as its own task, a bounded number at a time.

The worker pool (jobs) and the deliverer (webhook, email and SMS attempts)
are both this loop: take up to the free slots' worth of due work from the
store, start a task per item, then sleep until woken (work made here), until
a slot frees, or until the poll interval (work made elsewhere) runs out.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

CANCEL_WAIT = 5.0

# Work whose lease lapsed this often (its process was killed, or its task died,
# while it was in hand) is failed rather than taken up again: whatever it is,
# it keeps killing what runs it, and nothing may be retried forever.
MAX_LAPSES = 3


class ClaimLoop(ABC, Generic[T]):
    name = "claim"

    def __init__(self, *, capacity: int, poll_interval: float) -> None:
        self._capacity = capacity
        self._poll_interval = poll_interval
        self._active: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    @abstractmethod
    async def _claim(self, limit: int) -> list[T]: ...

    @abstractmethod
    def _key(self, item: T) -> str: ...

    @abstractmethod
    async def _process(self, item: T) -> None: ...

    @abstractmethod
    async def _release(self, keys: list[str]) -> None:
        """Hand back work this process will not finish (graceful shutdown)."""

    def _sleep_for(self) -> float:
        return self._poll_interval

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name=f"{self.name}-claim-loop")

    def wake(self, tenant: str | None = None) -> None:
        """New work may be due (of `tenant`, if known): claim now instead of at the next poll."""
        if tenant is not None and not self._may_take(tenant):
            # Its share is in flight: none of its work could be claimed now, and
            # a claim that passes over a large backlog is not free.
            return
        self._wakeup.set()

    def _may_take(self, tenant: str) -> bool:
        """Whether `tenant` may be given another slot now."""
        return True

    @property
    def busy(self) -> int:
        return len(self._active)

    @property
    def in_hand(self) -> list[str]:
        """Keys of the work this process is doing now: the only leases worth renewing."""
        return list(self._active)

    async def stop_claiming(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None

    async def stop(self, grace: float) -> None:
        """Stop claiming; give work in hand `grace` seconds, then release the rest.

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
        if unfinished:
            await self._release(unfinished)
            log.info(
                f"{self.name}.released",
                extra={"action": f"{self.name}.released", "count": len(unfinished)},
            )

    async def _loop(self) -> None:
        while True:
            self._wakeup.clear()
            free = self._capacity - len(self._active)
            claimed: list[T] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception:
                    log.exception(
                        f"{self.name}.claim_failed", extra={"action": f"{self.name}.claim_failed"}
                    )
            for item in claimed:
                key = self._key(item)
                if key in self._active:
                    # Its lease lapsed while we still work on it (a missed
                    # renewal): we hold it again; do not run it twice.
                    continue
                self._active[key] = asyncio.create_task(
                    self._run(key, item), name=f"{self.name}:{key}"
                )
            if claimed and len(claimed) == free:
                continue
            try:
                async with asyncio.timeout(self._sleep_for()):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _run(self, key: str, item: T) -> None:
        try:
            await self._process(item)
        except Exception:
            # Its lease is no longer renewed once it leaves our hands, so it
            # lapses and the work is taken up again (here or elsewhere).
            log.exception(
                f"{self.name}.failed", extra={"action": f"{self.name}.failed", "key": key}
            )
        finally:
            self._active.pop(key, None)
            self._wakeup.set()

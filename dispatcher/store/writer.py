"""Group commit: one writer that commits many callers' statements together.

SQLite on this class of machine commits ~3,000 single-row transactions a
second with a real fsync, but ~100,000 rows a second when a hundred share a
commit. So every write goes through one queue: the writer takes whatever has
piled up while the previous commit was running, runs each caller's operation
inside a savepoint of one transaction, commits once, and only then answers
each caller.

Savepoints per operation would cost two more round trips to the database
thread each, so the rule is instead: an operation may decline (raise a
DispatcherError such as Conflict or QueueFull) only before it writes. Any
other error rolls the whole batch back, and each operation is then retried
in a transaction of its own, so only the culprit fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite

from dispatcher.errors import DispatcherError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Batch:
    """What one operation sees: the connection, and facts shared by the whole batch."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.queued_jobs: int | None = None
        self.queued_by_tenant: dict[str, int] = {}
        # Idempotency keys taken by jobs earlier in this batch, not yet inserted.
        self.idempotency: dict[tuple[str, str], tuple[str, str | None]] = {}
        self._deferred: dict[str, list[tuple[Any, ...]]] = {}

    def defer(self, statement: str, params: tuple[Any, ...]) -> None:
        """Run `statement` with the others like it in one executemany before the commit.

        Each statement is a round trip to the database thread; deferring
        makes a batch of a thousand inserts cost one.
        """
        self._deferred.setdefault(statement, []).append(params)

    async def flush(self) -> None:
        for statement, rows in self._deferred.items():
            await self.db.executemany(statement, rows)
        self._deferred.clear()


Operation = Callable[[Batch], Awaitable[Any]]


class GroupWriter:
    def __init__(self, db: aiosqlite.Connection, max_batch: int = 1000) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Operation, asyncio.Future[Any]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Totals since start, for metrics: writes per commit is the batching factor.
        self.commits = 0
        self.writes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sqlite-group-writer")

    async def stop(self) -> None:
        """Commit everything already queued, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None

    async def write(self, operation: Callable[[Batch], Awaitable[T]]) -> T:
        if self._task is None or self._task.done():
            raise RuntimeError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((operation, future))
        # Shielded: a caller that gives up still has its write committed, and
        # the writer never sets a result on a cancelled future's behalf.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self._transaction(batch)
        except Exception as exc:
            if len(batch) > 1:
                # Something broke mid-batch: run each operation in its own
                # transaction, so only the culprit fails.
                for item in batch:
                    await self._commit([item])
                return
            log.exception("store.write_failed", extra={"action": "store.write_failed"})
            outcomes = [exc]
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _transaction(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> list[Any]:
        db = self._db
        context = Batch(db)
        outcomes: list[Any] = []
        await db.execute("BEGIN IMMEDIATE")
        try:
            for operation, _ in batch:
                try:
                    outcomes.append(await operation(context))
                except DispatcherError as declined:
                    # Allowed only before the operation wrote anything (see module doc).
                    outcomes.append(declined)
            await context.flush()
            await db.execute("COMMIT")
            self.commits += 1
            self.writes += len(batch)
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        return outcomes

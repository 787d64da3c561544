"""Group commit: one writer that commits many callers' statements together, in one hop.

SQLite on this class of machine commits ~3,000 single-row transactions a
second with a real fsync, but ~100,000 rows a second when a hundred share a
commit. So every write goes through one queue: the writer takes whatever has
piled up while the previous commit was running, runs each caller's operation
inside one transaction, commits once, and only then answers each caller.

The whole transaction runs on the writer's own thread, as one call: each
statement sent to a database thread separately would cost a handoff between
threads (a queue, a future, a wakeup of the event loop) and, under load, a
wait for the interpreter lock, which cost more than the statements
themselves. aiosqlite sends statements one at a time, so the writer holds a
plain `sqlite3` connection on a thread of its own; reads stay on aiosqlite.
Operations are therefore synchronous functions of a `Batch`.

Savepoints per operation would cost two more statements each, so the rule is
instead: an operation may decline (raise a DispatcherError such as Conflict
or QueueFull) only before it writes. Any other error rolls the whole batch
back, and each operation is then retried in a transaction of its own, so only
the culprit fails.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dispatcher.errors import STORE_RETRY_AFTER, DispatcherError, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class Batch:
    """What one operation sees: the connection, and facts shared by the whole batch."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.queued_jobs: int | None = None
        self.queued_by_tenant: dict[str, int] = {}
        # Idempotency keys taken by jobs earlier in this batch, not yet inserted.
        self.idempotency: dict[tuple[str, str], tuple[str, str | None]] = {}
        self._deferred: dict[str, list[tuple[Any, ...]]] = {}

    def fetch(self, statement: str, params: Any = ()) -> list[sqlite3.Row]:
        return self.db.execute(statement, params).fetchall()

    def defer(self, statement: str, params: tuple[Any, ...]) -> None:
        """Run `statement` with the others like it in one executemany before the commit."""
        self._deferred.setdefault(statement, []).append(params)

    def flush(self) -> None:
        for statement, rows in self._deferred.items():
            self.db.executemany(statement, rows)
        self._deferred.clear()


# SQLite's primary result codes that say the file cannot be written now, rather
# than that a statement is wrong: the caller is told to come back later.
_UNWRITABLE = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_READONLY": "the database file is read-only",
    "SQLITE_BUSY": "the database is locked by another process",
    "SQLITE_LOCKED": "the database is locked",
    "SQLITE_IOERR": "the disk failed to read or write",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
}


def unwritable(exc: BaseException) -> StoreUnavailable | None:
    """A StoreUnavailable for an error that says the database cannot be written now."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for code, reason in _UNWRITABLE.items():
        if name == code or name.startswith(code + "_"):
            return StoreUnavailable(
                f"the database cannot be written: {reason}; nothing was written",
                retry_after=STORE_RETRY_AFTER,
            )
    return None


Operation = Callable[[Batch], Any]
_Item = tuple[Operation, "asyncio.Future[Any]"]


def connect(path: str) -> sqlite3.Connection:
    """The writer's connection: autocommit mode (transactions are explicit), WAL, FULL sync."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA journal_mode = WAL")
    # FULL: a 202 means the job survives power loss too, not only a crash.
    db.execute("PRAGMA synchronous = FULL")
    return db


class GroupWriter:
    def __init__(self, path: str, max_batch: int = 1000) -> None:
        self._path = path
        self._max_batch = max_batch
        # One thread: the connection is made, used and closed there only.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._db: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Totals since start, for metrics: writes per commit is the batching factor.
        self.commits = 0
        self.writes = 0
        # Told the number of writes of each commit (for the metrics).
        self.on_commit: Callable[[int], None] | None = None

    async def run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run `function` on the writer's connection, outside any batch (opening, migrating)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, function)

    def _call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self._db = connect(self._path)
        return function(self._db)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sqlite-group-writer")

    async def stop(self) -> None:
        """Commit everything already queued, then stop and close the connection."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def write(self, operation: Callable[[Batch], T]) -> T:
        if self._task is None or self._task.done():
            raise RuntimeError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((operation, future))
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

    async def _commit(self, batch: list[_Item]) -> None:
        operations = [operation for operation, _ in batch]
        try:
            outcomes = await self.run(lambda db: self._transaction(db, operations))
        except Exception as exc:
            if len(batch) > 1:
                # Something broke mid-batch: run each operation in its own
                # transaction, so only the culprit fails.
                for item in batch:
                    await self._commit([item])
                return
            log.exception("store.write_failed", extra={"action": "store.write_failed"})
            outcomes = [unwritable(exc) or exc]
        else:
            self.commits += 1
            self.writes += len(batch)
            if self.on_commit is not None:
                self.on_commit(len(batch))
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    @staticmethod
    def _transaction(db: sqlite3.Connection, operations: list[Operation]) -> list[Any]:
        """On the writer's thread: the whole batch, committed once."""
        context = Batch(db)
        outcomes: list[Any] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for operation in operations:
                try:
                    outcomes.append(operation(context))
                except DispatcherError as declined:
                    # Allowed only before the operation wrote anything (see module doc).
                    outcomes.append(declined)
            context.flush()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

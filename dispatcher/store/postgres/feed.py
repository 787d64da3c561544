"""The change feed between instances on one PostgreSQL database: LISTEN and NOTIFY.

Each instance listens on one channel over a connection of its own and sends
its changes with NOTIFY through the store's pool, many in one statement.
PostgreSQL hands a notification to every listener of the database, the
sender included; an instance knows its own by their origin and drops them,
since it heard them when it published.

Nothing here is needed for correctness: an instance that misses a change
(its listening connection broke, or NOTIFY failed while the database was
down) catches up at its next poll. After listening again it tells its own
listeners that everything may be stale (RESYNC), so they look at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import deque
from typing import Any

import asyncpg

from dispatcher.store.feed import Change, ChangeFeed, ChangeKind

log = logging.getLogger(__name__)

CHANNEL = "dispatcher_changes"
# Notifications sent in one statement.
SEND_BATCH = 500
# Changes waiting to be sent, at most; past it new ones are dropped (polling
# catches up), so a database that is down cannot grow this process's memory.
MAX_UNSENT = 10_000
# PostgreSQL refuses a payload of 8,000 bytes or more.
MAX_PAYLOAD = 7_900
# How often a quiet listening connection is checked, and how long that may take.
CHECK_EVERY = 10.0
CHECK_TIMEOUT = 5.0
RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
# A listening connection that lasted this long was not a failure to back off from.
STEADY = 30.0


class PostgresFeed(ChangeFeed):
    def __init__(self, dsn: str, pool: asyncpg.Pool) -> None:
        super().__init__()
        self._dsn = dsn
        self._pool = pool
        self._origin = secrets.token_hex(8)
        self._unsent: deque[str] = deque()
        self._pending = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Set once the first LISTEN is in place; a test may wait for it.
        self.listening = asyncio.Event()

    def _send(self, change: Change) -> None:
        payload = json.dumps([self._origin, str(change.kind), change.subject, change.tenant])
        if len(payload.encode()) > MAX_PAYLOAD or len(self._unsent) >= MAX_UNSENT:
            return
        self._unsent.append(payload)
        self._pending.set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="feed-send"),
            asyncio.create_task(self._listen_loop(), name="feed-listen"),
        ]
        # Changes made from now on are heard: wait (briefly) for LISTEN to be in place.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self.listening.wait()

    async def stop(self) -> None:
        # What is still unsent goes first, if the database lets it in time.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._flush()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _send_loop(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Dropped: polling catches up. Said once per failure, without the DSN.
                log.warning(
                    "feed.send_failed",
                    extra={"action": "feed.send_failed", "error": type(exc).__name__},
                )
                self._unsent.clear()

    async def _flush(self) -> None:
        while self._unsent:
            batch = [self._unsent.popleft() for _ in range(min(SEND_BATCH, len(self._unsent)))]
            await self._pool.execute(
                "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload", CHANNEL, batch
            )

    async def _listen_loop(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Whatever it was (a standby that refuses LISTEN, a protocol
                # error after a shutdown), listening goes on after a pause.
                log.warning(
                    "feed.reconnecting",
                    extra={"action": "feed.reconnecting", "error": type(exc).__name__},
                )
            if loop.time() - began >= STEADY:
                failures = 0
            await asyncio.sleep(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)])
            failures += 1

    async def _listen_once(self) -> None:
        """Listen until the connection is lost (returns) or fails (raises)."""
        connection = await asyncpg.connect(self._dsn, timeout=CHECK_TIMEOUT)
        try:
            await connection.add_listener(CHANNEL, self._heard)
            if self.listening.is_set():
                # Listening again: what was said meanwhile was not heard.
                self.hear(Change(ChangeKind.RESYNC))
            self.listening.set()
            await _until_lost(connection)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close(timeout=1))

    def _heard(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            origin, kind, subject, tenant = json.loads(payload)
            change = Change(ChangeKind(kind), str(subject), tenant, remote=True)
        except (ValueError, TypeError):
            return  # not ours to understand (another program on the channel)
        if origin != self._origin:
            self.hear(change)


async def _until_lost(connection: asyncpg.Connection) -> None:
    """Return once the connection is closed, or raise once it stops answering."""
    lost = asyncio.Event()
    connection.add_termination_listener(lambda _: lost.set())
    while not connection.is_closed():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CHECK_EVERY):
                await lost.wait()
                return
        await connection.fetchval("SELECT 1", timeout=CHECK_TIMEOUT)

"""The SQLite connection the store's parts share: WAL, one group-committing writer, one reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiosqlite

from dispatcher.store.migrations import MIGRATIONS
from dispatcher.store.records import (
    Channel,
    Page,
    delivery_host,
)
from dispatcher.store.writer import GroupWriter


def dump_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def tenant_and_equal(tenant: str | None, *pairs: tuple[str, Any]) -> tuple[list[str], list[Any]]:
    """WHERE clauses: the tenant's rows (all for None), and each column equal to its value.

    A None value puts no condition on its column.
    """
    clauses, params = ["(? IS NULL OR tenant = ?)"], [tenant, tenant]
    for column, value in pairs:
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(str(value))
    return clauses, params


def page_of(items: list[Any], limit: int, cursor_of: Any) -> Page:
    if len(items) > limit:
        items = items[:limit]
        return Page(items, cursor_of(items[-1]))
    return Page(items, None)


class SQLiteConnection:
    def __init__(self, path: str) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._writer: GroupWriter | None = None

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self._path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA busy_timeout = 10000")
        await db.execute("PRAGMA foreign_keys = ON")
        return db

    async def open(self) -> None:
        # Once, at start, before any request: blocking here is harmless.
        Path(self._path).absolute().parent.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        self._db = await self._connect()
        await self._db.execute("PRAGMA journal_mode = WAL")
        # FULL: a 202 means the job survives power loss too, not only a crash.
        await self._db.execute("PRAGMA synchronous = FULL")
        await self._migrate(self._db)
        await self._fill_hosts(self._db)
        self._reader = await self._connect()
        self._writer = GroupWriter(self._db)
        self._writer.start()

    async def _fill_hosts(self, db: aiosqlite.Connection) -> None:
        """Give pending deliveries from before migration 3 their host.

        SQL cannot parse a URL, so this is done here; without it their
        backlog would slip past the per-host share.
        """
        rows = await db.execute_fetchall(
            "SELECT id, channel, target FROM deliveries WHERE host IS NULL AND status = 'pending'"
        )
        hosts = [(delivery_host(Channel(r["channel"]), r["target"]), r["id"]) for r in rows]
        if hosts:
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany("UPDATE deliveries SET host = ? WHERE id = ?", hosts)
            await db.execute("COMMIT")

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            rows = await db.execute_fetchall("SELECT max(version) FROM schema_version")
            current = next(iter(rows))[0] or 0
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version VALUES (?)", (version,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._writer:
            await self._writer.stop()
        for db in (self._reader, self._db):
            if db is not None:
                await db.close()
        self._db = self._reader = self._writer = None

    async def ping(self) -> None:
        await self._read("SELECT 1")

    async def _read(self, query: str, params: Any = ()) -> list[Any]:
        if self._reader is None:
            raise RuntimeError("the store is closed")
        return list(await self._reader.execute_fetchall(query, params))

    async def _write(self, operation: Any) -> Any:
        if self._writer is None:
            raise RuntimeError("the store is closed")
        return await self._writer.write(operation)

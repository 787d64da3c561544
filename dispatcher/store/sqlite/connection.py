"""The SQLite connection the store's parts share: WAL, one group-committing writer, one reader."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from dispatcher.errors import StartupError
from dispatcher.store.records import Channel, delivery_host
from dispatcher.store.sqlite.migrations import MIGRATIONS
from dispatcher.store.sqlite.writer import Batch, GroupWriter

T = TypeVar("T")


class SQLiteConnection:
    def __init__(self, path: str) -> None:
        self._path = path
        self._reader: aiosqlite.Connection | None = None
        self._writer: GroupWriter | None = None

    async def open(self) -> None:
        """Open the file (made, with its folder, if need be) and bring its schema up to date.

        A file that cannot be opened or written is a StartupError naming it.
        """
        writer = GroupWriter(self._path)
        try:
            # Once, at start, before any request: blocking here is harmless.
            Path(self._path).absolute().parent.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
            before = await writer.run(_migrate)
            if 0 < before < HOSTS_VERSION:
                await writer.run(_fill_hosts)
            self._reader = await aiosqlite.connect(self._path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            await writer.stop()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StartupError(f"the database {self._path} cannot be opened: {reason}") from exc
        except BaseException:
            await writer.stop()
            raise
        self._reader.row_factory = aiosqlite.Row
        await self._reader.execute("PRAGMA busy_timeout = 10000")
        self._writer = writer
        self._writer.start()

    async def close(self) -> None:
        if self._writer:
            await self._writer.stop()
        if self._reader is not None:
            await self._reader.close()
        self._reader = self._writer = None

    def observe_commits(self, callback: Callable[[int], None]) -> None:
        if self._writer is not None:
            self._writer.on_commit = callback

    async def ping(self) -> None:
        await self._read("SELECT 1")

    async def check_writable(self) -> None:
        def op(batch: Batch) -> None:
            # A page's worth, so that a full disk or file says so here.
            batch.db.execute("INSERT INTO write_probe (data) VALUES (zeroblob(4096))")
            batch.db.execute("DELETE FROM write_probe")

        await self._write(op)

    async def _read(self, query: str, params: Any = ()) -> list[Any]:
        if self._reader is None:
            raise RuntimeError("the store is closed")
        return list(await self._reader.execute_fetchall(query, params))

    async def _write(self, operation: Callable[[Batch], T]) -> T:
        if self._writer is None:
            raise RuntimeError("the store is closed")
        return await self._writer.write(operation)


def _migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations not applied yet; the version the database was at."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
        current = db.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (?)", (version,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return int(current)


# The migration that gave deliveries a host column.
HOSTS_VERSION = 3


def _fill_hosts(db: sqlite3.Connection) -> None:
    """Give pending deliveries from before migration 3 their host, once, as it is applied.

    SQL cannot parse a URL, so this is done here; without it their
    backlog would slip past the per-host share.
    """
    rows = db.execute(
        "SELECT id, channel, target FROM deliveries WHERE host IS NULL AND status = 'pending'"
    ).fetchall()
    hosts = [(delivery_host(Channel(r["channel"]), r["target"]), r["id"]) for r in rows]
    if hosts:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("UPDATE deliveries SET host = ? WHERE id = ?", hosts)
        db.execute("COMMIT")

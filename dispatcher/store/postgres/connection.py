"""The connection pool the store's parts share, and what its failures mean to a caller.

Each store call is one transaction on a connection of the pool, committed
before the call returns; PostgreSQL commits many of them at once by itself,
so there is no group writer as for SQLite.

A database that cannot be reached (down, restarting, out of connections, of
disk, read-only) makes a call raise StoreUnavailable, which the API answers
503 with Retry-After; nothing the call meant to write was written. The pool
drops a connection that broke and opens a new one at the next call, so one
failure does not poison the calls after it, and calls work again as soon as
the database is back. No message says the DSN: it may hold a password.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from dispatcher.errors import STORE_RETRY_AFTER, StartupError, StoreUnavailable
from dispatcher.store.postgres import queries as sql
from dispatcher.store.postgres.migrations import migrate

# Seconds to open a connection, and for the readiness probe's write.
CONNECT_TIMEOUT = 10.0
PROBE_TIMEOUT = 3.0
# Seconds close() waits for calls in progress before cutting their connections.
CLOSE_TIMEOUT = 10.0
# Seconds one statement may take, and a call may wait for a free connection: a
# database that stops answering (a network that drops packets) makes calls
# fail with 503 after this, never hang. A claim or a write takes milliseconds.
STATEMENT_TIMEOUT = 15.0
ACQUIRE_TIMEOUT = 10.0

# Errors that say the database cannot take this call now, rather than that a
# statement is wrong, and how a caller is told so.
_UNAVAILABLE: tuple[tuple[type[BaseException], str], ...] = (
    (asyncpg.DiskFullError, "its disk is full"),
    (asyncpg.ReadOnlySQLTransactionError, "it is read-only"),
    (asyncpg.TooManyConnectionsError, "it has too many connections"),
    (asyncpg.InsufficientResourcesError, "it is out of resources"),
    (asyncpg.CannotConnectNowError, "it is starting up or shutting down"),
    (asyncpg.AdminShutdownError, "it is shutting down"),
    (asyncpg.CrashShutdownError, "it is restarting after a crash"),
    (asyncpg.QueryCanceledError, "it did not answer in time"),
    (asyncpg.OperatorInterventionError, "an operator ended the connection"),
    (asyncpg.PostgresConnectionError, "the connection was lost"),
    # What a query on an idle connection raises when the server's goodbye (a
    # shutdown's error) arrived and its close has not been read yet: asyncpg's
    # protocol is then out of step, and the pool drops the connection.
    (asyncpg.InternalClientError, "the connection was lost"),
    (TimeoutError, "it did not answer in time"),
    (ConnectionError, "the connection failed"),
    (OSError, "the connection failed"),
)


# What opening the pool or migrating raises when the database is not as configured.
_CONNECTING = (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError)


def unavailable(exc: BaseException, connection: Any = None) -> StoreUnavailable | None:
    """A StoreUnavailable for an error that says the database cannot take calls now."""
    for kind, reason in _UNAVAILABLE:
        if isinstance(exc, kind):
            return _store_unavailable(reason)
    # asyncpg says "connection is closed" as an InterfaceError, which otherwise
    # means a mistake in a call: only the state of the connection tells them apart.
    if isinstance(exc, asyncpg.InterfaceError) and (
        connection is not None and connection.is_closed()
    ):
        return _store_unavailable("the connection was lost")
    return None


def _store_unavailable(reason: str) -> StoreUnavailable:
    return StoreUnavailable(
        f"the database cannot be reached: {reason}; nothing was written",
        retry_after=STORE_RETRY_AFTER,
    )


def describe(dsn: str) -> str:
    """Where a DSN points, as host:port/database, without its user or password."""
    parts = urlsplit(dsn)
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    try:
        port = parts.port
    except ValueError:
        port = None
    host = options.get("host") or parts.hostname or "localhost"
    port_text = options.get("port") or str(port or 5432)
    database = options.get("dbname") or unquote(parts.path.lstrip("/")) or "(default)"
    return f"{host}:{port_text}/{database}"


def _reason(exc: BaseException, dsn: str) -> str:
    """Why connecting failed, in words that cannot carry the password."""
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    password = urlsplit(dsn).password
    for secret in filter(None, {password, password and unquote(password)}):
        text = text.replace(secret, "***")
    return text


class PostgresConnection:
    def __init__(self, dsn: str, pool_size: int = 10) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        # Public once open: the change feed sends through it.
        self.pool: asyncpg.Pool | None = None
        self._on_commit: Callable[[int], None] | None = None

    async def open(self) -> None:
        """Open the pool and bring the schema up to date.

        A database that cannot be reached or migrated is a StartupError naming
        its host, port and database (never the password).
        """
        where = describe(self._dsn)
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=STATEMENT_TIMEOUT,
                reset=_end_open_transaction,
            )
        except _CONNECTING as exc:
            reason = _reason(exc, self._dsn)
            raise StartupError(f"the database {where} cannot be reached: {reason}") from None
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
        except _CONNECTING as exc:
            await pool.close()
            reason = _reason(exc, self._dsn)
            raise StartupError(f"the database {where} cannot be migrated: {reason}") from None
        except BaseException:
            await pool.close()
            raise
        self.pool = pool

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await pool.close()
        except TimeoutError:
            pool.terminate()

    def observe_commits(self, callback: Callable[[int], None]) -> None:
        self._on_commit = callback

    async def ping(self) -> None:
        async with self._connection() as connection:
            await connection.fetchval(sql.PING)

    async def check_writable(self) -> None:
        async with self._transaction(within=PROBE_TIMEOUT) as connection:
            await connection.execute(sql.PROBE_WRITE, timeout=PROBE_TIMEOUT)

    @contextlib.asynccontextmanager
    async def _connection(self, within: float | None = None) -> AsyncIterator[Any]:
        """A connection of the pool, any failure that says the database is out of reach
        raised as StoreUnavailable; a broken connection is dropped by the pool on release."""
        if self.pool is None:
            raise RuntimeError("the store is closed")
        connection = None
        try:
            async with self.pool.acquire(timeout=within or ACQUIRE_TIMEOUT) as connection:
                yield connection
        except Exception as exc:
            mapped = unavailable(exc, connection)
            if mapped is None:
                raise
            raise mapped from exc

    @contextlib.asynccontextmanager
    async def _transaction(self, within: float | None = None) -> AsyncIterator[Any]:
        """One call's writes, committed together when the block ends without an error.

        `within`: seconds to wait for a connection when the pool has none free.
        """
        async with self._connection(within) as connection, connection.transaction():
            yield connection
        self._committed()

    def _committed(self) -> None:
        """A write was committed (for the metrics)."""
        if self._on_commit is not None:
            self._on_commit(1)

    async def _fetch(self, query: str, *params: Any) -> list[Any]:
        async with self._connection() as connection:
            return list(await connection.fetch(query, *params))

    async def _fetchrow(self, query: str, *params: Any) -> Any:
        async with self._connection() as connection:
            return await connection.fetchrow(query, *params)


async def _end_open_transaction(connection: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: nothing, unless a call
    left a transaction open. The store sets no session state (no SET, no LISTEN on
    pooled connections, only transaction-scoped advisory locks), so asyncpg's
    default reset, a round trip per call, would undo nothing."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


def affected(status: str) -> int:
    """The rows a statement changed, from its status ("UPDATE 3", "INSERT 0 1")."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0

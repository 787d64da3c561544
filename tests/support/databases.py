"""A fresh PostgreSQL database per test, dropped after it.

The server is DISPATCHER_TEST_POSTGRES_URL, by default a local one that trusts
its `postgres` user. Each test gets a database of its own, made empty from
template0 (the store migrates it as it opens), so tests never see each
other's rows and may run in any order. Making one, migrating it and
dropping it takes some 50 ms here; a migrated template would save about a
third of that, not worth a database left behind on the server.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

SERVER_URL = os.environ.get(
    "DISPATCHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# Without a server the PostgreSQL tests are skipped, saying so, unless this is
# set (CI sets it: there a missing server is a failure, not a skip).
REQUIRED = bool(os.environ.get("DISPATCHER_TEST_POSTGRES_REQUIRED"))


def database_url(name: str, server: str = SERVER_URL) -> str:
    """The server's URL, naming database `name` instead of its own."""
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def fresh_postgres_url() -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped (whoever is still connected) after."""
    name = f"dt_{secrets.token_hex(8)}"
    admin = await _connect_or_skip()
    try:
        # The name is made here of hex digits only: safe to put in the statement.
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    try:
        yield database_url(name)
    finally:
        admin = await asyncpg.connect(SERVER_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _connect_or_skip() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(SERVER_URL, timeout=5)
    except (OSError, asyncpg.CannotConnectNowError) as exc:
        if REQUIRED:
            raise
        where = urlsplit(SERVER_URL)
        pytest.skip(
            f"no PostgreSQL server at {where.hostname}:{where.port or 5432} ({exc}); "
            "set DISPATCHER_TEST_POSTGRES_URL to one"
        )


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test: `postgres_url` in a test's arguments."""
    async with fresh_postgres_url() as url:
        yield url

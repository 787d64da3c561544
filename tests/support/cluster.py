"""A throwaway PostgreSQL cluster of a test's own, for what must not touch the shared server.

Restarting or stopping the machine's server (the one `tests/support/databases.py`
makes databases on) would break every other test using it; a test that takes
PostgreSQL away from under a running `dispatcher serve` does it to a cluster
made here: `initdb` in a temporary directory, listening on a free port of
127.0.0.1 only, with its unix socket inside that directory, trusting its
`postgres` user. The server binaries refuse to run as root, so as root they
run as the `postgres` OS user.

`running_cluster()` gives one for a module-scoped fixture: made once for a
module's tests, then stopped (`-m immediate`) and its directory removed,
whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.support.process import free_port

OS_USER = "postgres"
# Seconds pg_ctl waits for the server to start or stop.
PG_CTL_WAIT = 30


def _as_server_user(*command: str) -> list[str]:
    """The command as the `postgres` OS user when run as root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *command]
    return list(command)


@dataclass
class Cluster:
    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def new_database(self) -> str:
        """The URL of a new, empty database of the cluster: one per test, none shared."""
        name = f"dt_{secrets.token_hex(8)}"
        connection = await asyncpg.connect(self.url())
        try:
            # Hex digits only: safe to put in the statement.
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            await connection.close()
        return self.url(name)

    def _options(self) -> str:
        # fsync only matters when the machine itself goes down, never the case here.
        return f"-k {self.directory} -h 127.0.0.1 -p {self.port} -c fsync=off"

    def _pg_ctl(self, action: str, *extra: str) -> list[str]:
        return _as_server_user(
            "pg_ctl", action, "-D", str(self.data), "-w", "-t", str(PG_CTL_WAIT), *extra
        )

    def _start_command(self) -> list[str]:
        return self._pg_ctl("start", "-l", str(self.log), "-o", self._options())

    def _stop_command(self, mode: str) -> list[str]:
        return self._pg_ctl("stop", "-m", mode)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    async def _run(self, command: list[str]) -> None:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited with {process.returncode}: "
                f"{stderr.decode(errors='replace')}\n{self.log_tail()}"
            )

    async def start(self) -> None:
        """Start the server and return once it takes connections."""
        await self._run(self._start_command())

    async def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: connections are ended, a clean shutdown) and wait for it."""
        await self._run(self._stop_command(mode))

    def start_now(self) -> None:
        subprocess.run(self._start_command(), check=True, capture_output=True, timeout=60)

    def stop_now(self, mode: str = "immediate") -> None:
        """Stop it if it runs; quiet when it does not."""
        subprocess.run(self._stop_command(mode), capture_output=True, timeout=60)


def make_cluster() -> Cluster:
    """A new cluster, initialised and started (the caller stops it and removes its directory)."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("initdb and pg_ctl are not on PATH")
    directory = Path(tempfile.mkdtemp(prefix="dispatcher-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, user=OS_USER)
    cluster = Cluster(directory, free_port())
    init = _as_server_user(
        "initdb", "-D", str(cluster.data), "--auth=trust", "-U", OS_USER, "-E", "UTF8", "-N"
    )
    try:
        subprocess.run(init, check=True, capture_output=True, timeout=120)
        cluster.start_now()
    except BaseException:
        cluster.stop_now("immediate")
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return cluster


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A running cluster, stopped (`-m immediate`) and removed on leaving, whatever happened.

    For a module-scoped fixture of the test module that needs one.
    """
    cluster = make_cluster()
    try:
        yield cluster
    finally:
        cluster.stop_now("immediate")
        shutil.rmtree(cluster.directory, ignore_errors=True)

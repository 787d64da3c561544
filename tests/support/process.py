"""A real `dispatcher serve` process for tests: started on a free loopback port and a
SQLite file in `tmp_path`, spoken to over HTTP, and gone after the test."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN_KEY, LOOPBACK, wait_for
from tests.support.secrets import assert_no_secret_in, remember

BASE_ENV = {
    "DISPATCHER_ADMIN_KEY": ADMIN_KEY,
    "DISPATCHER_ALLOW_NETWORKS": LOOPBACK,
    # Short, so that a killed process's leases lapse quickly.
    "DISPATCHER_LEASE_SECONDS": "1",
    "DISPATCHER_RETRY_SCHEDULE": "0.2,0.2,0.5,1,1,1",
    "DISPATCHER_WORKERS": "8",
    "DISPATCHER_POLL_INTERVAL": "0.1",
    "DISPATCHER_SHUTDOWN_GRACE": "5",
}
ADMIN_KEY_LINE = re.compile(r"\bdk_[A-Za-z0-9_\-]+")
# The console script `pip install` made, as a user runs it (not `python -m`, which
# would put the working directory on the import path by itself).
DISPATCHER = str(Path(sys.executable).with_name("dispatcher"))
# So that `dispatcher serve` can import test handler modules wherever pytest runs from.
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One `dispatcher serve` process."""

    process: asyncio.subprocess.Process
    url: str
    stdout_file: Path
    stderr_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def stdout(self) -> str:
        return self.stdout_file.read_text()

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(self.stderr_file.read_text().splitlines()[-lines:])

    async def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        os.kill(self.pid, signal.SIGKILL)
        await self.process.wait()

    async def exit_code(self, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            return await self.process.wait()


class Http:
    """The test's HTTP client, speaking to whichever server it is given."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(
        self, server: Server, method: str, path: str, *, key: str = ADMIN_KEY, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"}
        async with self.session.request(
            method, server.url + path, headers=headers, **kwargs
        ) as response:
            if response.content_type.endswith("json"):
                body = await response.json(content_type=None)
                remember(body)
                return response.status, body
            return response.status, await response.text()

    async def submit(self, server: Server, **job: Any) -> dict[str, Any]:
        status, body = await self.call(server, "POST", "/v1/jobs", json=job)
        assert status == 202, body
        return body

    async def wait(self, server: Server, job_id: str, seconds: int = 10) -> dict[str, Any]:
        """The job once finished (a long-poll), or as it stands after `seconds`."""
        status, body = await self.call(server, "GET", f"/v1/jobs/{job_id}?wait={seconds}")
        assert status == 200, body
        return body

    async def job(self, server: Server, job_id: str) -> dict[str, Any]:
        status, body = await self.call(server, "GET", f"/v1/jobs/{job_id}")
        assert status == 200, body
        return body

    async def jobs(self, server: Server, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        found = await asyncio.gather(*(self.job(server, job_id) for job_id in job_ids))
        return {job["id"]: job for job in found}

    async def delivery(self, server: Server, delivery_id: str) -> dict[str, Any]:
        status, body = await self.call(server, "GET", f"/v1/deliveries/{delivery_id}")
        assert status == 200, body
        return body

    async def healthy(self, server: Server) -> bool:
        if not server.running:
            raise AssertionError(
                f"dispatcher serve exited with {server.process.returncode}:\n"
                + server.stderr_tail()
            )
        try:
            async with self.session.get(server.url + "/healthz") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Http(session)


@pytest.fixture
async def serve(http: Http, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Start `dispatcher serve` on `tmp_path/d.db`; every process is gone after the test."""
    started: list[Server] = []
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}

    async def start(cwd: Path | None = None, **overrides: str | None) -> Server:
        port = free_port()
        env = {
            **inherited,
            **BASE_ENV,
            "DISPATCHER_PORT": str(port),
            "DISPATCHER_DATABASE_URL": f"sqlite:///{tmp_path}/d.db",
        }
        for name, value in overrides.items():
            env.pop(name, None)
            if value is not None:
                env[name] = value
        n = len(started)
        stdout_file, stderr_file = tmp_path / f"serve-{n}.out", tmp_path / f"serve-{n}.err"
        with stdout_file.open("wb") as out, stderr_file.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                DISPATCHER,
                "serve",
                cwd=cwd or tmp_path,
                env=env,
                stdout=out,
                stderr=err,
                stdin=asyncio.subprocess.DEVNULL,
            )
        server = Server(process, f"http://127.0.0.1:{port}", stdout_file, stderr_file)
        started.append(server)
        await wait_for(lambda: http.healthy(server), timeout=20, every=0.05)
        return server

    yield start
    for server in started:
        if server.running:
            await server.kill()
    # What each process logged (stderr; stdout prints the first admin key on purpose).
    assert_no_secret_in(*(server.stderr_file for server in started))


async def serve_until_it_stops(env: dict[str, str], timeout: float = 15) -> tuple[int, str, str]:
    """Run a `dispatcher serve` that must stop by itself (a bad setting, a busy port):
    its exit status, stdout and stderr. Killed if it is still running at `timeout`."""
    process = await asyncio.create_subprocess_exec(
        DISPATCHER, "serve", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()

"""Shared fixtures: a real dispatcher app, real receivers on loopback, real SQLite files."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dispatcher.app import create_app
from dispatcher.settings import Settings
from tests.support.fakes import make_gateway, make_smtp, smtp  # noqa: F401 - fixtures

# No issued key or secret in any log line of the whole suite (a session fixture).
from tests.support.secrets import no_secret_in_any_log_line, remember  # noqa: F401

# A real `dispatcher serve` subprocess: the `serve` and `http` fixtures.
pytest_plugins = ["tests.support.process", "tests.support.databases"]

ADMIN_KEY = "dk_test-admin-key-0123456789"
LOOPBACK = "127.0.0.0/8,::1/128"


async def wait_for(
    condition: Callable[[], Any], *, timeout: float = 10, every: float = 0.02
) -> Any:
    """Poll `condition` (plain or async) until it gives something truthy, or fail at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(every)


# Modules whose every app runs once on each backend, so that both keep the
# same behaviour; the rest run on SQLite, the default.
BOTH_BACKENDS = {
    "test_jobs",
    "test_delivery",
    "test_endpoints",
    "test_endpoint_limits",
    "test_streams",
    "test_tenancy",
    "test_notify",
    "test_api_errors",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "database_url" in metafunc.fixturenames and module in BOTH_BACKENDS:
        metafunc.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
async def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """Where the test's apps keep their data: a file under tmp_path, or a fresh
    PostgreSQL database made for the test and dropped after it."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite:///{tmp_path}/dispatcher.db"
        return
    from tests.support.databases import fresh_postgres_url

    async with fresh_postgres_url() as url:
        yield url


def settings_for(tmp_path: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path}/dispatcher.db",
        "admin_key": ADMIN_KEY,
        "allow_networks": LOOPBACK,
        "retry_schedule": "0.05,0.05",
        "poll_interval": 0.05,
        "delivery_timeout": 5,
        "workers": 4,
        "shutdown_grace": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


class Api:
    """A test client for one running dispatcher app, speaking as one key."""

    def __init__(self, client: TestClient, key: str = ADMIN_KEY) -> None:
        self.client = client
        self.key = key

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **(extra or {})}

    def as_key(self, key: str) -> Api:
        return Api(self.client, key)

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = self.headers(kwargs.pop("headers", None))
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            if response.content_type.endswith("json"):
                body = await response.json(content_type=None)
                remember(body)
                return response.status, body
            return response.status, await response.text()

    async def submit(self, **job: Any) -> dict[str, Any]:
        status, body = await self.call("POST", "/v1/jobs", json=job)
        assert status == 202, body
        return body

    async def job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        status, body = await self.call("GET", f"/v1/jobs/{job_id}?wait={wait}")
        assert status == 200, body
        return body

    async def delivery(self, delivery_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/v1/deliveries/{delivery_id}")
        assert status == 200, body
        return body

    async def settled_delivery(self, job_id: str, timeout: float = 10) -> dict[str, Any]:
        """The job's first delivery once it is no longer pending."""
        job = await self.job(job_id, wait=timeout)
        assert job["deliveries"], job

        async def settled() -> dict[str, Any] | None:
            found = await self.delivery(job["deliveries"][0]["id"])
            return found if found["status"] != "pending" else None

        return await wait_for(settled, timeout=timeout)

    async def new_tenant(self, tenant: str, admin: bool = False) -> tuple[Api, str]:
        """A client for a new tenant's key, and that tenant's signing secret."""
        status, body = await self.call("POST", "/v1/keys", json={"tenant": tenant, "admin": admin})
        assert status == 201, body
        return self.as_key(body["key"]), body["signing_secret"]


@pytest.fixture
def make_api(
    database_url: str, aiohttp_client: Any, tmp_path: Any
) -> Callable[..., Awaitable[Api]]:
    # The database first: it is dropped after the apps on it have stopped.
    async def make(**overrides: Any) -> Api:
        settings = settings_for(tmp_path, **{"database_url": database_url, **overrides})
        return Api(await aiohttp_client(create_app(settings)))

    return make


@pytest.fixture
async def api(make_api: Callable[..., Awaitable[Api]]) -> Api:
    return await make_api()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP receiver on loopback answering a scripted series of responses."""

    script: list[tuple[int, dict[str, str], str]]
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    hang: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self.arrived:
            self.requests.append(Received(dict(request.headers), body))
            index = len(self.requests) - 1
            self.arrived.notify_all()
        if self.hang is not None:
            await self.hang.wait()
        status, headers, text = self.script[min(index, len(self.script) - 1)]
        return web.Response(status=status, headers=headers, text=text)

    async def wait_for_requests(self, count: int, timeout: float = 10) -> list[Received]:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests


@pytest.fixture
def make_receiver(aiohttp_server: Any) -> Callable[..., Awaitable[Receiver]]:
    async def make(
        *script: int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], str],
        host: str = "127.0.0.1",
    ) -> Receiver:
        steps = []
        for step in script or (200,):
            if isinstance(step, int):
                step = (step, {})
            steps.append((step[0], step[1], step[2] if len(step) > 2 else "ok"))
        receiver = Receiver(steps)
        app = web.Application()
        app.router.add_post("/{tail:.*}", receiver.handle)
        server = await aiohttp_server(app, host=host)
        receiver.url = str(server.make_url("/hook"))
        return receiver

    return make


@pytest.fixture(scope="session")
def operator_secret() -> str:
    """The bootstrap admin key the in-process apps run with: the operator's own secret."""
    return ADMIN_KEY

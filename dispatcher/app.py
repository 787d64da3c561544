"""create_app(settings): the one place that wires the parts together."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

from dispatcher import __version__
from dispatcher.api import console, deliveries, endpoints, jobs, keys, openapi, service, stream
from dispatcher.api.authn import auth_middleware
from dispatcher.api.context import SERVICES, Services
from dispatcher.api.limits import InProgress
from dispatcher.api.problems import problem_middleware
from dispatcher.auth import ADMIN_TENANT, Authenticator, new_key
from dispatcher.changes import ChangeRouter
from dispatcher.delivery.channel import Sender
from dispatcher.delivery.deliverer import Deliverer
from dispatcher.delivery.destinations import CachingResolver, Destinations
from dispatcher.delivery.email import EmailSender
from dispatcher.delivery.endpoints import EndpointBook
from dispatcher.delivery.netguard import NetworkPolicy
from dispatcher.delivery.policy import RetryPolicy
from dispatcher.delivery.secrets import Signers, TenantSecrets
from dispatcher.delivery.sms import SmsSender
from dispatcher.delivery.webhook import SigningFor, WebhookSender
from dispatcher.errors import StartupError
from dispatcher.events import EventHub
from dispatcher.handlers import Registry, load_registry
from dispatcher.housekeeping import Housekeeping
from dispatcher.ids import now
from dispatcher.metrics import Metrics
from dispatcher.settings import Settings
from dispatcher.store.base import Store
from dispatcher.store.feed import ChangeFeed
from dispatcher.store.records import Channel
from dispatcher.store.sqlite import SQLiteStore
from dispatcher.webhooks import generate_secret
from dispatcher.worker import WorkerPool

log = logging.getLogger(__name__)

Announce = Callable[[str], None]


def open_store(settings: Settings) -> Store:
    """The store the database URL names (not opened yet)."""
    path = settings.sqlite_path
    if path is not None:
        return SQLiteStore(path)
    if settings.postgres_dsn is not None:
        # Imported only when used: an embedded install never loads the driver.
        from dispatcher.store.postgres import PostgresStore

        return PostgresStore(settings.postgres_dsn, settings.database_pool_size)
    raise StartupError(
        f"DISPATCHER_DATABASE_URL: unsupported scheme {settings.database_url.split(':')[0]!r}; "
        "use sqlite:///PATH or postgresql://…"
    )


def create_app(settings: Settings, *, announce: Announce | None = None) -> web.Application:
    app = web.Application(
        middlewares=[problem_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    for module in (service, openapi, console, keys, jobs, endpoints, deliveries, stream):
        app.add_routes(module.routes)
    # Made here, not at startup, so a bad database URL or a handler module
    # that does not import fails before anything is opened.
    store = open_store(settings)
    registry = load_registry(settings.handlers, search=Path.cwd())
    parts = _Parts(settings, store, registry, announce)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # One context per resource, entered in the order they start and left
        # in reverse: jobs stop first (a finishing job makes deliveries), then
        # deliveries, then upkeep, and the store closes last, after every
        # write. Should one fail to start, those started already stop (aiohttp
        # does not clean up after a failed startup).
        async with contextlib.AsyncExitStack() as stack:
            for resource in parts.in_order():
                await stack.enter_async_context(resource(app))
            yield

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(_stop_taking_work)
    return app


async def _stop_taking_work(app: web.Application) -> None:
    """First thing on SIGTERM, before aiohttp waits for open requests to end.

    Claiming stops at once (so no job starts after the signal), and streams
    are told to close, since a dashboard's socket would otherwise hold the
    shutdown for aiohttp's whole timeout. Running work finishes in cleanup.
    """
    parts = app[SERVICES]
    await parts.pool.stop_claiming()
    await parts.deliverer.stop_claiming()
    parts.hub.close()


class _Parts:
    """The app's resources, each started by one cleanup context and stopped by it."""

    def __init__(
        self, settings: Settings, store: Store, registry: Registry, announce: Announce | None
    ) -> None:
        self._settings = settings
        self._store = store
        self._registry = registry
        self._announce = announce
        self._feed: ChangeFeed | None = None
        self._sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession] | None = None
        self._started = False

    def in_order(self) -> list[Callable[[web.Application], AbstractAsyncContextManager[None]]]:
        return [
            self.database,
            self.feed,
            self.sessions,
            self.services,
            self.router,
            self.housekeeping,
            self.deliverer,
            self.pool,
        ]

    @asynccontextmanager
    async def database(self, app: web.Application) -> AsyncIterator[None]:
        await self._store.open()
        try:
            yield
        finally:
            await self._store.close()
            if self._started:
                log.info("dispatcher.stopped", extra={"action": "dispatcher.stopped"})

    @asynccontextmanager
    async def feed(self, app: web.Application) -> AsyncIterator[None]:
        self._feed = self._store.change_feed()
        await self._feed.start()
        try:
            yield
        finally:
            await self._feed.stop()

    @asynccontextmanager
    async def sessions(self, app: web.Application) -> AsyncIterator[None]:
        settings = self._settings
        # One resolver for the connector and the deliverer's shares, so that a
        # share counts the address the connector is then given.
        self._resolver = CachingResolver()
        connector = NetworkPolicy(settings.allow_networks).connector(
            limit=settings.delivery_concurrency, resolver=self._resolver, use_dns_cache=False
        )
        session = aiohttp.ClientSession(
            connector=connector, headers={"user-agent": f"dispatcher/{__version__}"}
        )
        # The operator's own SMS gateway is trusted: its session skips the network guard.
        self._sessions = (session, aiohttp.ClientSession())
        try:
            yield
        finally:
            for each in self._sessions:
                await each.close()

    @asynccontextmanager
    async def services(self, app: web.Application) -> AsyncIterator[None]:
        assert self._feed is not None and self._sessions is not None
        app[SERVICES] = await _assemble(
            self._settings,
            self._store,
            self._feed,
            self._registry,
            self._sessions,
            self._resolver,
            self._announce,
        )
        yield

    @asynccontextmanager
    async def router(self, app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES]
        router = ChangeRouter(
            svc.store, svc.hub, svc.pool, svc.deliverer, svc.auth, svc.endpoints, svc.secrets
        )
        svc.feed.listen(router)
        router.start()
        try:
            yield
        finally:
            await router.stop()

    @asynccontextmanager
    async def housekeeping(self, app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES]
        upkeep = Housekeeping(
            svc.store,
            svc.pool,
            svc.deliverer,
            owner=svc.pool.owner,
            lease=self._settings.lease_seconds,
            retention_days=self._settings.retention_days,
        )
        upkeep.start()
        try:
            yield
        finally:
            await upkeep.stop()

    @asynccontextmanager
    async def deliverer(self, app: web.Application) -> AsyncIterator[None]:
        deliverer = app[SERVICES].deliverer
        deliverer.start()
        try:
            yield
        finally:
            await deliverer.stop(self._settings.shutdown_grace)

    @asynccontextmanager
    async def pool(self, app: web.Application) -> AsyncIterator[None]:
        pool = app[SERVICES].pool
        pool.start()
        self._started = True
        log.info("dispatcher.started", extra={"action": "dispatcher.started", "owner": pool.owner})
        try:
            yield
        finally:
            await pool.stop(self._settings.shutdown_grace)


async def _assemble(
    settings: Settings,
    store: Store,
    feed: ChangeFeed,
    registry: Registry,
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
    resolver: CachingResolver,
    announce: Announce | None,
) -> Services:
    """Make the parts that work on the store, not started yet."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    hub = EventHub()
    metrics = Metrics()
    store.observe_commits(metrics.committed)
    signing = TenantSecrets(store, feed)
    book = EndpointBook(store, feed)
    deliverer = _deliverer(
        settings,
        store,
        Signers(signing, book),
        book,
        owner,
        Destinations(resolver, settings.delivery_timeout),
        sessions,
        metrics,
    )
    pool = WorkerPool(
        store,
        registry,
        feed,
        deliverer,
        book,
        owner=owner,
        workers=settings.workers,
        lease=settings.lease_seconds,
        poll_interval=settings.poll_interval,
        metrics=metrics,
    )
    bootstrap = settings.admin_key.get_secret_value() if settings.admin_key else None
    await _bootstrap(store, bootstrap, announce)
    return Services(
        settings,
        store,
        registry,
        hub,
        feed,
        NetworkPolicy(settings.allow_networks),
        Authenticator(store, bootstrap),
        pool,
        deliverer,
        InProgress(settings.max_requests_per_tenant),
        signing,
        book,
        metrics,
    )


def _deliverer(
    settings: Settings,
    store: Store,
    signers: Signers,
    book: EndpointBook,
    owner: str,
    destinations: Destinations,
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
    metrics: Metrics,
) -> Deliverer:
    return Deliverer(
        store,
        _senders(settings, *sessions, signers.for_delivery),
        RetryPolicy(settings.retry_schedule),
        destinations,
        owner=owner,
        concurrency=settings.delivery_concurrency,
        per_host=settings.delivery_per_host,
        lease=settings.lease_seconds,
        poll_interval=settings.poll_interval,
        endpoints=book,
        disable_after=settings.disable_after,
        metrics=metrics,
    )


def _senders(
    settings: Settings,
    session: aiohttp.ClientSession,
    gateway_session: aiohttp.ClientSession,
    signing_for: SigningFor,
) -> dict[Channel, Sender]:
    """A sender per configured channel; an unconfigured channel's deliveries fail, recorded."""
    timeout = settings.delivery_timeout
    senders: dict[Channel, Sender] = {Channel.WEBHOOK: WebhookSender(session, timeout, signing_for)}
    if settings.smtp_url is not None:
        try:
            senders[Channel.EMAIL] = EmailSender(
                settings.smtp_url.get_secret_value(),
                settings.email_from,
                settings.public_url,
                timeout,
            )
        except ValueError as exc:
            # Its message names the setting, never the URL (which may hold a password).
            raise StartupError(str(exc)) from None
    sms = (settings.sms_url, settings.sms_account_sid, settings.sms_auth_token, settings.sms_from)
    if all(sms):
        senders[Channel.SMS] = SmsSender(
            gateway_session,
            settings.sms_url or "",
            settings.sms_account_sid or "",
            settings.sms_auth_token.get_secret_value() if settings.sms_auth_token else "",
            settings.sms_from or "",
            timeout,
        )
    return senders


async def _bootstrap(store: Store, bootstrap: str | None, announce: Announce | None) -> None:
    """Make sure the admin tenant exists; mint a first admin key on an empty database."""
    await store.ensure_tenant(ADMIN_TENANT, generate_secret(), now())
    if bootstrap is None and await store.count_keys() == 0:
        key, record = new_key(ADMIN_TENANT, admin=True)
        await store.create_key(record, generate_secret())
        if announce is not None:
            announce(key)

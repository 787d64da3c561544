"""create_app(settings): the one place that wires the parts together."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
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
from dispatcher.store.records import Channel
from dispatcher.store.sqlite import SQLiteStore
from dispatcher.webhooks import generate_secret
from dispatcher.worker import WorkerPool

log = logging.getLogger(__name__)

Announce = Callable[[str], None]


def open_store(settings: Settings) -> Store:
    path = settings.sqlite_path
    if path is not None:
        return SQLiteStore(path)
    raise StartupError(
        f"DISPATCHER_DATABASE_URL: unsupported scheme {settings.database_url.split(':')[0]!r}; "
        "use sqlite:///PATH"
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

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async for _ in _run_parts(app, settings, store, registry, announce):
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


@dataclass(slots=True)
class _Running:
    """What the app started, stopped in the order that loses nothing."""

    store: Store
    pool: WorkerPool
    deliverer: Deliverer
    housekeeping: Housekeeping
    sessions: tuple[aiohttp.ClientSession, ...]

    def start(self) -> None:
        self.pool.start()
        self.deliverer.start()
        self.housekeeping.start()

    async def stop(self, grace: float) -> None:
        # Jobs first (a finishing job creates deliveries), then deliveries,
        # then upkeep; the store closes last, after every write.
        await self.pool.stop(grace)
        await self.deliverer.stop(grace)
        await self.housekeeping.stop()
        for session in self.sessions:
            await session.close()
        await self.store.close()


async def _run_parts(
    app: web.Application,
    settings: Settings,
    store: Store,
    registry: Registry,
    announce: Announce | None,
) -> AsyncIterator[None]:
    await store.open()
    try:
        running = await _start_parts(app, settings, store, registry, announce)
    except BaseException:
        # A half-started app must still let go of the database (its threads
        # would otherwise keep the process alive after the error is printed).
        await store.close()
        raise
    try:
        yield
    finally:
        await running.stop(settings.shutdown_grace)
        log.info("dispatcher.stopped", extra={"action": "dispatcher.stopped"})


async def _start_parts(
    app: web.Application,
    settings: Settings,
    store: Store,
    registry: Registry,
    announce: Announce | None,
) -> _Running:
    network = NetworkPolicy(settings.allow_networks)
    # One resolver for the connector and the deliverer's shares, so that a
    # share counts the address the connector is then given.
    resolver = CachingResolver()
    session = aiohttp.ClientSession(
        connector=network.connector(
            limit=settings.delivery_concurrency, resolver=resolver, use_dns_cache=False
        ),
        headers={"user-agent": f"dispatcher/{__version__}"},
    )
    # The operator's own SMS gateway is trusted: its session skips the network guard.
    gateway_session = aiohttp.ClientSession()
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    hub = EventHub()
    metrics = Metrics()
    store.observe_commits(metrics.committed)
    signing = TenantSecrets(store)
    book = EndpointBook(store)
    try:
        destinations = Destinations(resolver, settings.delivery_timeout)
        deliverer = _deliverer(
            settings,
            store,
            Signers(signing, book),
            book,
            owner,
            destinations,
            (session, gateway_session),
            metrics,
        )
    except BaseException:
        await session.close()
        await gateway_session.close()
        raise
    pool = WorkerPool(
        store,
        registry,
        hub,
        deliverer,
        book,
        owner=owner,
        workers=settings.workers,
        lease=settings.lease_seconds,
        poll_interval=settings.poll_interval,
        metrics=metrics,
    )
    housekeeping = Housekeeping(
        store,
        pool,
        deliverer,
        owner=owner,
        lease=settings.lease_seconds,
        retention_days=settings.retention_days,
    )
    bootstrap = settings.admin_key.get_secret_value() if settings.admin_key else None
    await _bootstrap(store, bootstrap, announce)
    auth = Authenticator(store, bootstrap)
    in_progress = InProgress(settings.max_requests_per_tenant)
    app[SERVICES] = Services(
        settings,
        store,
        registry,
        hub,
        network,
        auth,
        pool,
        deliverer,
        in_progress,
        signing,
        book,
        metrics,
    )
    running = _Running(store, pool, deliverer, housekeeping, (session, gateway_session))
    running.start()
    log.info("dispatcher.started", extra={"action": "dispatcher.started", "owner": owner})
    return running


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

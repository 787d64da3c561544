"""Fake far ends on loopback: an SMTP server (aiosmtpd) and a Twilio-compatible SMS gateway."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, LoginPassword


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: bytes | None


@dataclass
class Mailbox:
    """What an SMTP server on loopback received: refuses `nobody@…` (550), `busy@…` (450)."""

    port: int
    received: list[Mail] = field(default_factory=list)

    def url(self, scheme: str = "smtp", userinfo: str = "", query: str = "") -> str:
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}{query}"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user here"
        if address.startswith("busy@"):
            return "450 4.2.1 Mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message, login))
        return "250 2.0.0 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpController(Controller):
    """aiosmtpd's threaded server, whose `stop()` first closes every connection it holds.

    `Controller.stop()` stops the server's event loop at once: a connection still open
    then (a TLS one waiting for the client's close_notify, a client mid-conversation) is
    never closed, and its socket is reported unclosed whenever the GC collects it,
    in whatever test is running by then.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: list[SMTP] = []

    def factory(self) -> SMTP:
        session = super().factory()
        self.sessions.append(session)
        return session

    def stop(self, no_assert: bool = False) -> None:
        if self.server is not None and self.loop.is_running():
            closing = asyncio.run_coroutine_threadsafe(self._close_connections(), self.loop)
            closing.result(timeout=10)
        super().stop(no_assert)

    async def _close_connections(self, timeout: float = 5) -> None:
        assert self.server is not None
        self.server.close()  # no new connections
        for session in self.sessions:
            if isinstance(session.transport, asyncio.WriteTransport):
                session.transport.abort()
        # SMTP.connection_lost() clears `transport`, after the socket under it is closed.
        deadline = time.monotonic() + timeout
        while any(session.transport is not None for session in self.sessions):
            if time.monotonic() > deadline:
                raise TimeoutError("aiosmtpd connections still open after abort()")
            await asyncio.sleep(0.005)


@pytest.fixture
def make_smtp() -> Iterator[Callable[..., Mailbox]]:
    """Start an aiosmtpd server on loopback (SMTP options as keywords); stopped after the test."""
    controllers: list[Controller] = []

    def make(**options: Any) -> Mailbox:
        mailbox = Mailbox(free_port())
        controller = SmtpController(mailbox, hostname="127.0.0.1", port=mailbox.port, **options)
        controller.start()
        controllers.append(controller)
        return mailbox

    yield make
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtp(make_smtp: Callable[..., Mailbox]) -> Mailbox:
    return make_smtp()


@dataclass
class Gateway:
    """A Twilio-compatible gateway on loopback answering a scripted status and headers."""

    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)
    text: str = '{"sid": "SM1", "status": "queued"}'
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append(
            (request.path, dict(request.headers), {k: str(v) for k, v in form.items()})
        )
        return web.Response(status=self.status, headers=self.headers, text=self.text)


@pytest.fixture
def make_gateway(aiohttp_server: Any) -> Callable[..., Awaitable[Gateway]]:
    async def make(**script: Any) -> Gateway:
        gateway = Gateway(**script)
        app = web.Application()
        app.router.add_post("/{tail:.*}", gateway.handle)
        server = await aiohttp_server(app, host="127.0.0.1")
        gateway.url = str(server.make_url(""))
        return gateway

    return make

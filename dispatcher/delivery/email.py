"""The email channel: one SMTP conversation per attempt, through the operator's relay.

`DISPATCHER_SMTP_URL` is `smtp://[user:pass@]host[:port]` (plain, port 25),
`smtp://…?starttls=true` (upgraded with STARTTLS, port 587) or
`smtps://…` (TLS from the first byte, port 465). A plain URL never upgrades on
its own: what the operator wrote is what is done. Certificates are verified,
against the system's roots or the `tls_context` given.

Which failures stop the retries: only a permanent (5xx) refusal of the
recipient at `RCPT TO` marks the attempt `gone`; that address will not start
working because we ask again. Every other failure is retried on the
schedule: 4xx replies are temporary by definition, and a 5xx anywhere else
(a refused sender, refused credentials, a refused `DATA`) is the operator's
configuration or the relay's policy, which can be fixed while the delivery
waits. 552 at `RCPT TO` is retried too, as RFC 5321 §4.5.3.1.10 asks.

SMTP reply codes are not HTTP statuses, so `status_code` stays None; the code
is in the attempt's `error`. The password is in no error, log or repr.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiosmtplib

from dispatcher.delivery.channel import Redactor
from dispatcher.delivery.messages import email_message, mailbox, message_id
from dispatcher.delivery.policy import AttemptResult
from dispatcher.store.records import DueDelivery

# The relay's reply is kept as the attempt's response body; it is one line.
MAX_REPLY_CHARS = 512

_DEFAULT_PORTS = {"smtps": 465, "starttls": 587, "smtp": 25}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
# RFC 5321 §4.5.3.1.10: a 552 to RCPT TO is to be treated as temporary.
_TEMPORARY_RCPT_CODES = {552}


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how to speak SMTP, parsed once from `DISPATCHER_SMTP_URL`."""

    host: str
    port: int
    use_tls: bool = False
    start_tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_smtp_url(url: str) -> SmtpServer:
    """The server a URL names. ValueError, never quoting the URL (it may hold a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        # Not `from exc`: the parser's message or a traceback could carry the URL.
        raise ValueError("DISPATCHER_SMTP_URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ValueError("DISPATCHER_SMTP_URL must start with smtp:// or smtps://")
    if not host:
        raise ValueError("DISPATCHER_SMTP_URL has no host")
    start_tls = _starttls_option(parts.query)
    if start_tls and scheme == "smtps":
        raise ValueError("DISPATCHER_SMTP_URL: smtps:// is TLS already; drop ?starttls=true")
    username = password = None
    if parts.username is not None:
        username, password = unquote(parts.username), unquote(parts.password or "")
    default_port = _DEFAULT_PORTS["starttls" if start_tls else scheme]
    return SmtpServer(
        host=host,
        port=port or default_port,
        use_tls=scheme == "smtps",
        start_tls=start_tls,
        username=username,
        password=password,
    )


def _starttls_option(query: str) -> bool:
    options = parse_qs(query, keep_blank_values=True)
    unknown = set(options) - {"starttls"}
    if unknown:
        raise ValueError(f"DISPATCHER_SMTP_URL: unknown option(s) {', '.join(sorted(unknown))}")
    value = options.get("starttls", ["false"])[-1].lower()
    if value not in _TRUE | _FALSE:
        raise ValueError("DISPATCHER_SMTP_URL: starttls must be true or false")
    return value in _TRUE


class EmailSender:
    def __init__(
        self,
        smtp_url: str,
        sender: str,
        public_url: str | None,
        timeout: float,
        *,
        tls_context: ssl.SSLContext | None = None,
        message_id_domain: str | None = None,
    ) -> None:
        self._server = parse_smtp_url(smtp_url)
        self._sender = sender
        self._envelope_sender = mailbox(sender).addr_spec
        if message_id_domain is not None:
            message_id("msg_check", message_id_domain)
        self._message_id_domain = message_id_domain
        self._public_url = public_url
        self._timeout = timeout
        self._tls_context = tls_context
        password = self._server.password or ""
        self._redactor = Redactor(password, quote(password, safe=""))

    def __repr__(self) -> str:
        return f"EmailSender({self._server!r})"

    async def send(self, due: DueDelivery) -> AttemptResult:
        delivery = due.delivery
        try:
            message = email_message(
                due.body,
                delivery_id=delivery.id,
                sender=self._sender,
                recipient=delivery.target,
                public_url=self._public_url,
                message_id_domain=self._message_id_domain,
            )
        except ValueError as exc:
            # The body and the target are fixed: every retry would fail the same way.
            return AttemptResult(ok=False, error=f"cannot build the email: {exc}", gone=True)
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._transmit(message, mailbox(delivery.target).addr_spec)
        except TimeoutError:
            return AttemptResult(ok=False, error=f"timed out after {self._timeout:g}s")
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return self._refused(exc)
        except aiosmtplib.SMTPResponseException as exc:
            return self._failed(f"SMTP {exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        return AttemptResult(
            ok=True, response_body=self._redactor.text(f"250 {reply}")[:MAX_REPLY_CHARS]
        )

    async def _transmit(self, message: EmailMessage, recipient: str) -> str:
        server = self._server
        client = _Client(
            hostname=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            use_tls=server.use_tls,
            start_tls=server.start_tls,
            tls_context=self._tls_context,
            timeout=self._timeout,
        )
        try:
            # As `aiosmtplib.send`: QUIT on the way out unless the connection broke.
            async with client:
                # The envelope is explicit: only the delivery's target receives the
                # message, whatever its headers say.
                _, reply = await client.send_message(
                    message, sender=self._envelope_sender, recipients=[recipient]
                )
        finally:
            # `_Client.close` aborted the transport, which closes the socket on the
            # loop's next turn: take that turn, so no socket outlives the attempt.
            await asyncio.sleep(0)
        return reply

    def _refused(self, exc: aiosmtplib.SMTPRecipientsRefused) -> AttemptResult:
        if not exc.recipients:
            return self._failed("recipient refused")
        refusal = exc.recipients[0]
        permanent = 500 <= refusal.code < 600 and refusal.code not in _TEMPORARY_RCPT_CODES
        error = f"recipient refused: SMTP {refusal.code} {refusal.message}"
        return self._redactor.failed(error, gone=permanent)

    def _failed(self, error: str) -> AttemptResult:
        return self._redactor.failed(error)


class _Client(aiosmtplib.SMTP):
    """An SMTP client whose every close (after QUIT, on an error, on a timeout) is immediate.

    aiosmtplib closes its transport gracefully. Over TLS that sends close_notify and
    keeps the socket open until the relay's close_notify arrives (or 30 s pass), some
    turns of the event loop after the attempt has returned; if the loop stops first
    (a test's, or the service's at shutdown) the socket is never closed. After QUIT and
    its reply nothing is left to say, so the transport is aborted, the way `smtplib`
    simply closes its socket.
    """

    def close(self) -> None:
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.abort()
        super().close()

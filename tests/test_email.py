"""Email notifications: a real SMTP server (aiosmtpd) on loopback receives what is sent."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dispatcher.delivery.email import EmailSender, parse_smtp_url
from dispatcher.delivery.messages import email_message
from dispatcher.ids import new_id
from dispatcher.store.records import (
    Channel,
    DueDelivery,
    JobStatus,
)
from tests.support.events import due_delivery, job_event
from tests.support.fakes import free_port

SENDER = "dispatcher@example.com"
OWNER = "owner@example.com"
PUBLIC_URL = "https://dispatcher.example.com"
USER, PASSWORD = "alice", "p@ss:w/rd%s3cret"
INJECTION = "x\r\nBcc: evil@example.com"


def callback_failed_event(job_body: bytes, webhook_id: str) -> bytes:
    event = json.loads(job_body)
    event["type"] = "job.callback_failed"
    event["callback"] = {
        "url": "https://hooks.example.com/in",
        "delivery_id": webhook_id,
        "status_code": 500,
        "error": "HTTP 500",
    }
    return json.dumps(event).encode()


def make_due(body: bytes, target: str = OWNER, delivery_id: str | None = None) -> DueDelivery:
    return due_delivery(body, Channel.EMAIL, target, delivery_id)


def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A self-signed certificate for 127.0.0.1, and contexts that serve it and trust it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return Tls(server=server, client=ssl.create_default_context(cafile=str(cert_file)))


def sender_for(url: str, **options: Any) -> EmailSender:
    return EmailSender(url, SENDER, options.pop("public_url", PUBLIC_URL), 5, **options)


def sockets_open_to(port: int) -> list[socket.socket]:
    """This process's sockets still open with 127.0.0.1:`port` as their far end."""
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and obj.fileno() != -1:
            with contextlib.suppress(OSError):
                if obj.getpeername() == ("127.0.0.1", port):
                    found.append(obj)
    return found


async def test_job_email_arrives_with_subject_from_to_and_details(smtp):
    job_id, body = job_event(result={"url": "https://cdn.example.com/t.png", "w": 64})

    result = await sender_for(smtp.url()).send(make_due(body))

    assert result.ok, result
    assert result.status_code is None
    assert "Message accepted" in result.response_body
    [mail] = smtp.received
    assert (mail.mail_from, mail.rcpt_tos) == (SENDER, [OWNER])
    message = mail.message
    assert message["Subject"] == f"Job {job_id} succeeded"
    assert (message["From"], message["To"]) == (SENDER, OWNER)
    assert message["Date"] is not None
    text = message.get_content()
    assert f"ID:       {job_id}" in text
    assert "Type:     thumbnail" in text
    assert "Status:   succeeded" in text
    assert '"url": "https://cdn.example.com/t.png"' in text, "the result is pretty JSON"
    assert f"{PUBLIC_URL}/v1/jobs/{job_id}" in text


async def test_without_public_url_there_is_no_link(smtp):
    _, body = job_event(result=1)
    await sender_for(smtp.url(), public_url=None).send(make_due(body))
    assert "/v1/jobs/" not in smtp.received[0].message.get_content()


async def test_failed_job_email_shows_the_error(smtp):
    job_id, body = job_event(JobStatus.FAILED, error={"type": "ValueError", "message": "bad size"})
    await sender_for(smtp.url()).send(make_due(body))
    message = smtp.received[0].message
    assert message["Subject"] == f"Job {job_id} failed"
    assert "Error: ValueError: bad size" in message.get_content()


async def test_login_with_url_encoded_credentials(make_smtp):
    smtp = make_smtp(authenticator=authenticate, auth_require_tls=False)
    userinfo = f"{USER}:{PASSWORD.replace('%', '%25').replace('@', '%40').replace('/', '%2F')}@"
    _, body = job_event()

    result = await sender_for(smtp.url(userinfo=userinfo)).send(make_due(body))

    assert result.ok, result
    assert smtp.received[0].login == USER.encode()


async def test_wrong_password_fails_without_the_password_in_the_error(make_smtp):
    smtp = make_smtp(authenticator=authenticate, auth_require_tls=False)
    _, body = job_event()

    result = await sender_for(smtp.url(userinfo="alice:wrong-s3cret@")).send(make_due(body))

    assert not result.ok
    assert "535" in result.error
    assert "wrong-s3cret" not in result.error
    assert smtp.received == []


async def test_server_down_fails_without_the_password_in_the_error():
    url = f"smtp://{USER}:hunter2-s3cret@127.0.0.1:{free_port()}"
    _, body = job_event()

    result = await sender_for(url).send(make_due(body))

    assert not result.ok
    assert not result.gone, "a server that is down is retried"
    assert result.error
    assert "hunter2" not in result.error


async def test_server_that_never_answers_times_out():
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, body = job_event()
    try:
        sender = EmailSender(f"smtp://127.0.0.1:{port}", SENDER, None, 0.3)
        result = await sender.send(make_due(body))
    finally:
        release.set()
        server.close()
        await server.wait_closed()

    assert not result.ok
    assert "timed out" in result.error
    assert sockets_open_to(port) == []


async def test_550_for_the_recipient_is_gone(smtp):
    _, body = job_event()
    result = await sender_for(smtp.url()).send(make_due(body, target="nobody@example.com"))
    assert not result.ok
    assert result.gone
    assert "550" in result.error


async def test_450_for_the_recipient_is_retried(smtp):
    _, body = job_event()
    result = await sender_for(smtp.url()).send(make_due(body, target="busy@example.com"))
    assert not result.ok
    assert not result.gone
    assert "450" in result.error


async def test_header_injection_in_type_and_result_stays_in_the_body(smtp):
    _, body = job_event(type=INJECTION, result={"note": INJECTION})

    result = await sender_for(smtp.url()).send(make_due(body))

    assert result.ok, result
    [mail] = smtp.received
    assert mail.rcpt_tos == [OWNER]
    headers = {name.lower() for name in mail.message}
    assert headers == {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "auto-submitted",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    }
    text = mail.message.get_content()
    assert "Type:     x\\r\\nBcc: evil@example.com" in text
    assert '"note": "x\\r\\nBcc: evil@example.com"' in text


def test_recipient_with_a_line_break_is_refused():
    _, body = job_event()
    with pytest.raises(ValueError, match="line break"):
        email_message(
            body,
            delivery_id=new_id("msg"),
            sender=SENDER,
            recipient=f"{OWNER}\r\nBcc: evil@example.com",
            public_url=None,
        )


async def test_unusable_recipient_is_gone_without_connecting():
    _, body = job_event()
    sender = sender_for(f"smtp://127.0.0.1:{free_port()}")
    result = await sender.send(make_due(body, target="owner@example.com\nBcc: evil@example.com"))
    assert not result.ok
    assert result.gone
    assert "line break" in result.error


async def test_message_id_is_the_same_on_every_attempt(smtp):
    _, body = job_event()
    due = make_due(body)
    sender = sender_for(smtp.url())

    await sender.send(due)
    await sender.send(due)

    first, second = (mail.message["Message-ID"] for mail in smtp.received)
    assert first == second == f"<{due.delivery.id}@example.com>"


async def test_callback_failed_email_names_the_job_url_and_error(smtp):
    job_id, job_body = job_event()
    webhook_id = new_id("msg")
    body = callback_failed_event(job_body, webhook_id)

    result = await sender_for(smtp.url()).send(make_due(body))

    assert result.ok, result
    message = smtp.received[0].message
    assert message["Subject"] == f"Webhook for job {job_id} failed"
    text = message.get_content()
    assert job_id in text
    assert "Webhook URL:  https://hooks.example.com/in" in text
    assert "Last status:  500" in text
    assert "Last error:   HTTP 500" in text
    assert f"{PUBLIC_URL}/v1/deliveries/{webhook_id}" in text


async def test_starttls_when_the_url_asks(make_smtp, tls):
    smtp = make_smtp(tls_context=tls.server, require_starttls=True)
    _, body = job_event()

    result = await sender_for(smtp.url(query="?starttls=true"), tls_context=tls.client).send(
        make_due(body)
    )

    assert result.ok, result
    assert len(smtp.received) == 1


async def test_smtps_speaks_tls_from_the_start(make_smtp, tls):
    smtp = make_smtp(ssl_context=tls.server)
    _, body = job_event()

    result = await sender_for(smtp.url("smtps"), tls_context=tls.client).send(make_due(body))

    assert result.ok, result
    assert len(smtp.received) == 1


async def test_untrusted_certificate_is_refused(make_smtp, tls):
    smtp = make_smtp(ssl_context=tls.server)
    _, body = job_event()

    result = await sender_for(smtp.url("smtps")).send(make_due(body))

    assert not result.ok
    assert "certificate" in result.error.lower()
    assert smtp.received == []


@pytest.mark.parametrize(
    ("server_options", "url_options", "target", "expected"),
    [
        ({}, {}, OWNER, "Message accepted"),
        ({}, {}, "nobody@example.com", "550"),
        (
            {"authenticator": authenticate, "auth_require_tls": False},
            {"userinfo": "a:b@"},
            OWNER,
            "535",
        ),
        ({"tls": "starttls"}, {"query": "?starttls=true"}, OWNER, "Message accepted"),
        ({"tls": "smtps"}, {"scheme": "smtps"}, OWNER, "Message accepted"),
        ({"tls": "smtps"}, {"scheme": "smtps", "trust": False}, OWNER, "certificate"),
    ],
    ids=["plain", "refused-recipient", "refused-login", "starttls", "smtps", "untrusted"],
)
async def test_no_socket_to_the_relay_outlives_the_attempt(
    make_smtp, tls, server_options, url_options, target, expected
):
    """A TLS connection closes gracefully only after the relay's close_notify arrives, some
    loop turns after QUIT: a socket left for those turns leaks if the loop ends first."""
    server_options, url_options = dict(server_options), dict(url_options)
    mode = server_options.pop("tls", None)
    if mode == "starttls":
        server_options.update(tls_context=tls.server, require_starttls=True)
    elif mode == "smtps":
        server_options.update(ssl_context=tls.server)
    trusted = url_options.pop("trust", True)
    smtp = make_smtp(**server_options)
    sender = sender_for(smtp.url(**url_options), tls_context=tls.client if trusted else None)
    _, body = job_event()

    for _ in range(3):
        result = await sender.send(make_due(body, target=target))

        assert expected in (result.response_body if result.ok else result.error)
        assert sockets_open_to(smtp.port) == [], "the attempt ended with its socket still open"


def test_url_options_and_default_ports():
    assert parse_smtp_url("smtp://mail.example.com").port == 25
    starttls = parse_smtp_url("smtp://u:p%40ss@mail.example.com?starttls=true")
    assert (starttls.port, starttls.start_tls, starttls.use_tls) == (587, True, False)
    assert (starttls.username, starttls.password) == ("u", "p@ss")
    smtps = parse_smtp_url("smtps://mail.example.com")
    assert (smtps.port, smtps.use_tls) == (465, True)
    assert "p@ss" not in repr(starttls)


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:t0p-s3cret@mail.example.com",
        "smtp://alice:t0p-s3cret@mail.example.com:notaport",
        "smtp://alice:t0p-s3cret@mail.example.com?starttls=maybe",
        "smtps://alice:t0p-s3cret@mail.example.com?starttls=true",
        "smtp://alice:t0p-s3cret@",
    ],
)
def test_bad_url_is_refused_without_the_password(url):
    with pytest.raises(ValueError) as raised:
        EmailSender(url, SENDER, None, 5)
    assert "t0p-s3cret" not in str(raised.value)
    assert raised.value.__cause__ is None

"""SMS notifications: a real aiohttp app on loopback plays the Twilio-compatible gateway."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from dispatcher.delivery.messages import MAX_CALLBACK_SMS, sms_text
from dispatcher.delivery.sms import SmsSender
from dispatcher.ids import new_id
from dispatcher.store.records import (
    Channel,
    DueDelivery,
    JobStatus,
)
from tests.support.events import due_delivery, job_event

SID = "AC0123456789abcdef"
TOKEN = "tok-s3cret-0123456789"
FROM = "+15550001111"
TO = "+447700900123"


def make_due(body: bytes) -> DueDelivery:
    return due_delivery(body, Channel.SMS, TO)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sms_sender(session: aiohttp.ClientSession, url: str, timeout: float = 5) -> SmsSender:
    return SmsSender(session, url, SID, TOKEN, FROM, timeout)


async def test_201_is_success_with_path_form_and_basic_auth(make_gateway, session):
    gateway = await make_gateway()
    job_id, body = job_event()

    result = await sms_sender(session, gateway.url).send(make_due(body))

    assert result.ok, result
    assert result.status_code == 201
    assert '"sid": "SM1"' in result.response_body
    [(path, headers, form)] = gateway.requests
    assert path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert (
        headers["Authorization"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    )
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form == {"To": TO, "From": FROM, "Body": f"Job {job_id} succeeded"}


async def test_429_with_retry_after_asks_to_wait(make_gateway, session):
    gateway = await make_gateway(status=429, headers={"Retry-After": "30"})
    _, body = job_event()

    result = await sms_sender(session, gateway.url).send(make_due(body))

    assert not result.ok
    assert result.status_code == 429
    assert result.retry_after == 30


async def test_500_is_a_failure_to_retry(make_gateway, session):
    gateway = await make_gateway(status=500, text="upstream broke")
    _, body = job_event()

    result = await sms_sender(session, gateway.url).send(make_due(body))

    assert not result.ok
    assert not result.gone
    assert (result.status_code, result.error, result.response_body) == (
        500,
        "HTTP 500",
        "upstream broke",
    )


async def test_410_is_gone(make_gateway, session):
    gateway = await make_gateway(status=410)
    _, body = job_event()
    result = await sms_sender(session, gateway.url).send(make_due(body))
    assert result.gone


async def test_gateway_that_echoes_the_token_does_not_get_it_recorded(make_gateway, session):
    gateway = await make_gateway(status=401, text=f"bad token {TOKEN}")
    _, body = job_event()

    result = await sms_sender(session, gateway.url).send(make_due(body))

    assert not result.ok
    assert TOKEN not in result.response_body
    assert result.response_body == "bad token ***"


async def test_gateway_down_fails_without_the_token_in_the_error(session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, body = job_event()

    result = await sms_sender(session, f"http://127.0.0.1:{port}").send(make_due(body))

    assert not result.ok
    assert result.error
    assert TOKEN not in result.error
    assert result.status_code is None


def test_job_text_is_short_with_id_and_status():
    job_id, body = job_event(JobStatus.FAILED, error={"type": "TimeoutError", "message": "x"})
    text = sms_text(body)
    assert text == f"Job {job_id} failed: TimeoutError"
    assert len(text) <= 160


def test_callback_failed_text_names_the_url_and_error_within_320_chars():
    job_id, job_body = job_event()
    event = json.loads(job_body)
    event["type"] = "job.callback_failed"
    event["callback"] = {
        "url": "https://hooks.example.com/in?token=abc",
        "delivery_id": new_id("msg"),
        "status_code": None,
        "error": "connection refused\r\n" + "x" * 1000,
    }

    text = sms_text(json.dumps(event).encode())

    assert text.startswith(
        f"Job {job_id}: webhook to https://hooks.example.com/in failed: connection refused x"
    )
    assert "token=abc" not in text
    assert "\n" not in text
    assert len(text) == MAX_CALLBACK_SMS

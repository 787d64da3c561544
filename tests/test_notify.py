"""Email and SMS through the running service: each is a delivery, retried and replayable."""

from __future__ import annotations

import base64
import time

from tests.conftest import wait_for
from tests.support.fakes import Mailbox, SmtpController, free_port

SID, TOKEN, FROM = "AC0123456789", "sms-token-s3cret", "+15550001111"
OWNER_EMAIL, OWNER_PHONE = "owner@example.com", "+447700900123"


def channels(smtp=None, gateway=None) -> dict:
    options: dict = {"public_url": "https://dispatcher.example.com"}
    if smtp is not None:
        options["smtp_url"] = smtp.url()
    if gateway is not None:
        options.update(
            sms_url=gateway.url, sms_account_sid=SID, sms_auth_token=TOKEN, sms_from=FROM
        )
    return options


async def deliveries_of(api, job_id: str) -> dict[str, dict]:
    job = await api.job(job_id, wait=5)
    return {d["channel"]: await api.delivery(d["id"]) for d in job["deliveries"]}


async def test_finished_job_sends_one_email_and_one_sms(make_api, smtp, make_gateway):
    gateway = await make_gateway()
    api = await make_api(**channels(smtp, gateway))
    job = await api.submit(
        type="echo", payload={"answer": 42}, notify={"email": OWNER_EMAIL, "sms": OWNER_PHONE}
    )

    await wait_for(lambda: len(smtp.received) == 1 and len(gateway.requests) == 1)

    [mail] = smtp.received
    assert mail.rcpt_tos == [OWNER_EMAIL]
    assert job["id"] in mail.message["Subject"]
    text = mail.message.get_content()
    assert job["id"] in text and "echo" in text and "succeeded" in text and '"answer": 42' in text
    assert f"https://dispatcher.example.com/v1/jobs/{job['id']}" in text
    [(path, headers, form)] = gateway.requests
    assert path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert (
        headers["Authorization"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    )
    assert form["To"] == OWNER_PHONE and form["From"] == FROM
    assert job["id"] in form["Body"] and "succeeded" in form["Body"]

    async def both_succeeded():
        found = await deliveries_of(api, job["id"])
        return found if {d["status"] for d in found.values()} == {"succeeded"} else None

    found = await wait_for(both_succeeded)
    assert set(found) == {"email", "sms"}
    assert found["email"]["target"] == OWNER_EMAIL
    assert found["sms"]["attempts"][0]["status_code"] == 201


async def test_smtp_outage_is_retried_and_does_not_delay_webhooks(
    make_api, make_smtp, make_receiver
):
    port = free_port()
    api = await make_api(smtp_url=f"smtp://127.0.0.1:{port}", retry_schedule="0.3,0.3,0.3,1")
    receiver = await make_receiver(200)
    mailed = await api.submit(type="echo", payload=1, notify={"email": OWNER_EMAIL})

    async def first_email_failed():
        email = (await deliveries_of(api, mailed["id"]))["email"]
        return email if email["attempt_count"] >= 1 else None

    failed_once = await wait_for(first_email_failed)
    assert failed_once["status"] == "pending"
    assert failed_once["attempts"][0]["error"]

    started = time.monotonic()
    await api.submit(type="echo", payload=2, callback_url=receiver.url)
    await receiver.wait_for_requests(1, timeout=2)
    assert time.monotonic() - started < 2, "a webhook waited behind the SMTP outage"

    mailbox = Mailbox(port)
    controller = SmtpController(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        await wait_for(lambda: len(mailbox.received) == 1, timeout=10)
    finally:
        controller.stop()
    assert mailed["id"] in mailbox.received[0].message["Subject"]


async def test_webhook_failing_for_good_tells_the_owner(make_api, smtp, make_receiver):
    api = await make_api(**channels(smtp), retry_schedule="0.05")
    receiver = await make_receiver(500)
    job = await api.submit(
        type="echo",
        payload=1,
        callback_url=receiver.url,
        notify={"email": OWNER_EMAIL, "on_callback_failure": True},
    )

    await wait_for(lambda: len(smtp.received) == 2)

    subjects = sorted(m.message["Subject"] for m in smtp.received)
    notice = next(m for m in smtp.received if "Webhook" in m.message["Subject"])
    assert any("succeeded" in s for s in subjects), "the usual notification still goes out"
    text = notice.message.get_content()
    assert job["id"] in text and receiver.url in text and "HTTP 500" in text
    done = await api.job(job["id"])
    assert sorted(d["channel"] for d in done["deliveries"]) == ["email", "email", "webhook"]


async def test_no_owner_notice_when_the_job_did_not_ask(make_api, smtp, make_receiver):
    api = await make_api(**channels(smtp), retry_schedule="")
    receiver = await make_receiver(500)
    job = await api.submit(
        type="echo", payload=1, callback_url=receiver.url, notify={"email": OWNER_EMAIL}
    )
    webhook = await api.settled_delivery(job["id"])
    assert webhook["status"] == "failed"
    await wait_for(lambda: len(smtp.received) == 1)
    done = await api.job(job["id"])
    assert sorted(d["channel"] for d in done["deliveries"]) == ["email", "webhook"]


async def test_email_delivery_is_listed_and_replayable(make_api, smtp):
    api = await make_api(**channels(smtp))
    job = await api.submit(type="echo", payload=1, notify={"email": OWNER_EMAIL})

    async def sent():
        email = (await deliveries_of(api, job["id"]))["email"]
        return email if email["status"] == "succeeded" else None

    email = await wait_for(sent)
    _, listed = await api.call("GET", f"/v1/deliveries?job_id={job['id']}")
    assert [d["channel"] for d in listed["items"]] == ["email"]

    status, _ = await api.call("POST", f"/v1/deliveries/{email['id']}/replay")
    assert status == 202
    await wait_for(lambda: len(smtp.received) == 2)
    assert smtp.received[0].message["Message-ID"] == smtp.received[1].message["Message-ID"]


async def test_unconfigured_channel_records_a_failed_attempt(api):
    job = await api.submit(type="echo", payload=1, notify={"sms": OWNER_PHONE})

    async def attempted():
        sms = (await deliveries_of(api, job["id"]))["sms"]
        return sms if sms["attempt_count"] >= 1 else None

    sms = await wait_for(attempted)
    assert "not configured" in sms["attempts"][0]["error"]

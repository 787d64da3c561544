"""The main path: submit, run, deliver a signed webhook, record the attempt."""

from __future__ import annotations

import json

from standardwebhooks import Webhook


async def test_echo_job_is_delivered_signed(api, make_receiver):
    receiver = await make_receiver(200)
    _, body = await api.call("GET", "/v1/signing-secret")
    secret = body["secret"]

    job = await api.submit(type="echo", payload={"hello": "world"}, callback_url=receiver.url)
    assert job["status"] == "queued"

    [request] = await receiver.wait_for_requests(1)
    event = Webhook(secret).verify(request.body, request.headers)
    assert event["type"] == "job.succeeded"
    assert event["data"]["id"] == job["id"]
    assert event["data"]["result"] == {"hello": "world"}
    assert "deliveries" not in event["data"]
    assert request.headers["webhook-id"].startswith("msg_")
    assert request.headers["User-Agent"].startswith("dispatcher/")
    assert json.loads(request.body) == event

    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "succeeded"
    assert delivery["id"] == request.headers["webhook-id"]
    [attempt] = delivery["attempts"]
    assert attempt["number"] == 1
    assert attempt["status_code"] == 200
    assert attempt["trigger"] == "scheduled"
    assert attempt["response_body"] == "ok"

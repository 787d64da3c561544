"""What the log says about work, where a handler's developer and an operator look."""

from __future__ import annotations

import logging

from tests.conftest import wait_for


def _records(caplog, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


async def test_a_failing_handler_leaves_its_traceback_at_error(api, caplog):
    caplog.set_level(logging.INFO)
    job = await api.submit(type="fail", payload={"message": "the disk is on fire"})
    assert (await api.job(job["id"], wait=5))["status"] == "failed"
    [record] = _records(caplog, "job.handler_failed")
    assert record.levelno == logging.ERROR
    assert (record.job_id, record.job_type) == (job["id"], "fail")
    assert record.exc_info is not None
    assert "the disk is on fire" in caplog.text
    assert "Traceback (most recent call last)" in caplog.text


async def test_a_retry_is_logged_with_its_next_run(make_api, caplog):
    caplog.set_level(logging.INFO)
    api = await make_api(handlers="tests.support.handlers")
    job = await api.submit(type="flaky", payload={"name": "logged", "succeed_on": 2})
    assert (await api.job(job["id"], wait=5))["status"] == "succeeded"
    [record] = _records(caplog, "job.retry_scheduled")
    assert record.job_id == job["id"]
    assert record.retry == "1/2"
    assert record.run_at.endswith("Z")


async def test_a_delivery_that_fails_for_good_is_a_warning_with_its_error(
    make_api, make_receiver, caplog
):
    caplog.set_level(logging.INFO)
    api = await make_api(retry_schedule="0.05")
    receiver = await make_receiver(500)
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "failed"
    await wait_for(lambda: _records(caplog, "delivery.failed"))
    [retried] = _records(caplog, "delivery.attempted")
    assert retried.levelno == logging.INFO
    assert (retried.error, retried.status_code) == ("HTTP 500", 500)
    assert retried.next_attempt_at.endswith("Z")
    [failed] = _records(caplog, "delivery.failed")
    assert failed.levelno == logging.WARNING
    assert (failed.delivery_id, failed.error, failed.attempt) == (delivery["id"], "HTTP 500", 2)

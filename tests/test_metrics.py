"""`/metrics`: Prometheus text that follows the work as it goes through, with no secret in it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api


async def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with api.client.get("/metrics") as response:  # no key needed
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert "dk_" not in text and "whsec_" not in text
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("dispatcher_"), family.name
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_jobs_and_deliveries(make_api, make_receiver):
    api = await make_api(retry_schedule="")
    ok, broken = await make_receiver(200), await make_receiver(500)
    before = await scrape(api)
    assert value(before, "dispatcher_jobs_finished_total", type="echo", status="succeeded") == 0

    for n in range(3):
        job = await api.submit(type="echo", payload=n, callback_url=ok.url + "?token=hidden")
        await api.settled_delivery(job["id"])
    failed = await api.submit(type="fail", payload={"message": "x"}, callback_url=broken.url)
    await api.settled_delivery(failed["id"])
    _, endpoint = await api.call("POST", "/v1/endpoints", json={"url": broken.url})
    job = await api.submit(type="echo", payload=1, endpoint_id=endpoint["id"])
    await api.settled_delivery(job["id"])

    after = await scrape(api)
    assert value(after, "dispatcher_jobs_submitted_total", type="echo") == 4
    assert value(after, "dispatcher_jobs_finished_total", type="echo", status="succeeded") == 4
    assert value(after, "dispatcher_jobs_finished_total", type="fail", status="failed") == 1
    assert value(after, "dispatcher_job_run_seconds_count", type="echo") == 4
    webhook_ok = value(
        after, "dispatcher_delivery_attempts_total", channel="webhook", outcome="succeeded"
    )
    webhook_failed = value(
        after, "dispatcher_delivery_attempts_total", channel="webhook", outcome="failed"
    )
    assert (webhook_ok, webhook_failed) == (3, 2)
    assert value(after, "dispatcher_delivery_attempt_seconds_count", channel="webhook") == 5
    assert value(after, "dispatcher_deliveries", status="failed") == 2
    assert value(after, "dispatcher_deliveries", status="pending") == 0
    # The endpoint's one failure opened its circuit (no success in the minute before).
    assert value(after, "dispatcher_endpoint_circuits_open") == 1
    assert value(after, "dispatcher_store_commit_writes_count") > 0
    assert value(after, "dispatcher_queue_depth") == 0
    assert not any("hidden" in str(key) for key in after)


async def test_queue_depth_and_subscribers_show_what_is_waiting(make_api):
    api = await make_api(workers=1)
    blocker = await api.submit(type="sleep", payload={"seconds": 30, "result": None})
    queued = [await api.submit(type="echo", payload=n) for n in range(3)]
    async with api.client.ws_connect(f"/v1/events/ws?token={api.key}"):
        samples = await scrape(api)
    assert value(samples, "dispatcher_queue_depth") == 3
    assert value(samples, "dispatcher_jobs", type="echo", status="queued") == 3
    assert value(samples, "dispatcher_jobs", type="sleep", status="running") == 1
    assert value(samples, "dispatcher_oldest_queued_job_age_seconds") >= 0
    assert value(samples, "dispatcher_stream_subscribers", kind="tenant") == 1
    for job in (blocker, *queued):
        await api.call("POST", f"/v1/jobs/{job['id']}/cancel")
